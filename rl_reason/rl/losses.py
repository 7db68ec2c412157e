"""Policy-gradient loss over a training batch (GRPO/DAPO/Dr.GRPO, off-policy shaping, R3L).

Legend: B sequences, T tokens (prompt + response in one row). Every per-token array
is aligned with the tokens: logp_BT[b, t] = log p(tokens[b, t] | tokens[b, :t]).

Per trained token (loss_mask_BT > 0) the policy term is

    on-policy,  'ppo_clip':  max(-A*rho, -A*clip(rho, 1-clip_low, 1+clip_high))
                             rho = exp(logp - old_logp); dual clip caps it at -A*c for A<0
    on-policy,  'reinforce': -A*logp                        (R3L; no ratio)
    off-policy (either):     -A * f(w), w = exp(logp - behaviour_logp), never clipped
                             f(w) = w/(w+gamma)  off_policy_weight='shaped' (docs/methods.md,
                                                 "Off-policy tokens")
                             f(w) = w            'ratio' (plain importance sampling)
                             -A * logp           'none' (no importance correction)

and the scalar loss is

    pg_scale * agg(policy term) + kl_coef * agg(kl) - entropy_coef * agg(entropy)

with one aggregation `agg` for all three (as verl does). loss_mask_BT may hold
fractional weights; aggregations are then weighted means. The switches live in a
frozen, hashable LossConfig, so the config can be closed over or passed as a static
argument of jit.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

# exp() of a log-ratio beyond this overflows float32 gradients in practice; verl clamps
# at the same value.
_MAX_LOG_RATIO = 20.0


def _token_mean(x_BT, mask_BT, constant_norm):
    return jnp.sum(x_BT * mask_BT) / jnp.maximum(jnp.sum(mask_BT), 1.0)


def _seq_mean_token_mean(x_BT, mask_BT, constant_norm):
    # Sequences with no trained token are left out of the outer mean.
    tokens_B = jnp.sum(mask_BT, axis=-1)
    seq_mean_B = jnp.sum(x_BT * mask_BT, axis=-1) / jnp.maximum(tokens_B, 1.0)
    has_tokens_B = (tokens_B > 0).astype(x_BT.dtype)
    return jnp.sum(seq_mean_B * has_tokens_B) / jnp.maximum(jnp.sum(has_tokens_B), 1.0)


def _constant(x_BT, mask_BT, constant_norm):
    # Dr.GRPO: each sequence's token sum over a fixed length, averaged over sequences, so
    # a token's weight does not depend on its response's length. Rows without a trained
    # token (shape-bucket padding) are not sequences and are not counted.
    num_seqs = jnp.sum(jnp.any(mask_BT > 0, axis=-1))
    return jnp.sum(x_BT * mask_BT) / (jnp.maximum(num_seqs, 1) * constant_norm)


AGGREGATIONS: dict[str, Callable] = {
    "token-mean": _token_mean,
    "seq-mean-token-mean": _seq_mean_token_mean,
    "constant": _constant,
}


def aggregate(x_BT, mask_BT, aggregation: str = "token-mean",
              constant_norm: float | None = None) -> jax.Array:
    """Reduce per-token values to a scalar; an all-zero mask gives 0."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; known: {sorted(AGGREGATIONS)}")
    if aggregation == "constant" and not (constant_norm and constant_norm > 0):
        raise ValueError("aggregation='constant' needs constant_norm > 0 (the max response length)")
    mask_BT = jnp.asarray(mask_BT, jnp.float32)
    x_BT = jnp.where(mask_BT > 0, x_BT, 0.0)  # where, so inf/NaN on untrained tokens cannot leak
    return AGGREGATIONS[aggregation](x_BT, mask_BT, constant_norm)


def aggregation_count(mask_BT, aggregation: str = "token-mean") -> jax.Array:
    """The count `aggregate` divides by, as it guards it (at least 1): trained-token
    weight for 'token-mean', sequences with a trained token otherwise.

    Every aggregation is a sum over rows divided by this count (times a constant), so
    a batch cut into parts has aggregate = sum over parts of part_aggregate *
    part_count / whole_count: what gradient accumulation over micro-batches uses.
    """
    mask_BT = jnp.asarray(mask_BT, jnp.float32)
    if aggregation == "token-mean":
        return jnp.maximum(jnp.sum(mask_BT), 1.0)
    return jnp.maximum(jnp.sum(jnp.any(mask_BT > 0, axis=-1)).astype(jnp.float32), 1.0)


def _kl_k1(logp_BT, ref_logp_BT):
    return logp_BT - ref_logp_BT


def _kl_k2(logp_BT, ref_logp_BT):
    return 0.5 * jnp.square(logp_BT - ref_logp_BT)


def _kl_k3(logp_BT, ref_logp_BT):
    log_ratio = jnp.clip(ref_logp_BT - logp_BT, -_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    return jnp.exp(log_ratio) - log_ratio - 1.0


KL_ESTIMATORS: dict[str, Callable] = {"k1": _kl_k1, "k2": _kl_k2, "k3": _kl_k3}


def kl_penalty(logp_BT, ref_logp_BT, estimator: str = "k3") -> jax.Array:
    """Per-token estimate of KL(pi_theta || pi_ref) from sampled-token log-probs."""
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown kl_estimator {estimator!r}; known: {sorted(KL_ESTIMATORS)}")
    return KL_ESTIMATORS[estimator](logp_BT, jax.lax.stop_gradient(ref_logp_BT))


LOSS_TYPES = ("ppo_clip", "reinforce")
OFF_POLICY_WEIGHTS = ("shaped", "ratio", "none")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Every switch of policy_loss; validated on construction.

    loss_type: 'ppo_clip' (GRPO/DAPO) or 'reinforce' (R3L: -A*logp, no ratio).
    clip_low, clip_high: PPO ratio clip range [1-clip_low, 1+clip_high]; DAPO's
        clip-higher is clip_high=0.28.
    clip_on_policy: False drops the clip on on-policy tokens (LUFFY/ExGRPO once
        mixing is on).
    dual_clip: c > 1 caps the loss of negative-advantage tokens at -A*c (None: off).
    shaping_gamma: gamma of the off-policy shaping f(w) = w/(w+gamma).
    off_policy_weight: how off-policy tokens are weighted: 'shaped' (f(w) above),
        'ratio' (the raw importance ratio w) or 'none' (-A*logp, no correction).
    aggregation: 'token-mean', 'seq-mean-token-mean' or 'constant' (Dr.GRPO: token
        sum / constant_norm per sequence, mean over sequences). All three leave rows
        without a trained token out of any count.
    constant_norm: the max response length; required by aggregation='constant'.
    kl_coef, kl_estimator: KL-to-reference term ('k1', 'k2', 'k3').
    entropy_coef: entropy bonus (subtracted from the loss).
    pg_scale: multiplies the policy term only (R3L's 1/(1+tau)).
    """

    loss_type: str = "ppo_clip"
    clip_low: float = 0.2
    clip_high: float = 0.2
    clip_on_policy: bool = True
    dual_clip: float | None = None
    shaping_gamma: float = 0.1
    off_policy_weight: str = "shaped"
    aggregation: str = "token-mean"
    constant_norm: float | None = None
    kl_coef: float = 0.0
    kl_estimator: str = "k3"
    entropy_coef: float = 0.0
    pg_scale: float = 1.0

    def __post_init__(self):
        def fail(message):
            raise ValueError(f"LossConfig: {message}")

        if self.loss_type not in LOSS_TYPES:
            fail(f"loss_type={self.loss_type!r}; known: {LOSS_TYPES}")
        if self.off_policy_weight not in OFF_POLICY_WEIGHTS:
            fail(f"off_policy_weight={self.off_policy_weight!r}; known: {OFF_POLICY_WEIGHTS}")
        if self.aggregation not in AGGREGATIONS:
            fail(f"aggregation={self.aggregation!r}; known: {sorted(AGGREGATIONS)}")
        if self.kl_estimator not in KL_ESTIMATORS:
            fail(f"kl_estimator={self.kl_estimator!r}; known: {sorted(KL_ESTIMATORS)}")
        if not 0.0 <= self.clip_low < 1.0:
            fail(f"clip_low={self.clip_low} must be in [0, 1)")
        if self.clip_high < 0.0:
            fail(f"clip_high={self.clip_high} must be >= 0")
        if self.dual_clip is not None and self.dual_clip <= 1.0:
            fail(f"dual_clip={self.dual_clip} must be > 1 (or None to disable)")
        if self.shaping_gamma <= 0.0:
            fail(f"shaping_gamma={self.shaping_gamma} must be > 0")
        if self.aggregation == "constant":
            if self.constant_norm is None or self.constant_norm <= 0:
                fail("aggregation='constant' needs constant_norm > 0 (the max response length)")
        elif self.constant_norm is not None:
            fail(f"constant_norm is only used by aggregation='constant', not {self.aggregation!r}")
        if self.kl_coef < 0.0:
            fail(f"kl_coef={self.kl_coef} must be >= 0")
        if self.entropy_coef < 0.0:
            fail(f"entropy_coef={self.entropy_coef} must be >= 0 (it is a bonus)")
        if self.pg_scale <= 0.0:
            fail(f"pg_scale={self.pg_scale} must be > 0")


def _on_policy_ppo(adv_BT, log_ratio_BT, config: LossConfig):
    """Per-token clipped loss, whether the clip was active, whether the dual clip was."""
    ratio_BT = jnp.exp(log_ratio_BT)
    unclipped_BT = -adv_BT * ratio_BT
    if not config.clip_on_policy:
        no_BT = jnp.zeros(ratio_BT.shape, bool)
        return unclipped_BT, ratio_BT, no_BT, no_BT
    clipped_BT = -adv_BT * jnp.clip(ratio_BT, 1.0 - config.clip_low, 1.0 + config.clip_high)
    # Strictly greater: at a tie (rho exactly on the boundary) the unclipped branch
    # keeps the full gradient instead of the half that jnp.maximum would give.
    clip_active_BT = clipped_BT > unclipped_BT
    loss_BT = jnp.where(clip_active_BT, clipped_BT, unclipped_BT)
    dual_active_BT = jnp.zeros(ratio_BT.shape, bool)
    if config.dual_clip is not None:
        cap_BT = -adv_BT * config.dual_clip
        dual_active_BT = (adv_BT < 0) & (loss_BT > cap_BT)
        loss_BT = jnp.where(dual_active_BT, cap_BT, loss_BT)
    return loss_BT, ratio_BT, clip_active_BT, dual_active_BT


def policy_loss(logp_BT, old_logp_BT, advantages, loss_mask_BT,
                config: LossConfig = LossConfig(), *, off_policy_BT=None,
                behaviour_logp_BT=None, ref_logp_BT=None, entropy_BT=None):
    """Scalar loss and a metrics dict (see the module docstring for the formula).

    logp_BT: current policy log-probs (differentiated).
    old_logp_BT: rollout policy log-probs (rho's denominator); None allowed for
        loss_type='reinforce'.
    advantages: [B] (one per sequence, broadcast over its tokens) or [B, T].
    loss_mask_BT: 1 (or a weight) on trained tokens, 0 elsewhere.
    off_policy_BT, behaviour_logp_BT: both or neither; flagged tokens use the shaping
        with w = exp(logp - behaviour_logp). For LUFFY's w = p_theta pass zeros.
    ref_logp_BT: reference log-probs; needed when kl_coef > 0, else only a metric.
    entropy_BT: per-token entropy (differentiable); needed when entropy_coef > 0.

    Metrics (all under stop_gradient): loss, pg_loss (before pg_scale), kl, entropy,
    clip_fraction and dual_clip_fraction (of on-policy trained tokens),
    off_policy_fraction (of trained tokens), ratio_mean (on-policy),
    shaping_weight_mean (f(w) on off-policy tokens), off_policy_w_mean and
    off_policy_w_std (the importance ratio w on off-policy tokens), num_tokens.
    """
    c = config
    logp_BT = jnp.asarray(logp_BT, jnp.float32)
    B, T = logp_BT.shape
    mask_BT = jnp.asarray(loss_mask_BT, jnp.float32)
    adv = jax.lax.stop_gradient(jnp.asarray(advantages, jnp.float32))
    if adv.shape == (B,):
        adv = adv[:, None]
    elif adv.shape != (B, T):
        raise ValueError(f"advantages must be [B]={(B,)} or [B, T]={(B, T)}, got {adv.shape}")
    adv_BT = jnp.broadcast_to(adv, (B, T))
    if (off_policy_BT is None) != (behaviour_logp_BT is None):
        raise ValueError("off_policy_BT and behaviour_logp_BT come together: pass both or neither")
    if c.loss_type == "ppo_clip" and old_logp_BT is None:
        raise ValueError("loss_type='ppo_clip' needs old_logp_BT")
    if c.kl_coef > 0 and ref_logp_BT is None:
        raise ValueError(f"kl_coef={c.kl_coef} > 0 needs ref_logp_BT")
    if c.entropy_coef > 0 and entropy_BT is None:
        raise ValueError(f"entropy_coef={c.entropy_coef} > 0 needs entropy_BT")

    if off_policy_BT is None:
        off_BT = jnp.zeros((B, T), bool)
    else:
        off_BT = jnp.asarray(off_policy_BT).astype(bool)
    on_mask_BT = jnp.where(off_BT, 0.0, mask_BT)
    off_mask_BT = jnp.where(off_BT, mask_BT, 0.0)

    zeros_BT = jnp.zeros((B, T), jnp.float32)
    log_ratio_BT = zeros_BT
    if old_logp_BT is not None:
        old_BT = jax.lax.stop_gradient(jnp.asarray(old_logp_BT, jnp.float32))
        # Masked before exp so tokens that are not on-policy trained (pads, off-policy
        # tokens with a meaningless old_logp) cannot produce inf/NaN gradients.
        log_ratio_BT = jnp.where(on_mask_BT > 0, logp_BT - old_BT, 0.0)
        log_ratio_BT = jnp.clip(log_ratio_BT, -_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    if c.loss_type == "ppo_clip":
        on_loss_BT, ratio_BT, clip_BT, dual_BT = _on_policy_ppo(adv_BT, log_ratio_BT, c)
    else:
        on_loss_BT = -adv_BT * logp_BT
        ratio_BT = jnp.exp(log_ratio_BT)  # reported only: R3L's loss has no ratio
        clip_BT = dual_BT = jnp.zeros((B, T), bool)

    if off_policy_BT is None:
        shaped_BT = w_BT = zeros_BT
        off_loss_BT = zeros_BT
    else:
        behaviour_BT = jax.lax.stop_gradient(jnp.asarray(behaviour_logp_BT, jnp.float32))
        log_w_BT = jnp.where(off_mask_BT > 0, logp_BT - behaviour_BT, 0.0)
        w_BT = jnp.exp(jnp.clip(log_w_BT, -_MAX_LOG_RATIO, _MAX_LOG_RATIO))
        if c.off_policy_weight == "shaped":
            shaped_BT = w_BT / (w_BT + c.shaping_gamma)
        elif c.off_policy_weight == "ratio":
            shaped_BT = w_BT
        else:
            # The value is 1 (w^0); the gradient is that of log p, as in -A*logp.
            shaped_BT = jnp.exp(logp_BT - jax.lax.stop_gradient(logp_BT))
        off_loss_BT = -adv_BT * shaped_BT
    pg_loss_BT = jnp.where(off_BT, off_loss_BT, on_loss_BT)

    def agg(x_BT):
        return aggregate(x_BT, mask_BT, c.aggregation, c.constant_norm)

    pg_loss = agg(pg_loss_BT)
    loss = c.pg_scale * pg_loss
    kl = jnp.zeros((), jnp.float32)
    if ref_logp_BT is not None:
        kl = agg(kl_penalty(logp_BT, jnp.asarray(ref_logp_BT, jnp.float32), c.kl_estimator))
        if c.kl_coef > 0:
            loss = loss + c.kl_coef * kl
    entropy = jnp.zeros((), jnp.float32)
    if entropy_BT is not None:
        entropy = agg(jnp.asarray(entropy_BT, jnp.float32))
        if c.entropy_coef > 0:
            loss = loss - c.entropy_coef * entropy

    def mean_over(x_BT, weights_BT):
        return aggregate(x_BT.astype(jnp.float32), weights_BT)

    w_mean = mean_over(w_BT, off_mask_BT)

    metrics = {
        "loss": loss,
        "pg_loss": pg_loss,
        "kl": kl,
        "entropy": entropy,
        "clip_fraction": mean_over(clip_BT, on_mask_BT),
        "dual_clip_fraction": mean_over(dual_BT, on_mask_BT),
        "off_policy_fraction": mean_over(off_BT, mask_BT),
        "ratio_mean": mean_over(ratio_BT, on_mask_BT),
        "shaping_weight_mean": mean_over(shaped_BT, off_mask_BT),
        "off_policy_w_mean": w_mean,
        "off_policy_w_std": jnp.sqrt(jnp.maximum(mean_over(w_BT * w_BT, off_mask_BT)
                                                 - w_mean * w_mean, 0.0)),
        "num_tokens": jnp.sum(mask_BT),
    }
    return loss, jax.lax.stop_gradient(metrics)
