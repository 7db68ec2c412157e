"""The learning-rate schedule: the rate logged is the rate the optimizer applies."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from rl_reason import update


def optim_config(warmup_steps: int) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        learning_rate=0.01, warmup_steps=warmup_steps, weight_decay=0.0, b1=0.9, b2=0.999,
        grad_clip=1.0))


@pytest.mark.parametrize("warmup_steps, expected", [
    (0, [0.01] * 6),
    (4, [0.0, 0.0025, 0.005, 0.0075, 0.01, 0.01]),
])
def test_logged_rate_is_the_rate_the_optimizer_applies(warmup_steps, expected):
    optim = optim_config(warmup_steps)
    logged = [update.learning_rate(optim, n) for n in range(6)]
    assert logged == pytest.approx(expected)
    assert [float(update.lr_schedule(optim)(n)) for n in range(6)] == logged

    # With a constant unit gradient and no weight decay, each AdamW update moves the
    # parameter by the rate of that update (m_hat / sqrt(v_hat) = 1).
    optimizer = update.make_optimizer(optim)
    params = jnp.zeros(())
    state = optimizer.init(params)
    applied = []
    for _ in range(6):
        updates, state = optimizer.update(jnp.ones(()), state, params)
        new_params = optax.apply_updates(params, updates)
        applied.append(float(params - new_params))
        params = new_params
    np.testing.assert_allclose(applied, logged, rtol=1e-5, atol=1e-9)
