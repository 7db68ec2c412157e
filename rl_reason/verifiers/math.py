"""Math answers checked with math-verify, in killable worker processes.

    from rl_reason.verifiers import MathVerifier
    with MathVerifier(num_workers=8, timeout_s=5.0) as verifier:
        results = verifier.verify_batch(responses, gold_answers)

Each response's last \\boxed{} (or "Answer:" line) is parsed and compared with the
gold answer by math-verify, so equivalent forms count (1/2, 0.5, \\frac12,
\\dfrac{1}{2}; sets, intervals, matrices, units, \\text{} answers as math-verify
handles them). Extraction, parsing and comparison all run in the workers: a
pathological response costs at most `timeout_s` and never runs in this process.

Keep one MathVerifier for a whole run: starting a worker imports sympy (about a
second). `verify_batch` at module level is the one-call convenience for scripts.
"""

from typing import Sequence

from rl_reason.verifiers.pool import WorkerPool, default_num_workers
from rl_reason.verifiers.result import STATUSES, VerifyResult

_TASK = "rl_reason.verifiers.math_task:score"


def check_batch_inputs(responses: Sequence[str], answers: Sequence) -> list[str]:
    """Gold answers as strings, after checking the batch is well formed."""
    if len(responses) != len(answers):
        raise ValueError(f"{len(responses)} responses but {len(answers)} answers")
    for index, response in enumerate(responses):
        if not isinstance(response, str):
            raise TypeError(f"response {index} is {type(response).__name__}, expected str")
    golds = []
    for index, answer in enumerate(answers):
        # Integer golds are common in datasets (GSM8K, synthetic tasks); floats or
        # None usually mean a broken reader, so they are refused.
        if isinstance(answer, bool) or not isinstance(answer, (str, int)):
            raise TypeError(f"answer {index} is {type(answer).__name__}, expected str or int")
        golds.append(str(answer))
    return golds


class MathVerifier:
    """verify_batch(responses, answers) -> list[VerifyResult]; `counts` totals statuses."""

    name = "math"

    def __init__(self, num_workers: int | None = None, timeout_s: float = 5.0, *,
                 memory_limit_mb: int = 4096):
        self.timeout_s = timeout_s
        self.num_workers = num_workers or default_num_workers()
        self._pool = WorkerPool(_TASK, self.num_workers, timeout_s, memory_limit_mb=memory_limit_mb)
        self.counts = {status: 0 for status in STATUSES}

    def verify_batch(self, responses: Sequence[str], answers: Sequence) -> list[VerifyResult]:
        golds = check_batch_inputs(responses, answers)
        outcomes = self._pool.map(list(zip(responses, golds)))
        results = []
        for outcome in outcomes:
            if outcome.status == "ok":
                status, extracted, detail = outcome.value
                reward = 1.0 if status == "correct" else 0.0
                results.append(VerifyResult(reward, status, extracted, detail, outcome.elapsed_s))
            else:
                results.append(VerifyResult(0.0, outcome.status, None, outcome.error, outcome.elapsed_s))
            self.counts[results[-1].status] += 1
        return results

    def wait_ready(self) -> None:
        """Blocks until all workers are up; optional, verify_batch waits for what it needs."""
        self._pool.wait_ready()

    @property
    def worker_pids(self) -> list[int]:
        return self._pool.pids

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> "MathVerifier":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def verify_batch(
    responses: Sequence[str],
    answers: Sequence,
    timeout_s: float = 5.0,
    num_workers: int | None = None,
) -> list[VerifyResult]:
    """Scores one batch with a temporary MathVerifier (starts and stops its workers).

    The public one-call entry point for scripts and notebooks; a training loop should
    hold a MathVerifier instead, since starting workers costs about a second.
    """
    with MathVerifier(num_workers=num_workers, timeout_s=timeout_s) as verifier:
        return verifier.verify_batch(responses, answers)
