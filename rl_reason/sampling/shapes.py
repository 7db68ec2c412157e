"""The shapes the sampler compiles: buckets, decode segments, the slot ladder.

Every jitted piece of the sampler is compiled once per shape, so the shapes a call can
take are drawn from small fixed sets: lengths and row counts rounded up to a `bucket`,
a generation's cache read in at most DECODE_SEGMENTS growing windows
(`segment_ends`), and a continuous batch's live rows compacted only to the sizes of
its `slot_ladder`. TRACE_COUNT counts the traces (a new trace is a new compilation)
for tests and benchmarks.
"""

from __future__ import annotations

import collections

# How many times each jitted function has been traced, by name.
TRACE_COUNT: collections.Counter = collections.Counter()

# Decode segments: at most DECODE_SEGMENTS, each at least MIN_SEGMENT new tokens long.
# Four segments read 5/8 of the generated slots one segment reads, for four loop
# bodies. A decode step's attention is bound by reading the cache, so short
# generations gain too: 64 new tokens after a 16-token prompt read 56 slots a step on
# average in four segments, 80 in one. Splitting a 64-token generation too
# (MIN_SEGMENT 16, not 64) gave +7% / +8% tokens/s at batch 64 / 256 on bench-19m
# (benchmarks/results/sampler_ceiling.md).
DECODE_SEGMENTS = 4
MIN_SEGMENT = 16

# The smallest slot count a continuous batch compacts to: MIN_SLOTS, or 1/LADDER_DEPTH
# of its slots if more. Below about 8 rows a decode step reads the weights for almost
# no rows whatever the count (weight-bound on every backend; on bench-19m's CPU runs a
# step of 8 rows took as long as one of 16), and each further size costs compilations.
MIN_SLOTS = 8
LADDER_DEPTH = 16


def bucket(n: int, minimum: int = 32) -> int:
    """Smallest power of two or 1.5 x power of two that is >= max(n, minimum).

    (32, 48, 64, 96, 128, ...): padding stays under a third of the bucket while the
    number of distinct shapes, hence compilations, grows only logarithmically.
    """
    n = max(n, minimum)
    power = 1 << (n - 1).bit_length()
    three_quarters = power // 4 * 3
    return three_quarters if power >= 4 and three_quarters >= n else power


def segment_ends(capacity: int) -> tuple[int, ...]:
    """Where each decode segment ends, in new tokens: equal parts of `capacity`."""
    n = max(1, min(DECODE_SEGMENTS, capacity // MIN_SEGMENT))
    return tuple(-(-capacity * (j + 1) // n) for j in range(n))


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def slot_ladder(slots: int, multiple: int = 1) -> tuple[int, ...]:
    """The slot counts a continuous batch of `slots` slots may run at, largest first:
    `slots` itself, then the buckets below it (powers of two and 1.5 x powers of two,
    as `bucket`) down to max(MIN_SLOTS, slots / LADDER_DEPTH, `multiple`), keeping only
    multiples of `multiple` (the data-parallel size) so every size splits evenly over
    the batch axes. A compacted batch keeps at least two thirds of its slots live;
    halving instead took 14% more slot-steps (11256 against 9880) and 4.5% more time
    on the long-tail workload of benchmarks/sampler.py at batch 64, budget 512."""
    floor = max(MIN_SLOTS, slots // LADDER_DEPTH, multiple)
    sizes = {bucket(n, minimum=1) for n in range(floor, slots)}
    return (slots,) + tuple(sorted((size for size in sizes
                                    if floor <= size < slots and size % multiple == 0),
                                   reverse=True))


def slot_count(rows: int, max_slots: int, multiple: int = 1) -> int:
    """The slots (rows decoded at once) of a call over `rows` rows with at most
    `max_slots` (0: all rows), a multiple of the data-parallel size `multiple`: the rows'
    bucket, so calls of similar sizes share compilations, but never above max_slots
    (rounded up to `multiple`), which bounds the KV cache."""
    slots = round_up(bucket(rows, minimum=1), multiple)
    return min(slots, round_up(max_slots, multiple)) if max_slots else slots
