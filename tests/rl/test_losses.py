"""policy_loss against values and gradients worked out by hand.

Most cases use old_logp = 0 and logp = log(rho), so the ratio is set directly, and
one trained token per row under token-mean: loss = mean of per-token losses and
d loss / d logp_t = (d loss_t / d logp_t) / number of tokens.
For the on-policy term -A*rho, d/dlogp = -A*rho (rho = exp(logp - old)).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl_reason.rl.losses import LossConfig, aggregate, kl_penalty, policy_loss


# Jitted in the tests: one compile per case is several times faster than eager dispatch.
jit_loss = jax.jit(policy_loss, static_argnames="config")


@functools.partial(jax.jit, static_argnames="config")
def _value_and_grad(logp, old, adv, mask, config, kwargs):
    def f(l):
        return policy_loss(l, old, adv, mask, config, **kwargs)
    return jax.value_and_grad(f, has_aux=True)(logp)


def loss_and_grad(logp, old, adv, mask, config=LossConfig(), **kwargs):
    (loss, metrics), grad = _value_and_grad(jnp.asarray(logp, jnp.float32), old, adv, mask,
                                            config, kwargs)
    return float(loss), metrics, np.asarray(grad)


def column(values):
    return jnp.asarray(values, jnp.float32)[:, None]


def test_clip_higher_boundaries_for_both_signs():
    # clip_low 0.2, clip_high 0.28: the range is [0.8, 1.28].
    #   A=+1, rho=1.27: inside            -> loss -1.27, grad -1.27
    #   A=+1, rho=1.29: above, clipped    -> loss -1.28, grad 0
    #   A=+1, rho=0.5 : the low side never clips a positive A -> -0.5, grad -0.5
    #   A=-1, rho=0.81: inside            -> loss 0.81, grad 0.81
    #   A=-1, rho=0.79: below, clipped    -> loss 0.80, grad 0
    #   A=-1, rho=2.0 : the high side never clips a negative A -> 2.0, grad 2.0
    rho = np.array([1.27, 1.29, 0.5, 0.81, 0.79, 2.0])
    A = jnp.array([1.0, 1.0, 1.0, -1.0, -1.0, -1.0])
    config = LossConfig(clip_low=0.2, clip_high=0.28)
    loss, metrics, grad = loss_and_grad(column(np.log(rho)), jnp.zeros((6, 1)), A,
                                        jnp.ones((6, 1)), config)
    per_token = np.array([-1.27, -1.28, -0.5, 0.81, 0.80, 2.0])
    np.testing.assert_allclose(loss, per_token.mean(), rtol=1e-5)
    np.testing.assert_allclose(grad[:, 0], np.array([-1.27, 0, -0.5, 0.81, 0, 2.0]) / 6,
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(metrics["clip_fraction"], 2 / 6, rtol=1e-6)
    np.testing.assert_allclose(metrics["ratio_mean"], rho.mean(), rtol=1e-5)
    # With the symmetric 0.2 clip, rho=1.25 and A=+1 is clipped at 1.2; with 0.28 it is not.
    for clip_high, want_loss, want_grad in [(0.2, -1.2, 0.0), (0.28, -1.25, -1.25)]:
        loss, _, grad = loss_and_grad(column([np.log(1.25)]), jnp.zeros((1, 1)),
                                      jnp.array([1.0]), jnp.ones((1, 1)),
                                      LossConfig(clip_high=clip_high))
        np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
        np.testing.assert_allclose(grad[0, 0], want_grad, atol=1e-6)


def test_ratio_exactly_on_the_boundary_keeps_full_gradient():
    # clip range [1, 1] and rho = exp(0) = 1 exactly: clipped == unclipped, a tie.
    # The clip is not active there: grad = -A*rho = -2 and -(-3) = 3, over 2 tokens.
    config = LossConfig(clip_low=0.0, clip_high=0.0)
    _, metrics, grad = loss_and_grad(jnp.zeros((2, 1)), jnp.zeros((2, 1)),
                                     jnp.array([2.0, -3.0]), jnp.ones((2, 1)), config)
    np.testing.assert_allclose(grad[:, 0], [-1.0, 1.5], rtol=1e-6)
    assert float(metrics["clip_fraction"]) == 0.0


def test_first_step_is_vanilla_policy_gradient():
    # old = stop_gradient(logp): rho == 1, clip inactive, d(-A*rho)/dlogp = -A, which is
    # the gradient of REINFORCE's -A*logp.
    rng = np.random.default_rng(0)
    logp = jnp.asarray(-rng.uniform(0.1, 3.0, (3, 5)), jnp.float32)
    A = jnp.array([1.5, -0.7, 0.2])
    mask = jnp.array([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], jnp.float32)

    def ppo(l):
        return policy_loss(l, jax.lax.stop_gradient(l), A, mask)[0]

    def reinforce(l):
        return policy_loss(l, None, A, mask, LossConfig(loss_type="reinforce"))[0]

    np.testing.assert_allclose(jax.jit(jax.grad(ppo))(logp), jax.jit(jax.grad(reinforce))(logp),
                               rtol=1e-6)
    _, metrics = jit_loss(logp, logp, A, mask)
    assert float(metrics["clip_fraction"]) == 0.0
    np.testing.assert_allclose(metrics["ratio_mean"], 1.0)


def test_clip_on_policy_off_and_dual_clip():
    # No clip: A=+1, rho=1.5 -> loss -1.5, grad -1.5.
    loss, metrics, grad = loss_and_grad(column([np.log(1.5)]), jnp.zeros((1, 1)),
                                        jnp.array([1.0]), jnp.ones((1, 1)),
                                        LossConfig(clip_on_policy=False))
    np.testing.assert_allclose([loss, grad[0, 0]], [-1.5, -1.5], rtol=1e-5)
    assert float(metrics["clip_fraction"]) == 0.0
    # Dual clip c=3 caps negative-advantage losses at -A*3:
    #   A=-1, rho=5: loss min(5, 3) = 3, grad 0;  A=-1, rho=2: loss 2, grad 2;
    #   A=+1, rho=5: ordinary clip at 1.2 -> -1.2, grad 0.
    loss, metrics, grad = loss_and_grad(column(np.log([5.0, 2.0, 5.0])), jnp.zeros((3, 1)),
                                        jnp.array([-1.0, -1.0, 1.0]), jnp.ones((3, 1)),
                                        LossConfig(dual_clip=3.0))
    np.testing.assert_allclose(loss, (3.0 + 2.0 - 1.2) / 3, rtol=1e-5)
    np.testing.assert_allclose(grad[:, 0], [0.0, 2.0 / 3, 0.0], atol=1e-6)
    np.testing.assert_allclose(metrics["dual_clip_fraction"], 1 / 3, rtol=1e-6)


def test_aggregations_with_unequal_lengths():
    # rho = 1 everywhere, so each token's loss is -A: per-token A = -[[1,2,3,9],[4,5,7,7]]
    # gives losses [[1,2,3,9],[4,5,7,7]]; mask keeps 3 tokens of row 0, 2 of row 1, and
    # row 2 has no trained token.
    #   token-mean:          (1+2+3+4+5)/5             = 3
    #   seq-mean-token-mean: (6/3 + 9/2)/2 = (2+4.5)/2  = 3.25   (row 2 left out)
    #   constant, norm 4:    (6 + 9) / (2 seqs * 4)     = 1.875  (row 2 not counted)
    adv = -jnp.array([[1, 2, 3, 9], [4, 5, 7, 7], [8, 8, 8, 8]], jnp.float32)
    mask = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], jnp.float32)
    zeros = jnp.zeros((3, 4))
    for config, want in [(LossConfig(), 3.0),
                         (LossConfig(aggregation="seq-mean-token-mean"), 3.25),
                         (LossConfig(aggregation="constant", constant_norm=4), 1.875)]:
        loss, metrics = jit_loss(zeros, zeros, adv, mask, config)
        np.testing.assert_allclose(loss, want, rtol=1e-6, err_msg=config.aggregation)
        assert float(metrics["num_tokens"]) == 5.0


def test_per_sequence_and_per_token_advantages_agree():
    logp = jnp.array([[-1.0, -2.0, -0.5], [-0.3, -0.2, -0.1]])
    old = logp + 0.1
    mask = jnp.array([[0, 1, 1], [1, 1, 0]], jnp.float32)
    A_B = jnp.array([0.5, -2.0])
    by_seq = jit_loss(logp, old, A_B, mask)[0]
    by_token = jit_loss(logp, old, jnp.broadcast_to(A_B[:, None], (2, 3)), mask)[0]
    np.testing.assert_allclose(by_seq, by_token)
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(logp, old, jnp.ones(3), mask)


@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean", "constant"])
def test_empty_mask_gives_zero_loss_and_finite_grads(aggregation):
    # Untrained positions hold extreme values (a pad's logp, a huge log-ratio): nothing
    # may leak into the loss or the gradient.
    logp = jnp.array([[-1e4, 50.0, -0.5]])
    config = LossConfig(aggregation=aggregation,
                        constant_norm=8.0 if aggregation == "constant" else None,
                        kl_coef=0.1, entropy_coef=0.01)

    def f(l):
        return policy_loss(l, jnp.zeros((1, 3)), jnp.array([1.0]), jnp.zeros((1, 3)), config,
                           off_policy_BT=jnp.array([[False, True, False]]),
                           behaviour_logp_BT=jnp.full((1, 3), -60.0),
                           ref_logp_BT=jnp.full((1, 3), 30.0), entropy_BT=jnp.abs(l))
    (loss, metrics), grad = jax.jit(jax.value_and_grad(f, has_aux=True))(logp)
    assert float(loss) == 0.0
    np.testing.assert_array_equal(grad, np.zeros((1, 3)))
    assert all(np.isfinite(np.asarray(v)).all() for v in metrics.values())


def test_kl_estimators():
    # logp - ref = -1 - (-1.5) = 0.5.
    #   k1 = 0.5;  k2 = 0.5 * 0.25 = 0.125;  k3 = exp(-0.5) + 0.5 - 1 = 0.106531
    # d k3 / d logp = 1 - exp(ref - logp) = 1 - exp(-0.5) = 0.393469.
    logp, ref = jnp.array([[-1.0]]), jnp.array([[-1.5]])
    np.testing.assert_allclose(kl_penalty(logp, ref, "k1"), [[0.5]])
    np.testing.assert_allclose(kl_penalty(logp, ref, "k2"), [[0.125]])
    np.testing.assert_allclose(kl_penalty(logp, ref, "k3"), [[0.106531]], rtol=1e-5)
    # Through the loss: A = 0 leaves only kl_coef * k3.
    loss, metrics, grad = loss_and_grad(logp, logp, jnp.array([0.0]), jnp.ones((1, 1)),
                                        LossConfig(kl_coef=0.5), ref_logp_BT=ref)
    np.testing.assert_allclose(loss, 0.5 * 0.106531, rtol=1e-5)
    np.testing.assert_allclose(grad[0, 0], 0.5 * 0.393469, rtol=1e-5)
    # kl_coef 0: reported, not in the loss.
    loss, metrics, _ = loss_and_grad(logp, logp, jnp.array([0.0]), jnp.ones((1, 1)),
                                     ref_logp_BT=ref)
    assert loss == 0.0
    np.testing.assert_allclose(metrics["kl"], 0.106531, rtol=1e-5)
    with pytest.raises(ValueError, match="ref_logp_BT"):
        policy_loss(logp, logp, jnp.array([0.0]), jnp.ones((1, 1)), LossConfig(kl_coef=0.1))


def test_off_policy_shaping_value_and_gradient():
    # logp = log 0.3, behaviour = log 0.6 -> w = 0.5; gamma 0.1: f = 0.5/0.6 = 0.833333.
    # A = 2: loss = -2 * 0.833333 = -1.666667;
    # grad = -A * gamma * w / (w + gamma)^2 = -2 * 0.1 * 0.5 / 0.36 = -0.277778.
    # old_logp on off-policy tokens is ignored (here a value that would clip: rho = e^3).
    loss, metrics, grad = loss_and_grad(
        jnp.log(jnp.array([[0.3]])), jnp.array([[np.log(0.3) - 3.0]]), jnp.array([2.0]),
        jnp.ones((1, 1)), off_policy_BT=jnp.array([[True]]),
        behaviour_logp_BT=jnp.log(jnp.array([[0.6]])))
    np.testing.assert_allclose(loss, -1.666667, rtol=1e-5)
    np.testing.assert_allclose(grad[0, 0], -0.277778, rtol=1e-5)
    assert float(metrics["off_policy_fraction"]) == 1.0
    assert float(metrics["clip_fraction"]) == 0.0
    # Never clipped: w = 5 (far past 1.28) still has gradient
    # -1 * 0.1 * 5 / 5.1^2 = -0.0192234.
    _, _, grad = loss_and_grad(jnp.log(jnp.array([[0.5]])), jnp.zeros((1, 1)), jnp.array([1.0]),
                               jnp.ones((1, 1)), off_policy_BT=jnp.array([[True]]),
                               behaviour_logp_BT=jnp.log(jnp.array([[0.1]])))
    np.testing.assert_allclose(grad[0, 0], -0.0192234, rtol=1e-4)
    with pytest.raises(ValueError, match="both or neither"):
        policy_loss(jnp.zeros((1, 1)), jnp.zeros((1, 1)), jnp.array([1.0]), jnp.ones((1, 1)),
                    off_policy_BT=jnp.array([[True]]))


def test_off_policy_weight_switch():
    # Two off-policy tokens, A = 2, w = [0.5, 4.0] (logp log[.3, .4], behaviour log[.6, .1]).
    # token-mean over 2 tokens; d loss / d logp_t = (d loss_t / d logp_t) / 2.
    # 'ratio': loss_t = -A*w, grad_t = -A*w: loss -(1 + 8)/2 = -4.5, grads [-0.5, -4].
    # 'none':  loss_t = -A (value w^0 = 1), grad_t = -A: loss -2, grads [-1, -1].
    # 'shaped' (gamma 0.1): f = [0.833333, 0.975610], loss -(f0 + f1) = -1.808943,
    #   grads -A*gamma*w/(w+gamma)^2 / 2 = [-0.138889, -0.023795].
    logp = jnp.log(jnp.array([[0.3, 0.4]]))
    kwargs = dict(off_policy_BT=jnp.ones((1, 2), bool),
                  behaviour_logp_BT=jnp.log(jnp.array([[0.6, 0.1]])))
    cases = {"ratio": (-4.5, [-0.5, -4.0]), "none": (-2.0, [-1.0, -1.0]),
             "shaped": (-1.808943, [-0.138889, -0.023795])}
    for weight, (expected_loss, expected_grad) in cases.items():
        loss, metrics, grad = loss_and_grad(logp, jnp.zeros((1, 2)), jnp.array([2.0]),
                                            jnp.ones((1, 2)), LossConfig(off_policy_weight=weight),
                                            **kwargs)
        np.testing.assert_allclose(loss, expected_loss, rtol=1e-5, err_msg=weight)
        np.testing.assert_allclose(grad[0], expected_grad, rtol=1e-4, err_msg=weight)
        # w itself is reported whatever the weighting: mean 2.25, std 1.75.
        np.testing.assert_allclose(metrics["off_policy_w_mean"], 2.25, rtol=1e-5)
        np.testing.assert_allclose(metrics["off_policy_w_std"], 1.75, rtol=1e-4)


def test_on_and_off_policy_tokens_in_one_batch():
    # Row 0, on-policy, A=+1, rho = [1.0, 1.5, 0.9]: losses [-1, -1.2 (clipped), -0.9].
    # Row 1, off-policy, A=-1, mask [0, 1, 1], w = [-, 0.5, 0.1] (logp log[.3, .3, .1],
    #   behaviour log[.6, .6, 1]): losses [0.5/0.6, 0.1/0.2] = [0.833333, 0.5].
    # token-mean over 5 tokens: (-1 - 1.2 - 0.9 + 0.833333 + 0.5) / 5 = -0.353333.
    # Grads (/5): row 0 [-1, 0, -0.9]; row 1 token 1: 0.1*0.5/0.6^2 = 0.138889,
    #   token 2: 0.1*0.1/0.2^2 = 0.25.
    logp = jnp.array([[0.0, np.log(1.5), np.log(0.9)], np.log([0.3, 0.3, 0.1])], jnp.float32)
    old = jnp.array([[0.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
    behaviour = jnp.array([[0.0, 0.0, 0.0], np.log([0.6, 0.6, 1.0])], jnp.float32)
    off = jnp.array([[False] * 3, [True] * 3])
    mask = jnp.array([[1, 1, 1], [0, 1, 1]], jnp.float32)
    loss, metrics, grad = loss_and_grad(logp, old, jnp.array([1.0, -1.0]), mask,
                                        off_policy_BT=off, behaviour_logp_BT=behaviour)
    np.testing.assert_allclose(loss, -0.353333, rtol=1e-5)
    np.testing.assert_allclose(grad, np.array([[-1.0, 0.0, -0.9], [0.0, 0.138889, 0.25]]) / 5,
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(metrics["clip_fraction"], 1 / 3, rtol=1e-6)
    np.testing.assert_allclose(metrics["off_policy_fraction"], 2 / 5, rtol=1e-6)
    np.testing.assert_allclose(metrics["ratio_mean"], (1.0 + 1.5 + 0.9) / 3, rtol=1e-5)
    np.testing.assert_allclose(metrics["shaping_weight_mean"], (0.833333 + 0.5) / 2, rtol=1e-5)


def test_r3l_reinforce_with_scale_and_k2():
    # -A*logp with A=2, logp [-1, -2]: [2, 4], mean 3; pg_scale 0.5 -> 1.5.
    # k2 with ref [-1.5, -1]: d = [0.5, -1], 0.5*d^2 = [0.125, 0.5], mean 0.3125;
    #   0.001 * 0.3125 = 0.0003125. Total 1.5003125.
    # grad = (0.5 * -A + 0.001 * d) / 2 = [-0.49975, -0.5005].
    config = LossConfig(loss_type="reinforce", pg_scale=0.5, kl_coef=0.001, kl_estimator="k2")
    loss, metrics, grad = loss_and_grad(jnp.array([[-1.0, -2.0]]), None, jnp.array([2.0]),
                                        jnp.ones((1, 2)), config,
                                        ref_logp_BT=jnp.array([[-1.5, -1.0]]))
    np.testing.assert_allclose(loss, 1.5003125, rtol=1e-6)
    np.testing.assert_allclose(metrics["pg_loss"], 3.0, rtol=1e-6)
    np.testing.assert_allclose(grad[0], [-0.49975, -0.5005], rtol=1e-5)


def test_entropy_bonus():
    # Entropy [1, 3] (token-mean 2), coef 0.01: loss = pg - 0.02. With A = 0, pg = 0.
    entropy = jnp.array([[1.0, 3.0]])
    loss, metrics = jit_loss(jnp.zeros((1, 2)), jnp.zeros((1, 2)), jnp.array([0.0]),
                             jnp.ones((1, 2)), LossConfig(entropy_coef=0.01),
                             entropy_BT=entropy)
    np.testing.assert_allclose(loss, -0.02, rtol=1e-6)
    np.testing.assert_allclose(metrics["entropy"], 2.0)
    with pytest.raises(ValueError, match="entropy_BT"):
        policy_loss(jnp.zeros((1, 2)), jnp.zeros((1, 2)), jnp.array([0.0]), jnp.ones((1, 2)),
                    LossConfig(entropy_coef=0.01))


@pytest.mark.parametrize("kwargs, match", [
    (dict(aggregation="sum"), "aggregation='sum'"),
    (dict(loss_type="dpo"), "loss_type='dpo'"),
    (dict(kl_estimator="k4"), "kl_estimator='k4'"),
    (dict(aggregation="constant"), "constant_norm > 0"),
    (dict(constant_norm=512.0), "only used by aggregation='constant'"),
    (dict(dual_clip=1.0), "dual_clip"),
    (dict(clip_low=1.0), "clip_low"),
    (dict(shaping_gamma=0.0), "shaping_gamma"),
    (dict(off_policy_weight="clipped"), "off_policy_weight='clipped'"),
    (dict(entropy_coef=-0.1), "entropy_coef"),
])
def test_loss_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LossConfig(**kwargs)


def test_aggregate_rejects_unknown_mode():
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(jnp.ones((1, 1)), jnp.ones((1, 1)), "token-sum")


def test_loss_config_is_a_static_jit_argument():
    # Equal configs hash equal, so jit reuses its compilation; frozen, so it cannot drift.
    a, b = LossConfig(clip_high=0.28), LossConfig(clip_high=0.28)
    assert a == b and hash(a) == hash(b)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.clip_high = 0.3
