"""The base policies shipped with the package load, say which world and dial setting
they are, and are what a run of that world starts from without a build."""

import json
import os

import numpy as np
import pytest

from rl_reason import models, pretrain
from rl_reason.data import templates, worlds

SHIPPED = sorted(os.listdir(pretrain.SHIPPED_DIR)) if os.path.isdir(pretrain.SHIPPED_DIR) else []


def test_the_default_worlds_default_policy_ships():
    s = pretrain.world_settings(worlds.DEFAULT)
    assert pretrain.folder_name(s) in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_policy_loads_and_matches_its_name(name, monkeypatch):
    path = os.path.join(pretrain.SHIPPED_DIR, name)
    assert pretrain.is_complete(path)
    world = pretrain.read_world(path)
    s = pretrain.world_settings(world["world"], world["skill"])
    assert pretrain.folder_name(s) == name and world["version"] == worlds.get(world["world"]).version
    with open(os.path.join(path, pretrain.STATS_FILE)) as f:
        stats = json.load(f)
    assert (stats["world"], stats["skill"]) == (world["world"], world["skill"])
    # The build settings it records are today's for its world and dial setting.
    assert stats["settings"] == json.loads(json.dumps(pretrain.dataclasses.asdict(s)))
    model, tok = models.load(path), models.load_tokenizer(path)
    prompt = templates.encode_prompt(tok, templates.plain_prompt("What is 7+5*3-4?"))
    logits = np.asarray(models.logits(model, np.array([prompt])))
    assert logits.shape == (1, len(prompt), len(tok)) and np.isfinite(logits).all()
    # A run of that world and setting starts from it, with no build.
    monkeypatch.setattr(pretrain, "build_base_policy",
                        lambda *a, **k: pytest.fail("built a shipped base policy"))
    assert pretrain.ensure_base_policy(world["world"], world["skill"]) == path
