"""Timing helpers every benchmark shares, and the ONE float32 matmul-peak measurement.

A leaf module: it imports only JAX and the standard library, so any benchmark script
(benchmarks/sampler.py, decode_ceiling.py, decode_attention.py, train_step.py,
update_step.py, grpo_step.py, matmul_peak.py) imports it without importing another
benchmark script.

    best_time(fn, repeats)        the quickest of `repeats` timed calls (the run least
                                  disturbed by other processes)
    warm_best_time(fn, repeats)   the same after one untimed call (compilation,
                                  first-touch allocations)
    matmul_peak_flops(n, ...)     FLOP/s of the best jitted n x n matmul (2 n^3 FLOPs),
                                  the yardstick the benchmarks report fractions of
    copy_bandwidth(num_bytes)     bytes/s of the best jitted read-and-write of a buffer
    usable_cores()                the cores this process may run on
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def best_time(fn, repeats: int) -> float:
    """Seconds of the quickest of `repeats` calls of fn."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def warm_best_time(fn, repeats: int) -> float:
    fn()  # compilation (XLA) or first-touch allocations (torch), not timed
    return best_time(fn, repeats)


def matmul_peak_flops(n: int = 2048, repeats: int = 10, dtype=jnp.float32) -> float:
    """FLOP/s of the best jitted n x n matmul in `dtype` (float32 by default; inputs
    drawn in float32, then cast), after one warm-up call."""
    keys = jax.random.split(jax.random.PRNGKey(0))
    a, b = (jax.random.normal(k, (n, n), jnp.float32).astype(dtype) for k in keys)
    dot = jax.jit(jnp.dot)
    return 2 * n ** 3 / warm_best_time(lambda: dot(a, b).block_until_ready(), repeats)


def copy_bandwidth(num_bytes: int, repeats: int = 8) -> float:
    """Bytes/s of the best jitted read-and-write of a num_bytes buffer."""
    x = jnp.zeros((num_bytes // 4,), jnp.float32)
    add = jax.jit(lambda x: x + 1)
    return 2 * x.nbytes / warm_best_time(lambda: add(x).block_until_ready(), repeats)
