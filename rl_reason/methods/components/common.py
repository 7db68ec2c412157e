"""Pieces the methods share: the plain request, verifier rewards with DAPO's overlong
shaping, group advantages, and the training rows of samples.

Every function takes typed settings (built from a run config once, by
`RewardShaping.from_config` / `AdvantageSettings.from_config`), so a method can call
it with values of its own. No method imports another method's module.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from rl_reason.data import templates
from rl_reason.protocol import FRESH, Request, Row, Sample
from rl_reason.rl import advantages as adv_lib


def plain_request(tokenizer, record, num_samples: int, *, tag: str = FRESH,
                  group: str = "") -> Request:
    """The plain prompt of `record` (docs/methods.md section 0)."""
    context = templates.encode_prompt(tokenizer, templates.plain_prompt(record.problem))
    return Request(record=record, context=context, num_samples=num_samples, group=group,
                   tag=tag)


@dataclasses.dataclass(frozen=True)
class RewardShaping:
    """DAPO's linear overlong penalty (off when overlong_buffer is 0)."""

    max_new_tokens: int
    overlong_buffer: int = 0
    overlong_penalty: float = 1.0

    @classmethod
    def from_config(cls, config) -> "RewardShaping":
        return cls(max_new_tokens=config.rollout.max_new_tokens,
                   overlong_buffer=config.reward.overlong_buffer,
                   overlong_penalty=config.reward.overlong_penalty)


def shaped_rewards(samples: Sequence[Sample], shaping: RewardShaping) -> np.ndarray:
    """Verifier rewards plus the overlong penalty when it is on; lengths count the
    generated tokens of each sample against its own budget: its request's
    max_new_tokens (a continuation of a prefix has L - |prefix|), else the config's L.
    For a continuation that is the same as measuring prefix + continuation against L."""
    rewards = np.array([s.reward for s in samples], np.float32)
    if shaping.overlong_buffer > 0 and len(samples):
        lengths = np.array([len(s.response) for s in samples])
        budgets = np.array([s.request.max_new_tokens or shaping.max_new_tokens
                            for s in samples])
        rewards = rewards + np.asarray(adv_lib.overlong_penalty(
            lengths, max_response_length=budgets,
            overlong_buffer=shaping.overlong_buffer,
            penalty_factor=shaping.overlong_penalty), np.float32)
    return rewards


@dataclasses.dataclass(frozen=True)
class AdvantageSettings:
    """Which group estimator (rl/advantages.py) and its options."""

    estimator: str = "grpo"
    norm_by_std: bool = True

    @classmethod
    def from_config(cls, config) -> "AdvantageSettings":
        return cls(estimator=config.advantage.estimator,
                   norm_by_std=config.advantage.norm_by_std)


def group_ids(groups: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Group names -> ids 0..n-1 in first-seen order, and the names."""
    names: dict[str, int] = {}
    ids = np.array([names.setdefault(g, len(names)) for g in groups], np.int32)
    return ids, list(names)


def group_advantages(groups: Sequence[str], rewards: np.ndarray,
                     settings: AdvantageSettings) -> np.ndarray:
    """One advantage per member; members sharing a group name share the statistics."""
    if not len(groups):
        return np.zeros((0,), np.float32)
    ids, names = group_ids(groups)
    options = {"norm_by_std": settings.norm_by_std} if settings.estimator == "grpo" else {}
    return np.asarray(adv_lib.compute_advantages(
        settings.estimator, np.asarray(rewards, np.float32), ids, num_groups=len(names),
        **options), np.float32)


def response_row(sample: Sample, advantage: float, *, trained: bool = True,
                 off_policy: bool = False, context: Sequence[int] | None = None) -> Row:
    """context + prefix + response, loss on the response only.

    context: the prompt the row is trained under (default: the one it was sampled
        with; LTE trains hinted responses under the plain prompt).
    off_policy: flag the response tokens for the off-policy loss, with the policy
        log-probs recorded at sampling time as the behaviour log-probs.
    """
    context = list(sample.request.context if context is None else context)
    head = len(context) + len(sample.request.prefix)
    n = head + len(sample.response)
    mask = np.zeros(n, np.float32)
    mask[head:] = float(trained)
    row = Row(tokens=context + sample.full_response, loss_mask=mask, advantage=float(advantage),
              group=sample.request.group)
    if off_policy:
        row.off_policy = np.zeros(n, bool)
        row.off_policy[head:] = True
        row.behaviour_logp = np.zeros(n, np.float32)
        row.behaviour_logp[head:] = sample.policy_logprobs
    return row


def grouped_rows(samples: Sequence[Sample], rewards: np.ndarray, settings: AdvantageSettings,
                 *, mask_truncated: bool = False) -> list[Row]:
    """One on-policy row per sample, advantages over the samples' groups."""
    advantages = group_advantages([s.request.group for s in samples], rewards, settings)
    return [response_row(s, a, trained=not (mask_truncated and s.truncated))
            for s, a in zip(samples, advantages)]


@dataclasses.dataclass(frozen=True)
class Member:
    """A sample as a member of its training group: on-policy, or off-policy with its
    recorded policy log-probs as behaviour log-probs; trained under `context` (None:
    the context it was sampled with)."""

    sample: Sample
    off_policy: bool = False
    context: Sequence[int] | None = None


def member_rows(members: Sequence[Member], shaping: RewardShaping, settings: AdvantageSettings,
                *, mask_truncated: bool = False) -> list[Row]:
    """One row per member, advantages over the members' groups. On-policy members that
    ran out of tokens are untrained when mask_truncated (DAPO)."""
    if not members:
        return []
    samples = [m.sample for m in members]
    advantages = group_advantages([s.request.group for s in samples],
                                  shaped_rewards(samples, shaping), settings)
    return [response_row(m.sample, a, off_policy=m.off_policy, context=m.context,
                         trained=m.off_policy or not (mask_truncated and m.sample.truncated))
            for m, a in zip(members, advantages)]


def informative_groups(samples: Sequence[Sample]) -> set[str]:
    """Groups whose rewards are not all equal (DAPO dynamic sampling keeps these)."""
    by_group: dict[str, set] = {}
    for s in samples:
        by_group.setdefault(s.request.group, set()).add(s.reward)
    return {g for g, rewards in by_group.items() if len(rewards) > 1}
