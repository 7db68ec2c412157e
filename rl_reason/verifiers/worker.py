"""One verifier worker process: runs a task function on requests from `pool.WorkerPool`.

Started as `python -m rl_reason.verifiers.worker MODULE:FUNCTION MEMORY_LIMIT_MB`, a
fresh interpreter: nothing of the trainer (JAX runtime, device handles, threads) is
inherited, and nothing here or in the task modules imports JAX. The pool starts
workers this way rather than through multiprocessing's spawn/forkserver because
those re-import the parent's `__main__` in the child, which for the trainer is
`rl_reason.main` and therefore JAX.

Protocol (frames from protocol.py): the worker sends ("ready", pid) once the
task module is imported (its import time is not charged to any item), then one
reply (item_id, status, value) per request (item_id, args, soft_timeout_s), with
status "ok", "timeout" or "error". EOF on stdin means shut down.

The worker interrupts its own item at the soft time limit (SIGALRM) so that slow
but interruptible Python work ends without losing the process; work stuck in C
(e.g. a huge integer power inside sympy) does not see the signal, and the pool
kills the process at the hard limit.
"""

import importlib
import logging
import os
import pickle
import resource
import signal
import sys

from rl_reason.verifiers.protocol import encode_frame, read_frame


class _SoftTimeout(BaseException):
    """A BaseException so that libraries' `except Exception` cannot swallow it."""


def _on_alarm(signum, frame):
    raise _SoftTimeout()


def _load_task(spec: str):
    module_name, sep, function_name = spec.partition(":")
    if not sep or not module_name or not function_name:
        raise ValueError(f"task must be 'module:function', got {spec!r}")
    return getattr(importlib.import_module(module_name), function_name)


def _run_item(task, args, soft_timeout_s: float):
    try:
        signal.setitimer(signal.ITIMER_REAL, soft_timeout_s)
        try:
            value = task(*args)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        return "ok", value
    except _SoftTimeout:
        return "timeout", None
    except Exception as error:  # noqa: BLE001 - any crash is a scored, counted item
        try:
            text = f"{type(error).__name__}: {error}"
        except Exception:  # noqa: BLE001 - str() of an exotic exception can itself fail
            text = type(error).__name__
        return "error", text[:2000]


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m rl_reason.verifiers.worker MODULE:FUNCTION MEMORY_LIMIT_MB", file=sys.stderr)
        return 2
    # Replies use a private copy of stdout; fd 1 then points at stderr so a stray
    # print() in a library cannot corrupt the protocol stream.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = os.fdopen(os.dup(0), "rb")
    # Ctrl-C reaches the whole process group; the trainer handles it and closes the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.ERROR)
    task = _load_task(argv[1])
    memory_limit_mb = int(argv[2])
    if memory_limit_mb > 0:
        # After the imports, whose address-space reservations are not the item's fault:
        # a runaway allocation then fails with MemoryError (status "error") instead of
        # pushing the host into swap before the time limit kills it.
        limit = memory_limit_mb * 2**20
        try:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ValueError, OSError) as error:  # macOS refuses RLIMIT_AS below its reservations
            print(f"verifier worker: memory limit not applied ({error}); the time limit still holds",
                  file=sys.stderr)
    signal.signal(signal.SIGALRM, _on_alarm)
    replies.write(encode_frame(("ready", os.getpid())))
    replies.flush()
    while True:
        frame = read_frame(requests)
        if frame is None:
            return 0
        item_id, args, soft_timeout_s = pickle.loads(frame)
        status, value = _run_item(task, args, soft_timeout_s)
        try:
            reply = encode_frame((item_id, status, value))
        except Exception as error:  # noqa: BLE001 - an unpicklable result is the task's bug
            reply = encode_frame((item_id, "error", f"result not picklable: {error}"))
        replies.write(reply)
        replies.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
