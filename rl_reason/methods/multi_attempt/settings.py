"""Multi-attempt RL's settings (the `config.method` block of a run), free of JAX."""

from __future__ import annotations

import dataclasses

from rl_reason.errors import ConfigError
from rl_reason.methods.components.checks import episode_settings

BUDGET_PER = ("question", "episode")
REWARD_RULES = ("sticky", "last_attempt")
OUTCOMES = ("solved", "wrong", "no_answer")


@dataclasses.dataclass(frozen=True)
class MultiAttemptSettings:
    """`config.method` of a multi-attempt run (defaults: the paper's).

    min_attempts, max_attempts   N ~ uniform{min..max} (1..5)
    budget_per                   'question' (default: a group shares N) or 'episode'
    reward_correct / reward_wrong / reward_no_answer   +1 / -0.5 / -1
    reward_rule                  'sticky' (released code) or 'last_attempt'
    """

    min_attempts: int = 1
    max_attempts: int = 5
    budget_per: str = "question"
    reward_correct: float = 1.0
    reward_wrong: float = -0.5
    reward_no_answer: float = -1.0
    reward_rule: str = "sticky"

    def __post_init__(self):
        if not 1 <= self.min_attempts <= self.max_attempts:
            raise ConfigError(f"method.min_attempts={self.min_attempts} and max_attempts="
                             f"{self.max_attempts} need 1 <= min_attempts <= max_attempts")
        if self.budget_per not in BUDGET_PER:
            raise ConfigError(f"method.budget_per={self.budget_per!r}: one of {BUDGET_PER}")
        if self.reward_rule not in REWARD_RULES:
            raise ConfigError(f"method.reward_rule={self.reward_rule!r}: one of {REWARD_RULES}")

    @classmethod
    def from_config(cls, config) -> "MultiAttemptSettings":
        """The settings of `config.method`, or ConfigError naming the key."""
        return episode_settings(cls, config, "multi_attempt")
