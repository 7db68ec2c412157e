"""Group advantage estimators, DAPO overlong shaping and group statistics.

Shape letters as in rl_reason/__init__.py: P prompts, G responses per prompt, M members
of a flat batch, J groups.

Who shares a group is said in one of two ways:

- rewards [P, G]: row p is the group of prompt p (the plain GRPO batch);
- rewards of any shape plus group_ids of the same shape: members in any order and
  groups of any size (ExGRPO / LTE put extra members into a group, R3L adds
  single-member experiences). Ids must lie in [0, num_groups); num_groups defaults
  to the number of members, which is enough for ids 0..M-1.

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
    """Flattened values_M, group_ids_M, valid_M, the static group count and the shape."""
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


def _gather(per_group_J, group_ids_M):
    return jnp.take(per_group_J, group_ids_M, mode="fill", fill_value=jnp.nan)


def _group_mean_std(rewards_M, group_ids_M, valid_M, num_groups):
    """Per-member group count, mean and unbiased std over the valid members."""
    w_M = valid_M.astype(jnp.float32)
    count_J = jax.ops.segment_sum(w_M, group_ids_M, num_groups)
    # where, not a product with the mask: a NaN reward on a dropped member must not leak.
    rewards_M = jnp.where(valid_M, rewards_M, 0.0)
    sum_J = jax.ops.segment_sum(rewards_M, group_ids_M, num_groups)
    mean_J = sum_J / jnp.maximum(count_J, 1.0)
    centred_M = jnp.where(valid_M, rewards_M - _gather(mean_J, group_ids_M), 0.0)
    sq_J = jax.ops.segment_sum(centred_M * centred_M, group_ids_M, num_groups)
    std_J = jnp.sqrt(sq_J / jnp.maximum(count_J - 1.0, 1.0))
    return (_gather(count_J, group_ids_M), _gather(mean_J, group_ids_M),
            _gather(std_J, group_ids_M))


def grpo_advantages(rewards, group_ids=None, valid=None, *, num_groups=None,
                    norm_by_std: bool = True, eps: float = 1e-6) -> jax.Array:
    """A = (r - mean) / (std + eps); norm_by_std=False is Dr.GRPO's A = r - mean."""
    r_M, ids_M, valid_M, J, shape = _flat_groups(rewards, group_ids, valid, num_groups)
    r_M = r_M.astype(jnp.float32)
    count_M, mean_M, std_M = _group_mean_std(r_M, ids_M, valid_M, J)
    single_M = count_M <= 1
    adv_M = r_M - jnp.where(single_M, 0.0, mean_M)
    if norm_by_std:
        adv_M = adv_M / jnp.where(single_M, 1.0, std_M + eps)
    return jnp.where(valid_M, adv_M, 0.0).reshape(shape)


def rloo_advantages(rewards, group_ids=None, valid=None, *,
                    num_groups=None) -> jax.Array:
    """A_i = r_i - mean of the other members = n/(n-1) * (r_i - mean)."""
    if group_ids is None and jnp.ndim(rewards) == 2 and jnp.shape(rewards)[1] < 2:
        raise ValueError("rloo needs at least 2 responses per group (G >= 2): with G=1 there "
                         "is no other member to form the leave-one-out baseline")
    r_M, ids_M, valid_M, J, shape = _flat_groups(rewards, group_ids, valid, num_groups)
    r_M = r_M.astype(jnp.float32)
    count_M, mean_M, _ = _group_mean_std(r_M, ids_M, valid_M, J)
    single_M = count_M <= 1
    adv_M = jnp.where(single_M, r_M, count_M / jnp.maximum(count_M - 1.0, 1.0) * (r_M - mean_M))
    return jnp.where(valid_M, adv_M, 0.0).reshape(shape)


def r3l_advantages(rewards, group_ids=None, valid=None, *, num_groups=None,
                   max_reward: float, alpha: float = 3.0) -> jax.Array:
    """R3L positive amplification (docs/methods.md, "R3L", item 5), no std.

    A = 1 for a trajectory reaching max_reward (the best reward the task can give),
    alpha * (r - b) when r >= b, r - b otherwise; b = group mean (0 when alone).
    """
    r_M, ids_M, valid_M, J, shape = _flat_groups(rewards, group_ids, valid, num_groups)
    r_M = r_M.astype(jnp.float32)
    count_M, mean_M, _ = _group_mean_std(r_M, ids_M, valid_M, J)
    delta_M = r_M - jnp.where(count_M <= 1, 0.0, mean_M)
    adv_M = jnp.where(r_M >= max_reward, 1.0,
                      jnp.where(delta_M >= 0, alpha * delta_M, delta_M))
    return jnp.where(valid_M, adv_M, 0.0).reshape(shape)


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


def overlong_penalty(response_lengths, *, max_response_length, overlong_buffer: int,
                     penalty_factor: float = 1.0) -> jax.Array:
    """DAPO overlong reward shaping: a penalty (<= 0) to add to the reward.

    Zero up to max_response_length - overlong_buffer tokens, then falling linearly to
    -penalty_factor at max_response_length (and staying there).

    max_response_length: one budget for every response, or one per response (a
        continuation's budget is what its given prefix left). A budget smaller than
        the buffer starts inside it: penalised from the first token, as the whole
        response (prefix and continuation) would be against the full budget.
    """
    if not overlong_buffer > 0:
        raise ValueError(f"overlong_buffer={overlong_buffer} must be > 0")
    budgets = jnp.asarray(max_response_length, jnp.float32)
    lengths = jnp.asarray(response_lengths, jnp.float32)
    excess = lengths - (budgets - overlong_buffer)
    return -jnp.clip(excess / overlong_buffer, 0.0, 1.0) * penalty_factor


def constant_group_mask(rewards, group_ids=None, valid=None, *, num_groups=None) -> jax.Array:
    """True for each valid member whose group's valid rewards are all equal.

    Such groups carry no signal under grpo/rloo; DAPO's dynamic sampling drops them.
    """
    r_M, ids_M, valid_M, J, shape = _flat_groups(rewards, group_ids, valid, num_groups)
    r_M = r_M.astype(jnp.float32)
    hi_J = jax.ops.segment_max(jnp.where(valid_M, r_M, -jnp.inf), ids_M, J)
    lo_J = jax.ops.segment_min(jnp.where(valid_M, r_M, jnp.inf), ids_M, J)
    constant_M = _gather(hi_J, ids_M) == _gather(lo_J, ids_M)
    return (constant_M & valid_M).reshape(shape)


def group_pass_stats(correct, group_ids=None, valid=None, *,
                     num_groups=None) -> dict[str, jax.Array]:
    """Fractions of none-pass / all-pass / mixed groups among groups with a valid member.

    correct: bool per member (the caller decides what passing means, e.g. reward == 1).
    """
    c_M, ids_M, valid_M, J, _ = _flat_groups(correct, group_ids, valid, num_groups)
    w_M = valid_M.astype(jnp.float32)
    count_J = jax.ops.segment_sum(w_M, ids_M, J)
    passed_J = jax.ops.segment_sum(c_M.astype(jnp.float32) * w_M, ids_M, J)
    present_J = count_J > 0
    none_J = present_J & (passed_J == 0)
    all_J = present_J & (passed_J == count_J)
    mixed_J = present_J & ~none_J & ~all_J
    num_present = jnp.sum(present_J)
    denominator = jnp.maximum(num_present, 1).astype(jnp.float32)
    return {
        "none_pass_fraction": jnp.sum(none_J) / denominator,
        "all_pass_fraction": jnp.sum(all_J) / denominator,
        "mixed_fraction": jnp.sum(mixed_J) / denominator,
        "num_groups": num_present,
    }
