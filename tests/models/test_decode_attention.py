"""The single-query (decode) attention path equals the general einsum path."""

import jax
import jax.numpy as jnp
import numpy as np

from rl_reason.models import transformer


def test_decode_attention_matches_general_path():
    B, S, H, K, E = 3, 20, 8, 4, 16
    kq, kk, kv, km = jax.random.split(jax.random.PRNGKey(0), 4)
    q = jax.random.normal(kq, (B, 1, H, E))
    k = jax.random.normal(kk, (B, S, K, E))
    v = jax.random.normal(kv, (B, S, K, E))
    mask = jax.random.bernoulli(km, 0.7, (B, 1, S)).at[:, :, 0].set(True)
    one = transformer._attention(q, k, v, mask)
    # Two identical queries take the general path; each must equal the decode result.
    two = transformer._attention(jnp.concatenate([q, q], 1), k, v,
                                 jnp.concatenate([mask, mask], 1))
    np.testing.assert_allclose(np.asarray(one[:, 0]), np.asarray(two[:, 0]), atol=2e-6)
    np.testing.assert_allclose(np.asarray(one[:, 0]), np.asarray(two[:, 1]), atol=2e-6)
