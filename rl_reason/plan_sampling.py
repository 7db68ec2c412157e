"""The sampling time of one training step at a real model's size, estimated (rl_reason.plan).

Nothing is run: a roofline of the decode step on the chip's published bandwidth and
peak, slowed by the fraction of that roofline the sampler was measured to reach, over
the decode work a round of rollouts takes in a static batch and in the continuous
batch. The inputs and what they assume:

- Response lengths: the sampler benchmark's long tail (benchmarks/sampler_lengths.py:
  lognormal, median 0.15 of rollout.max_new_tokens, 5% of rows at it), whose mean is
  LONGTAIL_MEAN of the budget. Real RL lengths on math look like this (issue 28); a
  run whose responses are all long gains nothing from continuous batching.
- One rollout round of rollout.prompts_per_step x group_size rows through the method's
  slots (plan's sampler rows); methods with several rounds a step (multi-attempt, R3L)
  take about that many times longer.
- A decode step at b live rows costs max(bytes / bandwidth, FLOPs / peak) / ROOFLINE:
  bytes are the compute-dtype weights plus the keys and values the rows attend to,
  FLOPs 2 x matmul parameters per row; both split over the chips (tensor and fsdp
  shard the weights, data and fsdp the rows).
- ROOFLINE: the fraction of the matmul-only ceiling the sampler reaches at uniform
  lengths, measured on CPU (benchmarks/README.md); no accelerator was measured, so
  the same fraction is assumed there.
- The continuous batch: its decode work is the useful tokens over SLOT_USE, the share
  of its slot-steps holding a live row, measured on the long-tail workload
  (benchmarks/README.md); it runs at least max_new_tokens steps (the longest row), and
  at most `slots` rows a step.
- The static batch (before issue 28): ceil(rows / slots) calls, each max_new_tokens
  steps at its full batch, since one row of each call runs to the budget.
- Prefill (every context once, compute-bound) is the same for both and added to both.
"""

from __future__ import annotations

import dataclasses
import math

from rl_reason.models.config import ModelConfig

# benchmarks/sampler_lengths.py: the long tail's mean length over the budget.
LONGTAIL_MEAN = 0.25
# E[L^2] / (2 E[L]) over the budget for the same lengths: the mean position a decode
# step of a long-tail row attends from.
LONGTAIL_MEAN_POSITION = 0.26
# Measured (benchmarks/README.md, "Sampler"): useful tokens over slot-steps of the
# continuous batch on the long-tail workload, and the sampler's fraction of the
# matmul-only decode ceiling at uniform lengths.
SLOT_USE = 0.8
ROOFLINE = 0.65


@dataclasses.dataclass(frozen=True)
class Chip:
    hbm_gib: float
    hbm_gb_s: float       # memory bandwidth, GB/s
    bf16_tflops: float    # dense bfloat16 peak


# Published figures per chip.
CHIPS = {
    "v5e": Chip(16, 819, 197),
    "v6e": Chip(32, 1640, 918),
    "v5p": Chip(95, 2765, 459),
    "h100": Chip(80, 3350, 989),
    "h200": Chip(141, 4800, 989),
}


@dataclasses.dataclass(frozen=True)
class SamplingEstimate:
    static_s: float
    continuous_s: float
    assumption: str

    @property
    def speedup(self) -> float:
        return self.static_s / self.continuous_s


def matmul_params(config: ModelConfig) -> int:
    c = config
    q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    per_layer = c.hidden_size * (2 * q + 2 * kv) + 3 * c.hidden_size * c.intermediate_size
    return c.num_layers * per_layer + c.vocab_size * c.hidden_size


def estimate(config: ModelConfig, chip: Chip, *, chips: int, rows: int, slots: int,
             context: int, budget: int, dtype_bytes: int) -> SamplingEstimate:
    """Seconds of sampling for one round of `rows` rows of `context` + up to `budget`
    tokens through `slots` slots on `chips` chips (module docstring)."""
    c = config
    weight_bytes = matmul_params(c) * dtype_bytes / chips
    kv_per_token = 2 * c.num_layers * c.num_kv_heads * c.head_dim * dtype_bytes
    flops_per_row = 2 * matmul_params(c)

    def step_seconds(live_rows: float, mean_position: float) -> float:
        kv = live_rows * (context + mean_position) * kv_per_token / chips
        memory = (weight_bytes + kv) / (chip.hbm_gb_s * 1e9)
        compute = live_rows * flops_per_row / chips / (chip.bf16_tflops * 1e12)
        return max(memory, compute) / ROOFLINE

    prefill = rows * context * flops_per_row / chips / (chip.bf16_tflops * 1e12) / ROOFLINE
    calls = math.ceil(rows / slots)
    static = sum(budget * step_seconds(min(slots, rows - i * slots), budget / 2)
                 for i in range(calls)) + prefill
    slot_steps = rows * LONGTAIL_MEAN * budget / SLOT_USE
    steps = max(budget, slot_steps / slots)
    continuous = steps * step_seconds(slot_steps / steps, LONGTAIL_MEAN_POSITION * budget) + prefill
    return SamplingEstimate(
        static, continuous,
        f"one round of {rows} rows, long-tail lengths (mean {LONGTAIL_MEAN:g} of "
        f"{budget}), {ROOFLINE:g} of the roofline, continuous slot use {SLOT_USE:g}")
