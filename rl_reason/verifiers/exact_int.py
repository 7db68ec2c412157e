"""Exact integer answers, for the embedded synthetic task; runs in-process.

Same interface as MathVerifier. In-process is safe here: extraction is linear-time
(see extract.py) and the comparison is an integer parse, so nothing can hang.

Accepted answer forms (after extraction, surrounding whitespace ignored): an
optional leading + or -, then either plain digits ("-42", "007") or digits in
correctly placed thousands groups ("1,234,567"). "12,34" is not an integer here
(it reads as a list), and neither is "4.0", "4/1" or "four". Numbers longer than
Python's int-string limit (4300 digits) count as wrong rather than being parsed.
"""

import re
import time
from typing import Sequence

from rl_reason.verifiers.extract import extract_answer
from rl_reason.verifiers.math import check_batch_inputs
from rl_reason.verifiers.result import STATUSES, VerifyResult

_INTEGER = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)")


def parse_integer(text: str) -> int | None:
    """The integer `text` spells (see the module docstring), else None."""
    stripped = text.strip()
    if not _INTEGER.fullmatch(stripped):
        return None
    try:
        return int(stripped.replace(",", ""))
    except ValueError:  # longer than sys.get_int_max_str_digits()
        return None


class ExactIntVerifier:
    """verify_batch(responses, answers) -> list[VerifyResult]; `counts` totals statuses.

    num_workers and timeout_s are accepted so configs can swap verifiers freely; the
    work is a regex and an int() per item, so neither is needed.
    """

    name = "exact_int"

    def __init__(self, num_workers: int | None = None, timeout_s: float = 5.0):
        self.num_workers = num_workers
        self.timeout_s = timeout_s
        self.counts = {status: 0 for status in STATUSES}

    def verify_batch(self, responses: Sequence[str], answers: Sequence) -> list[VerifyResult]:
        golds = []
        for index, answer in enumerate(check_batch_inputs(responses, answers)):
            gold = parse_integer(answer)
            if gold is None:
                raise ValueError(f"exact_int verifier: gold answer {index} ({answer!r}) is not an integer")
            golds.append(gold)
        results = []
        for response, gold in zip(responses, golds):
            start = time.monotonic()
            extracted = extract_answer(response)
            if extracted is None:
                status = "no_answer"
            else:
                status = "correct" if parse_integer(extracted) == gold else "wrong"
            reward = 1.0 if status == "correct" else 0.0
            results.append(VerifyResult(reward, status, extracted, None, time.monotonic() - start))
            self.counts[status] += 1
        return results

    def close(self) -> None:
        """Nothing to release; present so callers can treat every verifier alike."""

    def __enter__(self) -> "ExactIntVerifier":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
