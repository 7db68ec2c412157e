"""The embedded worlds: a synthetic task, the warm-start data its base policy learns
from, and the premise dial.

    world = worlds.get("traps")
    records = world.task.train_records(4000, levels=(2, 3))

traps   (default) arithmetic with a precedence trap (data/traps.py): the base
        policy's wrong answers say why they are wrong, and it uses what a failure
        tells it in a share `skill` of its warm-start conversations (the premise
        dial; data/trap_warm_start.py). Every method's premise is present and
        measured (rl_reason/premises.py).
arith   the earlier world (data/synthetic.py, data/warm_start.py): arithmetic chains
        whose failures are slips that carry no information, and a base policy with
        no skill at using them. Kept as the no-information reference; it has no dial.

A world's `version` names everything that decides its base policy: change the task,
the warm-start data or the build settings and the version must change, so no run
ever mixes two worlds under one name.
"""

from __future__ import annotations

import dataclasses
from types import ModuleType
from typing import Callable

from rl_reason.data import synthetic, traps, trap_warm_start, warm_start
from rl_reason.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class World:
    name: str
    version: str
    task: ModuleType
    # conversations(num, *, seed, level_weights, skill) -> [warm_start.Conversation]
    conversations: Callable[..., list]
    default_skill: float | None      # None: the world has no premise dial
    # first_error_step(record, answers): the attempt of a failed episode where the
    # mistake behind the failure first appears, as the world's reflections name it
    # (R3L's premise, rl_reason/premises.py).
    first_error_step: Callable[..., int] = None
    # trunk_conversations(num, *, seed, level_weights): the skill-free data of a
    # two-stage build's first stage (rl_reason/pretrain.py); None: one stage.
    trunk_conversations: Callable[..., list] | None = None

    def label(self, skill: float | None) -> str:
        """'traps_v1 (skill 0.5)', or the version alone for a world without a dial."""
        return self.version if skill is None else f"{self.version} (skill {skill:g})"

    def resolve_skill(self, skill: float | None) -> float | None:
        """The dial setting a run asks for (negative or None: the world's default),
        checked; None for a world without a dial."""
        if self.default_skill is None:
            if skill is not None and skill >= 0:
                raise ConfigError(f"world.skill={skill}: the {self.name!r} world has no "
                                  "premise dial (leave world.skill at -1)")
            return None
        if skill is None or skill < 0:
            return self.default_skill
        if skill > 1:
            raise ConfigError(f"world.skill={skill} must be in [0, 1] (or -1: the default "
                              f"{self.default_skill})")
        return float(skill)


def _arith_conversations(num, *, seed, level_weights, skill, unboxed_share=0.5):
    del skill    # no dial: the arithmetic world's failures carry no information
    return warm_start.warm_start_conversations(num, seed=seed, level_weights=level_weights,
                                               unboxed_share=unboxed_share)


def _trap_conversations(num, *, seed, level_weights, skill, unboxed_share=0.0):
    del unboxed_share
    return trap_warm_start.conversations(num, seed=seed, level_weights=level_weights,
                                         skill=skill)


def _repeated_mistake_step(record, answers) -> int:
    """The arithmetic world's failed episodes repeat one mistake from their root on:
    the earliest attempt with the last attempt's answer."""
    del record
    return next(i for i, a in enumerate(answers) if a == answers[-1])


def _first_trap_step(record, answers) -> int:
    """The first attempt with the trap's answer (trap_warm_start.first_error_step)."""
    trap = str(record.meta["trap_answer"])
    return next((i for i, a in enumerate(answers) if str(a) == trap), 0)


WORLDS = {
    "traps": World("traps", "traps_v1", traps, _trap_conversations, default_skill=0.7,
                   first_error_step=_first_trap_step,
                   trunk_conversations=trap_warm_start.plain_conversations),
    "arith": World("arith", "base_policy_v6", synthetic, _arith_conversations,
                   default_skill=None, first_error_step=_repeated_mistake_step),
}
DEFAULT = "traps"


def get(name: str) -> World:
    if name not in WORLDS:
        raise ConfigError(f"world.name={name!r}: unknown world; worlds are {sorted(WORLDS)}")
    return WORLDS[name]
