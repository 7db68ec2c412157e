"""ExGRPO's machinery: learning from the policy's own past successes (docs/methods.md,
"ExGRPO"). The ExGRPO method (methods/exgrpo) is this class; LTE + ExGRPO
(methods/lte_exgrpo) composes it with LTE's hints.

One step (B prompts, G samples each):

    prepare      mixing on: n_exp = min(floor(rho * B), eligible buffer questions)
                 questions chosen (bucketed by k, or uniform), and per question the
                 stored trajectory with the lowest mean token entropy under the current
                 policy; a replay request of G - 1 fresh samples each, and B - n_exp
                 fresh prompts of G samples
    build_batch  a replay group = its stored trajectory (off-policy row, behaviour
                 log-probs = the recorded ones) + its G - 1 fresh samples; advantages
                 r - mean(group) over every group (std switch: advantage.norm_by_std)
    update       on-policy tokens: the PPO loss, its clip dropped once mixing is on;
                 replayed tokens: -A * f(w), w = exp(logp_now - logp_recorded),
                 f(w) = w / (w + 0.1) (loss.off_policy_weight), never clipped
    after_step   retire questions whose own samples this step were all correct (a fresh
                 group's G; a replay group's G - 1, its stored trajectory being
                 correct); store the correct responses of groups with 1..G-1 correct
                 (once mixing is on, unless method.store_before_mixing) and update k;
                 switch mixing on for good once the step's fresh accuracy exceeds
                 method.mixing_threshold

The buffer, the mixing flag and the retired count are method state, saved with every
checkpoint, so a resumed run draws and trains exactly as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from rl_reason.methods.components import common
from rl_reason.methods.base import FRESH, Method, Request, Sample, StepContext, loss_config_from
from rl_reason.methods.components.experience import (BYTES_PER_TOKEN, ExperienceBuffer,
                                                     Trajectory, pick_trajectory,
                                                     select_questions, text_key)
from rl_reason.methods.components.replay_settings import ReplaySettings
from rl_reason.methods.components.sampler_shape import SamplerShape, default_shape

REPLAY = "replay"   # tag of a replay group's fresh samples (and of its stored trajectory)
PREFIX = "exgrpo/"


class ExperienceReplay(Method):
    """ExGRPO's step; subclasses name the method and its settings class."""

    Settings = ReplaySettings
    # The buffer's k counts successes out of G: a resume with another G would bucket
    # every stored question wrongly.
    identity_keys = ("rollout.group_size",)
    # `config.method` keys of a component composed with ExGRPO (a subclass sets them).
    composed_keys: tuple[str, ...] = ()

    def __init__(self, config, tokenizer):
        super().__init__(config, tokenizer)
        self.settings = ReplaySettings.from_config(config, self.composed_keys)
        self.buffer = ExperienceBuffer()
        self.mixing = False
        self.retired = 0
        self._replayed: list[Sample] = []   # this step's stored trajectories, as samples
        self._members: list[common.Member] = []   # this step's training groups

    # ------------------------------------------------------------------ prepare
    def prepare(self, ctx: StepContext) -> list[Request]:
        B, G = self.config.rollout.prompts_per_step, self.config.rollout.group_size
        s = self.settings
        self._replayed = []
        n_exp = 0
        if self.mixing:
            buckets = self.buffer.buckets()
            n_exp = min(math.floor(s.replay_ratio * B + 1e-9), sum(map(len, buckets.values())))
            chosen = select_questions(buckets, n_exp, G, ctx.rng, s.question_selection,
                                      s.bucket_sd)
            self._replayed = self._pick_trajectories(chosen, ctx)
        requests = [sample.request for sample in self._replayed]
        fresh = ctx.draw_records(B - len(requests))
        requests += [common.plain_request(self.tokenizer, r, G) for r in fresh]
        groups = len(requests)
        ctx.metrics.update({
            PREFIX + "mixing": float(self.mixing),
            PREFIX + "replay_groups": len(self._replayed),
            PREFIX + "replay_share": len(self._replayed) / groups if groups else 0.0,
        })
        return requests

    def _pick_trajectories(self, question_ids, ctx: StepContext) -> list[Sample]:
        """The stored trajectory to replay for each question (every stored trajectory
        of the chosen questions is scored in one pass), as a Sample of the replay
        request it joins."""
        G = self.config.rollout.group_size
        entries = [self.buffer.entries[q] for q in question_ids]
        sequences = [(np.concatenate([e.context, t.response]).tolist(), len(e.context))
                     for e in entries for t in e.trajectories]
        scores = ctx.score(sequences)
        picked, entropies, log_w = [], [], []
        start = 0
        for e in entries:
            own = scores[start:start + len(e.trajectories)]
            start += len(e.trajectories)
            i = pick_trajectory([x.mean_entropy for x in own], self.settings.trajectory_selection,
                                ctx.rng)
            t = e.trajectories[i]
            request = Request(record=e.record, context=e.context.tolist(), num_samples=G - 1,
                              tag=REPLAY)
            picked.append(Sample(
                request=request, response=t.response.tolist(), logprobs=t.logprobs,
                policy_logprobs=t.logprobs, truncated=False,
                text=self.tokenizer.decode(t.response.tolist(), skip_special_tokens=True),
                reward=1.0, status="correct"))
            entropies.append(own[i].mean_entropy)
            log_w.append(own[i].logprobs - t.logprobs)
        if picked:
            w = np.exp(np.concatenate(log_w).astype(np.float64))
            ctx.metrics.update({PREFIX + "selected_entropy": float(np.mean(entropies)),
                                PREFIX + "replay_w_mean": float(w.mean()),
                                PREFIX + "replay_w_std": float(w.std())})
        return picked

    # ------------------------------------------------------------------ batch
    def build_batch(self, samples, ctx: StepContext):
        """One row per sample; each replay group also gets its stored trajectory as an
        off-policy row. Advantages over each whole group (the stored one included)."""
        self._members = self.group_members(samples, ctx)
        rows = common.member_rows(self._members, common.RewardShaping.from_config(self.config),
                                  common.AdvantageSettings.from_config(self.config),
                                  mask_truncated=self.config.reward.mask_truncated)
        trained = sum(float(r.loss_mask.sum()) for r in rows)
        off = sum(float(r.loss_mask[r.off_policy].sum()) for r in rows if r.off_policy is not None)
        ctx.metrics[PREFIX + "off_policy_token_share"] = off / trained if trained else 0.0
        return rows

    def group_members(self, samples, ctx: StepContext) -> list[common.Member]:
        """The step's training groups: every sample on-policy, plus each replay group's
        stored trajectory off-policy (a composition adds its own members here)."""
        return ([common.Member(s) for s in samples]
                + [common.Member(s, off_policy=True) for s in self._replayed])

    def loss_config(self):
        drop = self.mixing and self.settings.drop_clip_when_mixing
        return loss_config_from(self.config,
                                clip_on_policy=self.config.loss.clip_on_policy and not drop)

    # ------------------------------------------------------------------ after the update
    def after_step(self, samples, ctx: StepContext) -> None:
        G = self.config.rollout.group_size
        groups: dict[str, list[common.Member]] = {}
        # The groups build_batch trained (the trainer always calls it first).
        for m in self._members or self.group_members(samples, ctx):
            groups.setdefault(m.sample.request.group, []).append(m)
        replayed = {id(s) for s in self._replayed}   # stored already
        store = self.mixing or self.settings.store_before_mixing
        # What the policy drew itself on the plain prompt, per group (every one, also a
        # failure a composition's hinted success replaced in the group): the question
        # is solved when all of these are correct, whatever else the group holds.
        own: dict[str, list[bool]] = {}
        for s in samples:
            if s.request.tag in (FRESH, REPLAY):
                own.setdefault(s.request.group, []).append(s.correct)
        to_retire: list[str] = []
        for group, members in groups.items():
            record = members[0].sample.request.record
            # The context a member is trained under is the question's plain prompt.
            context = members[0].context or members[0].sample.request.context
            k = sum(m.sample.correct for m in members)
            if own.get(group) and all(own[group]):
                if self.settings.retire_solved:
                    to_retire.append(record.id)
            # k = G without the policy solving it alone (lte_exgrpo with no_cap: hinted
            # successes replaced every failure) is neither retired nor stored: the
            # buckets hold partly solved questions, 1..G-1.
            elif 1 <= k < len(members) and store:
                self.buffer.update(record, context, k, [
                    Trajectory(np.asarray(m.sample.response, np.int32),
                               np.asarray(m.sample.policy_logprobs, np.float32),
                               text_key(m.sample.text))
                    for m in members if m.sample.correct and id(m.sample) not in replayed])
        # Retirement last: a question solved by one group and stored from another
        # in the same step is retired.
        to_retire = list(dict.fromkeys(to_retire))
        for qid in to_retire:
            self.buffer.remove(qid)
        if to_retire:
            ctx.retire(to_retire)
        self.retired += len(to_retire)

        fresh = [s.correct for s in samples if s.request.tag == FRESH]
        accuracy = float(np.mean(fresh)) if fresh else 0.0
        if not self.mixing and accuracy > self.settings.mixing_threshold:
            self.mixing = True
        buckets = self.buffer.buckets()
        ctx.metrics.update({
            PREFIX + "fresh_accuracy": accuracy,
            PREFIX + "mixing_next_step": float(self.mixing),
            PREFIX + "buffer_questions": len(self.buffer),
            PREFIX + "buffer_trajectories": self.buffer.num_trajectories,
            PREFIX + "retired": self.retired,
            PREFIX + "retired_this_step": len(to_retire),
            **{f"{PREFIX}bucket/{k}": len(buckets.get(k, [])) for k in range(1, G)},
        })
        self._replayed, self._members = [], []

    # ------------------------------------------------------------------ state
    def state(self) -> dict:
        return {"mixing": self.mixing, "retired": self.retired, "buffer": self.buffer.state()}

    def restore(self, state: dict) -> None:
        if not state:
            raise ValueError("the checkpoint holds no ExGRPO state (mixing flag, experience "
                             "buffer): it was not written by an ExGRPO run")
        self.mixing = bool(state["mixing"])
        self.retired = int(state["retired"])
        self.buffer = ExperienceBuffer.from_state(state["buffer"])

    @classmethod
    def sampler_shape(cls, config) -> SamplerShape:
        """A plain prompt's calls: replayed trajectories are scored and trained, never
        sampled (a replay group samples G - 1 on the plain prompt)."""
        shape = default_shape(config)
        return dataclasses.replace(shape, assumption=shape.assumption
                                   + "; replayed trajectories are not sampled")

    @classmethod
    def host_memory(cls, config) -> dict[str, tuple[float, str]]:
        """The buffer's host memory at the end of a run, per process (every process
        keeps a copy; each checkpoint writes one)."""
        r = config.rollout
        questions = config.train.num_steps * r.prompts_per_step
        per_question = (r.group_size / 2) * r.max_new_tokens * BYTES_PER_TOKEN \
            + r.max_prompt_len * 4
        return {"replay_buffer": (
            questions * per_question,
            f"assumes every prompt of train.num_steps={config.train.num_steps} x "
            f"rollout.prompts_per_step={r.prompts_per_step} stored, G/2={r.group_size / 2:g} "
            f"trajectories each of rollout.max_new_tokens={r.max_new_tokens} tokens, "
            f"{BYTES_PER_TOKEN} bytes a token (id + recorded log-prob)")}
