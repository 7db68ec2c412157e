"""Weights & Biases as a metrics sink (`logging.wandb=True`): every row of metrics.jsonl
under the same names, and the run config, in one W&B run per workdir.

    sink = WandbSink.from_config(config, workdir)   # None unless logging.wandb
    writer = MetricsWriter(workdir, sinks=[sink])   # write() passes each row on

The run's id is kept in WORKDIR/wandb_run.json, written before the W&B run starts, so
the same command on the same workdir (a resume, also after a crash) continues the same
W&B run. W&B cannot take logged points back: the steps a crashed run logged after its
last checkpoint, which the resumed run computes again, are not logged twice (the file
records the last step logged; a resumed run repeats the same numbers, timings aside).

W&B's own files go to WORKDIR/wandb (WANDB_DIR overrides); with WANDB_MODE=offline
everything stays there (`wandb sync` uploads it later). The console is not captured:
the progress line stays as it is. Only process 0 builds a sink. A W&B run that cannot
start (no API key, no network in online mode) is a user error, one line; once it
runs, a failed log call is warned about once and training goes on, as for the other
metrics outputs.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from typing import Any, Mapping

from rl_reason.errors import UserError

RUN_FILE = "wandb_run.json"
INSTALL = "pip install -e '.[wandb]'"


class WandbError(UserError, RuntimeError):
    """logging.wandb=True, and W&B is not installed or its run cannot start."""


def import_wandb():
    """The wandb module, or WandbError saying how to install it."""
    try:
        import wandb
    except ImportError as e:
        raise WandbError(f"logging.wandb=True needs the wandb package ({INSTALL}): {e}") from e
    return wandb


class WandbSink:
    """Logs MetricsWriter's rows to one W&B run (see the module docstring)."""

    def __init__(self, run, run_file: str, logged_through: int):
        self._run = run
        self._run_file = run_file
        self._logged_through = logged_through   # the last step this W&B run holds
        self._skip_through = logged_through     # steps a resumed run computes again

    @classmethod
    def from_config(cls, config, workdir: str) -> "WandbSink | None":
        """A sink for `config.logging`, or None when W&B logging is off. Call on
        process 0 only (the trainer does)."""
        settings = config.logging
        if not settings.wandb:
            return None
        wandb = import_wandb()
        run_file = os.path.join(workdir, RUN_FILE)
        state = {"id": None, "logged_through_step": -1}
        if os.path.exists(run_file):
            with open(run_file) as f:
                state.update(json.load(f))
        if not state["id"]:
            state["id"] = secrets.token_hex(6)   # W&B's own id maker is not public API
            _write_json(run_file, state)
        try:
            run = wandb.init(
                project=settings.wandb_project, entity=settings.wandb_entity or None,
                name=settings.wandb_run_name or os.path.basename(os.path.normpath(workdir)),
                id=state["id"], resume="allow",
                config=json.loads(config.to_json_best_effort()),
                dir=os.environ.get("WANDB_DIR") or workdir,
                settings=wandb.Settings(console="off"))
        except wandb.errors.Error as e:
            raise WandbError(f"logging.wandb=True: the W&B run did not start: {e} (log in "
                             "with `wandb login`, or set WANDB_MODE=offline)") from e
        return cls(run, run_file, int(state["logged_through_step"]))

    @property
    def run_id(self) -> str:
        return self._run.id

    def log(self, step: int, row: Mapping[str, Any]) -> None:
        """One metrics.jsonl row at `step` (several calls at one step add to its point)."""
        if step <= self._skip_through:
            return
        self._run.log(dict(row), step=step)
        if step > self._logged_through:
            self._logged_through = step
            _write_json(self._run_file, {"id": self._run.id, "logged_through_step": step})

    def close(self) -> None:
        """Finishes the W&B run: failed when an exception is on its way out (the trainer
        closes its outputs in a `finally`), else finished."""
        if self._run is not None:
            self._run.finish(exit_code=1 if sys.exc_info()[0] is not None else 0)
            self._run = None


def _write_json(path: str, value: dict) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(value, f)
    os.replace(path + ".tmp", path)   # a crash never leaves half a file
