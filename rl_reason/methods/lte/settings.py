"""LTE's settings (the `config.method` block of an LTE run), free of JAX."""

from __future__ import annotations

from rl_reason.config_blocks import parse_block
from rl_reason.errors import ConfigError
from rl_reason.methods.components.hint_settings import HintSettings


class LTESettings(HintSettings):
    """The `config.method` keys of an LTE run (HintSettings), checked with the
    run config."""

    @classmethod
    def from_config(cls, config) -> "LTESettings":
        settings = parse_block(cls, config.method, "method", owner="lte", partial=True)
        if config.rollout.dynamic_sampling:
            raise ConfigError("rollout.dynamic_sampling=True: LTE does not refill batches; it "
                              "spends its extra samples on none-pass groups instead")
        return settings
