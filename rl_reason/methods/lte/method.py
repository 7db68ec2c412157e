"""LTE, learning from the policy's own wrong answers (docs/methods.md, "LTE").

Per step:

    fresh       B plain prompts x G samples (tag "fresh": the headline metrics)
    follow_up   for each none-pass group, one request of G more samples in the same
                group, on a prompt chosen by truncation:
                    every response truncated  -> concise
                    some truncated            -> concise + hint
                    none truncated            -> hint
                The hint lists the distinct wrong final answers of the untruncated
                responses; when they gave none, it says no final answer was given
                (templates.NO_ANSWER_HINT).
    build_batch G' = the correct, untruncated extra responses (capped at G - 1):
                they replace G' randomly chosen failures of the group; advantages as
                in GRPO over the final G members. Hinted responses are trained
                off-policy under the plain prompt: row = plain prompt + response,
                w = pi_theta(response | plain) / pi_rollout(response | hinted), the
                shaped loss f(w) = w / (w + gamma); the originals keep the clipped loss.

The `grpo_extra_rollouts` control (method.extra_prompt='plain') spends the same extra
samples on the plain prompt with the same replacement rule; its extra responses are
on-policy and trained as such. The mechanism lives in methods/components/hints.py.
"""

from __future__ import annotations

from typing import Sequence

from rl_reason.methods.components import common, hints
from rl_reason.methods.lte.settings import LTESettings
from rl_reason.methods.base import Method
from rl_reason.protocol import FRESH, Request, Sample, StepContext


class LTE(Method):
    name = "lte"
    Settings = LTESettings

    def __init__(self, config, tokenizer):
        super().__init__(config, tokenizer)
        self.settings = LTESettings.from_config(config)

    @classmethod
    def sampler_shape(cls, config):
        """The hinted round's prompts are the longest (methods/components/hints.py)."""
        return hints.sampler_shape(config, LTESettings.from_config(config))

    def prepare(self, ctx: StepContext) -> list[Request]:
        r = self.config.rollout
        return [common.plain_request(self.tokenizer, record, r.group_size)
                for record in ctx.draw_records(r.prompts_per_step)]

    def follow_up(self, samples: Sequence[Sample], ctx: StepContext) -> list[Request]:
        """After the fresh round: G more samples for each none-pass group."""
        if any(s.request.tag != FRESH for s in samples):
            return []
        return hints.extra_requests(samples, self.tokenizer, self.settings)

    def build_batch(self, samples: Sequence[Sample], ctx: StepContext):
        members = hints.final_members(samples, self.settings, ctx)
        return common.member_rows(members, common.RewardShaping.from_config(self.config),
                                  common.AdvantageSettings.from_config(self.config),
                                  mask_truncated=self.config.reward.mask_truncated)
