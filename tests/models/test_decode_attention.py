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
    k_cache = jnp.transpose(k, (0, 2, 3, 1))  # [B, K, E, S]
    v_cache = jnp.transpose(v, (0, 2, 1, 3))  # [B, K, S, E]
    one = transformer._cached_attention(q, k_cache, v_cache, mask)
    # Two identical queries take the general (einsum) path; each must equal the
    # single-query result, and so must the uncached path over token-major keys.
    two = transformer._cached_attention(jnp.concatenate([q, q], 1), k_cache, v_cache,
                                        jnp.concatenate([mask, mask], 1))
    np.testing.assert_allclose(np.asarray(one[:, 0]), np.asarray(two[:, 0]), atol=2e-6)
    np.testing.assert_allclose(np.asarray(one[:, 0]), np.asarray(two[:, 1]), atol=2e-6)
    probs = jax.nn.softmax(jnp.where(mask[:, :, None], jnp.einsum(
        "bthe,bshe->bths", q, jnp.repeat(k, H // K, axis=2)) / np.sqrt(E), -np.inf), -1)
    reference = jnp.einsum("bths,bshe->bthe", probs, jnp.repeat(v, H // K, axis=2))
    np.testing.assert_allclose(np.asarray(one), np.asarray(reference), atol=2e-6)


def test_cached_forward_takes_stacked_or_split_layers_and_matches_the_full_pass():
    from rl_reason.models import get_preset
    config = get_preset("tiny-qwen3")
    params = transformer.init_params(config, jax.random.PRNGKey(1))
    B, T = 2, 6
    tokens = jax.random.randint(jax.random.PRNGKey(2), (B, T), 0, config.vocab_size)
    positions = jnp.broadcast_to(jnp.arange(T), (B, T))
    causal = jnp.broadcast_to(jnp.tril(jnp.ones((T, T), bool)), (B, T, T))
    full, no_cache = transformer.forward(params, config, tokens, positions, causal)
    assert no_cache is None
    split = dict(params, layers=transformer.unstack_layers(params["layers"], config.num_layers))
    for layers in (params, split):
        # Prefill T - 1 tokens into a cache of T slots, then decode the last one.
        cache = transformer.init_cache(config, B, T)
        _, cache = transformer.forward(layers, config, tokens[:, :-1], positions[:, :-1],
                                       causal[:, :-1], cache, 0)
        last, cache = transformer.forward(layers, config, tokens[:, -1:], positions[:, -1:],
                                          causal[:, -1:], cache, T - 1)
        np.testing.assert_allclose(np.asarray(last[:, 0]), np.asarray(full[:, -1]), atol=1e-5)
        assert len(cache["k"]) == len(cache["v"]) == config.num_layers
        assert cache["k"][0].shape == (B, config.num_kv_heads, config.head_dim, T)
        assert cache["v"][0].shape == (B, config.num_kv_heads, T, config.head_dim)
