"""A test model for the sampler tests (tests/test_sampling.py,
tests/test_continuous_batching.py)."""

import jax
import jax.numpy as jnp
import numpy as np

from rl_reason import models
from rl_reason.models import transformer


def random_model() -> models.Model:
    """tiny-qwen3 with large random weights (numpy, no per-shape threefry compiles):
    init's std 0.02 gives near-flat logits, where argmax ties would make comparisons
    of tokens meaningless."""
    config = models.get_preset("tiny-qwen3")
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(lambda: transformer.init_params(config, jax.random.PRNGKey(0)))

    def draw(path, leaf):
        base = 1.0 if "norm" in jax.tree_util.keystr(path) else 0.0
        return jnp.asarray(base + 0.15 * rng.standard_normal(leaf.shape), leaf.dtype)

    return models.Model(jax.tree_util.tree_map_with_path(draw, shapes), config)
