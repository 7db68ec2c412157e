"""Failure-prefix conditioning, the pieces that decide (docs/methods.md, section
"Failure-prefix conditioning"); rl_reason/methods/failure_prefix.py runs them.

    FailurePrefixSettings   the method's knobs (`config.method`), checked when built
    pass_rates, saturated   which pool problems the policy solves at >= a pass rate
    content_ids, prefix_length the token ids a wrong response is cut at
    failure_cuts            the distinct prefixes of one wrong response
    closest_to_tau          the candidate whose continuation accuracy is nearest tau
    plateaued               whether the held-out metric stopped improving

Pure functions of samples and numbers, so each rule is tested by hand.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from rl_reason.config_blocks import parse_block
from rl_reason.errors import ConfigError
from rl_reason.data.record import Record
from rl_reason.methods.base import Sample


@dataclasses.dataclass(frozen=True)
class FailurePrefixSettings:
    """config.method of a failure-prefix run (defaults: the embedded task)."""

    # Saturated set: pool_size records drawn from the training stream at each mining
    # round, pass_samples plain samples each; saturated when the pass rate is at least
    # saturation_threshold.
    pool_size: int = 64
    pass_samples: int = 8
    saturation_threshold: float = 0.875
    # Mining: mining_samples more plain samples per saturated problem; its wrong
    # responses (and those of the pass-rate samples) are the failures, the first
    # max_failures of them per problem are cut.
    mining_samples: int = 32
    max_failures: int = 2
    # Prefixes: each failure cut at these fractions of its tokens; probe_samples
    # continuations of each cut measure its accuracy; the cut nearest tau is kept.
    cut_fractions: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    probe_samples: int = 4
    tau: float = 0.5
    # Refresh: mine again every refresh_every steps (0 = never), and/or when
    # plateau_metric has not improved by more than plateau_delta over the last
    # plateau_patience evaluations since the last mining; at most max_refreshes
    # times (0 = no limit).
    refresh_every: int = 0
    refresh_on_plateau: bool = False
    plateau_metric: str = "eval/greedy_accuracy"
    plateau_delta: float = 0.0
    plateau_patience: int = 2
    max_refreshes: int = 0

    def __post_init__(self):
        def require(ok, message):
            if not ok:
                raise ConfigError(f"method.{message}")

        for name in ("pool_size", "pass_samples", "mining_samples", "max_failures",
                     "probe_samples", "plateau_patience"):
            require(getattr(self, name) >= 1, f"{name}={getattr(self, name)} must be >= 1")
        for name in ("refresh_every", "max_refreshes"):
            require(getattr(self, name) >= 0, f"{name}={getattr(self, name)} must be >= 0")
        require(0.0 <= self.saturation_threshold <= 1.0,
                f"saturation_threshold={self.saturation_threshold} must be in [0, 1]")
        require(0.0 <= self.tau <= 1.0, f"tau={self.tau} must be in [0, 1]")
        require(self.plateau_delta >= 0, f"plateau_delta={self.plateau_delta} must be >= 0")
        fractions = self.cut_fractions
        require(len(fractions) >= 1 and all(0 < f < 1 for f in fractions)
                and list(fractions) == sorted(set(fractions)),
                f"cut_fractions={fractions} must be increasing, distinct, each in (0, 1)")
        require(self.plateau_metric.startswith("eval/"),
                f"plateau_metric={self.plateau_metric!r} must be a held-out metric ('eval/...')")

    @classmethod
    def from_config(cls, config) -> "FailurePrefixSettings":
        """The settings of config.method, checked against the rest of the run config."""
        block = dict(config.method)
        if "cut_fractions" in block:
            block["cut_fractions"] = tuple(float(f) for f in block["cut_fractions"])
        settings = parse_block(cls, block, "method", owner="failure_prefix", partial=True)
        if config.rollout.max_new_tokens < 2:
            raise ConfigError("failure_prefix: rollout.max_new_tokens must be >= 2 (a prefix "
                              "leaves at least one token of the response to sample)")
        if settings.refresh_on_plateau and not (config.eval.enabled and config.train.eval_every):
            raise ConfigError("method.refresh_on_plateau needs held-out evaluations during the "
                              "run: eval.enabled=True and train.eval_every > 0")
        return settings


def pass_rates(samples: Sequence[Sample]) -> dict[str, float]:
    """Record id -> share of its samples the verifier accepts (first-seen order)."""
    counts: dict[str, list[int]] = {}
    for s in samples:
        correct_total = counts.setdefault(s.request.record.id, [0, 0])
        correct_total[0] += int(s.correct)
        correct_total[1] += 1
    return {rid: correct / total for rid, (correct, total) in counts.items()}


def saturated(records: Sequence[Record], rates: dict[str, float],
              threshold: float) -> list[Record]:
    """The records whose pass rate is at least `threshold`, in order."""
    return [r for r in records if r.id in rates and rates[r.id] >= threshold]


def content_ids(sample: Sample) -> list[int]:
    """The response as scored (prefix included), without the stop token that ends a
    finished response: a prefix must never end the turn."""
    ids = sample.full_response
    return ids if sample.truncated or not ids else ids[:-1]


def prefix_length(num_tokens: int, fraction: float) -> int:
    """Tokens kept when a response of `num_tokens` is cut at `fraction`: the nearest
    integer to fraction * num_tokens (halves up), at least 1 and at most
    num_tokens - 1, so a prefix is never empty and never the whole response."""
    if num_tokens < 2:
        raise ValueError(f"a response of {num_tokens} tokens cannot be cut")
    return min(num_tokens - 1, max(1, math.floor(fraction * num_tokens + 0.5)))


def failure_cuts(ids: Sequence[int], fractions: Sequence[float]) -> list[tuple[float, tuple[int, ...]]]:
    """(fraction, prefix ids) for each fraction whose cut differs from the earlier ones
    (short responses map several fractions to one position); none for < 2 tokens."""
    if len(ids) < 2:
        return []
    cuts, seen = [], set()
    for fraction in fractions:
        n = prefix_length(len(ids), fraction)
        if n not in seen:
            seen.add(n)
            cuts.append((fraction, tuple(int(t) for t in ids[:n])))
    return cuts


def closest_to_tau(accuracies: Sequence[float], tau: float) -> int:
    """Index of the accuracy nearest `tau`; the first one on ties (candidates are
    ordered by failure, then by cut fraction, so ties go to the shorter prefix)."""
    if not accuracies:
        raise ValueError("closest_to_tau: no candidates")
    # Rounded so that e.g. |0.75 - 0.5| and |0.25 - 0.5| tie exactly.
    distances = [round(abs(a - tau), 9) for a in accuracies]
    return distances.index(min(distances))


def plateaued(values: Sequence[float], delta: float, patience: int) -> bool:
    """True when the last `patience` values do not beat the best value before them
    by more than `delta` (and there is at least one value before them)."""
    if len(values) <= patience:
        return False
    return max(values[-patience:]) <= max(values[:-patience]) + delta
