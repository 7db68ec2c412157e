"""R3L's settings (the `config.method` block of an R3L run), free of JAX."""

from __future__ import annotations

import dataclasses

from rl_reason.errors import ConfigError
from rl_reason.methods.components.checks import episode_settings

OBJECTIVES = ("r3l", "grpo")
# How a retry starts (methods/r3l/trial.py): from the pivot's attempts, or afresh.
REPLAY, RESTART = "replay", "restart"


@dataclasses.dataclass(frozen=True)
class R3LSettings:
    """`config.method` of an R3L run (defaults: the paper's, for math).

    max_attempts                 3 attempts an episode
    reflect_retry                reflect and retry (False: all G are base episodes)
    pivotal_credit               the shared first k attempts untrained in both rows
    amplification, alpha         A = 1 at the maximal reward, alpha (r - b) above the
                                 mean (alpha = 3), r - b below; False: A = r - b
    tau                          the policy term is scaled by 1 / (1 + tau)
    objective                    'r3l' (REINFORCE as above) or 'grpo' (config.loss)
    retry_mode                   'replay' (the paper) or 'restart' (the released code)
    train_success_reflections    reflections reporting a success on a solved episode
                                 are trained as positive experiences (released code)
    reflection_max_new_tokens    a report's budget
    max_reflection_prompt_len    longer reflection requests are skipped (counted)
    """

    max_attempts: int = 3
    reflect_retry: bool = True
    pivotal_credit: bool = True
    amplification: bool = True
    alpha: float = 3.0
    tau: float = 1.0
    objective: str = "r3l"
    retry_mode: str = REPLAY
    train_success_reflections: bool = True
    reflection_max_new_tokens: int = 128
    max_reflection_prompt_len: int = 1024

    def __post_init__(self):
        def fail(message):
            raise ConfigError(f"method.{message}")

        if self.max_attempts < 1:
            fail(f"max_attempts={self.max_attempts} must be >= 1")
        if self.alpha <= 0 or self.tau < 0:
            fail(f"alpha={self.alpha} must be > 0 and tau={self.tau} >= 0")
        if self.objective not in OBJECTIVES:
            fail(f"objective={self.objective!r}: one of {OBJECTIVES}")
        if self.objective == "grpo" and self.amplification:
            fail("amplification is R3L's objective's; objective='grpo' takes GRPO's "
                 "advantages (advantage.estimator), so set amplification=False")
        if self.retry_mode not in (REPLAY, RESTART):
            fail(f"retry_mode={self.retry_mode!r}: one of "
                 f"{(REPLAY, RESTART)}")
        if self.reflection_max_new_tokens < 1 or self.max_reflection_prompt_len < 1:
            fail(f"reflection_max_new_tokens={self.reflection_max_new_tokens} and "
                 f"max_reflection_prompt_len={self.max_reflection_prompt_len} must be >= 1")

    @classmethod
    def from_config(cls, config) -> "R3LSettings":
        """The settings of `config.method`, or ConfigError naming the key."""
        settings = episode_settings(cls, config, "r3l")
        G = config.rollout.group_size
        if settings.reflect_retry and (G < 2 or G % 2):
            raise ConfigError(
                f"rollout.group_size={G}: R3L runs G/2 base episodes a question (the other "
                "half of the group are their retries), so G must be even and >= 2")
        return settings

    @property
    def base_episodes_share(self) -> float:
        return 0.5 if self.reflect_retry else 1.0
