"""Task functions for the worker-pool tests, run inside verifier workers.

Imported by the workers as a top-level module: pytest puts this directory on
sys.path and the pool passes its sys.path on to the workers.
"""

import os
import signal
import sys
import time


def pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def jax_modules() -> list[str]:
    return sorted(name for name in sys.modules if name.split(".")[0] in ("jax", "jaxlib", "flax"))


def busy_python(seconds: float) -> int:
    # Pure Python, so the worker's soft SIGALRM limit can interrupt it.
    end = time.monotonic() + seconds
    count = 0
    while time.monotonic() < end:
        count += 1
    return count


def deaf_sleep(seconds: float) -> int:
    # Stands in for work stuck in C: the soft limit's signal is blocked, only a kill ends it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(seconds)
    return os.getpid()


def die(code: int) -> None:
    os._exit(code)


def fail(message: str) -> None:
    raise ValueError(message)


def echo(value):
    return value
