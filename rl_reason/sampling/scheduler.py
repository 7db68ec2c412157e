"""The continuous batch's host loop: which rows go into which slots, when to compact,
which window each decode segment reads.

    admit waiting rows into free slots ──► decode segment ──► read done_B, step_B ─┐
        ▲            (no row waits: compact the live slots to a smaller size)      │
        └──────────────────────────────────────────────────────────────────────────┘

Rows are admitted in call order. A decode segment runs on the device until one of:
every slot is done; the furthest row reaches the segment's window; or enough slots
are done that the host has work: a refill chunk (REFILL_FRACTION of the slots, or
every waiting row) while rows wait, else enough for the live rows to fit the next
smaller size of the slot ladder (shapes.slot_ladder). Between segments only done_B,
step_B ([B] each) and the segment's step count come back to the host; the outputs
come back once, at the end.

Nothing here looks at a row's budget or at the tokens: the schedule reacts to rows
stopping as it would to stop tokens, so a benchmark that forces stop points through
per-row budgets measures what a stop-token workload would get.
"""

from __future__ import annotations

import collections
import dataclasses

import jax
import numpy as np
from jax.experimental import multihost_utils

from rl_reason import sharding
from rl_reason.sampling import draw, shapes, slots as slots_lib

# While rows wait, a segment returns to the host once this share of the slots is free
# (rounded up to a power of two, the refill chunk): each return costs a host round
# trip and a prefill of the freed slots' rows, while a freed slot idles until then (on
# average half of the chunk). Refills are prefilled a chunk at a time, so an admission
# has one of two shapes: all slots (the first fill) or one chunk.
REFILL_FRACTION = 1 / 8

# What the continuous batches of this process did, in all (diagnostics for tests and
# benchmarks): decode steps x slots ("slot_steps", the decode work), decode segments,
# admissions (prefills) and compactions.
WORK: collections.Counter = collections.Counter()


def put(array: np.ndarray, placement):
    """Host array -> device array; every process holds the same global array."""
    if placement is None:
        return jax.numpy.asarray(array)
    return jax.make_array_from_callback(array.shape, placement, lambda index: array[index])


def fetch(tree):
    """Device arrays -> numpy, every process getting the whole arrays."""
    if jax.process_count() > 1:
        return jax.tree.map(lambda x: np.asarray(
            multihost_utils.process_allgather(x, tiled=True)), tree)
    return jax.device_get(tree)


@dataclasses.dataclass
class Rows:
    """A call's rows on the host: left-padded contexts [N, P], their lengths, budgets."""

    tokens_NP: np.ndarray
    context_N: np.ndarray
    budget_N: np.ndarray

    @property
    def count(self) -> int:
        return len(self.budget_N)


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def refill_chunk(slots: int, multiple: int = 1) -> int:
    """The rows of one refill admission (REFILL_FRACTION)."""
    chunk = _next_power_of_two(max(1, int(slots * REFILL_FRACTION)))
    return min(slots, shapes.round_up(chunk, multiple))


def run(model, rows: Rows, *, slots: int, capacity: int, rng, settings: draw.Settings,
        greedy: bool, filtered: bool, cache_dtype: str | None, mesh):
    """Every row decoded in at most `slots` slots; returns the device state holding
    the outputs by row ([N', W], N' >= N rows)."""
    config = model.config
    model = slots_lib.unstack_layers(model)
    N, P = rows.count, rows.tokens_NP.shape[1]
    multiple = sharding.data_parallel_size(mesh) if mesh is not None else 1
    batch = sharding.batch_sharding(mesh) if mesh is not None else None
    same = sharding.replicated(mesh) if mesh is not None else None
    B = slots
    ends = shapes.segment_ends(capacity)
    ladder = shapes.slot_ladder(B, multiple)
    out_rows = shapes.round_up(shapes.bucket(N, minimum=1), multiple)
    state = slots_lib.empty(settings.pad_id, config=config, slots=B, rows=out_rows,
                            window=P + ends[0], capacity=capacity, filtered=filtered,
                            cache_dtype=cache_dtype, mesh=mesh)
    # The host's copy of each slot's done flag and step (its row's tokens so far).
    done_B = np.ones(B, bool)
    step_B = np.zeros(B, np.int64)
    waiting = 0   # rows [waiting, N) have not been admitted yet

    chunk = refill_chunk(B, multiple)
    while True:
        free_B = np.flatnonzero(done_B)
        while waiting < N and free_B.size:
            size = B if free_B.size == B else chunk
            count = min(free_B.size, N - waiting, size)
            new_A = np.arange(waiting, waiting + count)
            slot_A = np.full(size, B, np.int32)
            slot_A[:count] = free_B[:count]
            tokens_AP = np.zeros((size, P), np.int32)
            tokens_AP[:count] = rows.tokens_NP[new_A]
            context_A = np.ones(size, np.int32)
            context_A[:count] = rows.context_N[new_A]
            row_A = np.full(size, out_rows, np.int32)
            row_A[:count] = new_A
            budget_A = np.ones(size, np.int32)
            budget_A[:count] = rows.budget_N[new_A]
            state = slots_lib.admit(
                model, state, *(put(a, batch) for a in (tokens_AP, context_A, row_A, budget_A,
                                                        slot_A)),
                rng, settings, greedy=greedy, filtered=filtered, mesh=mesh)
            waiting += count
            WORK["admissions"] += 1
            done_B[slot_A[:count]] = False   # a row may be done at once: the device knows
            step_B[slot_A[:count]] = 1
            free_B = free_B[count:]
        live_B = ~done_B
        if not live_B.any():
            break
        if waiting == N:
            target = min(s for s in ladder if s >= live_B.sum())
            if target < state.slots:
                keep = np.concatenate([np.flatnonzero(live_B), np.flatnonzero(done_B)])[:target]
                state = slots_lib.compact(model, state, put(keep.astype(np.int32), same),
                                          mesh=mesh)
                done_B, step_B = done_B[keep], step_B[keep]
                WORK["compactions"] += 1
        B_now = state.slots
        if waiting < N:
            exit_at = min(chunk, N - waiting)
        else:
            smaller = [s for s in ladder if s < B_now]
            exit_at = B_now - smaller[0] if smaller else B_now
        exit_at = max(exit_at, int(done_B.sum()) + 1)
        furthest = int(step_B[~done_B].max())
        window = P + next(e for e in ends if e > furthest)
        if state.cache["k"][0].shape[-1] != window:
            state = dataclasses.replace(state, cache=slots_lib.resize(
                model, state.cache, window=window, mesh=mesh))
        state, steps = slots_lib.decode(model, state, rng, settings, np.int32(exit_at),
                                        context=P, greedy=greedy, filtered=filtered, mesh=mesh)
        done_B, step_B, steps = fetch((state.done_B, state.step_B, steps))
        done_B, step_B = np.array(done_B), np.array(step_B, np.int64)
        WORK["segments"] += 1
        WORK["slot_steps"] += int(steps) * state.slots
    return state
