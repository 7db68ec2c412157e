"""A settings dataclass as the one source of a config block, and back.

A method's knobs are a frozen dataclass in its `settings.py` (no JAX): its defaults and
their docstring are the only ones; its `__post_init__` checks values and raises
ConfigError. The method's config builds `c.method` from an instance
(`config_block`), and the run parses it back (`parse_block`), so a misspelt key or a
bad value ends the run with one line before any compute.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, TypeVar

import ml_collections

from rl_reason.errors import ConfigError

T = TypeVar("T")


def config_block(settings: Any) -> ml_collections.ConfigDict:
    """The ConfigDict of a settings dataclass instance (its fields, in order)."""
    return ml_collections.ConfigDict(
        {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)})


def field_names(settings_cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(settings_cls))


def parse_block(settings_cls: type[T], block, where: str = "method", *, owner: str = "",
                others: Iterable[str] = (), partial: bool = False) -> T:
    """`block` (a ConfigDict or mapping) as an instance of `settings_cls`.

    where, owner: the block's name in messages, and what reads it (e.g. 'method' of
        'exgrpo').
    others: keys of the block that belong to another settings class (a composition's)
        and are left to it.
    partial: the block may hold only some of the class's fields (the rest keep their
        defaults); otherwise a missing key is an error too, as a config built with
        `config_block` holds them all.
    Unknown keys, missing keys and bad values raise ConfigError.
    """
    names = field_names(settings_cls)
    given = {k: block[k] for k in block.keys() if k not in set(others)}
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown {owner + ' ' if owner else ''}keys {unknown}; "
                          f"known: {sorted(names)}")
    missing = sorted(set(names) - set(given))
    if missing and not partial:
        raise ConfigError(f"{where}: {owner + ' needs' if owner else 'missing'} keys {missing}")
    try:
        return settings_cls(**given)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from e
