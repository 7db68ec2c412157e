"""Verifiers: score model responses against gold answers.

    verifier = make_verifier("math", num_workers=8, timeout_s=5.0)
    results = verifier.verify_batch(responses, answers)   # list[VerifyResult]
    count_statuses(results)   # {"correct": .., "wrong": .., "no_answer": .., "timeout": .., "error": ..}
    verifier.close()

"math" runs math-verify in killable worker processes (see pool.py); "exact_int"
compares integers in-process for the embedded synthetic task. Nothing in this
package imports JAX: the workers start from `rl_reason.verifiers.worker`.
"""

from rl_reason.verifiers.exact_int import ExactIntVerifier, parse_integer
from rl_reason.verifiers.extract import cut_after_first_box, extract_answer
from rl_reason.verifiers.math import MathVerifier, verify_batch
from rl_reason.verifiers.pool import TaskOutcome, WorkerPool, default_num_workers
from rl_reason.verifiers.result import STATUSES, VerifyResult, count_statuses

VERIFIERS = {"math": MathVerifier, "exact_int": ExactIntVerifier}


def make_verifier(name: str, **kwargs) -> MathVerifier | ExactIntVerifier:
    """The verifier called `name` ('math' or 'exact_int'), built with `kwargs`."""
    if name not in VERIFIERS:
        raise ValueError(f"unknown verifier {name!r}; choose one of {sorted(VERIFIERS)}")
    return VERIFIERS[name](**kwargs)


__all__ = [
    "STATUSES",
    "VERIFIERS",
    "ExactIntVerifier",
    "MathVerifier",
    "TaskOutcome",
    "VerifyResult",
    "WorkerPool",
    "count_statuses",
    "cut_after_first_box",
    "default_num_workers",
    "extract_answer",
    "make_verifier",
    "parse_integer",
    "verify_batch",
]
