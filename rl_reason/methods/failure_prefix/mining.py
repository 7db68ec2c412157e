"""Failure-prefix conditioning, the pieces that decide (docs/methods.md, section
"Failure-prefix conditioning"); rl_reason/methods/failure_prefix/method.py runs them.

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

from rl_reason.data.record import Record
from rl_reason.methods.failure_prefix.settings import FailurePrefixSettings  # noqa: F401
from rl_reason.protocol import Sample


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
