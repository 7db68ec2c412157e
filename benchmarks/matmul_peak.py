"""The machine's measured float32 matmul peak, the yardstick of the other benchmarks.

    python benchmarks/matmul_peak.py

Prints benchmarks/timing.py's matmul_peak_flops (the one measurement every benchmark
uses): a jitted square matmul, best of several timed repeats after a warm-up;
FLOP/s = 2 n^3 / seconds.
"""

from __future__ import annotations

import os
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import matmul_peak_flops  # noqa: E402

if __name__ == "__main__":
    print(f"float32 matmul peak on {jax.devices()[0].platform}: "
          f"{matmul_peak_flops() / 1e9:.1f} GFLOP/s")
