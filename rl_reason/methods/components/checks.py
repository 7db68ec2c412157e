"""Checks a method's settings share (free of JAX: settings modules import it)."""

from __future__ import annotations

from rl_reason.config_blocks import parse_block
from rl_reason.errors import ConfigError


def episode_settings(settings_cls, config, method: str):
    """The settings of an episode method's `config.method`, or ConfigError: an unknown
    key, a bad value, or a switch made for single responses (DAPO's refill and
    overlong shaping act on responses, and here episodes are the group members)."""
    if config.rollout.dynamic_sampling or config.reward.overlong_buffer:
        raise ConfigError(f"{method} does not support rollout.dynamic_sampling or "
                          "reward.overlong_buffer (episodes, not single responses, are the "
                          "group members)")
    return parse_block(settings_cls, config.method, "method", owner=method, partial=True)
