"""ExGRPO's experience buffer and its two selections (docs/methods.md, "ExGRPO").

Legend: G group size; k a question's latest success count out of G; L a response's
length in tokens.

The buffer maps a question id to the correct responses the policy produced for it
(response ids, the per-token log-probs recorded when they were sampled) and k. It is
training state: `state()` packs it into a few flat arrays for the checkpoint and
`ExperienceBuffer.from_state` rebuilds it exactly (dict order included, so every
draw after a resume is the draw an uninterrupted run makes).

Selection is two pure functions of the buffer and a numpy Generator:
`select_questions` (bucketed by k with Gaussian bucket weights, or uniform) and
`pick_trajectory` (lowest / highest mean token entropy, or random).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Iterable, Sequence

import numpy as np

from rl_reason.data.record import Record

from rl_reason.methods.components.replay_settings import (QUESTION_SELECTIONS,  # noqa: E402
                                                         TRAJECTORY_SELECTIONS)
# Host bytes a stored token costs: an int32 id and a float32 recorded log-prob.
BYTES_PER_TOKEN = 8


def text_key(text: str) -> str:
    """The de-duplication key of a response: a digest of its exact text (equal texts,
    equal keys), so the buffer does not keep a second copy of every response."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


@dataclasses.dataclass
class Trajectory:
    response: np.ndarray   # int32 [L] the sampled ids, stop token included
    logprobs: np.ndarray   # float32 [L] log-probs recorded at sampling time
    key: str               # text_key of the decoded response


@dataclasses.dataclass
class Entry:
    record: Record
    context: np.ndarray    # int32 prompt ids the trajectories were sampled under
    k: int                 # latest success count out of G
    trajectories: list[Trajectory]


class ExperienceBuffer:
    """question id -> Entry, in insertion order."""

    def __init__(self):
        self.entries: dict[str, Entry] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, question_id: str) -> bool:
        return question_id in self.entries

    @property
    def num_trajectories(self) -> int:
        return sum(len(e.trajectories) for e in self.entries.values())

    def update(self, record: Record, context: Sequence[int], k: int,
               trajectories: Iterable[Trajectory]) -> int:
        """Set the question's k and add the trajectories whose text it does not hold
        yet; returns how many were added."""
        entry = self.entries.get(record.id)
        if entry is None:
            entry = self.entries[record.id] = Entry(record, np.asarray(context, np.int32), k, [])
        entry.k = int(k)
        known = {t.key for t in entry.trajectories}
        added = 0
        for t in trajectories:
            if t.key not in known:
                known.add(t.key)
                entry.trajectories.append(t)
                added += 1
        return added

    def remove(self, question_id: str) -> bool:
        return self.entries.pop(question_id, None) is not None

    def buckets(self) -> dict[int, list[str]]:
        """k -> ids of the questions with at least one stored trajectory, sorted."""
        out: dict[int, list[str]] = {}
        for qid in sorted(self.entries):
            entry = self.entries[qid]
            if entry.trajectories:
                out.setdefault(entry.k, []).append(qid)
        return out

    # ------------------------------------------------------------------ checkpoint
    def state(self) -> dict:
        """Flat arrays (one concatenation for all ids, one for all log-probs) plus the
        questions' records: cheap to write however many trajectories there are."""
        entries = list(self.entries.values())
        trajectories = [t for e in entries for t in e.trajectories]
        return {
            "records": [{"problem": e.record.problem, "answer": e.record.answer,
                         "id": e.record.id, "source": e.record.source,
                         "meta": dict(e.record.meta)} for e in entries],
            "k": np.array([e.k for e in entries], np.int32),
            "context_lengths": np.array([len(e.context) for e in entries], np.int32),
            "contexts": _concat([e.context for e in entries], np.int32),
            "trajectories_per_question": np.array([len(e.trajectories) for e in entries],
                                                  np.int32),
            "lengths": np.array([len(t.response) for t in trajectories], np.int32),
            "responses": _concat([t.response for t in trajectories], np.int32),
            "logprobs": _concat([t.logprobs for t in trajectories], np.float32),
            "keys": [t.key for t in trajectories],
        }

    @classmethod
    def from_state(cls, state: dict) -> "ExperienceBuffer":
        buffer = cls()
        contexts = _split(state["contexts"], state["context_lengths"])
        responses = _split(state["responses"], state["lengths"])
        logprobs = _split(state["logprobs"], state["lengths"])
        keys = list(state["keys"])
        start = 0
        for i, fields in enumerate(state["records"]):
            n = int(state["trajectories_per_question"][i])
            record = Record(**fields)
            buffer.entries[record.id] = Entry(
                record, contexts[i], int(state["k"][i]),
                [Trajectory(responses[j], logprobs[j], keys[j]) for j in range(start, start + n)])
            start += n
        if start != len(responses):
            raise ValueError(f"experience buffer state: {len(responses)} trajectories, but the "
                             f"questions account for {start}")
        return buffer


def _concat(arrays: Sequence[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype) for a in arrays]) if arrays else \
        np.zeros((0,), dtype)


def _split(flat: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    bounds = np.cumsum(np.asarray(lengths, np.int64))[:-1]
    return [np.array(part) for part in np.split(np.asarray(flat), bounds)] if len(lengths) \
        else []


# ---------------------------------------------------------------------- selection
def bucket_weights(ks: Iterable[int], group_size: int, sd: float = 1.0) -> dict[int, float]:
    """The probability of each non-empty bucket k: the normal density N(k; G/2, sd) of
    the success count (count units, as the released code does), renormalised over the
    buckets given."""
    mu = group_size / 2
    density = {k: math.exp(-0.5 * ((k - mu) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
               for k in sorted(set(ks))}
    total = sum(density.values())
    return {k: d / total for k, d in density.items()}


def bucket_counts(sizes: dict[int, int], probs: dict[int, float], n: int,
                  rng: np.random.Generator) -> dict[int, int]:
    """How many questions each bucket gives: a multinomial draw of n over `probs`; a
    count above its bucket's size is capped there and the excess handed out one at a
    time to buckets with room, in proportion to their weights."""
    ks = sorted(sizes)
    counts = dict(zip(ks, rng.multinomial(n, [probs[k] for k in ks]).tolist()))
    excess = sum(max(0, counts[k] - sizes[k]) for k in ks)
    counts = {k: min(counts[k], sizes[k]) for k in ks}
    while excess > 0:
        room = [k for k in ks if counts[k] < sizes[k]]
        if not room:
            break
        weights = np.array([probs[k] for k in room])
        counts[room[rng.choice(len(room), p=weights / weights.sum())]] += 1
        excess -= 1
    return counts


def select_questions(buckets: dict[int, list[str]], n: int, group_size: int,
                     rng: np.random.Generator, mode: str = "bucketed",
                     sd: float = 1.0) -> list[str]:
    """min(n, eligible) distinct question ids: 'bucketed' draws bucket counts by
    `bucket_counts`, then questions uniformly without replacement within each bucket;
    'uniform' draws uniformly without replacement over every eligible question."""
    if mode not in QUESTION_SELECTIONS:
        raise ValueError(f"question selection {mode!r}; known: {QUESTION_SELECTIONS}")
    eligible = [q for k in sorted(buckets) for q in buckets[k]]
    n = min(n, len(eligible))
    if n <= 0:
        return []
    if mode == "uniform":
        return [eligible[i] for i in rng.choice(len(eligible), n, replace=False)]
    sizes = {k: len(qs) for k, qs in buckets.items() if qs}
    counts = bucket_counts(sizes, bucket_weights(sizes, group_size, sd), n, rng)
    chosen = []
    for k in sorted(counts):
        if counts[k]:
            chosen += [buckets[k][i] for i in rng.choice(sizes[k], counts[k], replace=False)]
    return chosen


def pick_trajectory(entropies: Sequence[float], mode: str, rng: np.random.Generator) -> int:
    """Index of the trajectory to replay: the lowest (or highest) mean token entropy
    under the current policy, the first on a tie; or one uniformly at random."""
    if mode == "lowest_entropy":
        return int(np.argmin(entropies))
    if mode == "highest_entropy":
        return int(np.argmax(entropies))
    if mode == "random":
        return int(rng.integers(len(entropies)))
    raise ValueError(f"trajectory selection {mode!r}; known: {TRAJECTORY_SELECTIONS}")
