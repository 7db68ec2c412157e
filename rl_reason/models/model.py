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


def logits(model: Model, tokens_BT, valid_BT=None) -> jax.Array:
    """Float32 logits [B, T, V] for a (possibly padded) batch of token ids.

    valid_BT marks real tokens (left or right padding); default: all real.
    Raises ValueError for a batch that is not [B, T] or longer than the model's
    max_position_embeddings (shapes are static, so this also works under jit).
    """
    shape = jnp.shape(tokens_BT)
    if len(shape) != 2:
        raise ValueError(f"model.logits: tokens_BT must be [batch, length], got shape {shape}")
    if shape[1] > model.config.max_position_embeddings:
        raise ValueError(f"model.logits: sequence length {shape[1]} exceeds the model's "
                         f"max_position_embeddings={model.config.max_position_embeddings}")
    return _logits(model, tokens_BT, valid_BT)


@jax.jit
def _logits(model: Model, tokens_BT, valid_BT=None) -> jax.Array:
    tokens_BT = jnp.asarray(tokens_BT, jnp.int32)
    if valid_BT is None:
        valid_BT = jnp.ones(tokens_BT.shape, bool)
    positions, mask = transformer.padded_positions_and_mask(jnp.asarray(valid_BT))
    out, _ = transformer.forward(model.params, model.config, tokens_BT, positions, mask)
    return out
