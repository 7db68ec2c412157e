"""GRPO (docs/methods.md, "GRPO") with the DAPO and Dr.GRPO switches."""

from __future__ import annotations

from rl_reason.methods.components import common
from rl_reason.methods.base import Method, StepContext


class GRPO(Method):
    name = "grpo"

    def prepare(self, ctx: StepContext):
        return self.requests_for(ctx.draw_records(self.config.rollout.prompts_per_step))

    def requests_for(self, records):
        G = self.config.rollout.group_size
        return [common.plain_request(self.tokenizer, r, G) for r in records]

    def follow_up(self, samples, ctx: StepContext):
        """DAPO dynamic sampling: draw more prompts until B groups are informative."""
        rollout = self.config.rollout
        if not rollout.dynamic_sampling:
            return []
        rounds = len({s.request.meta.get("refill_round", 0) for s in samples})
        missing = rollout.prompts_per_step - len(common.informative_groups(samples))
        if missing <= 0 or rounds > rollout.max_refill_rounds:
            return []
        requests = self.requests_for(ctx.draw_records(missing))
        for r in requests:
            r.meta["refill_round"] = rounds
        return requests

    def build_batch(self, samples, ctx: StepContext):
        if self.config.rollout.dynamic_sampling:
            keep = common.informative_groups(samples)
            # Keep the first B informative groups in sampling order, as DAPO does.
            kept_groups = list(dict.fromkeys(s.request.group for s in samples
                                             if s.request.group in keep))
            kept_groups = set(kept_groups[:self.config.rollout.prompts_per_step])
            ctx.metrics["dynamic_sampling/kept_groups"] = len(kept_groups)
            samples = [s for s in samples if s.request.group in kept_groups]
            if not samples:
                return []
        rewards = common.shaped_rewards(samples, common.RewardShaping.from_config(self.config))
        return common.grouped_rows(samples, rewards,
                                   common.AdvantageSettings.from_config(self.config),
                                   mask_truncated=self.config.reward.mask_truncated)
