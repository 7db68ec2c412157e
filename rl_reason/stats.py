"""Standard errors for held-out results, and for the change between two evaluations.

A held-out metric is a mean over problems of a per-problem score s_p in [0, 1]:

    greedy_accuracy   1 if the greedy answer is correct, else 0
    avg@k             mean correctness of the first k samples
    pass@k            the unbiased 1 - C(n-c, k) / C(n, k) from all n samples, c correct
    maj@k             correctness of the most common answer of the first k samples
    attempts@k        1 if the k-attempt episode was solved within k attempts

(the definitions of rl_reason/evaluation_metrics.py, so the means equal the logged
metrics). Its standard error is sd(s) / sqrt(P) over the P problems (sd with P - 1):
it covers both the choice of problems and the sampling. Two evaluations of the same
problems (before / after training, or two methods from one start) are compared by
the paired difference: mean(s_b - s_a) with standard error sd(s_b - s_a) / sqrt(P),
much smaller than either SE alone when the per-problem scores are correlated.

    from rl_reason import stats
    scores = stats.per_problem_scores(stats.read_generations("WORKDIR/eval/step_40.jsonl"))
    stats.mean_and_se(scores["greedy_accuracy"])                  # Estimate(mean, se, n)
    stats.paired_difference(before["avg@8"], after["avg@8"])      # after - before
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Iterable, Mapping, Sequence

import numpy as np

from rl_reason import evaluation_metrics

Scores = dict[int, float]   # problem index -> score


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A mean over n problems and its standard error (nan when n < 2)."""

    mean: float
    se: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.3f} ± {self.se:.3f}"


def mean_and_se(values: Sequence[float] | Mapping[int, float]) -> Estimate:
    """The mean of per-problem scores and its standard error sd / sqrt(n)."""
    x = np.asarray(list(values.values()) if isinstance(values, Mapping) else values, np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"stats.mean_and_se: needs a non-empty list of numbers, got shape {x.shape}")
    se = float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.nan
    return Estimate(float(x.mean()), se, int(x.size))


def paired_difference(before: Sequence[float] | Mapping[int, float],
                      after: Sequence[float] | Mapping[int, float]) -> Estimate:
    """mean(after - before) over the same problems, with the paired standard error.

    Sequences are paired by position; mappings (problem -> score) by key, and must
    hold the same problems."""
    if isinstance(before, Mapping) or isinstance(after, Mapping):
        if not (isinstance(before, Mapping) and isinstance(after, Mapping)):
            raise ValueError("stats.paired_difference: give two sequences or two mappings")
        if set(before) != set(after):
            missing = sorted(set(before) ^ set(after))
            raise ValueError(f"stats.paired_difference: the evaluations cover different "
                             f"problems ({len(missing)} in only one, e.g. {missing[:5]})")
        keys = sorted(before)
        before, after = [before[k] for k in keys], [after[k] for k in keys]
    a, b = np.asarray(before, np.float64), np.asarray(after, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"stats.paired_difference: {a.size} scores before, {b.size} after")
    return mean_and_se(b - a)


def read_generations(path: str | os.PathLike) -> list[dict]:
    """The rows of an evaluation's generations file (JSONL; a line cut short by a crash
    is skipped)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def per_problem_scores(generations: Iterable[dict], ks: Sequence[int] | None = None,
                       ) -> dict[str, Scores]:
    """{metric: {problem index: score}} from evaluation rows (rl_reason.evaluate:
    mode 'greedy' / 'sample', problem, sample, status, extracted).

    Metrics: greedy_accuracy (with greedy rows), avg@n for the n samples per problem,
    and avg@k, pass@k, maj@k for each k in `ks` (default: 1, then powers of two up to
    n). Every problem must have the same number of samples."""
    greedy: Scores = {}
    samples: dict[int, dict[int, tuple[bool, str | None]]] = {}
    for row in generations:
        correct = row["status"] == "correct"
        if row["mode"] == "greedy":
            greedy[int(row["problem"])] = float(correct)
        elif row["mode"] == "sample":
            samples.setdefault(int(row["problem"]), {})[int(row["sample"])] = (
                correct, row.get("extracted"))
    out: dict[str, Scores] = {}
    if greedy:
        out["greedy_accuracy"] = greedy
    if not samples:
        return out
    sizes = {len(s) for s in samples.values()}
    if len(sizes) != 1:
        raise ValueError(f"stats.per_problem_scores: problems have different numbers of "
                         f"samples: {sorted(sizes)}")
    n = sizes.pop()
    if ks is None:
        ks = [1] + [2 ** i for i in range(1, n.bit_length()) if 2 ** i <= n]
    ordered = {p: [s[j] for j in sorted(s)] for p, s in sorted(samples.items())}
    for k in sorted(set(ks) | {n}):
        if not 1 <= k <= n:
            raise ValueError(f"stats.per_problem_scores: k={k} is not in 1..{n} samples")
        out[f"avg@{k}"] = {p: sum(c for c, _ in s[:k]) / k for p, s in ordered.items()}
        if k in ks:
            out[f"pass@{k}"] = {p: evaluation_metrics.pass_at_k(n, sum(c for c, _ in s), k)
                                for p, s in ordered.items()}
            out[f"maj@{k}"] = {p: _majority_correct(s[:k]) for p, s in ordered.items()}
    return out


def _majority_correct(samples: Sequence[tuple[bool, str | None]]) -> float:
    winner = evaluation_metrics.majority_answer([answer for _, answer in samples])
    return float(winner is not None and samples[winner][0])


def attempt_scores(generations: Iterable[dict]) -> dict[str, Scores]:
    """{"attempts@k": {problem index: 1 if solved within k attempts, else 0}} for k = 1
    up to the most attempts any episode made, from the 'attempts' rows of an evaluation
    (rl_reason/evaluation/attempts.py: one row per attempt; a correct one ends the
    episode). Empty without such rows."""
    solved_at: dict[int, int | None] = {}
    made = 0
    for row in generations:
        if row["mode"] != "attempts":
            continue
        problem, attempt = int(row["problem"]), int(row["attempt"])
        solved_at.setdefault(problem, None)
        made = max(made, attempt)
        if row["status"] == "correct":
            solved_at[problem] = attempt
    return {f"attempts@{k}": {p: float(s is not None and s <= k) for p, s in sorted(solved_at.items())}
            for k in range(1, made + 1)}
