"""Checkpoints: train state, run position and method state, saved together with Orbax.

Each saved step is one directory `DIR/<step>/` with three items:

    train_state/    the train-state pytree (params, optimizer state, counters, RNG) as
                    sharded arrays; restored onto whatever shardings the caller asks for
    extra/          small JSON: data-stream position, config snapshot, metrics summary
    method_state/   the method's own state (e.g. the ExGRPO replay buffer), exact

Orbax writes a step under a temporary name and renames it once every item on every
process is written, so a crash mid-save leaves a `<step>.orbax-checkpoint-tmp*`
directory that is never listed as a step (the next Checkpointer removes it).
Saves are asynchronous: `save` returns once device arrays are copied to host (the
caller may then donate them); the next `save`, `restore`, `wait` or `close` (or
interpreter exit) waits for the write to finish.
"""

from __future__ import annotations

import atexit
import base64
import dataclasses
import io
import json
import os
import threading
import time
import warnings
import weakref
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from rl_reason.errors import UserError

_TRAIN_STATE, _EXTRA, _METHOD_STATE = "train_state", "extra", "method_state"
_STRUCTURE_FILE, _ARRAYS_FILE = "structure.json", "arrays.npz"


class CheckpointError(UserError, RuntimeError):
    """A checkpoint directory that cannot be written, read or matched to the run."""


# --------------------------------------------------------------------------- method state
# Orbax's pytree handlers store arrays in tensorstore, which cannot hold strings or many
# small ragged arrays exactly and turns tuples into lists. Method state is host data
# (a replay buffer, counters, mined prefixes), so it is written as a JSON skeleton plus
# one .npz of its arrays: every container type, dtype and Python scalar type survives.

def encode_method_state(state: Any) -> tuple[str, list[np.ndarray]]:
    """(JSON skeleton, arrays) for a nested dict/list/tuple of numpy and Python values.

    Copies every array, so the caller may keep mutating its buffers after a save.
    """
    arrays: list[np.ndarray] = []

    def encode(node, where):
        if isinstance(node, dict):
            for key in node:
                if type(key) not in (str, int):
                    raise TypeError(f"{where}: dict keys must be str or int, got {key!r}")
            return {"dict": [[k, encode(v, f"{where}[{k!r}]")] for k, v in node.items()]}
        if type(node) in (list, tuple):
            kind = "list" if type(node) is list else "tuple"
            return {kind: [encode(v, f"{where}[{i}]") for i, v in enumerate(node)]}
        if isinstance(node, (np.ndarray, np.generic)):
            array = np.array(node, copy=True)
            if array.dtype.hasobject:
                raise TypeError(f"{where}: object arrays cannot be saved exactly; "
                                "store a list of arrays instead")
            arrays.append(array)
            return {"array" if isinstance(node, np.ndarray) else "scalar": len(arrays) - 1}
        if type(node) in (bool, int, float, str, type(None)):
            return {"py": node}
        if type(node) is bytes:
            return {"bytes": base64.b64encode(node).decode("ascii")}
        if isinstance(node, jax.Array):
            raise TypeError(f"{where}: method state is host data; convert jax arrays with "
                            "np.asarray(...) so they restore as the same type")
        raise TypeError(f"{where}: cannot checkpoint a {type(node).__name__} exactly "
                        "(use dict, list, tuple, numpy arrays/scalars, int, float, bool, "
                        "str, bytes or None)")

    skeleton = encode(state, "method_state")
    return json.dumps(skeleton), arrays


def decode_method_state(skeleton: str, arrays: list[np.ndarray]) -> Any:
    """Inverse of encode_method_state."""

    def decode(node):
        (kind, value), = node.items()
        if kind == "dict":
            return {k: decode(v) for k, v in value}
        if kind in ("list", "tuple"):
            items = [decode(v) for v in value]
            return items if kind == "list" else tuple(items)
        if kind == "array":
            return arrays[value]
        if kind == "scalar":
            return arrays[value][()]
        if kind == "bytes":
            return base64.b64decode(value)
        if kind == "py":
            return value
        raise ValueError(f"unknown method-state node kind {kind!r}")

    return decode(json.loads(skeleton))


class _MethodStateHandler(ocp.AsyncCheckpointHandler):
    """Writes an encoded method state; only process 0 writes, every process reads."""

    async def async_save(self, directory: epath.Path, args: "_MethodStateSave"):
        async def write():
            self.save(directory, args)   # args hold copies made by Checkpointer.save

        # Orbax creates the item directory in the background; this future waits for it.
        return [ocp.future.CommitFutureAwaitingContractedSignals(write(), name="method_state")]

    def save(self, directory: epath.Path, args: "_MethodStateSave"):
        if jax.process_index() == 0:
            buffer = io.BytesIO()
            np.savez(buffer, *args.arrays)
            (directory / _ARRAYS_FILE).write_bytes(buffer.getvalue())
            (directory / _STRUCTURE_FILE).write_text(args.skeleton)

    def restore(self, directory: epath.Path, args: "_MethodStateRestore | None" = None):
        skeleton = (directory / _STRUCTURE_FILE).read_text()
        with np.load(io.BytesIO((directory / _ARRAYS_FILE).read_bytes()),
                     allow_pickle=False) as npz:
            arrays = [npz[f"arr_{i}"] for i in range(len(npz.files))]
        return decode_method_state(skeleton, arrays)


@ocp.args.register_with_handler(_MethodStateHandler, for_save=True)
@dataclasses.dataclass
class _MethodStateSave(ocp.args.CheckpointArgs):
    skeleton: str
    arrays: list


@ocp.args.register_with_handler(_MethodStateHandler, for_restore=True)
@dataclasses.dataclass
class _MethodStateRestore(ocp.args.CheckpointArgs):
    pass


# --------------------------------------------------------------------------- extra
def _json_snapshot(extra: dict) -> dict:
    """A JSON round trip of `extra`: fails now (not in the background) and decouples
    the saved value from later mutation by the caller. Numpy/jax scalars and arrays,
    common in config snapshots and metric summaries, become numbers and lists."""
    if not isinstance(extra, dict):
        raise TypeError(f"checkpoint extra must be a dict, got {type(extra).__name__}")

    def default(value):
        if isinstance(value, (np.generic, np.ndarray, jax.Array)):
            return np.asarray(value).tolist()
        raise TypeError(f"{type(value).__name__} is not JSON-serialisable")

    try:
        return json.loads(json.dumps(extra, default=default))
    except (TypeError, ValueError) as e:
        raise TypeError(f"checkpoint extra must be JSON-serialisable: {e}") from e


# --------------------------------------------------------------------------- checkpointer
class Checkpointer:
    """Saves and restores (train_state, extra, method_state) per step; keeps the last `keep`.

    Every process must call `save`, `restore` and `close` (Orbax coordinates them).
    `save_every=None` saves only when forced. Raises CheckpointError at construction if
    `directory` cannot be created or written, so a bad path fails before any compute.
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int | None = 3,
                 save_every: int | None = None, async_save: bool = True):
        if keep is not None and keep < 1:
            raise ValueError(f"keep must be >= 1 (or None to keep all), got {keep}")
        if save_every is not None and save_every < 1:
            raise ValueError(f"save_every must be >= 1 (or None), got {save_every}")
        self.directory = epath.Path(directory)
        _check_writable(self.directory)
        self.keep, self.save_every = keep, save_every

        registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
        registry.add(_TRAIN_STATE, ocp.args.StandardSave)
        registry.add(_TRAIN_STATE, ocp.args.StandardRestore)
        registry.add(_EXTRA, ocp.args.JsonSave)
        registry.add(_EXTRA, ocp.args.JsonRestore)
        registry.add(_METHOD_STATE, _MethodStateSave, _MethodStateHandler)
        registry.add(_METHOD_STATE, _MethodStateRestore, _MethodStateHandler)
        policies = [ocp.checkpoint_managers.PreemptionCheckpointingPolicy()]
        if save_every is not None:
            policies.append(ocp.checkpoint_managers.FixedIntervalPolicy(save_every))
        options = ocp.CheckpointManagerOptions(
            save_decision_policy=ocp.checkpoint_managers.AnySavePolicy(policies),
            preservation_policy=(ocp.checkpoint_managers.LatestN(keep) if keep
                                 else ocp.checkpoint_managers.PreserveAll()),
            enable_async_checkpointing=async_save,
            # Leftovers of a save killed mid-write are never steps; drop them.
            cleanup_tmp_directories=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              handler_registry=registry)
        self._closed = False
        _OPEN.add(self)

    # ------------------------------------------------------------------ queries
    def all_steps(self) -> list[int]:
        """Completed checkpoint steps, ascending."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def should_save(self, step: int) -> bool:
        """True every `save_every` steps, or when the cluster signals preemption."""
        return bool(self._manager.should_save(int(step)))

    # ------------------------------------------------------------------ save
    def save(self, step: int, train_state: Any, extra: dict | None = None, *,
             method_state: Any = None, force: bool = False) -> bool:
        """Starts saving `step`; returns False when skipped (not due, or already saved).

        A step that is already checkpointed is skipped even with force=True, so the
        end-of-run forced save may follow an interval save of the same step.
        """
        step = int(step)
        if step in self._manager.all_steps():
            return False
        if not force and not self.should_save(step):
            return False
        # Encode host-side values now: a bad value raises here, not in the background
        # thread, and later mutation by the caller cannot leak into the checkpoint.
        extra_json = _json_snapshot({} if extra is None else extra)
        skeleton, arrays = encode_method_state(method_state)
        return bool(self._manager.save(step, force=True, args=ocp.args.Composite(**{
            _TRAIN_STATE: ocp.args.StandardSave(train_state),
            _EXTRA: ocp.args.JsonSave(extra_json),
            _METHOD_STATE: _MethodStateSave(skeleton, arrays),
        })))

    def wait(self) -> None:
        """Blocks until the last save is fully written (and re-raises its error)."""
        self._manager.wait_until_finished()

    # ------------------------------------------------------------------ restore
    def restore(self, step: int | None = None, *, abstract_train_state: Any,
                fallback_to_previous: bool = False) -> tuple[Any, dict, Any] | None:
        """(train_state, extra, method_state) of `step` (default: the latest).

        `abstract_train_state` is the train-state pytree of jax.ShapeDtypeStruct with
        the shardings wanted now; the checkpoint may come from a different mesh.
        Returns None only when the directory holds no checkpoint at all.

        An unreadable latest checkpoint raises CheckpointError naming its path. With
        `fallback_to_previous=True` (and step=None) it is instead renamed to
        `<step>.unreadable-<time>` (kept for inspection, never deleted) and the previous
        step is tried, with a warning; afterwards latest_step() is the restored step.
        A checkpoint that does not match `abstract_train_state` (changed model or
        optimizer config) always raises: falling back would not help.
        """
        self.wait()
        steps = self.all_steps()
        if step is not None and int(step) not in steps:
            raise CheckpointError(f"no checkpoint for step {step} in {self.directory}; "
                                  f"available steps: {steps}")
        while steps:
            current = steps[-1] if step is None else int(step)
            try:
                return self._restore_step(current, abstract_train_state)
            except _Unreadable as e:
                problem = (f"checkpoint {self._step_path(current)} is unreadable "
                           f"({e.__cause__!r})")
                earlier = [s for s in steps if s < current]
                if step is None and fallback_to_previous and earlier:
                    moved = self._move_aside(current)
                    warnings.warn(f"{problem}; moved it to {moved} and falling back to step "
                                  f"{earlier[-1]}", stacklevel=2)
                    steps = self.all_steps()
                    continue
                if step is None and earlier:
                    problem += (f"; to resume from the previous step {earlier[-1]} instead, "
                                "restore with fallback_to_previous=True (the unreadable "
                                "checkpoint is moved aside, not deleted)")
                elif step is None:
                    problem += ("; it is the only checkpoint, so nothing was restored: "
                                "repair or remove it to start over")
                raise CheckpointError(problem) from e.__cause__
        return None

    def _step_path(self, step: int) -> epath.Path:
        return self.directory / str(step)

    def _restore_step(self, step: int, abstract_train_state: Any):
        args = ocp.args.Composite(**{
            _TRAIN_STATE: ocp.args.StandardRestore(abstract_train_state),
            _EXTRA: ocp.args.JsonRestore(),
            _METHOD_STATE: _MethodStateRestore(),
        })
        try:
            restored = self._manager.restore(step, args=args)
            error = None
        except Exception as e:  # noqa: BLE001 - classified below, then re-raised
            error = e
        # Every process must take the same branch, or the next collective hangs.
        if not _all_processes_ok(error is None):
            mismatch = self._describe_mismatch(step, abstract_train_state)
            if mismatch:
                raise CheckpointError(
                    f"checkpoint {self._step_path(step)} does not match the train state "
                    f"of this run ({mismatch}); was the model or optimizer config "
                    "changed? Use a new workdir for a different configuration.") from error
            raise _Unreadable() from (error or RuntimeError("failed on another process"))
        return restored[_TRAIN_STATE], restored[_EXTRA], restored[_METHOD_STATE]

    def _describe_mismatch(self, step: int, abstract_train_state: Any) -> str:
        """Differences between the saved and the wanted train-state layout, or '' when
        they agree (or the saved layout cannot be read, i.e. the checkpoint is damaged)."""
        try:
            saved_tree = self._manager.item_metadata(step)[_TRAIN_STATE].tree
            saved = _shapes_by_path(saved_tree)
        except Exception:  # noqa: BLE001 - unreadable metadata means damage, not mismatch
            return ""
        wanted = _shapes_by_path(abstract_train_state)
        problems = [f"missing {p}" for p in sorted(set(wanted) - set(saved))]
        problems += [f"unexpected {p}" for p in sorted(set(saved) - set(wanted))]
        problems += [f"{p}: saved {saved[p]}, wanted {wanted[p]}"
                     for p in sorted(set(saved) & set(wanted)) if saved[p] != wanted[p]]
        if len(problems) > 6:
            problems = problems[:6] + [f"... {len(problems) - 6} more"]
        return "; ".join(problems)

    def _move_aside(self, step: int) -> epath.Path:
        source = self._step_path(step)
        target = self.directory / f"{step}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}"
        if jax.process_index() == 0:
            source.rename(target)
        ocp.multihost.sync_global_processes(f"rl_reason_checkpoint_move_aside_{step}")
        self._manager.reload()
        return target

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Waits for the pending save and releases Orbax's threads; idempotent."""
        if not self._closed:
            self._closed = True
            _OPEN.discard(self)
            self._manager.wait_until_finished()
            self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# A program that exits without close() would lose its last async save (tested): by the
# time ordinary atexit handlers run, Python has already shut down the thread pools Orbax
# finishes the save on. threading's own exit hooks run before that shutdown, in reverse
# registration order, so ours (registered after concurrent.futures') runs first.
_OPEN: "weakref.WeakSet[Checkpointer]" = weakref.WeakSet()


def _close_open_checkpointers() -> None:
    for checkpointer in list(_OPEN):
        checkpointer.close()


getattr(threading, "_register_atexit", atexit.register)(_close_open_checkpointers)


class _Unreadable(Exception):
    """Internal: the step exists but cannot be read; __cause__ holds why."""


def _check_writable(directory: epath.Path) -> None:
    probe = directory / f".write_probe.{jax.process_index()}.{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except Exception as e:  # noqa: BLE001 - epath backends raise various types
        raise CheckpointError(f"checkpoint directory {directory} is not writable: {e!r}") from e


def _shapes_by_path(tree: Any) -> dict[str, tuple]:
    """{'params/w': shape} with dataclass fields, namedtuple fields and dict keys all
    named alike, so Orbax's stored layout and a live pytree compare."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    out = {}
    for path, leaf in flat:
        # DictKey.key, GetAttrKey.name (dataclass/namedtuple field), SequenceKey.idx.
        parts = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
        shape = tuple(getattr(leaf, "shape", ()))
        dtype = getattr(leaf, "dtype", None)
        if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
            # Orbax stores typed keys as their raw key data, one trailing axis longer.
            shape = jax.eval_shape(jax.random.key_data,
                                   jax.ShapeDtypeStruct(shape, dtype)).shape
        out["/".join(parts)] = shape
    return out


def _all_processes_ok(ok: bool) -> bool:
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils
    return bool(np.all(multihost_utils.process_allgather(np.array([ok]))))
