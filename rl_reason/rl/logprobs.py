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
    h_BTD, targets_BT = h_BTD[:, :-1], tokens_BT[:, 1:]
    predicted = T - 1
    if chunk_size is None or chunk_size >= predicted:
        logp_BT, entropy_BT = _chunk_logp(model_params, config, h_BTD, targets_BT, temperature,
                                          with_entropy)
    else:
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
            lambda xs: chunk(model_params, config, xs[0], xs[1], temperature, with_entropy),
            (h_UBCD, targets_UBC))

        def unchunk(x_UBC):
            return x_UBC.transpose(1, 0, 2).reshape(B, U * C)[:, :predicted]

        logp_BT = unchunk(logp_UBC)
        entropy_BT = None if entropy_UBC is None else unchunk(entropy_UBC)

    has_prediction_BT = valid_BT[:, 1:] & valid_BT[:, :-1]

    def align(x_BT):
        # Back to token alignment: a zero column for position 0, zeros where no prediction.
        x_BT = jnp.where(has_prediction_BT, x_BT, 0.0)
        return jnp.concatenate([jnp.zeros((B, 1), jnp.float32), x_BT], axis=1)

    if not with_entropy:
        return align(logp_BT)
    return align(logp_BT), align(entropy_BT)
