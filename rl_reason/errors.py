"""Errors the user can fix, and how the command-line entry points report them.

A `UserError` says the input is wrong, not the code: a config value, a data file, a
checkpoint folder, a workdir. Its message names the key, file, row or folder, so the
commands (`rl_reason.main`, `rl_reason.evaluate`, `rl_reason.pretrain`,
`rl_reason.plan`) print it as one line, `error: <message>`, on stderr and exit with
status 2 (EXIT_USER_ERROR, the shell's "bad usage" status, as argparse uses it). Any
other exception is a bug: it keeps its traceback, and Python exits with status 1.

Each module raises its own subclass, which also derives from the built-in type its
callers already catch: `ConfigError` (ValueError, below),
`data.sources.DataError` (ValueError), `checkpoint.CheckpointError` (RuntimeError),
`config_flag.ConfigFlagError` (ValueError), and the four below, shared by several
modules.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

EXIT_USER_ERROR = 2

T = TypeVar("T")


class UserError(Exception):
    """An error the user can fix: config, data file, checkpoint folder, workdir."""


class ConfigError(UserError, ValueError):
    """A config value that is impossible or inconsistent; the message names the key.
    (Here, below every module, so that any of them can raise it without an import
    circle; `config_check` re-exports it.)"""


class MissingPathError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class UnwritablePathError(UserError, OSError):
    """A folder the run must write to (workdir, output folder) cannot be written."""


class CheckpointFolderError(UserError, ValueError):
    """A Hugging Face checkpoint folder whose config, weights or tokenizer cannot be
    used (missing, malformed, or an unsupported architecture)."""


class UnknownVariantError(UserError, ValueError):
    """A config variant (`configs/<method>.py:<variant>`) the config file does not
    define; `known` lists those it does, so the message can name them all."""

    def __init__(self, variant: str, known: tuple[str, ...]):
        self.variant, self.known = variant, tuple(known)
        super().__init__(f"unknown config variant {variant!r}; known: {', '.join(self.known)}")


def one_line(error: BaseException) -> str:
    """The error's message on one line (a multi-line message is joined with spaces)."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def exit_on_user_error(main: Callable[..., T]) -> Callable[..., T]:
    """`main`, except that a UserError becomes `error: <message>` on stderr and exit
    status EXIT_USER_ERROR; every other exception propagates with its traceback."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print(f"error: {one_line(e) or type(e).__name__}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_USER_ERROR) from None

    return wrapped
