"""benchmarks/decode_attention.py compares layouts of the same attention: it runs (and
checks its variants agree), and its token-major variant computes what the sampler's
cached attention computes."""

import sys

import jax
import jax.numpy as jnp
import numpy as np

from rl_reason.models import transformer


def test_token_major_variant_equals_cached_attention_and_the_script_runs(
        load_benchmark, monkeypatch, capsys):
    bench = load_benchmark("decode_attention")
    B, S, H, K, E = 2, 12, 8, 4, 16
    kq, kk, kv = jax.random.split(jax.random.PRNGKey(3), 3)
    q = jax.random.normal(kq, (B, 1, H, E))
    k = jax.random.normal(kk, (B, S, K, E))
    v = jax.random.normal(kv, (B, S, K, E))
    mask = jnp.arange(S)[None, None, :] < jnp.array([5, 12])[:, None, None]
    ours = transformer._cached_attention(q, jnp.transpose(k, (0, 2, 3, 1)),
                                         jnp.transpose(v, (0, 2, 1, 3)), mask)
    np.testing.assert_allclose(np.asarray(bench.token_major(q, k, v, mask)),
                               np.asarray(ours), atol=2e-6)
    monkeypatch.setattr(sys, "argv", ["decode_attention.py", "--batch", "2", "--slots", "8",
                                      "--repeats", "1"])
    bench.main()
    out = capsys.readouterr().out
    assert all(name in out for name in ("rl_reason", "einsum", "token-major"))
