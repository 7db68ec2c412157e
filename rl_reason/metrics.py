"""Run metrics: a JSONL log plus TensorBoard scalars (and any further sinks, such as
Weights & Biases), a console progress line, and a per-phase wall-clock timer.

    writer = MetricsWriter(workdir)          # WORKDIR/metrics.jsonl + TensorBoard events
    writer.truncate_after(restored_step)     # on resume, before the first write
    timer = PhaseTimer()
    progress = Progress(num_steps, start_step=restored_step)
    for step in ...:
        timer.reset()
        with timer.phase("sampling"): ...    # block on device work inside the phase
        metrics.update({f"time/{k}": v for k, v in timer.totals().items()})
        writer.write(step, metrics); progress.update(step, metrics)
    progress.close(); writer.close()

Only process 0 writes files or prints; other processes may make the same calls.
`python -m rl_reason.plot WORKDIR ...` draws metrics.jsonl; `tensorboard --logdir DIR`
shows every run under DIR (the event files sit in the workdir itself).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pathlib
import sys
import time
from typing import Any, Iterator, Mapping, Protocol, Sequence, TextIO

import jax
import numpy as np

_log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
_RESERVED = ("step", "wall_time")


def _is_main_process() -> bool:
    return jax.process_index() == 0


def _as_scalar(value: Any) -> int | float | str | None:
    """A JSON-able scalar for `value`, or None when it is not a single value."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (np.ndarray, jax.Array)) and value.size == 1:
        return _as_scalar(np.asarray(value).reshape(()).item())
    return None


class MetricsSink(Protocol):
    """Somewhere else each row goes (rl_reason/wandb_sink.py)."""

    def log(self, step: int, row: Mapping[str, int | float | str]) -> None: ...

    def close(self) -> None: ...


class MetricsWriter:
    """Appends one JSON line per `write` to WORKDIR/metrics.jsonl and mirrors numbers to
    TensorBoard event files in WORKDIR; each of `sinks` gets the same row.

    Lines look like {"step": 10, "wall_time": 1712345678.9, "reward_mean": 0.41, ...}.
    Non-finite numbers are written as null (strict JSON) and as-is to TensorBoard and
    the sinks; strings go to the JSONL and the sinks only; arrays of more than one
    value are skipped. Each problem is logged once per key (once per sink for a sink
    that fails), never raised: metrics must not stop training.
    """

    def __init__(self, workdir: str | os.PathLike, *, tensorboard: bool = True,
                 sinks: Sequence[MetricsSink] = ()):
        self.workdir = pathlib.Path(workdir)
        self.path = self.workdir / METRICS_FILE
        self._enabled = _is_main_process()
        self._sinks = list(sinks) if self._enabled else []
        self._warned: set[tuple[str, str]] = set()
        self._file: TextIO | None = None
        self._events = None
        self._session_started = False
        if not self._enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Append: a resumed run continues the same file (see truncate_after).
        self._file = open(self.path, "a", encoding="utf-8")
        if tensorboard:
            # tensorboard's own event writer needs no TensorFlow (only its protos).
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
            self._events = EventFileWriter(str(self.workdir))

    def write(self, step: int, scalars: Mapping[str, Any]) -> None:
        if not self._enabled:
            return
        if self._file is None:
            raise RuntimeError(f"MetricsWriter for {self.path} is closed")
        step = int(step)
        row: dict[str, Any] = {"step": step, "wall_time": round(time.time(), 3)}
        numbers: dict[str, float] = {}
        for key, value in scalars.items():
            key = str(key)
            if key in _RESERVED:
                self._warn_once(key, "reserved", f"metric name {key!r} is reserved; dropped")
                continue
            scalar = _as_scalar(value)
            if scalar is None:
                self._warn_once(key, "not scalar", f"metric {key!r} is not a scalar "
                                f"({type(value).__name__}); dropped")
                continue
            if isinstance(scalar, str):
                row[key] = scalar
                continue
            numbers[key] = float(scalar)
            if isinstance(scalar, float) and not math.isfinite(scalar):
                self._warn_once(key, "non-finite", f"metric {key!r} is {scalar} at step {step} "
                                "(written as null to metrics.jsonl)")
                row[key] = None
            else:
                row[key] = scalar
        self._file.write(json.dumps(row, allow_nan=False) + "\n")
        self._file.flush()
        if self._events is not None:
            self._write_events(step, numbers)
        if self._sinks:
            # The JSONL's values, with the non-finite numbers it writes as null.
            values = {k: numbers[k] if v is None else v for k, v in row.items()
                      if k not in _RESERVED}
            for sink in self._sinks:
                try:
                    sink.log(step, values)
                except Exception as e:  # noqa: BLE001  a sink's outage must not stop training
                    self._warn_once(type(sink).__name__, "sink", f"{type(sink).__name__} "
                                    f"failed at step {step} ({e}); training goes on")

    def truncate_after(self, step: int) -> None:
        """Drops logged steps > `step` (those of the run's lost tail after a crash), so
        a resumed run neither duplicates nor mixes diverged values. Also drops a line
        cut short by the crash. Call once on resume, before the first `write`."""
        if not self._enabled:
            return
        if self._file is None:
            raise RuntimeError(f"MetricsWriter for {self.path} is closed")
        self._file.close()
        kept, dropped_after, unreadable = [], 0, 0
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                line_step = int(json.loads(line)["step"])
            except (ValueError, KeyError, TypeError):
                unreadable += 1
                continue
            if line_step <= step:
                kept.append(line + "\n")
            else:
                dropped_after += 1
        if dropped_after or unreadable:
            _log.info("%s: dropped %d lines after step %d and %d unreadable lines",
                      self.path, dropped_after, step, unreadable)
            temporary = self.path.with_suffix(".jsonl.tmp")
            temporary.write_text("".join(kept), encoding="utf-8")
            os.replace(temporary, self.path)   # atomic: a crash here keeps the old file
        self._file = open(self.path, "a", encoding="utf-8")
        if self._events is not None:
            # TensorBoard cannot edit old event files; a restart marker makes it discard
            # the earlier run's points at steps > `step` when it reads them.
            self._start_session(step + 1)

    def _start_session(self, step: int) -> None:
        from tensorboard.compat.proto import event_pb2
        self._events.add_event(event_pb2.Event(
            wall_time=time.time(), step=step,
            session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
        self._session_started = True

    def _write_events(self, step: int, numbers: dict[str, float]) -> None:
        from tensorboard.compat.proto import event_pb2
        from tensorboard.plugins.scalar.summary_v2 import scalar_pb
        if not self._session_started:
            # The first START of a run marks its beginning; later ones mark restarts.
            self._start_session(step)
        for key, value in numbers.items():
            self._events.add_event(event_pb2.Event(
                wall_time=time.time(), step=step, summary=scalar_pb(key, np.float32(value))))
        # Like the JSONL line: what a crash leaves on disk is complete up to this step.
        self._events.flush()

    def _warn_once(self, key: str, kind: str, message: str) -> None:
        if (key, kind) not in self._warned:
            self._warned.add((key, kind))
            _log.warning(message)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()
        if self._events is not None:
            self._events.flush()

    def close(self) -> None:
        """Flushes and closes every output; idempotent."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._events is not None:
            self._events.close()
            self._events = None
        for sink in self._sinks:
            sink.close()
        self._sinks = []

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------- progress
def _format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def _format_value(value: Any) -> str:
    scalar = _as_scalar(value)
    if isinstance(scalar, float):
        if not math.isfinite(scalar):
            return str(scalar)
        return f"{scalar:,.0f}" if abs(scalar) >= 1000 else f"{scalar:.3f}"
    return str(scalar)


class Progress:
    """One console line: step/total, smoothed steps/s, ETA and a few chosen metrics.

    With a `token_budget` (a run stopped at a number of generated tokens), each update
    also takes the tokens generated so far: the line shows them against the budget,
    and the percentage and ETA follow whichever limit comes first.

    On a terminal the line is redrawn in place (at most every `every_secs`, default
    0.5 s). Elsewhere (CI logs, `nohup`, files) it prints a whole new line on the first
    update, then every `every_secs` (default 30 s) or every `every_steps` steps, and
    on the last step, so logs stay readable.

    The first interval after construction includes compilation, so the rate ignores it
    once a later interval exists; later intervals are smoothed exponentially.
    """

    def __init__(self, total_steps: int, *, start_step: int = 0,
                 show: tuple[str, ...] = ("reward_mean", "accuracy", "tokens_per_s"),
                 every_secs: float | None = None, every_steps: int | None = None,
                 stream: TextIO | None = None, smoothing: float = 0.3,
                 token_budget: int = 0, start_tokens: int = 0):
        self.total_steps, self.show = int(total_steps), tuple(show)
        self.token_budget = int(token_budget)
        self.stream = stream if stream is not None else sys.stdout
        isatty = getattr(self.stream, "isatty", None)
        self.interactive = bool(isatty and isatty())
        self.every_secs = every_secs if every_secs is not None else (
            0.5 if self.interactive else 30.0)
        self.every_steps = every_steps
        self.smoothing = smoothing
        self._enabled = _is_main_process()
        self._last_step, self._last_time = int(start_step), time.perf_counter()
        self._intervals = 0
        self._rate: float | None = None          # steps per second, smoothed
        self._tokens = int(start_tokens)
        self._token_rate: float | None = None    # generated tokens per second, smoothed
        self._last_print: float | None = None
        self._drawn = False                      # a terminal line is waiting for "\n"

    @property
    def steps_per_sec(self) -> float | None:
        return self._rate

    def update(self, step: int, metrics: Mapping[str, Any] | None = None,
               tokens: int | None = None) -> None:
        now = time.perf_counter()
        step = int(step)
        tokens = self._tokens if tokens is None else int(tokens)
        if step > self._last_step and now > self._last_time:
            elapsed = now - self._last_time
            self._intervals += 1
            self._rate = self._smooth(self._rate, (step - self._last_step) / elapsed)
            self._token_rate = self._smooth(self._token_rate,
                                            (tokens - self._tokens) / elapsed)
        self._last_step, self._last_time, self._tokens = step, now, tokens
        if not self._enabled or not self._due(step, now):
            return
        self._last_print = now
        line = self.format_line(step, metrics or {})
        if self.interactive:
            self.stream.write("\r" + line + "\x1b[K")
            self._drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def _smooth(self, current: float | None, rate: float) -> float:
        if self._intervals <= 2 or current is None:
            return rate     # the 2nd interval replaces the compile-heavy 1st
        return self.smoothing * rate + (1 - self.smoothing) * current

    def _budget_spent(self) -> bool:
        return bool(self.token_budget) and self._tokens >= self.token_budget

    def _due(self, step: int, now: float) -> bool:
        if self._last_print is None or step >= self.total_steps or self._budget_spent():
            return True
        if self.every_steps and step % self.every_steps == 0:
            return True
        return now - self._last_print >= self.every_secs

    def format_line(self, step: int, metrics: Mapping[str, Any]) -> str:
        fraction = step / self.total_steps if self.total_steps else 1.0
        head = f"step {step}/{self.total_steps}"
        if self.token_budget:
            fraction = max(fraction, self._tokens / self.token_budget)
            head += f", tokens {self._tokens:,}/{self.token_budget:,}"
        parts = [f"{head} ({100.0 * min(fraction, 1.0):.0f}%)"]
        if self._rate:
            remaining = max(self.total_steps - step, 0) / self._rate
            if self.token_budget and self._token_rate:
                remaining = min(remaining, max(self.token_budget - self._tokens, 0)
                                / self._token_rate)
            speed = (f"{self._rate:.2f} steps/s" if self._rate >= 1
                     else f"{1 / self._rate:.1f} s/step")
            parts.append(f"{speed}, ETA {_format_duration(remaining)}")
        else:
            parts.append("ETA ?")
        shown = [f"{key} {_format_value(metrics[key])}" for key in self.show
                 if key in metrics and _as_scalar(metrics[key]) is not None]
        if shown:
            parts.append(" ".join(shown))
        return " | ".join(parts)

    def close(self) -> None:
        if self._enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


# --------------------------------------------------------------------------- phases
class PhaseTimer:
    """Wall-clock seconds per named phase, accumulated until `reset()`.

    JAX dispatches device work asynchronously: block (e.g. jax.block_until_ready or
    a device_get) inside the phase, or the time lands in whichever phase blocks next.
    A phase entered twice in a step adds up; nested phases each count their own time.
    """

    def __init__(self):
        self._totals: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self._totals[name] = self._totals.get(name, 0.0) + time.perf_counter() - start

    def totals(self) -> dict[str, float]:
        """{phase: seconds}, in the order phases were first entered."""
        return dict(self._totals)

    def reset(self) -> None:
        self._totals.clear()


def last_evaluation(workdir: str, step: int) -> dict:
    """The held-out metrics of the last evaluation at or before `step`, from
    metrics.jsonl (what the run knew when that checkpoint was written)."""
    path = os.path.join(workdir, METRICS_FILE)
    latest: dict = {}
    if not os.path.exists(path):
        return latest
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            found = {k: v for k, v in row.items() if k.startswith("eval/")}
            if found and row.get("step", step + 1) <= step:
                latest = dict(found, step=row["step"])
    return latest
