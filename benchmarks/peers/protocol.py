"""The lock-step protocol between benchmarks/grpo_step.py and one framework's worker.

A worker process (run by its own framework's Python) builds its trainer, runs the
warm-up steps, prints `@@ready {json}`, then for every line `step` on its standard
input runs one GRPO step and prints `@@step {json}`; `quit` (or end of input) ends it.
So the orchestrator runs the frameworks' steps one at a time, interleaved, while the
others wait, and no worker's timing includes another's.

A step's JSON: seconds (the whole step), phases {name: seconds}, update_shape
[rows, length] (the padded batch the update ran on), real_tokens_per_row (mean of the
prompt + response tokens that are not padding).

Standard library only: each framework's worker imports this file from its own
virtual environment.
"""

from __future__ import annotations

import json
import sys
import time

PREFIX = "@@"


def worker_args() -> tuple[str, dict]:
    """(checkpoint folder, job) of a worker started as `--checkpoint DIR --job FILE`."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--job", required=True)
    args = parser.parse_args()
    with open(args.job) as f:
        return args.checkpoint, json.load(f)


def emit(kind: str, payload: dict) -> None:
    sys.stdout.write(f"{PREFIX}{kind} {json.dumps(payload)}\n")
    sys.stdout.flush()


def wait_for_step() -> bool:
    """Blocks until the orchestrator says `step` (True) or `quit` / closes (False)."""
    line = sys.stdin.readline()
    return line.strip() == "step"


def parse(line: str):
    """(kind, payload) of a protocol line, or None for any other output."""
    if not line.startswith(PREFIX):
        return None
    kind, _, rest = line[len(PREFIX):].partition(" ")
    return kind, json.loads(rest or "{}")


class StepClock:
    """Step and phase times: `begin()` starts a step, wrapped functions add their time
    to the step in progress, `result()` ends it."""

    def __init__(self):
        self.begin()

    def begin(self) -> None:
        self.start = time.perf_counter()
        self.phases: dict[str, float] = {}
        self.extra: dict = {}

    def add(self, phase: str, seconds: float) -> None:
        self.phases[phase] = self.phases.get(phase, 0.0) + seconds

    def timed(self, phase: str, fn):
        """fn wrapped so that its time is added to `phase` of the current step."""
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(phase, time.perf_counter() - t0)
        return wrapper

    def result(self) -> dict:
        total = time.perf_counter() - self.start
        phases = dict(self.phases)
        phases["other"] = max(total - sum(phases.values()), 0.0)
        return dict(seconds=total, phases=phases, **self.extra)
