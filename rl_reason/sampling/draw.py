"""Drawing one token per row from its logits: temperature, top-k, top-p, greedy, and
each row's own random key.

A row's key at its step s is fold_in(fold_in(rng, s), row), with row its index in the
call: what a row draws depends on nothing but the call's rng, its index and its own
step, so neither padding, batch size, sharding nor the slot and step a continuous
batch runs it at change its tokens.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Settings:
    """Runtime sampling settings (traced: changing them does not recompile)."""

    temperature: jax.Array  # [] float32
    top_p: jax.Array        # [] float32
    top_k: jax.Array        # [] int32; 0 = off
    stop_ids: jax.Array     # [n] int32, padded with -1
    pad_id: jax.Array       # [] int32


def filter_logits(logits_BV, settings: Settings):
    """Logits with everything outside top-k, then top-p, set to -inf (one sort)."""
    V = logits_BV.shape[-1]
    sorted_BV = -jnp.sort(-logits_BV, axis=-1)  # descending
    rank_V = jnp.arange(V)
    k = jnp.where(settings.top_k > 0, jnp.minimum(settings.top_k, V), V)
    in_top_k_BV = rank_V < k
    probs_BV = jax.nn.softmax(jnp.where(in_top_k_BV, sorted_BV, -jnp.inf), axis=-1)
    # Keep a token while the mass strictly before it is < top_p: the smallest prefix
    # whose mass reaches top_p. Rank 0 always passes (0 < top_p).
    mass_before_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV
    keep_BV = in_top_k_BV & (mass_before_BV < settings.top_p)
    num_keep_B = jnp.maximum(jnp.sum(keep_BV, axis=-1), 1)
    threshold_B = jnp.take_along_axis(sorted_BV, num_keep_B[:, None] - 1, axis=-1)
    return jnp.where(logits_BV >= threshold_B, logits_BV, -jnp.inf)


def row_keys(rng, step_B, row_B):
    """Each row's key for the token it draws at its own step (module docstring)."""
    return jax.vmap(lambda s, r: jax.random.fold_in(jax.random.fold_in(rng, s), r))(
        step_B, row_B)


def sample(logits_BV, rng, step_B, row_B, settings: Settings, greedy: bool, filtered: bool):
    """(token_B, logprob_B, policy_logprob_B): row b's token number step_B[b], drawn
    with its own key, and its log-probs under the sampling distribution and under the
    unfiltered one (the same array unless filtered)."""
    def logprob_of(logits_BV, token_B):
        logprobs_BV = jax.nn.log_softmax(logits_BV, axis=-1)
        return jnp.take_along_axis(logprobs_BV, token_B[:, None], axis=-1)[:, 0]

    if greedy:
        token_B = jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
        logprob_B = logprob_of(logits_BV, token_B)
        return token_B, logprob_B, logprob_B
    policy_BV = logits_BV / settings.temperature
    sampled_BV = filter_logits(policy_BV, settings) if filtered else policy_BV
    V = logits_BV.shape[-1]
    keys_B = row_keys(rng, step_B, row_B)
    gumbel_BV = jax.vmap(lambda k: jax.random.gumbel(k, (V,), jnp.float32))(keys_B)
    token_B = jnp.argmax(sampled_BV + gumbel_BV, axis=-1).astype(jnp.int32)
    logprob_B = logprob_of(sampled_BV, token_B)
    return token_B, logprob_B, logprob_of(policy_BV, token_B) if filtered else logprob_B


def is_stop(token_B, settings: Settings):
    return jnp.any(token_B[:, None] == settings.stop_ids[None, :], axis=-1)
