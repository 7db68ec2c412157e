"""Per-token log-probs (and entropies) of a batch under the policy, for the loss.

Shape letters as in rl_reason/__init__.py (C chunk length, U chunks).

Outputs are aligned with the tokens: logp_BT[b, t] = log p(tokens[b, t] | tokens[b, :t])
and entropy_BT[b, t] is the entropy of that same predictive distribution. Position 0,
padding, and the first real token after left padding have no prediction and hold 0.

Logits are divided by the temperature before the log-softmax, so the log-probs are
those of the distribution the sampler drew from at that temperature (verl does the
same). The log-softmax runs in float32.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rl_reason.models import transformer
from rl_reason.models.config import ModelConfig


def _chunk_logp(params, config: ModelConfig, h_BCD, targets_BC, temperature, with_entropy):
    logits_BCV = transformer.unembed(params, config, h_BCD) / temperature
    log_probs_BCV = jax.nn.log_softmax(logits_BCV.astype(jnp.float32), axis=-1)
    logp_BC = jnp.take_along_axis(log_probs_BCV, targets_BC[..., None], axis=-1)[..., 0]
    if not with_entropy:
        return logp_BC, None
    entropy_BC = -jnp.sum(jnp.exp(log_probs_BCV) * log_probs_BCV, axis=-1)
    return logp_BC, entropy_BC


def _predicted_logp(params, config: ModelConfig, h_BTD, targets_BT, temperature,
                    chunk_size, with_entropy):
    """log p of targets_BT[b, t] under the prediction of h_BTD[b, t] (and entropies),
    chunk_size positions at a time (see token_logprobs)."""
    B, predicted = targets_BT.shape
    if chunk_size is None or chunk_size >= predicted:
        return _chunk_logp(params, config, h_BTD, targets_BT, temperature, with_entropy)
    C = chunk_size
    U = -(-predicted // C)
    pad = U * C - predicted
    h_UBCD = jnp.pad(h_BTD, ((0, 0), (0, pad), (0, 0)))
    h_UBCD = h_UBCD.reshape(B, U, C, -1).transpose(1, 0, 2, 3)
    targets_UBC = jnp.pad(targets_BT, ((0, 0), (0, pad))).reshape(B, U, C).transpose(1, 0, 2)

    # Checkpointed so the scan keeps only each chunk's hidden states for the
    # backward pass, not its [B, C, V] log-softmax.
    chunk = jax.checkpoint(_chunk_logp, static_argnums=(1, 5))
    logp_UBC, entropy_UBC = jax.lax.map(
        lambda xs: chunk(params, config, xs[0], xs[1], temperature, with_entropy),
        (h_UBCD, targets_UBC))

    def unchunk(x_UBC):
        return x_UBC.transpose(1, 0, 2).reshape(B, U * C)[:, :predicted]

    return unchunk(logp_UBC), None if entropy_UBC is None else unchunk(entropy_UBC)


@functools.partial(jax.jit, static_argnames=("config", "chunk_size", "with_entropy", "remat"))
def token_logprobs(model_params, config: ModelConfig, tokens_BT, valid_BT, temperature=1.0,
                   chunk_size: int | None = None, with_entropy: bool = False,
                   remat: bool = False):
    """logp_BT (float32), or (logp_BT, entropy_BT) when with_entropy.

    chunk_size: project to the vocabulary and log-softmax C positions at a time, so
    the [B, T, V] logits never exist at once, in the forward or the backward pass
    (each chunk is rematerialised for its gradient). None: all positions at once.
    remat: rematerialise each transformer layer in the backward pass.
    """
    tokens_BT = jnp.asarray(tokens_BT, jnp.int32)
    valid_BT = jnp.asarray(valid_BT).astype(bool)
    B, T = tokens_BT.shape
    if chunk_size is not None and chunk_size <= 0:
        raise ValueError(f"chunk_size={chunk_size} must be positive (or None)")
    positions_BT, mask_BTS = transformer.padded_positions_and_mask(valid_BT)
    h_BTD, _ = transformer.hidden_states(model_params, config, tokens_BT, positions_BT,
                                         mask_BTS, remat=remat)
    # Position t-1 predicts token t: drop the last hidden state and the first token.
    logp_BT, entropy_BT = _predicted_logp(model_params, config, h_BTD[:, :-1],
                                          tokens_BT[:, 1:], temperature, chunk_size,
                                          with_entropy)

    has_prediction_BT = valid_BT[:, 1:] & valid_BT[:, :-1]

    def align(x_BT):
        # Back to token alignment: a zero column for position 0, zeros where no prediction.
        x_BT = jnp.where(has_prediction_BT, x_BT, 0.0)
        return jnp.concatenate([jnp.zeros((B, 1), jnp.float32), x_BT], axis=1)

    if not with_entropy:
        return align(logp_BT)
    return align(logp_BT), align(entropy_BT)


@functools.partial(jax.jit, static_argnames=("config", "chunk_size", "with_entropy", "remat",
                                             "blocks"))
def shared_prefix_logprobs(model_params, config: ModelConfig, batch, temperature=1.0,
                           chunk_size: int | None = None, with_entropy: bool = False,
                           remat: bool = False, blocks: int = 1):
    """token_logprobs for a shared-prefix batch (rl/batch.py `collate_shared`):
    logp_NT (and entropy_NT) aligned with the suffix tokens batch["tokens"], every real
    suffix token predicted (its first by its prefix's last token); 0 on padding. The
    prefix's own tokens get no log-probs (their rows train none of them)."""
    if chunk_size is not None and chunk_size <= 0:
        raise ValueError(f"chunk_size={chunk_size} must be positive (or None)")
    tokens_NT = jnp.asarray(batch["tokens"], jnp.int32)
    valid_NT = jnp.asarray(batch["valid"]).astype(bool)
    prefix_valid_PT = jnp.asarray(batch["prefix_valid"]).astype(bool)
    index_N = jnp.asarray(batch["prefix_index"], jnp.int32)
    prefix_h, h = transformer.shared_prefix_hidden_states(
        model_params, config, jnp.asarray(batch["prefix_tokens"], jnp.int32), prefix_valid_PT,
        tokens_NT, valid_NT, index_N, blocks=blocks, remat=remat)
    h_pred = transformer.shared_prefix_predicting_states(prefix_h, prefix_valid_PT, h, index_N,
                                                         blocks=blocks)
    logp_NT, entropy_NT = _predicted_logp(model_params, config, h_pred, tokens_NT,
                                          temperature, chunk_size, with_entropy)
    logp_NT = jnp.where(valid_NT, logp_NT, 0.0)
    if not with_entropy:
        return logp_NT
    return logp_NT, jnp.where(valid_NT, entropy_NT, 0.0)
