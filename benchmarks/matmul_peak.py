"""The machine's measured float32 matmul peak, the yardstick of the other benchmarks.

    python benchmarks/matmul_peak.py

A jitted square matmul, best of several timed repeats after a warm-up; FLOP/s =
2 n^3 / seconds. Benchmarks report their achieved model FLOP/s as a fraction of this.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp


def matmul_peak_flops(n: int = 2048, repeats: int = 10, dtype=jnp.float32) -> float:
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype)
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        dot(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


if __name__ == "__main__":
    print(f"float32 matmul peak on {jax.devices()[0].platform}: "
          f"{matmul_peak_flops() / 1e9:.1f} GFLOP/s")
