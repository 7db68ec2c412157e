"""RL building blocks as pure functions: group advantages, the policy loss, token log-probs."""

from rl_reason.rl.advantages import (
    ADVANTAGE_ESTIMATORS,
    compute_advantages,
    constant_group_mask,
    group_pass_stats,
    grpo_advantages,
    overlong_penalty,
    r3l_advantages,
    rloo_advantages,
)
from rl_reason.rl.logprobs import token_logprobs
from rl_reason.rl.losses import (
    AGGREGATIONS,
    KL_ESTIMATORS,
    LOSS_TYPES,
    LossConfig,
    aggregate,
    kl_penalty,
    policy_loss,
)

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "LOSS_TYPES",
    "LossConfig",
    "aggregate",
    "compute_advantages",
    "constant_group_mask",
    "group_pass_stats",
    "grpo_advantages",
    "kl_penalty",
    "overlong_penalty",
    "policy_loss",
    "r3l_advantages",
    "rloo_advantages",
    "token_logprobs",
]
