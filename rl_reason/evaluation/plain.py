"""Plain-prompt evaluation: greedy accuracy, and avg@k / pass@k / maj@k from samples."""

from __future__ import annotations

import jax

from rl_reason import evaluation_metrics
from rl_reason.evaluation.session import EvalSession


def greedy_correct(session: EvalSession, rng) -> list[bool]:
    """Whether each record's greedy response is correct (logged as mode "greedy")."""
    indices = list(range(len(session.records)))
    rows = session.generate([session.plain_prompt(i) for i in indices], temperature=0.0, rng=rng)
    results = session.score("greedy", indices, [session.decode(ids) for ids, _ in rows], rows)
    return [result.correct for result in results]


def sampled_metrics(session: EvalSession, rng: jax.Array) -> dict[str, float]:
    """avg@n, pass@k, avg@k, maj@k from num_samples samples per record, plus response
    length and truncation rate (logged as mode "sample")."""
    settings = session.settings
    n, num_records = settings.num_samples, len(session.records)
    indices = [i for i in range(num_records) for _ in range(n)]
    rows = session.generate([session.plain_prompt(i) for i in indices],
                            temperature=settings.temperature, rng=rng)
    results = session.score("sample", indices, [session.decode(ids) for ids, _ in rows], rows,
                            samples=[j % n for j in range(len(indices))])
    correct = [[r.correct for r in results[p * n:(p + 1) * n]] for p in range(num_records)]
    extracted = [[r.extracted for r in results[p * n:(p + 1) * n]] for p in range(num_records)]
    metrics = evaluation_metrics.sample_metrics(extracted, correct, settings.ks)
    metrics["mean_response_tokens"] = sum(len(ids) for ids, _ in rows) / len(rows)
    metrics["truncation_rate"] = sum(truncated for _, truncated in rows) / len(rows)
    return metrics
