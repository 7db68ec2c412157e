"""PromptStream: deterministic order, dedup, epochs, exhaustion, retiring, exact resume."""

import json

import numpy as np
import pytest

from rl_reason.data import PromptStream, Record, StreamExhausted, problem_id


def make_records(n, source="synthetic"):
    return [
        Record(problem=f"problem {i}", answer=str(i), id=problem_id(f"problem {i}"), source=source)
        for i in range(n)
    ]


def problems(batches):
    return [[r.problem for r in batch] for batch in batches]


def take(stream, k):
    return [stream.next_batch() for _ in range(k)]


def test_same_seed_same_order_regardless_of_global_rng():
    records = make_records(20)
    np.random.seed(1)
    a = take(PromptStream(records, batch_size=4, seed=7), 12)
    np.random.seed(2)
    np.random.random(100)
    b = take(PromptStream(records, batch_size=4, seed=7), 12)
    assert problems(a) == problems(b)
    c = take(PromptStream(records, batch_size=4, seed=8), 12)
    assert problems(a) != problems(c)


def test_every_epoch_is_a_fresh_permutation():
    records = make_records(12)
    stream = PromptStream(records, batch_size=4, seed=0, num_epochs=3)
    epochs = [sum(problems(take(stream, 3)), []) for _ in range(3)]
    for order in epochs:
        assert sorted(order) == sorted(r.problem for r in records)
    assert len({tuple(order) for order in epochs}) == 3
    assert stream.epoch == 3
    with pytest.raises(StreamExhausted, match="all 3 epochs consumed$"):
        stream.next_batch()


def test_unshuffled_batches_cross_epoch_boundaries():
    stream = PromptStream(make_records(5), batch_size=2, seed=0, shuffle=False)
    assert problems(take(stream, 4)) == [
        ["problem 0", "problem 1"],
        ["problem 2", "problem 3"],
        ["problem 4", "problem 0"],
        ["problem 1", "problem 2"],
    ]
    assert stream.state()["epoch"] == 1 and stream.state()["index"] == 3


def test_last_partial_batch_ends_the_stream_and_keeps_raising():
    stream = PromptStream(make_records(5), batch_size=2, seed=3, num_epochs=1)
    served = sum(problems(take(stream, 2)), [])
    assert len(set(served)) == 4
    before = stream.state()
    for _ in range(2):
        with pytest.raises(StreamExhausted, match="the last 1 prompts did not fill a batch of 2"):
            stream.next_batch()
    assert stream.state() == before


def test_dedup_keeps_first_and_counts_dropped():
    records = [
        Record(problem="What is  1+1?", answer="2", id="a", source="f1"),
        Record(problem="Half of 4?", answer="2", id="b", source="f1"),
        Record(problem="What is 1+1?\n", answer="3", id="c", source="f2"),
        Record(problem="Half of 4?", answer="2", id="d", source="f2"),
    ]
    stream = PromptStream(records, batch_size=1, seed=0)
    assert [r.id for r in stream.records] == ["a", "b"]
    assert stream.num_duplicates_dropped == 2
    kept_all = PromptStream(records, batch_size=1, seed=0, dedup=False)
    assert len(kept_all.records) == 4 and kept_all.num_duplicates_dropped == 0


def test_too_few_records_and_bad_arguments():
    with pytest.raises(ValueError, match="3 distinct records .* cannot fill a batch of 4"):
        PromptStream(make_records(3), batch_size=4, seed=0)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        PromptStream(make_records(3), batch_size=1, seed=-1)
    with pytest.raises(ValueError, match="num_epochs must be >= 1"):
        PromptStream(make_records(3), batch_size=1, seed=0, num_epochs=0)


def test_one_id_for_two_different_problems_is_refused():
    records = [Record("p one", "1", "0", "a.jsonl"), Record("p two", "2", "0", "b.jsonl")]
    with pytest.raises(ValueError, match="id '0' is used by different problems .*'a.jsonl' and 'b.jsonl'"):
        PromptStream(records, batch_size=1, seed=0)


def test_retired_ids_are_skipped_and_others_keep_their_order():
    records = make_records(10)
    retired = {records[2].id, records[7].id}
    plain = PromptStream(records, batch_size=2, seed=5)
    retiring = PromptStream(records, batch_size=2, seed=5)
    retiring.retire(sorted(retired))
    retiring.retire([records[2].id])  # retiring twice is harmless
    assert retiring.num_active == 8 and retiring.retired == frozenset(retired)
    served = [r.id for batch in take(retiring, 8) for r in batch]  # two epochs of 8 active records
    assert retired.isdisjoint(served)
    expected = [r.id for batch in take(plain, 10) for r in batch if r.id not in retired]
    assert served == expected
    with pytest.raises(ValueError, match=r"retire: ids not in this stream: \['nope'\]"):
        retiring.retire(["nope"])


def test_retiring_below_batch_size_exhausts():
    records = make_records(4)
    stream = PromptStream(records, batch_size=3, seed=0)
    stream.retire(records[0].id)
    stream.next_batch()
    stream.retire([records[1].id])
    expected = "only 2 of 4 prompts are not retired, fewer than the 3 asked for"
    with pytest.raises(StreamExhausted, match=expected):
        stream.next_batch()


def test_restore_resumes_exactly_including_retired_ids():
    records = make_records(11)
    uninterrupted = PromptStream(records, batch_size=3, seed=42, num_epochs=4)
    first = PromptStream(records, batch_size=3, seed=42, num_epochs=4)
    for stream in (uninterrupted, first):
        take(stream, 2)
        stream.retire([records[4].id, records[9].id])
        take(stream, 3)  # 15 records served: past the end of the first epoch of 11
    saved = json.loads(json.dumps(first.state()))
    assert saved["epoch"] == 1 and saved["retired"] == sorted([records[4].id, records[9].id])

    resumed = PromptStream(records, batch_size=3, seed=42, num_epochs=4)
    resumed.restore(saved)
    rest_uninterrupted, rest_resumed = [], []
    for stream, out in ((uninterrupted, rest_uninterrupted), (resumed, rest_resumed)):
        while True:
            try:
                out.append(stream.next_batch())
            except StreamExhausted:
                break
    assert len(rest_resumed) > 5 and problems(rest_resumed) == problems(rest_uninterrupted)


def test_restore_refuses_a_different_dataset_or_seed():
    records = make_records(8)
    state = PromptStream(records, batch_size=2, seed=1).state()
    with pytest.raises(ValueError, match="fingerprint .* does not match"):
        PromptStream(records[:7], batch_size=2, seed=1).restore(state)
    changed = records[:-1] + [Record(records[-1].problem, "other answer", records[-1].id, "synthetic")]
    with pytest.raises(ValueError, match="fingerprint"):
        PromptStream(changed, batch_size=2, seed=1).restore(state)
    with pytest.raises(ValueError, match="state has seed=1, this stream seed=2"):
        PromptStream(records, batch_size=2, seed=2).restore(state)
    with pytest.raises(ValueError, match=r"state lacks \['retired'\]"):
        without_retired = {k: v for k, v in state.items() if k != "retired"}
        PromptStream(records, batch_size=2, seed=1).restore(without_retired)
    with pytest.raises(ValueError, match="index=8 is invalid for 8 records"):
        PromptStream(records, batch_size=2, seed=1).restore({**state, "index": 8})
    # The same records and seed with another batch size resume fine: position is per record.
    PromptStream(records, batch_size=4, seed=1).restore(state)


def test_next_records_continues_the_same_order():
    records = make_records(10)
    a = PromptStream(records, batch_size=4, seed=3)
    b = PromptStream(records, batch_size=4, seed=3)
    served = a.next_batch() + a.next_records(2) + a.next_batch()
    expected = b.next_records(4) + b.next_records(2) + b.next_records(4)
    assert [r.id for r in served] == [r.id for r in expected]
