"""Group advantage estimators, DAPO overlong shaping and group statistics.

Legend: P prompts, G responses per prompt, N members of a flat batch, S group slots.

Who shares a group is said in one of two ways:

- rewards [P, G]: row p is the group of prompt p (the plain GRPO batch);
- rewards of any shape plus group_ids of the same shape: members in any order and
  groups of any size (ExGRPO / LTE put extra members into a group, R3L adds
  single-member experiences). Ids must lie in [0, num_groups); num_groups defaults
  to the number of members, which is enough for ids 0..N-1.

`valid` (same shape, bool) drops members from the statistics, e.g. groups removed
by dynamic sampling or padding rows; dropped members get advantage 0. Everything
is computed with segment sums over a static number of groups, so it is jittable.

Conventions shared by every estimator (decided here, tested in tests/rl):
- std is the unbiased sample std (ddof=1), as torch.std in verl and TRL, which the
  reference implementations of the methods use.
- A group with a single valid member has baseline 0 and scale 1 (A = r for GRPO and
  RLOO): verl's convention, and R3L's rule "b = 0 for single-member groups".
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def _check_group_ids(group_ids, num_groups: int):
    # Under jit the gather below turns an out-of-range id into NaN advantages (loud);
    # eagerly we can say what is wrong.
    if isinstance(group_ids, jax.core.Tracer) or group_ids.size == 0:
        return
    ids = np.asarray(group_ids)
    if ids.min() < 0 or ids.max() >= num_groups:
        raise ValueError(f"group ids must lie in [0, num_groups={num_groups}); got ids in "
                         f"[{ids.min()}, {ids.max()}]. Pass num_groups or renumber the groups.")


def _flat_groups(values, group_ids, valid, num_groups):
    """Flattened values_N, group_ids_N, valid_N, the static group count and the shape."""
    values = jnp.asarray(values)
    shape = values.shape
    if group_ids is None:
        if values.ndim != 2:
            raise ValueError(f"rewards must be [P, G] when group_ids is not given; "
                             f"got shape {shape}")
        P, G = shape
        if num_groups not in (None, P):
            raise ValueError(f"num_groups={num_groups} but rewards {shape} has {P} groups (rows)")
        group_ids = jnp.repeat(jnp.arange(P, dtype=jnp.int32), G)
        num_groups = P
    else:
        group_ids = jnp.asarray(group_ids)
        if group_ids.shape != shape:
            raise ValueError(f"group_ids shape {group_ids.shape} != rewards shape {shape}")
        if not jnp.issubdtype(group_ids.dtype, jnp.integer):
            raise ValueError(f"group_ids must be integers, got {group_ids.dtype}")
        num_groups = values.size if num_groups is None else int(num_groups)
        _check_group_ids(group_ids, num_groups)
    if valid is None:
        valid = jnp.ones(shape, bool)
    else:
        valid = jnp.asarray(valid).astype(bool)
        if valid.shape != shape:
            raise ValueError(f"valid shape {valid.shape} != rewards shape {shape}")
    return (values.reshape(-1), group_ids.reshape(-1).astype(jnp.int32), valid.reshape(-1),
            max(num_groups, 1), shape)


def _gather(per_group_S, group_ids_N):
    return jnp.take(per_group_S, group_ids_N, mode="fill", fill_value=jnp.nan)


def _group_mean_std(rewards_N, group_ids_N, valid_N, num_groups):
    """Per-member group count, mean and unbiased std over the valid members."""
    w_N = valid_N.astype(jnp.float32)
    count_S = jax.ops.segment_sum(w_N, group_ids_N, num_groups)
    # where, not a product with the mask: a NaN reward on a dropped member must not leak.
    rewards_N = jnp.where(valid_N, rewards_N, 0.0)
    sum_S = jax.ops.segment_sum(rewards_N, group_ids_N, num_groups)
    mean_S = sum_S / jnp.maximum(count_S, 1.0)
    centred_N = jnp.where(valid_N, rewards_N - _gather(mean_S, group_ids_N), 0.0)
    sq_S = jax.ops.segment_sum(centred_N * centred_N, group_ids_N, num_groups)
    std_S = jnp.sqrt(sq_S / jnp.maximum(count_S - 1.0, 1.0))
    return (_gather(count_S, group_ids_N), _gather(mean_S, group_ids_N),
            _gather(std_S, group_ids_N))


def grpo_advantages(rewards, group_ids=None, valid=None, *, num_groups=None,
                    norm_by_std: bool = True, eps: float = 1e-6) -> jax.Array:
    """A = (r - mean) / (std + eps); norm_by_std=False is Dr.GRPO's A = r - mean."""
    r_N, ids_N, valid_N, S, shape = _flat_groups(rewards, group_ids, valid, num_groups)
    r_N = r_N.astype(jnp.float32)
    count_N, mean_N, std_N = _group_mean_std(r_N, ids_N, valid_N, S)
    single_N = count_N <= 1
    adv_N = r_N - jnp.where(single_N, 0.0, mean_N)
    if norm_by_std:
        adv_N = adv_N / jnp.where(single_N, 1.0, std_N + eps)
    return jnp.where(valid_N, adv_N, 0.0).reshape(shape)


def rloo_advantages(rewards, group_ids=None, valid=None, *,
                    num_groups=None) -> jax.Array:
    """A_i = r_i - mean of the other members = n/(n-1) * (r_i - mean)."""
    if group_ids is None and jnp.ndim(rewards) == 2 and jnp.shape(rewards)[1] < 2:
        raise ValueError("rloo needs at least 2 responses per group (G >= 2): with G=1 there "
                         "is no other member to form the leave-one-out baseline")
    r_N, ids_N, valid_N, S, shape = _flat_groups(rewards, group_ids, valid, num_groups)
    r_N = r_N.astype(jnp.float32)
    count_N, mean_N, _ = _group_mean_std(r_N, ids_N, valid_N, S)
    single_N = count_N <= 1
    adv_N = jnp.where(single_N, r_N, count_N / jnp.maximum(count_N - 1.0, 1.0) * (r_N - mean_N))
    return jnp.where(valid_N, adv_N, 0.0).reshape(shape)


def r3l_advantages(rewards, group_ids=None, valid=None, *, num_groups=None,
                   max_reward: float, alpha: float = 3.0) -> jax.Array:
    """R3L positive amplification (docs/methods.md, "R3L", item 5), no std.

    A = 1 for a trajectory reaching max_reward (the best reward the task can give),
    alpha * (r - b) when r >= b, r - b otherwise; b = group mean (0 when alone).
    """
    r_N, ids_N, valid_N, S, shape = _flat_groups(rewards, group_ids, valid, num_groups)
    r_N = r_N.astype(jnp.float32)
    count_N, mean_N, _ = _group_mean_std(r_N, ids_N, valid_N, S)
    delta_N = r_N - jnp.where(count_N <= 1, 0.0, mean_N)
    adv_N = jnp.where(r_N >= max_reward, 1.0,
                      jnp.where(delta_N >= 0, alpha * delta_N, delta_N))
    return jnp.where(valid_N, adv_N, 0.0).reshape(shape)


ADVANTAGE_ESTIMATORS: dict[str, Callable[..., jax.Array]] = {
    "grpo": grpo_advantages,
    "rloo": rloo_advantages,
    "r3l": r3l_advantages,
}


def compute_advantages(estimator: str, rewards, group_ids=None, valid=None, *,
                       num_groups=None, **options) -> jax.Array:
    """Advantages with the registered estimator; options go to it (e.g. norm_by_std)."""
    if estimator not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {estimator!r}; "
                         f"known: {sorted(ADVANTAGE_ESTIMATORS)}")
    return ADVANTAGE_ESTIMATORS[estimator](rewards, group_ids, valid, num_groups=num_groups,
                                           **options)


def overlong_penalty(response_lengths, *, max_response_length: int, overlong_buffer: int,
                     penalty_factor: float = 1.0) -> jax.Array:
    """DAPO overlong reward shaping: a penalty (<= 0) to add to the reward.

    Zero up to max_response_length - overlong_buffer tokens, then falling linearly to
    -penalty_factor at max_response_length (and staying there).
    """
    if not 0 < overlong_buffer <= max_response_length:
        raise ValueError(f"overlong_buffer={overlong_buffer} must be in (0, max_response_length="
                         f"{max_response_length}]")
    lengths = jnp.asarray(response_lengths, jnp.float32)
    excess = lengths - (max_response_length - overlong_buffer)
    return -jnp.clip(excess / overlong_buffer, 0.0, 1.0) * penalty_factor


def constant_group_mask(rewards, group_ids=None, valid=None, *, num_groups=None) -> jax.Array:
    """True for each valid member whose group's valid rewards are all equal.

    Such groups carry no signal under grpo/rloo; DAPO's dynamic sampling drops them.
    """
    r_N, ids_N, valid_N, S, shape = _flat_groups(rewards, group_ids, valid, num_groups)
    r_N = r_N.astype(jnp.float32)
    hi_S = jax.ops.segment_max(jnp.where(valid_N, r_N, -jnp.inf), ids_N, S)
    lo_S = jax.ops.segment_min(jnp.where(valid_N, r_N, jnp.inf), ids_N, S)
    constant_N = _gather(hi_S, ids_N) == _gather(lo_S, ids_N)
    return (constant_N & valid_N).reshape(shape)


def group_pass_stats(correct, group_ids=None, valid=None, *,
                     num_groups=None) -> dict[str, jax.Array]:
    """Fractions of none-pass / all-pass / mixed groups among groups with a valid member.

    correct: bool per member (the caller decides what passing means, e.g. reward == 1).
    """
    c_N, ids_N, valid_N, S, _ = _flat_groups(correct, group_ids, valid, num_groups)
    w_N = valid_N.astype(jnp.float32)
    count_S = jax.ops.segment_sum(w_N, ids_N, S)
    passed_S = jax.ops.segment_sum(c_N.astype(jnp.float32) * w_N, ids_N, S)
    present_S = count_S > 0
    none_S = present_S & (passed_S == 0)
    all_S = present_S & (passed_S == count_S)
    mixed_S = present_S & ~none_S & ~all_S
    num_present = jnp.sum(present_S)
    denominator = jnp.maximum(num_present, 1).astype(jnp.float32)
    return {
        "none_pass_fraction": jnp.sum(none_S) / denominator,
        "all_pass_fraction": jnp.sum(all_S) / denominator,
        "mixed_fraction": jnp.sum(mixed_S) / denominator,
        "num_groups": num_present,
    }
