"""MetricsWriter (JSONL + TensorBoard), Progress and PhaseTimer."""

import io
import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.util import tensor_util

from rl_reason import metrics as metrics_lib
from rl_reason.metrics import MetricsWriter, PhaseTimer, Progress


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _tensorboard_scalars(logdir, tag):
    accumulator = plugin_event_accumulator.EventAccumulator(str(logdir))
    accumulator.Reload()
    return [(event.step, float(tensor_util.make_ndarray(event.tensor_proto)))
            for event in accumulator.Tensors(tag)]


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(metrics_lib.time, "perf_counter", fake)
    return fake


def test_jsonl_gets_one_flushed_line_per_write_and_a_new_writer_appends(tmp_path):
    writer = MetricsWriter(tmp_path, tensorboard=False)
    writer.write(0, {"reward_mean": 0.25, "eval/accuracy": 0.5})
    # Flushed per line: readable while the writer is still open (a crash loses nothing).
    assert [row["step"] for row in _lines(tmp_path / "metrics.jsonl")] == [0]
    writer.write(1, {"reward_mean": 0.5})
    writer.close()
    with MetricsWriter(tmp_path, tensorboard=False) as resumed:
        resumed.write(2, {"reward_mean": 0.75})
    rows = _lines(tmp_path / "metrics.jsonl")
    assert [(r["step"], r["reward_mean"]) for r in rows] == [(0, 0.25), (1, 0.5), (2, 0.75)]
    assert rows[0]["eval/accuracy"] == 0.5 and isinstance(rows[0]["wall_time"], float)


def test_truncate_after_drops_the_lost_tail_and_a_line_cut_by_a_crash(tmp_path):
    with MetricsWriter(tmp_path, tensorboard=False) as writer:
        for step in range(6):
            writer.write(step, {"loss": float(step)})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "lo')      # killed mid-line
    with MetricsWriter(tmp_path, tensorboard=False) as writer:
        writer.truncate_after(3)        # the checkpoint we resumed from
        writer.write(4, {"loss": 40.0})
    rows = _lines(tmp_path / "metrics.jsonl")
    assert [(r["step"], r["loss"]) for r in rows] == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0),
                                                      (4, 40.0)]


class ListSink:
    def __init__(self, fail=False):
        self.rows, self.fail, self.closed = [], fail, False

    def log(self, step, row):
        if self.fail:
            raise ConnectionError("offline")
        self.rows.append((step, row))

    def close(self):
        self.closed = True


def test_sinks_get_the_jsonl_rows_and_a_failing_sink_stops_nothing(tmp_path, caplog):
    good, bad = ListSink(), ListSink(fail=True)
    with MetricsWriter(tmp_path, tensorboard=False, sinks=[bad, good]) as writer:
        with caplog.at_level(logging.WARNING):
            writer.write(0, {"samples": 16, "nan": float("nan"), "kind": "plain",
                             "pair": np.array([1, 2])})
            writer.write(1, {"loss": 0.5})
    # The JSONL's names and values: ints stay ints, a non-finite number stays a float
    # (null in the JSONL), what the JSONL drops is dropped.
    (step, row), second = good.rows
    assert step == 0 and set(row) == {"samples", "nan", "kind"}
    assert row["samples"] == 16 and isinstance(row["samples"], int) and row["kind"] == "plain"
    assert np.isnan(row["nan"]) and _lines(tmp_path / "metrics.jsonl")[0]["nan"] is None
    assert second == (1, {"loss": 0.5}) and [r["step"] for r in
                                             _lines(tmp_path / "metrics.jsonl")] == [0, 1]
    assert sum("ListSink failed" in r.message for r in caplog.records) == 1
    assert good.closed and bad.closed


def test_odd_values_are_converted_or_dropped_with_one_warning_each(tmp_path, caplog):
    scalars = {
        "nan": float("nan"), "inf": np.float32(np.inf), "np_float": np.float32(0.5),
        "jax_scalar": jnp.float32(1.5), "one_element": np.array([2]), "flag": True,
        "count": np.int64(7), "phase": "warmup", "vector": np.arange(3), "none": None,
        "step": 99,
    }
    with caplog.at_level(logging.WARNING, logger="rl_reason.metrics"):
        with MetricsWriter(tmp_path) as writer:
            writer.write(5, scalars)
            writer.write(6, scalars)
    rows = _lines(tmp_path / "metrics.jsonl")
    assert {k: v for k, v in rows[0].items() if k != "wall_time"} == {
        "step": 5, "nan": None, "inf": None, "np_float": 0.5, "jax_scalar": 1.5,
        "one_element": 2, "flag": 1, "count": 7, "phase": "warmup"}
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 5   # nan, inf, vector, none, step: once each despite two writes
    assert any("'vector' is not a scalar" in m for m in warned)
    assert any("'nan' is nan at step 5" in m for m in warned)
    # TensorBoard keeps the real non-finite value and gets only numbers.
    assert np.isnan(_tensorboard_scalars(tmp_path, "nan")[0][1])
    assert _tensorboard_scalars(tmp_path, "count") == [(5, 7.0), (6, 7.0)]
    with pytest.raises(KeyError):
        _tensorboard_scalars(tmp_path, "phase")


def test_tensorboard_events_are_readable_and_a_resume_hides_the_lost_tail(tmp_path):
    with MetricsWriter(tmp_path) as writer:
        for step in range(6):
            writer.write(step, {"reward_mean": float(step)})
    assert _tensorboard_scalars(tmp_path, "reward_mean") == [(s, float(s)) for s in range(6)]
    with MetricsWriter(tmp_path) as writer:
        writer.truncate_after(3)
        for step in range(4, 7):
            writer.write(step, {"reward_mean": 10.0 * step})
    assert _tensorboard_scalars(tmp_path, "reward_mean") == [
        (0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0), (6, 60.0)]


def test_only_process_zero_writes_or_prints(tmp_path, monkeypatch):
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    with MetricsWriter(tmp_path / "run") as writer:
        writer.write(1, {"reward_mean": 1.0})
        writer.truncate_after(0)
    assert not (tmp_path / "run").exists()
    stream = io.StringIO()
    progress = Progress(10, stream=stream)
    progress.update(10, {"reward_mean": 1.0})
    progress.close()
    assert stream.getvalue() == ""


def test_progress_without_a_terminal_prints_whole_lines_with_rate_and_eta(clock):
    stream = io.StringIO()
    progress = Progress(10, start_step=2, stream=stream, every_secs=60)
    clock.now += 30.0                     # first step: compilation
    progress.update(3, {"reward_mean": 0.5, "accuracy": 0.25, "tokens_per_s": 12345.6,
                        "loss": 1.0})
    clock.now += 2.0
    progress.update(4, {"reward_mean": 0.6})   # not due: 2 s since the last line
    clock.now += 2.0
    progress.update(5, {})
    clock.now += 60.0
    progress.update(6, {"reward_mean": 0.7})   # due again
    clock.now += 2.0
    progress.update(10, {"reward_mean": 0.9})  # the last step always prints
    progress.close()
    lines = stream.getvalue().split("\n")
    assert "\r" not in stream.getvalue() and lines[-1] == ""
    assert lines[:-1] == [
        "step 3/10 (30%) | 30.0 s/step, ETA 0:03:30 | reward_mean 0.500 accuracy 0.250 "
        "tokens_per_s 12,346",
        # The 2 s/step of the second interval replaced the compile-heavy first one, then
        # 60 s/step was smoothed in: 0.3 * (1/60) + 0.7 * 0.5 steps/s.
        "step 6/10 (60%) | 2.8 s/step, ETA 0:00:11 | reward_mean 0.700",
        # 4 steps in 2 s smoothed in: 0.3 * 2 + 0.7 * 0.355 = 0.85 steps/s.
        "step 10/10 (100%) | 1.2 s/step, ETA 0:00:00 | reward_mean 0.900",
    ]


def test_progress_with_a_token_budget_follows_the_first_limit(clock):
    stream = io.StringIO()
    progress = Progress(1000, start_step=10, stream=stream, every_secs=0,
                        token_budget=10_000, start_tokens=4_000, show=())
    clock.now += 50.0                     # first step: compilation
    progress.update(11, tokens=4_500)
    clock.now += 10.0
    progress.update(12, tokens=5_500)     # 100 tokens/s replaces the first interval
    clock.now += 10.0
    progress.update(13, tokens=10_000)    # the budget is spent: always printed
    progress.close()
    assert stream.getvalue().split("\n")[:-1] == [
        "step 11/1000, tokens 4,500/10,000 (45%) | 50.0 s/step, ETA 0:09:10",
        # Steps alone would leave 988 steps at 10 s/step; the budget's 4,500 tokens at
        # 100 tokens/s come first.
        "step 12/1000, tokens 5,500/10,000 (55%) | 10.0 s/step, ETA 0:00:45",
        "step 13/1000, tokens 10,000/10,000 (100%) | 10.0 s/step, ETA 0:00:00",
    ]


def test_progress_every_n_steps_and_on_a_terminal_redraws_in_place(clock):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    progress = Progress(4, stream=stream, every_secs=3600, every_steps=2)
    for step in range(1, 5):
        clock.now += 1.0
        progress.update(step, {"accuracy": step / 4})
    progress.close()
    out = stream.getvalue()
    assert out.count("\r") == 3               # steps 1 (first), 2 (every 2) and 4 (last)
    assert "step 3/4" not in out and out.endswith("accuracy 1.000\x1b[K\n")


def test_phase_timer_accumulates_per_phase_until_reset(clock):
    timer = PhaseTimer()
    for seconds in (2.0, 3.0):
        with timer.phase("sampling"):
            clock.now += seconds
    with pytest.raises(RuntimeError):
        with timer.phase("verify"):
            clock.now += 0.5
            raise RuntimeError("verifier crashed")    # time until the error still counts
    assert timer.totals() == {"sampling": 5.0, "verify": 0.5}
    timer.reset()
    assert timer.totals() == {}
