"""The prompt stream the trainer draws batches from: shuffled, de-duplicated, resumable.

Order: epoch e visits every record once in the order of a permutation drawn from
numpy's Generator seeded with (seed, e) (identity order when shuffle=False), so the
order depends on nothing but the records, the seed and the epoch; no global RNG.

Batches always hold exactly batch_size records (the train step compiles for one
shape), so a batch crosses an epoch boundary when an epoch's records run out
mid-batch; near a boundary the same record can then appear twice in one batch, which
only gives it twice the samples that step. With num_epochs set, the prompts of the
last epoch that do not fill a whole batch are never served: next_batch raises
StreamExhausted instead, and says how many were left.

Retired records (ExGRPO retires questions the policy always solves) keep their place
in every permutation but are skipped when reached, so retiring changes which records
a batch holds but not the order of the others, and the set of retired ids is part of
state().

Records that cannot serve as a stream (too few to fill a batch, one id for two
problems) or a saved position taken on other records or another seed raise
sources.DataError, so the command line reports them as the user's to fix.
"""

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from absl import logging

from rl_reason.data.record import Record, normalize_problem
from rl_reason.data.sources import DataError

_STATE_KEYS = ("epoch", "index", "seed", "shuffle", "fingerprint", "retired")


class StreamExhausted(Exception):
    """No further full batch: num_epochs consumed, or too few records left unretired."""


class PromptStream:
    """Deterministic batches of Records; state()/restore() resume exactly."""

    def __init__(
        self,
        records: Sequence[Record],
        batch_size: int,
        seed: int,
        *,
        shuffle: bool = True,
        dedup: bool = True,
        num_epochs: int | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"PromptStream: batch_size must be >= 1, got {batch_size}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"PromptStream: seed must be a non-negative integer, got {seed!r}")
        if num_epochs is not None and num_epochs < 1:
            raise ValueError(f"PromptStream: num_epochs must be >= 1 or None (endless), got {num_epochs}")
        kept, dropped, conflicting = _dedup(records) if dedup else (list(records), 0, 0)
        if len(kept) < batch_size:
            raise DataError(
                f"PromptStream: {len(kept)} distinct records (after dropping {dropped} duplicates) "
                f"cannot fill a batch of {batch_size}"
            )
        _check_unique_ids(kept)
        if dropped:
            logging.info(
                "PromptStream: dropped %d duplicate problems (%d with a different answer than the copy kept)",
                dropped,
                conflicting,
            )
        self.records: tuple[Record, ...] = tuple(kept)
        self.num_duplicates_dropped = dropped
        self.batch_size = batch_size
        self.seed = int(seed)
        self.shuffle = shuffle
        self.num_epochs = num_epochs
        self.fingerprint = _fingerprint(self.records)
        self._known_ids = {r.id for r in self.records}
        self._retired: set[str] = set()
        self._num_active = len(self.records)
        self._epoch = 0
        self._index = 0
        self._order_cache: tuple[int, np.ndarray] | None = None

    @property
    def epoch(self) -> int:
        """The epoch the next record comes from (0-based)."""
        return self._epoch

    @property
    def num_active(self) -> int:
        """Records not retired."""
        return self._num_active

    def next_batch(self) -> list[Record]:
        return self.next_records(self.batch_size)

    def next_records(self, count: int) -> list[Record]:
        """The next `count` records (next_batch takes batch_size; refills take fewer)."""
        active = self.num_active
        if active < count:
            raise StreamExhausted(
                f"PromptStream: only {active} of {len(self.records)} prompts are not retired, "
                f"fewer than the {count} asked for"
            )
        batch: list[Record] = []
        epoch, index, n = self._epoch, self._index, len(self.records)
        while len(batch) < count:
            if self.num_epochs is not None and epoch >= self.num_epochs:
                # Position is left where it was, so the exception repeats on every call.
                leftover = (
                    f"; the last {len(batch)} prompts did not fill a batch of {count} "
                    "and were not served"
                    if batch
                    else ""
                )
                raise StreamExhausted(f"PromptStream: all {self.num_epochs} epochs consumed{leftover}")
            record = self.records[self._order(epoch)[index]]
            index += 1
            if index == n:
                epoch, index = epoch + 1, 0
            if record.id not in self._retired:
                batch.append(record)
        self._epoch, self._index = epoch, index
        return batch

    def retire(self, ids: Iterable[str]) -> None:
        """Future batches skip these ids (a single str is one id); retiring twice is harmless."""
        ids = [ids] if isinstance(ids, str) else list(ids)
        unknown = [i for i in ids if i not in self._known_ids]
        if unknown:
            raise ValueError(
                f"PromptStream.retire: ids not in this stream: {unknown[:5]} ({len(unknown)} in all)"
            )
        self._set_retired(self._retired | set(ids))

    @property
    def retired(self) -> frozenset[str]:
        return frozenset(self._retired)

    def state(self) -> dict[str, Any]:
        """The position as a JSON-able dict, for the checkpoint."""
        return {
            "epoch": self._epoch,
            "index": self._index,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "fingerprint": self.fingerprint,
            "retired": sorted(self._retired),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continues from a state() taken on a stream over the same records and seed."""
        missing = [k for k in _STATE_KEYS if k not in state]
        if missing:
            raise ValueError(
                f"PromptStream.restore: state lacks {missing}; expected keys {list(_STATE_KEYS)}"
            )
        if state["fingerprint"] != self.fingerprint:
            raise DataError(
                f"PromptStream.restore: dataset fingerprint {state['fingerprint']} in the state does not "
                f"match this stream's {self.fingerprint}: the records (or their order, or dedup) changed "
                "since the checkpoint; resuming would serve a different sequence"
            )
        for key in ("seed", "shuffle"):
            if state[key] != getattr(self, key):
                raise DataError(
                    f"PromptStream.restore: state has {key}={state[key]!r}, "
                    f"this stream {key}={getattr(self, key)!r}"
                )
        epoch, index = state["epoch"], state["index"]
        valid_epoch = isinstance(epoch, int) and epoch >= 0
        if not (valid_epoch and isinstance(index, int) and 0 <= index < len(self.records)):
            raise ValueError(
                f"PromptStream.restore: position epoch={epoch!r} index={index!r} is invalid for "
                f"{len(self.records)} records"
            )
        unknown = [i for i in state["retired"] if i not in self._known_ids]
        if unknown:
            raise ValueError(f"PromptStream.restore: retired ids not in this stream: {unknown[:5]}")
        self._epoch, self._index = epoch, index
        self._set_retired(set(state["retired"]))

    def _set_retired(self, retired: set[str]) -> None:
        # Counted per record, not per id: with dedup=False one id can cover several copies.
        self._retired = retired
        self._num_active = sum(1 for r in self.records if r.id not in retired)

    def _order(self, epoch: int) -> np.ndarray:
        if self._order_cache is None or self._order_cache[0] != epoch:
            n = len(self.records)
            order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
            self._order_cache = (epoch, order)
        return self._order_cache[1]


def _dedup(records: Sequence[Record]) -> tuple[list[Record], int, int]:
    """Keeps the first record of each problem (whitespace-normalised)."""
    first: dict[str, Record] = {}
    dropped = conflicting = 0
    for record in records:
        key = normalize_problem(record.problem)
        kept = first.get(key)
        if kept is None:
            first[key] = record
        else:
            dropped += 1
            conflicting += kept.answer != record.answer
    return list(first.values()), dropped, conflicting


def _check_unique_ids(records: Sequence[Record]) -> None:
    # Retiring by id must not silently retire another problem too.
    seen: dict[str, Record] = {}
    for record in records:
        other = seen.setdefault(record.id, record)
        if other is not record and normalize_problem(other.problem) != normalize_problem(record.problem):
            raise DataError(
                f"PromptStream: id {record.id!r} is used by different problems (sources {other.source!r} and "
                f"{record.source!r}); give unique ids or leave id_key unset to id records by problem text"
            )


def _fingerprint(records: Sequence[Record]) -> str:
    digest = hashlib.sha256()
    for record in records:
        for part in (record.id, normalize_problem(record.problem), record.answer):
            digest.update(part.encode("utf-8"))
            digest.update(b"\0")
    return digest.hexdigest()[:16]
