"""benchmarks/decode_attention.py compares two layouts of the same attention: it runs,
and its token-major variant computes what the sampler's cached attention computes."""

import importlib.util
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

from rl_reason.models import transformer

_PATH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "decode_attention.py"


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("decode_attention", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_token_major_variant_equals_cached_attention_and_the_script_runs(monkeypatch, capsys):
    bench = _load_benchmark()
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
    assert "rl_reason" in out and "token-major" in out
