"""Where each row of benchmarks/sampler.py stops: the response lengths of a workload.

    uniform    every row runs to the budget
    longtail   lognormal lengths with a median of LONGTAIL_MEDIAN x the budget, the
               top LONGTAIL_AT_BUDGET of rows cut at the budget (RL responses on math:
               most stop far below max_new_tokens, a few run to it)

The long-tail lengths are the distribution's quantiles at (i + 0.5) / rows, shuffled
by a seeded generator: every run of a batch size gets the same lengths, with no
sampling noise in how many rows reach the budget (at least one always does, so a
static batch always runs the whole budget, as it would on this workload).
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

LENGTHS = ("uniform", "longtail")
LONGTAIL_MEDIAN = 0.15
LONGTAIL_AT_BUDGET = 0.05


def stop_points(kind: str, rows: int, budget: int, seed: int = 0) -> np.ndarray:
    """[rows] int: the number of tokens each row generates (1..budget)."""
    if kind == "uniform":
        return np.full(rows, budget, np.int64)
    if kind != "longtail":
        raise ValueError(f"lengths {kind!r}: one of {LENGTHS}")
    # P(length >= budget) = LONGTAIL_AT_BUDGET for log(length) ~ N(log(median), sigma).
    sigma = np.log(1 / LONGTAIL_MEDIAN) / NormalDist().inv_cdf(1 - LONGTAIL_AT_BUDGET)
    quantiles = [(i + 0.5) / rows for i in range(rows)]
    lengths = np.array([budget * LONGTAIL_MEDIAN * np.exp(sigma * NormalDist().inv_cdf(q))
                        for q in quantiles])
    lengths = np.clip(np.round(lengths), 1, budget).astype(np.int64)
    lengths[-1] = budget
    return np.random.default_rng(seed).permutation(lengths)


def useful_flops(matmul_flops_per_position: float, attention_flops_per_context: float,
                 prompt_len: int, lengths: np.ndarray) -> float:
    """Model FLOPs of generating `lengths` tokens after prompts of prompt_len tokens:
    every position fed through the model (the prompt and all generated tokens but the
    last) costs the matmuls plus attention over the tokens it attends to."""
    total = 0.0
    for length in lengths:
        positions = prompt_len + int(length) - 1
        contexts = np.arange(1, positions + 1)  # position t attends to t + 1 tokens
        total += positions * matmul_flops_per_position + attention_flops_per_context * contexts.sum()
    return total
