"""The evaluation modes behind rl_reason/evaluate.py (its `evaluate_model` runs them).

    settings.py           EvalSettings (what to run), EvalResults
    session.py            EvalSession: batched generation, scoring, the generations log
    plain.py              greedy accuracy; avg@k, pass@k, maj@k from samples
    attempts.py           k attempts with feedback (multi-attempt, R3L)
    misleading_prefix.py  continuation from a wrong response's prefix (failure prefix)
"""
