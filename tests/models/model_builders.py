"""Builders shared by the model tests: random transformers checkpoints and batches.

Weights are drawn large (std 0.15, norms 1 +- 0.15) so logits vary a lot between
tokens and a wrong transpose, head split or RoPE detail shows up as a large diff.
"""

import jax
import jax.numpy as jnp
import numpy as np
import transformers

from rl_reason.models import transformer
from rl_reason.models.config import ModelConfig
from rl_reason.models.model import Model

WEIGHT_STD = 0.15

# The same sizes as the tiny presets, written with transformers' own config classes
# so these tests do not depend on hf_config's writer.
# Identical values make a loaded checkpoint's config equal the preset, so jit reuses one
# compiled forward per family across tests.
_COMMON = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, head_dim=16,
               max_position_embeddings=512, bos_token_id=None, eos_token_id=None)
_FAMILIES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, dict(
        rms_norm_eps=1e-5, rope_theta=500000.0,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                          high_freq_factor=4.0, original_max_position_embeddings=64))),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, dict(
        rms_norm_eps=1e-6, rope_theta=10000.0)),
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM, dict(
        rms_norm_eps=1e-6, rope_theta=1000000.0)),
}
PRESET_TIE = {"llama": False, "qwen2": True, "qwen3": True}


def hf_model(family: str, tie: bool, seed: int = 0):
    """A random transformers model with the sizes of the tiny-<family> preset."""
    import torch   # here, not at the top: the tests that never call this run without it

    config_cls, model_cls, extra = _FAMILIES[family]
    config = config_cls(**_COMMON, **extra, tie_word_embeddings=tie)
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + WEIGHT_STD * torch.randn_like(p))
            else:
                p.normal_(0.0, WEIGHT_STD)
    return model


def random_model(config: ModelConfig, seed: int = 0) -> Model:
    """A model with large random weights (init's std 0.02 gives near-flat logits).

    Drawn with numpy from the parameter shapes, so no per-shape XLA compiles are paid.
    """
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: transformer.init_params(config, jax.random.PRNGKey(0)))

    def draw(path, leaf):
        base = 1.0 if "norm" in str(path[-1]) else 0.0
        values = base + WEIGHT_STD * rng.standard_normal(leaf.shape, dtype=np.float32)
        return jnp.asarray(values.astype(leaf.dtype))

    return Model(jax.tree_util.tree_map_with_path(draw, shapes), config)


def padded_batch(vocab: int = 128, seed: int = 0):
    """tokens [3, 24] and valid [3, 24]: full, left-padded, right-padded rows."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, (3, 24))
    valid = np.ones((3, 24), bool)
    valid[1, :7] = False
    valid[2, 18:] = False
    tokens[~valid] = 0
    return tokens, valid


def torch_logits(model, tokens, valid) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.tensor(tokens),
                    attention_mask=torch.tensor(valid.astype(np.int64)))
    return out.logits.float().numpy()


def max_diff_on_valid(a, b, valid) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))[valid].max())
