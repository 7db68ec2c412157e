"""LTE + ExGRPO: replay of past successes, and hinted retries for the fresh groups no
sample solved (docs/methods.md, "Compositions").

    prepare      ExGRPO's: replay groups (a stored trajectory + G - 1 fresh samples)
                 and B - n_exp fresh prompts
    follow_up    LTE's: G more samples on a hinted prompt for each none-pass fresh
                 group (a replay group holds a success, so it is never none-pass)
    build_batch  fresh groups after LTE's replacement: hinted successes join as
                 off-policy members trained under the plain prompt, with the log-probs
                 recorded under the hint; replay groups with their stored trajectory
                 off-policy, with the log-probs recorded when it was sampled. Both kinds
                 take the same shaped weight f(w) = w / (w + gamma); advantages
                 r - mean over each final group
    after_step   ExGRPO's, over the final groups: a hinted success is stored like any
                 other (plain context, its recorded log-probs) and counts in k; a
                 question is retired only when the policy's own G samples were all
                 correct, so a hinted group never is. A group all correct only because
                 hinted successes replaced every failure (the no_cap ablation: G' = G)
                 is neither retired nor stored (k = G has no bucket; the question
                 stays in the fresh stream); with the cap, a rescued group keeps a
                 failure and is stored with k = G' <= G - 1

The two mechanisms act on disjoint groups in one step (hints on fresh none-pass
groups, replay on groups the buffer chose), share one off-policy loss, and feed one
buffer: a question the policy could only solve with a hint can be replayed later
without it.
"""

from __future__ import annotations

from rl_reason.methods.components import hints
from rl_reason.methods.components.replay import ExperienceReplay
from rl_reason.methods.lte_exgrpo.settings import HINT_KEYS, LTEExGRPOSettings
from rl_reason.protocol import FRESH, StepContext

class LTEExGRPO(ExperienceReplay):
    name = "lte_exgrpo"
    Settings = LTEExGRPOSettings
    composed_keys = HINT_KEYS

    def __init__(self, config, tokenizer):
        super().__init__(config, tokenizer)
        self.hint_settings = LTEExGRPOSettings.from_config(config).hints

    @classmethod
    def sampler_shape(cls, config):
        """LTE's hinted round (methods/components/hints.py); replayed trajectories are never
        sampled, and the buffer's host memory is ExGRPO's."""
        return hints.sampler_shape(config, LTEExGRPOSettings.from_config(config).hints)

    def follow_up(self, samples, ctx: StepContext):
        if any(s.request.tag == self.hint_settings.tag for s in samples):
            return []
        return hints.extra_requests(samples, self.tokenizer, self.hint_settings)

    def group_members(self, samples, ctx: StepContext):
        fresh = [s for s in samples if s.request.tag in (FRESH, self.hint_settings.tag)]
        others = [s for s in samples if s.request.tag not in (FRESH, self.hint_settings.tag)]
        return (hints.final_members(fresh, self.hint_settings, ctx, prefix="lte/")
                + super().group_members(others, ctx))
