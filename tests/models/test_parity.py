"""Logit parity with transformers, both directions, for every supported family.

transformers checkpoint -> models.load -> our logits   ==  transformers logits
our random model -> models.save -> AutoModelForCausalLM ==  our logits

on a batch with a full row, a left-padded row and a right-padded row, in float32.
"""

import numpy as np
import pytest
import transformers

from rl_reason import models
from model_builders import PRESET_TIE, max_diff_on_valid, padded_batch, random_model, torch_logits

pytestmark = pytest.mark.parity
TOL = 1e-4
# Each family with its preset's tying (shares compiled code with other tests), plus an
# untied Qwen3 (the Qwen3-8B layout).
CASES = [*PRESET_TIE.items(), ("qwen3", False)]


@pytest.mark.parametrize("family,tie", CASES)
def test_loaded_checkpoint_matches_transformers(hf_checkpoint, family, tie):
    path, reference = hf_checkpoint(family, tie)
    model = models.load(path)
    assert model.config.family == family
    assert model.config.tie_embeddings == tie
    assert ("lm_head" in model.params) == (not tie)
    tokens, valid = padded_batch()
    expected = torch_logits(reference, tokens, valid)
    # Guard against a vacuous comparison: the logits must actually spread out.
    assert expected[valid].std() > 0.5
    assert max_diff_on_valid(models.logits(model, tokens, valid), expected, valid) <= TOL


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-qwen2", "tiny-qwen3"])
def test_saved_model_loads_in_transformers_with_same_logits(tmp_path, preset):
    model = random_model(models.get_preset(preset), seed=1)
    models.save(model, str(tmp_path))
    reference = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    assert type(reference).__name__.lower().startswith(model.config.family)
    tokens, valid = padded_batch()
    ours = np.asarray(models.logits(model, tokens, valid))
    assert ours[valid].std() > 0.5
    assert max_diff_on_valid(ours, torch_logits(reference, tokens, valid), valid) <= TOL

