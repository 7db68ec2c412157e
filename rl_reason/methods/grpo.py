"""GRPO (docs/methods.md, "GRPO") with the DAPO and Dr.GRPO switches.

The pieces other methods reuse are module functions: `plain_request` (encode the
plain prompt), `group_rewards` (verifier reward plus overlong shaping) and
`grouped_rows` (group advantages -> training rows).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rl_reason.data import templates
from rl_reason.methods.base import Method, Request, Row, Sample, StepContext
from rl_reason.rl import advantages as adv_lib


def plain_request(tokenizer, record, num_samples: int) -> Request:
    context = templates.encode_prompt(tokenizer, templates.plain_prompt(record.problem))
    return Request(record=record, context=context, num_samples=num_samples, group=record.id)


def group_rewards(samples: Sequence[Sample], loss_config, max_new_tokens: int) -> np.ndarray:
    """Verifier rewards plus DAPO's linear overlong penalty when it is on."""
    rewards = np.array([s.reward for s in samples], np.float32)
    if loss_config.overlong_buffer > 0:
        lengths = np.array([len(s.response) for s in samples])
        rewards = rewards + np.asarray(adv_lib.overlong_penalty(
            lengths, max_response_length=max_new_tokens,
            overlong_buffer=loss_config.overlong_buffer,
            penalty_factor=loss_config.overlong_penalty), np.float32)
    return rewards


def group_ids(samples: Sequence[Sample]) -> tuple[np.ndarray, list[str]]:
    names: dict[str, int] = {}
    ids = np.array([names.setdefault(s.request.group, len(names)) for s in samples], np.int32)
    return ids, list(names)


def grouped_rows(samples: Sequence[Sample], rewards: np.ndarray, loss_config, *,
                 estimator: str | None = None, **estimator_options) -> list[Row]:
    """One row per sample: context + response, loss on the response only."""
    if not samples:
        return []
    ids, _ = group_ids(samples)
    estimator = estimator or loss_config.estimator
    if estimator == "grpo":
        estimator_options.setdefault("norm_by_std", loss_config.norm_by_std)
    advantages = np.asarray(adv_lib.compute_advantages(
        estimator, rewards, ids, num_groups=int(ids.max()) + 1, **estimator_options))
    rows = []
    for s, a in zip(samples, advantages):
        context, response = s.request.context, s.response
        trained = 0.0 if (loss_config.mask_truncated and s.truncated) else 1.0
        mask = np.concatenate([np.zeros(len(context), np.float32),
                               np.full(len(response), trained, np.float32)])
        rows.append(Row(tokens=list(context) + list(response), loss_mask=mask,
                        advantage=float(a), group=s.request.group))
    return rows


def informative_groups(samples: Sequence[Sample]) -> set[str]:
    """Groups whose rewards are not all equal (DAPO dynamic sampling keeps these)."""
    by_group: dict[str, set] = {}
    for s in samples:
        by_group.setdefault(s.request.group, set()).add(s.reward)
    return {g for g, rewards in by_group.items() if len(rewards) > 1}


class GRPO(Method):
    name = "grpo"

    def prepare(self, records, ctx: StepContext) -> list[Request]:
        G = self.config.rollout.group_size
        return [plain_request(self.tokenizer, r, G) for r in records]

    def follow_up(self, samples, ctx: StepContext) -> list[Request]:
        """DAPO dynamic sampling: draw more prompts until B groups are informative."""
        loss = self.config.loss
        if not loss.dynamic_sampling:
            return []
        rounds = len({s.request.meta.get("refill_round", 0) for s in samples})
        missing = self.config.rollout.prompts_per_step - len(informative_groups(samples))
        if missing <= 0 or rounds > loss.max_refill_rounds:
            return []
        requests = self.prepare(ctx.next_records(missing), ctx)
        for r in requests:
            r.meta["refill_round"] = rounds
        return requests

    def build_batch(self, samples, ctx: StepContext) -> list[Row]:
        loss = self.config.loss
        if loss.dynamic_sampling:
            keep = informative_groups(samples)
            # Keep the first B informative groups in sampling order, as DAPO does.
            kept_groups = list(dict.fromkeys(s.request.group for s in samples
                                             if s.request.group in keep))
            kept_groups = set(kept_groups[:self.config.rollout.prompts_per_step])
            ctx.metrics["dynamic_sampling/kept_groups"] = len(kept_groups)
            samples = [s for s in samples if s.request.group in kept_groups]
            if not samples:
                return []
        rewards = group_rewards(samples, loss, self.config.rollout.max_new_tokens)
        return grouped_rows(samples, rewards, loss)
