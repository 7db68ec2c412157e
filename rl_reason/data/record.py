"""One training or evaluation problem: the unit every data source produces."""

import dataclasses
import hashlib
from typing import Any


def normalize_problem(text: str) -> str:
    """Collapses runs of whitespace so reformatted copies of a problem compare equal."""
    return " ".join(text.split())


def problem_id(problem: str) -> str:
    """Stable id from the problem text: the same problem gets the same id in every run,
    file order and machine, which is what replay buffers and logs key on."""
    return hashlib.sha256(normalize_problem(problem).encode("utf-8")).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Record:
    """A problem with its reference answer.

    id: the dataset's own id when the reader was given `id_key`, otherwise
      `problem_id(problem)`.
    source: the dataset the record came from (file name, TFDS name, or the row's
      `data_source` field), so metrics can be split by source.
    meta: the row's remaining fields (e.g. verl's full chat under "chat"); JSON-able
      values. Excluded from the hash because dicts are unhashable; still compared by ==.
    """

    problem: str
    answer: str
    id: str
    source: str
    meta: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False)

    def __post_init__(self):
        # Readers convert types; a wrong type here is a programming error upstream
        # (e.g. bytes from TFDS not decoded), better caught at construction.
        for name in ("problem", "answer", "id", "source"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"Record.{name} must be str, got {type(value).__name__}: {value!r:.80}")
        if not isinstance(self.meta, dict):
            raise TypeError(f"Record.meta must be a dict, got {type(self.meta).__name__}")
