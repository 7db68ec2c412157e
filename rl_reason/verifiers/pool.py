"""A pool of persistent, killable verifier processes with a hard per-item time limit.

Each worker is a fresh interpreter running `rl_reason.verifiers.worker` (see there
for why not multiprocessing's spawn/forkserver): it imports no JAX and shares no
state with the trainer, which only ever sends it strings and reads back results.

`map` hands items to idle workers one at a time, so a batch runs in parallel across
workers and a slow item holds up only its own worker; each worker works through its
own contiguous part of the batch first (cache locality), then helps the others. An item that is still running
`timeout_s` after it was handed out is abandoned: the worker is SIGKILLed and a
replacement started in the background (it takes the next items once it has
imported its task), the item gets status "timeout", and the batch goes on. A worker
that dies mid-item (segfault, out of memory) gives status "error" and is replaced
the same way. Workers live until `close()`; a finaliser kills any left at exit.
"""

import collections
import dataclasses
import os
import selectors
import signal
import subprocess
import sys
import time
import weakref
from typing import Any, Sequence

from rl_reason.verifiers import protocol

# The worker interrupts itself this long before the hard limit, which keeps the
# process alive for interruptible (pure Python) overruns; see worker.py.
_SOFT_LIMIT_FRACTION = 0.8


@dataclasses.dataclass(frozen=True)
class TaskOutcome:
    status: str  # "ok", "timeout" or "error"
    value: Any = None
    error: str | None = None
    elapsed_s: float = 0.0


def default_num_workers() -> int:
    """One worker per available core, at most 16 (verification is a small slice of a step)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, 16))


class _Worker:
    def __init__(self, command: list[str], env: dict[str, str]):
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.fd = self.process.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.buffer = bytearray()
        self.ready = False
        self.started_at = time.monotonic()
        self.item: int | None = None
        self.dispatched_at = 0.0

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass  # A pipe whose reader died may fail to flush; it is being discarded.


def _kill_all(workers: list[_Worker]) -> None:
    for worker in workers:
        worker.kill()


class WorkerPool:
    """Runs `task(*args)` for each item in worker processes with a hard time limit.

    task: "module:function", importable in a fresh interpreter (the parent's
      sys.path is passed on) and picklable in its arguments and result.
    timeout_s: hard limit per item, from dispatch to reply.
    memory_limit_mb: address-space limit per worker (0 disables).
    startup_timeout_s: how long a worker may take to import its task.
    """

    def __init__(
        self,
        task: str,
        num_workers: int,
        timeout_s: float,
        *,
        memory_limit_mb: int = 4096,
        startup_timeout_s: float = 120.0,
    ):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.task = task
        self.timeout_s = float(timeout_s)
        self.startup_timeout_s = startup_timeout_s
        # -P: the working directory is not put first on the worker's path, so a stray
        # math.py (or any stdlib name) next to the caller cannot shadow a real module.
        self._command = [sys.executable, "-P", "-m", "rl_reason.verifiers.worker", task,
                         str(int(memory_limit_mb))]
        self._env = dict(os.environ)
        self._env["PYTHONPATH"] = os.pathsep.join(entry for entry in sys.path if entry)
        self._selector = selectors.DefaultSelector()
        self._workers: list[_Worker] = []
        self._finalizer = weakref.finalize(self, _kill_all, self._workers)
        self._closed = False
        for _ in range(num_workers):
            self._workers.append(self._start_worker())

    @property
    def pids(self) -> list[int]:
        return [worker.process.pid for worker in self._workers]

    def _start_worker(self) -> _Worker:
        worker = _Worker(self._command, self._env)
        self._selector.register(worker.fd, selectors.EVENT_READ, worker)
        return worker

    def _replace(self, worker: _Worker) -> None:
        """Kills `worker` and starts a fresh one in its slot (slots own parts of a batch)."""
        self._selector.unregister(worker.fd)
        worker.kill()
        self._workers[self._workers.index(worker)] = self._start_worker()

    def wait_ready(self) -> None:
        """Blocks until every worker has imported its task (e.g. before timing a batch)."""
        if self._closed:
            raise RuntimeError("WorkerPool.wait_ready called after close()")
        while not all(worker.ready for worker in self._workers):
            for key, _ in self._selector.select(self._wait_s()):
                self._receive(key.data, outcomes=[])
            self._enforce_limits(outcomes=[])

    def map(self, items: Sequence[tuple]) -> list[TaskOutcome]:
        """TaskOutcome per item, in order; never raises for an item's own failure."""
        if self._closed:
            raise RuntimeError("WorkerPool.map called after close()")
        outcomes: list[TaskOutcome | None] = [None] * len(items)
        # Each worker slot owns a contiguous run of the batch and takes its items in
        # order: neighbouring items (a GRPO group shares its gold answer and often its
        # answer strings) then hit the same worker's math-verify caches. An idle slot
        # steals from the end of the longest run, which keeps the load balanced.
        slots = len(self._workers)
        pending = [collections.deque(range(len(items) * s // slots, len(items) * (s + 1) // slots))
                   for s in range(slots)]
        try:
            while any(pending) or any(worker.item is not None for worker in self._workers):
                self._dispatch(items, pending)
                for key, _ in self._selector.select(self._wait_s()):
                    self._receive(key.data, outcomes)
                self._enforce_limits(outcomes)
        except BaseException:
            # Workers still busy with this batch would answer into the next one.
            for worker in list(self._workers):
                if worker.item is not None:
                    self._replace(worker)
            raise
        return outcomes

    def _dispatch(self, items, pending: list[collections.deque]) -> None:
        for slot, worker in enumerate(list(self._workers)):
            if not worker.ready or worker.item is not None:
                continue
            if pending[slot]:
                queue, index = pending[slot], pending[slot].popleft()
            else:
                queue = max(pending, key=len)
                if not queue:
                    return
                index = queue.pop()
            soft_limit_s = self.timeout_s * _SOFT_LIMIT_FRACTION
            frame = protocol.encode_frame((index, tuple(items[index]), soft_limit_s))
            worker.item, worker.dispatched_at = index, time.monotonic()
            try:
                worker.process.stdin.write(frame)
                worker.process.stdin.flush()
            except (BrokenPipeError, OSError):
                # The worker died while idle; the item is not to blame and goes back.
                worker.item = None
                queue.appendleft(index)
                self._replace(worker)

    def _wait_s(self) -> float:
        now = time.monotonic()
        deadlines = [
            worker.dispatched_at + self.timeout_s if worker.ready
            else worker.started_at + self.startup_timeout_s
            for worker in self._workers
            if worker.item is not None or not worker.ready
        ]
        return max(0.0, min(deadlines) - now) if deadlines else 0.0

    def _receive(self, worker: _Worker, outcomes) -> None:
        exited = False
        while True:
            try:
                chunk = os.read(worker.fd, 1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                exited = True
                break
            worker.buffer += chunk
        # Replies sent before an exit still count, so decode before handling it.
        for message in protocol.decode_frames(worker.buffer):
            if message[0] == "ready":
                worker.ready = True
                continue
            item_id, status, value = message
            if item_id != worker.item:
                raise RuntimeError(f"verifier worker answered item {item_id}, expected {worker.item}")
            elapsed = time.monotonic() - worker.dispatched_at
            if status == "ok":
                outcomes[item_id] = TaskOutcome("ok", value=value, elapsed_s=elapsed)
            else:
                outcomes[item_id] = TaskOutcome(status, error=value, elapsed_s=elapsed)
            worker.item = None
        if exited:
            self._on_exit(worker, outcomes)

    def _on_exit(self, worker: _Worker, outcomes) -> None:
        code = worker.process.wait()
        if not worker.ready:
            self._replace(worker)  # So that a later map() tries a fresh worker.
            raise RuntimeError(
                f"verifier worker for {self.task!r} exited with code {code} during startup; "
                "its traceback is on stderr"
            )
        if worker.item is not None:
            elapsed = time.monotonic() - worker.dispatched_at
            outcomes[worker.item] = TaskOutcome(
                "error", error=f"worker died (exit code {code})", elapsed_s=elapsed)
            worker.item = None
        self._replace(worker)

    def _enforce_limits(self, outcomes) -> None:
        now = time.monotonic()
        for worker in list(self._workers):
            if worker.item is not None and now - worker.dispatched_at >= self.timeout_s:
                outcomes[worker.item] = TaskOutcome("timeout", elapsed_s=now - worker.dispatched_at)
                worker.item = None
                self._replace(worker)
            elif not worker.ready and now - worker.started_at >= self.startup_timeout_s:
                raise RuntimeError(
                    f"verifier worker for {self.task!r} did not start within {self.startup_timeout_s}s"
                )

    def close(self) -> None:
        """Stops every worker; idempotent. Idle workers exit on EOF, stragglers are killed."""
        if self._closed:
            return
        self._closed = True
        for worker in self._workers:
            try:
                worker.process.stdin.close()
            except OSError:
                pass  # Already dead; reaped below.
        deadline = time.monotonic() + 2.0
        for worker in self._workers:
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass  # Killed by the finaliser below.
        self._finalizer()
        self._selector.close()

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
