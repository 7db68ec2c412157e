"""`Model`: an architecture config plus its parameter tree, usable inside jit."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rl_reason.models import transformer
from rl_reason.models.config import ModelConfig


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Model:
    """The config is static (hashable); the parameters are the pytree leaves."""

    params: dict
    config: ModelConfig = dataclasses.field(metadata=dict(static=True))

    def replace(self, **changes) -> "Model":
        return dataclasses.replace(self, **changes)


def init(config: ModelConfig, seed: int = 0) -> Model:
    """A randomly initialised model (for tests and benchmarks)."""
    return Model(transformer.init_params(config, jax.random.PRNGKey(seed)), config)


@jax.jit
def logits(model: Model, tokens_BT, valid_BT=None) -> jax.Array:
    """Float32 logits [B, T, V] for a (possibly padded) batch of token ids.

    valid_BT marks real tokens (left or right padding); default: all real.
    """
    tokens_BT = jnp.asarray(tokens_BT, jnp.int32)
    if valid_BT is None:
        valid_BT = jnp.ones(tokens_BT.shape, bool)
    positions, mask = transformer.padded_positions_and_mask(jnp.asarray(valid_BT))
    out, _ = transformer.forward(model.params, model.config, tokens_BT, positions, mask)
    return out
