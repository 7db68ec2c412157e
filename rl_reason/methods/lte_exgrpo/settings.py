"""LTE + ExGRPO's settings: ExGRPO's replay keys and LTE's hint keys in one
`config.method` block, free of JAX."""

from __future__ import annotations

import dataclasses

from rl_reason.errors import ConfigError
from rl_reason.methods.components.hint_settings import HintSettings
from rl_reason.methods.components.replay_settings import ReplaySettings

HINT_KEYS = tuple(f.name for f in dataclasses.fields(HintSettings))


@dataclasses.dataclass(frozen=True)
class LTEExGRPOSettings:
    """The `config.method` block of the composition: ExGRPO's keys and LTE's."""

    replay: ReplaySettings
    hints: HintSettings

    @classmethod
    def from_config(cls, config) -> "LTEExGRPOSettings":
        missing = sorted(set(HINT_KEYS) - set(config.method.keys()))
        if missing:
            raise ConfigError(f"method: an lte_exgrpo run needs LTE's keys too; missing {missing}")
        settings = cls(replay=ReplaySettings.from_config(config, HINT_KEYS),
                       hints=HintSettings.from_method_block(config.method, "lte_exgrpo"))
        if not settings.hints.hinted:
            raise ConfigError("method.extra_prompt='plain': the composition hints; the "
                              "plain-prompt control is an LTE variant")
        return settings
