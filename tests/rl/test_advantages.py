"""Advantage estimators and group statistics against values worked out by hand."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl_reason.rl import advantages as adv

SQRT3 = np.sqrt(3.0)


def jitted(fn, **options):
    # One compile per case is several times faster than eager op-by-op dispatch.
    return jax.jit(functools.partial(fn, **options))


def test_grpo_uses_unbiased_std():
    # Group [1, 0, 0, 0]: mean 0.25, squared deviations 0.5625 + 3 * 0.0625 = 0.75,
    # unbiased variance 0.75 / 3 = 0.25, std 0.5 -> A = 0.75/0.5 = 1.5, -0.25/0.5 = -0.5.
    # (The biased std sqrt(0.75/4) would give 1.732 and -0.577.)
    # Group [1, 1, 0, 0]: mean 0.5, variance 1/3 -> A = +-0.5*sqrt(3) = +-0.866.
    rewards = jnp.array([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    got = jitted(adv.grpo_advantages)(rewards)
    want = [[1.5, -0.5, -0.5, -0.5], [SQRT3 / 2, SQRT3 / 2, -SQRT3 / 2, -SQRT3 / 2]]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_grpo_constant_group_is_zero_not_nan():
    # std 0 -> (r - mean) / (0 + eps) = 0 / eps = 0.
    got = jitted(adv.grpo_advantages)(jnp.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
    np.testing.assert_array_equal(got, np.zeros((2, 3)))


def test_dr_grpo_has_no_std():
    # [1, 0, 0, 0] -> r - 0.25.
    got = jitted(adv.grpo_advantages, norm_by_std=False)(jnp.array([[1.0, 0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(got, [[0.75, -0.25, -0.25, -0.25]], rtol=1e-6)


def test_rloo_leave_one_out_baseline():
    # Member 0: 1 - mean(0, 0, 0) = 1. Others: 0 - mean(1, 0, 0) = -1/3.
    # Multi-attempt style rewards [1, -0.5, -1]: 1 - (-0.75) = 1.75,
    # -0.5 - 0 = -0.5, -1 - 0.25 = -1.25.
    got = jitted(adv.rloo_advantages)(jnp.array([[1.0, 0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(got, [[1.0, -1 / 3, -1 / 3, -1 / 3]], rtol=1e-6)
    got = jitted(adv.rloo_advantages)(jnp.array([[1.0, -0.5, -1.0]]))
    np.testing.assert_allclose(got, [[1.75, -0.5, -1.25]], rtol=1e-6)


def test_rloo_rejects_single_response_groups():
    with pytest.raises(ValueError, match="G >= 2"):
        adv.rloo_advantages(jnp.array([[1.0], [0.0]]))


def test_variable_groups_with_ids_and_valid_mask():
    # Group 0 = [1, 0]: mean 0.5, unbiased std sqrt(0.5) -> +-0.5/0.7071 = +-0.7071.
    # Group 1 = [1, 1, 0] (the 5 is not valid): mean 2/3, squared deviations
    # 1/9 + 1/9 + 4/9 = 2/3, variance 1/3 -> A = (1/3)*sqrt(3) = 0.5774, -(2/3)*sqrt(3).
    # The invalid member gets 0. Members interleaved on purpose.
    rewards = jnp.array([1.0, 1.0, 0.0, 1.0, 5.0, 0.0])
    ids = jnp.array([0, 1, 0, 1, 1, 1])
    valid = jnp.array([True, True, True, True, False, True])
    got = jitted(adv.grpo_advantages, num_groups=2)(rewards, ids, valid)
    r2 = np.sqrt(0.5)
    want = [0.5 / r2, SQRT3 / 3, -0.5 / r2, SQRT3 / 3, 0.0, -2 * SQRT3 / 3]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_ids_and_rows_agree_and_jit():
    rewards = jnp.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    by_rows = adv.grpo_advantages(rewards)
    # Same groups given as ids on the flat batch, in reversed order, under jit.
    flat = rewards.reshape(-1)[::-1]
    ids = jnp.array([0, 0, 0, 1, 1, 1])[::-1]
    fn = jax.jit(functools.partial(adv.grpo_advantages, num_groups=2))
    by_ids = fn(flat, ids)
    np.testing.assert_allclose(by_ids[::-1].reshape(2, 3), by_rows, rtol=1e-6)


def test_single_member_group_has_zero_baseline():
    # Group 1 has one member: baseline 0, scale 1 -> A = r for grpo and rloo.
    rewards = jnp.array([1.0, 0.0, 0.7])
    ids = jnp.array([0, 0, 1])
    np.testing.assert_allclose(adv.grpo_advantages(rewards, ids)[2], 0.7, rtol=1e-6)
    np.testing.assert_allclose(adv.rloo_advantages(rewards, ids)[2], 0.7, rtol=1e-6)
    # A group shrunk to one member by the valid mask behaves the same.
    rows = jnp.array([[0.3, 1.0]])
    got = adv.grpo_advantages(rows, valid=jnp.array([[True, False]]), norm_by_std=False)
    np.testing.assert_allclose(got, [[0.3, 0.0]], rtol=1e-6)


def test_nan_reward_on_dropped_member_does_not_leak():
    got = adv.grpo_advantages(jnp.array([[1.0, 0.0, jnp.nan]]),
                              valid=jnp.array([[True, True, False]]))
    np.testing.assert_allclose(got, [[np.sqrt(0.5), -np.sqrt(0.5), 0.0]], rtol=1e-5)


def test_out_of_range_group_ids_are_an_error():
    with pytest.raises(ValueError, match="num_groups=2"):
        adv.grpo_advantages(jnp.array([1.0, 0.0]), jnp.array([0, 2]), num_groups=2)
    with pytest.raises(ValueError, match=r"\[P, G\]"):
        adv.grpo_advantages(jnp.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="num_groups=3"):
        adv.grpo_advantages(jnp.ones((2, 2)), num_groups=3)


def test_r3l_positive_amplification():
    # max_reward 1, alpha 3.
    # Group [1, 0, 0.5, 0]: b = 0.375. r=1 is maximal -> 1 (not 3*0.625);
    #   r=0 -> -0.375 (not amplified); r=0.5 -> 3*0.125 = 0.375.
    # Group [1, 1]: both maximal -> 1, 1 (GRPO would give 0).
    # Group [0.5, 0.5]: r - b = 0 -> 3 * 0 = 0.
    # Singletons: b = 0. [0.5] -> 1.5; [1] -> 1; [-1] -> -1.
    rewards = jnp.array([1.0, 0.0, 0.5, 0.0, 1.0, 1.0, 0.5, 0.5, 0.5, 1.0, -1.0])
    ids = jnp.array([0, 0, 0, 0, 1, 1, 2, 2, 3, 4, 5])
    got = jitted(adv.r3l_advantages, max_reward=1.0, num_groups=6)(rewards, ids)
    want = [1.0, -0.375, 0.375, -0.375, 1.0, 1.0, 0.0, 0.0, 1.5, 1.0, -1.0]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # alpha is a parameter: alpha=2 on [0.5] alone -> 1.0.
    np.testing.assert_allclose(
        adv.r3l_advantages(jnp.array([[0.5]]), max_reward=1.0, alpha=2.0), [[1.0]])


def test_registry_dispatch_and_unknown_name():
    rewards = jnp.array([[1.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(adv.compute_advantages("grpo", rewards, norm_by_std=False),
                               [[0.75, -0.25, -0.25, -0.25]], rtol=1e-6)
    np.testing.assert_allclose(adv.compute_advantages("rloo", rewards),
                               adv.rloo_advantages(rewards))
    np.testing.assert_allclose(adv.compute_advantages("r3l", rewards, max_reward=1.0),
                               [[1.0, -0.25, -0.25, -0.25]], rtol=1e-6)
    with pytest.raises(ValueError, match="unknown advantage estimator 'ppo'.*grpo"):
        adv.compute_advantages("ppo", rewards)


def test_overlong_penalty():
    # max 20, buffer 4: free up to 16 tokens, then -1/4 per token, -1 at 20.
    lengths = jnp.array([10, 16, 17, 18, 20])
    got = adv.overlong_penalty(lengths, max_response_length=20, overlong_buffer=4)
    np.testing.assert_allclose(got, [0.0, 0.0, -0.25, -0.5, -1.0])
    got = adv.overlong_penalty(lengths, max_response_length=20, overlong_buffer=4,
                               penalty_factor=0.5)
    np.testing.assert_allclose(got, [0.0, 0.0, -0.125, -0.25, -0.5])
    with pytest.raises(ValueError, match="overlong_buffer"):
        adv.overlong_penalty(lengths, max_response_length=20, overlong_buffer=0)


def test_overlong_penalty_with_a_budget_per_response():
    # Buffer 4; budgets 20, 12, 12, 2: free up to 16, 8, 8 and -2 tokens. The last
    # budget starts inside the buffer: -(0 + 2) / 4 at its first token already.
    got = adv.overlong_penalty(jnp.array([10, 10, 12, 0]),
                               max_response_length=jnp.array([20, 12, 12, 2]),
                               overlong_buffer=4)
    np.testing.assert_allclose(got, [0.0, -0.5, -1.0, -0.5])


def test_constant_group_mask():
    rewards = jnp.array([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    got = jitted(adv.constant_group_mask)(rewards)
    np.testing.assert_array_equal(got, [[True] * 3, [False] * 3, [True] * 3])
    # Without its one success, group 1 is constant; the dropped member is never marked.
    valid = jnp.array([[True] * 3, [True, False, True], [True] * 3])
    got = jitted(adv.constant_group_mask)(rewards, valid=valid)
    np.testing.assert_array_equal(got, [[True] * 3, [True, False, True], [True] * 3])


def test_group_pass_stats():
    # Groups: [1,1] all-pass, [0,0] none-pass, [1,0] mixed, [0,0] none-pass.
    correct = jnp.array([[True, True], [False, False], [True, False], [False, False]])
    stats = jitted(adv.group_pass_stats)(correct)
    np.testing.assert_allclose(stats["none_pass_fraction"], 0.5)
    np.testing.assert_allclose(stats["all_pass_fraction"], 0.25)
    np.testing.assert_allclose(stats["mixed_fraction"], 0.25)
    assert int(stats["num_groups"]) == 4
    # Dropping group 3 entirely and the failure of group 2 (now all-pass):
    # 3 groups left: all-pass 2/3, none-pass 1/3, mixed 0.
    valid = jnp.array([[True, True], [True, True], [True, False], [False, False]])
    stats = jitted(adv.group_pass_stats)(correct, valid=valid)
    np.testing.assert_allclose(stats["all_pass_fraction"], 2 / 3, rtol=1e-6)
    np.testing.assert_allclose(stats["none_pass_fraction"], 1 / 3, rtol=1e-6)
    np.testing.assert_allclose(stats["mixed_fraction"], 0.0)
    assert int(stats["num_groups"]) == 3
