"""Continuous batching (rl_reason/sampling/scheduler.py, slots.py) against the static
batch (continuous=False): refill and compaction leave every row's output as it is.

A row's output is the same whichever slot and step it runs at: tokens exactly, log-probs
to float tolerance (the compiled shapes differ: slot counts, prefill batches). The rows
here stop at very different lengths (budgets from 1 to 90 and a stop id), so a few slots
take many rows in turn and the live rows are compacted as the batch drains.
"""

import numpy as np
import pytest

from rl_reason import sampling, sharding
from rl_reason.sampling import scheduler, shapes
from sampling_helpers import random_model

PROMPTS = [[3, 17, 42], [5, 9, 81, 11, 2, 60, 33, 7, 90, 14, 21], [100, 4, 8, 15, 16, 23, 1],
           [12, 13], [40] * 16, [7, 7, 1], [99, 98, 97, 96, 95], [1]]
PROMPTS = PROMPTS + [p[::-1] + [5] for p in PROMPTS]           # 16 rows
BUDGETS = [1, 90, 3, 60, 2, 40, 7, 25, 90, 4, 12, 1, 33, 5, 70, 2]
STOP = (7,)


@pytest.fixture(scope="module")
def model():
    return random_model()


@pytest.fixture(scope="module")
def static(model):
    """The static batch's rows, one call per sampling mode."""
    return {mode: sampling.generate(model, PROMPTS, max_new_tokens=BUDGETS, rng=11,
                                    stop_token_ids=STOP, continuous=False, **options)
            for mode, options in MODES.items()}


MODES = {"filtered": dict(temperature=0.9, top_p=0.8), "greedy": dict(greedy=True)}


def assert_same_rows(out, expected, atol=1e-5, rows=None):
    rows = np.arange(len(expected.lengths)) if rows is None else np.asarray(rows)
    np.testing.assert_array_equal(out.lengths, expected.lengths[rows])
    np.testing.assert_array_equal(out.truncated, expected.truncated[rows])
    np.testing.assert_array_equal(out.tokens, expected.tokens[rows])
    np.testing.assert_allclose(out.logprobs, expected.logprobs[rows], rtol=0, atol=atol)
    np.testing.assert_allclose(out.policy_logprobs, expected.policy_logprobs[rows], rtol=0,
                               atol=atol)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("max_slots", [0, 3, 8])
def test_rows_match_the_static_batch_whatever_the_slots(model, static, mode, max_slots):
    before = dict(scheduler.WORK)
    out = sampling.generate(model, PROMPTS, max_new_tokens=BUDGETS, rng=11, stop_token_ids=STOP,
                            max_slots=max_slots, **MODES[mode])
    assert_same_rows(out, static[mode])
    work = {k: scheduler.WORK[k] - before.get(k, 0) for k in ("admissions", "compactions")}
    if max_slots:      # fewer slots than rows: freed slots were refilled
        assert work["admissions"] > 1
    else:              # all 16 rows at once, then compacted (12, 8 slots) as they finished
        assert work["admissions"] == 1 and work["compactions"] >= 1
    # The rows stop at very different lengths, some at a stop id, some at their budget.
    assert out.lengths.min() == 1 and out.lengths.max() >= 60
    assert out.truncated.any() and (~out.truncated).any()


def test_outputs_do_not_depend_on_the_other_rows_or_their_order(model, static):
    # Greedy rows depend on their context and budget only: a reversed call, and calls
    # over every other row with other neighbours, give each row its static output.
    order = np.arange(len(PROMPTS))[::-1]
    reversed_out = sampling.generate(model, [PROMPTS[i] for i in order],
                                     max_new_tokens=[BUDGETS[i] for i in order], rng=0,
                                     greedy=True, stop_token_ids=STOP, max_slots=4)
    assert_same_rows(reversed_out, static["greedy"], rows=order)
    # Sampled rows draw with their index in the call: a call over the first rows alone
    # keeps them, whatever the later rows were.
    first = sampling.generate(model, PROMPTS[:5], max_new_tokens=BUDGETS[:5], rng=11,
                              stop_token_ids=STOP, max_slots=2, **MODES["filtered"])
    assert_same_rows(first, static["filtered"], rows=range(5))


@pytest.mark.parametrize("axes", [(2, 2, 2), (8, 1, 1)])
def test_sharded_slots_match_the_static_batch(model, static, axes):
    # 8 slots split over the batch axes (4 or 8 ways), refilled from 16 rows; the
    # admissions and the outputs by row are split too.
    mesh = sharding.make_mesh(*axes)
    out = sampling.generate(model, PROMPTS, max_new_tokens=BUDGETS, rng=11, stop_token_ids=STOP,
                            max_slots=8, mesh=mesh, **MODES["filtered"])
    assert_same_rows(out, static["filtered"], atol=1e-4)


def test_prefixes_in_refilled_slots(model):
    prefixes = [[50, 51], [], [70, 8, 99, 1, 2], [4]] * 4
    kwargs = dict(prefixes=prefixes, max_new_tokens=BUDGETS, rng=3, stop_token_ids=STOP,
                  temperature=1.1)
    assert_same_rows(sampling.generate(model, PROMPTS, max_slots=3, **kwargs),
                     sampling.generate(model, PROMPTS, continuous=False, **kwargs))


def test_finished_rows_cost_no_decode_work(model):
    # One row runs to 90 tokens, fifteen stop within 3: the static batch decodes all
    # 16 rows for 89 steps; the continuous one compacts to 8 slots (the ladder's
    # smallest size) once they stop, and decodes only those from then on.
    budgets = [90] + [3] * 15
    before = scheduler.WORK["slot_steps"]
    out = sampling.generate(model, PROMPTS, max_new_tokens=budgets, rng=0, stop_token_ids=())
    slot_steps = scheduler.WORK["slot_steps"] - before
    np.testing.assert_array_equal(out.lengths, budgets)
    static_steps = 16 * (90 - 1)   # the prefill draws each row's first token
    assert slot_steps <= 16 * 2 + 8 * (90 - 3)
    assert slot_steps < 0.6 * static_steps


def test_bfloat16_cache(model, static):
    # Half the cache's bytes; keys and values are rounded, so log-probs move a little.
    out = sampling.generate(model, PROMPTS, max_new_tokens=BUDGETS, rng=0, greedy=True,
                            stop_token_ids=STOP, cache_dtype="bfloat16")
    expected = static["greedy"]
    first = out.tokens[:, 0] == expected.tokens[:, 0]
    assert first.mean() >= 0.9
    np.testing.assert_allclose(out.logprobs[first, 0], expected.logprobs[first, 0], atol=0.05)
    assert not np.array_equal(out.logprobs, expected.logprobs)


def test_slot_ladder_and_count():
    # Buckets (2^k and 1.5 x 2^k) down to 8 slots, or 1/16 of the slots if more.
    assert shapes.slot_ladder(64) == (64, 48, 32, 24, 16, 12, 8)
    assert shapes.slot_ladder(256) == (256, 192, 128, 96, 64, 48, 32, 24, 16)
    assert shapes.slot_ladder(100) == (100, 96, 64, 48, 32, 24, 16, 12, 8)
    assert shapes.slot_ladder(5) == (5,)
    # On 8 or 16 data-parallel devices every size is a multiple of 8 or 16.
    assert shapes.slot_ladder(24, multiple=8) == (24, 16, 8)
    assert shapes.slot_ladder(64, multiple=16) == (64, 48, 32, 16)
    # All rows (bucketed), or max_slots when fewer, rounded to the data-parallel size.
    assert [shapes.slot_count(n, 0) for n in (1, 3, 5, 100)] == [1, 3, 6, 128]
    assert [shapes.slot_count(n, 64) for n in (5, 100, 1000)] == [6, 64, 64]
    assert shapes.slot_count(100, 60, multiple=8) == 64
    assert shapes.slot_count(3, 0, multiple=8) == 8


def test_bad_max_slots_raises():
    with pytest.raises(ValueError, match="max_slots=-1"):
        sampling.generate(random_model(), [[1, 2]], max_new_tokens=2, rng=0, max_slots=-1)
