"""What a verifier says about one response, and batch counts for logging."""

import collections
import dataclasses
from typing import Iterable

# correct: the extracted answer matches the gold answer (reward 1).
# wrong: an answer was extracted and does not match (reward 0).
# no_answer: no \boxed{} / "Answer:" line in the response (reward 0).
# timeout: the item ran past the verifier's time limit and was abandoned (reward 0).
# error: the verifier crashed on the item, or the gold answer is unusable (reward 0).
STATUSES = ("correct", "wrong", "no_answer", "timeout", "error")


@dataclasses.dataclass(frozen=True)
class VerifyResult:
    reward: float
    status: str
    extracted: str | None = None
    # Why an item is "error" (exception text); None otherwise.
    detail: str | None = None
    # Wall time spent on the item in the verifier (dispatch to reply), for spotting
    # slow answers before they become timeouts.
    elapsed_s: float = 0.0

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"unknown verifier status {self.status!r}; expected one of {STATUSES}")
        if self.status != "correct" and self.reward != 0.0:
            raise ValueError(f"status {self.status!r} must carry reward 0, got {self.reward}")

    @property
    def correct(self) -> bool:
        return self.status == "correct"


def count_statuses(results: Iterable[VerifyResult]) -> dict[str, int]:
    """Number of results per status, every status present (zeros included) for stable logs."""
    counts = collections.Counter(result.status for result in results)
    return {status: counts.get(status, 0) for status in STATUSES}
