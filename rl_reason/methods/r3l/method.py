"""R3L, reflect then retry (docs/methods.md, "R3L"): the policy reflects on each of its
episodes in language, retries from the attempt where it went wrong with its own
lessons as guidance, and learns from the retry as if it had found it unaided.

Per step, for each of B questions (rl_reason/methods/r3l/trial.py for the
conversations and their token ids):
1. Base episodes: G/2 per question (all G with `reflect_retry` off), each up to
   `max_attempts` attempts on the plain prompt with verifier feedback after a wrong
   one, sharing one budget of rollout.max_new_tokens generated tokens. Reward 1 when
   an attempt is correct, else 0.
2. Reflect: once a base episode ends, the policy writes a report on its log
   (`reflection_max_new_tokens`, tag "reflection"). An unparseable report, a
   retry_from_step outside the episode's attempts and an outcome of "success" give no
   retry; each case is counted.
3. Retry: from k = retry_from_step, the base episode's first k attempts replayed as
   sampled, the report's lessons in the last user turn, up to max_attempts - k more
   attempts with the same feedback (tag "retry"; `retry_mode='restart'`: from the
   question, as the released code does for math).
4. Rows: the base episodes and the distilled retries (guidance removed) form the
   question's group; pivotal credit leaves the shared first k attempts untrained in
   both the distilled row and its base row. When a retry succeeds and beats its base
   episode, the reflection and the guided retry (guidance kept) join as one-member
   groups with reward 1; so does the reflection of a base episode solved at once and
   reported as a success (`train_success_reflections`, the released code).
5. Advantages: positive amplification (A = 1 at the maximal reward, alpha (r - b) when
   r >= b, r - b otherwise; b the group mean, 0 alone; no std), or A = r - b with
   `amplification` off. Loss: REINFORCE, -A log p token-mean over trained tokens times
   1 / (1 + tau), plus loss.kl_coef times the k2 KL (the config's defaults) under the
   same masks. `objective='grpo'` trains the same rows with GRPO's advantages and loss
   (config.loss): the `grpo_feedback` baseline.

Rounds pipeline: an episode that ends early is reflected on while others still
attempt, so a step takes at most 2 * max_attempts + 1 rollout rounds. Headline rollout
metrics count base episodes (tag "fresh"); `r3l/*` metrics the rest.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Sequence

import numpy as np

from rl_reason.data import templates
from rl_reason import episodes as episodes_lib
from rl_reason.methods.components import common
from rl_reason.methods.r3l import trial as r3l_trial
from rl_reason.methods.r3l.settings import OBJECTIVES, R3LSettings  # noqa: F401
from rl_reason.methods.base import (FRESH, Method, Outcome, Request, Row, Sample, StepContext,
                                    loss_config_from)
from rl_reason.episodes import Episode
from rl_reason.methods.r3l.trial import Trial
from rl_reason.methods.components.sampler_shape import (ANSWER_TOKENS, CHAT_TURN_TOKENS, SamplerShape,
                                             rows_per_call, tokens_at_most)
from rl_reason.rl import advantages as adv_lib

REFLECTION, RETRY = "reflection", "retry"
MAX_REWARD = 1.0


def reward(episode: Episode) -> float:
    return MAX_REWARD if episode.solved else 0.0


class R3L(Method):
    name = "r3l"
    Settings = R3LSettings

    def __init__(self, config, tokenizer):
        super().__init__(config, tokenizer)
        self.settings = R3LSettings.from_config(config)
        self.max_rollout_rounds = 2 * self.settings.max_attempts + 1
        self.turns = episodes_lib.ChatTurns(tokenizer)

    @classmethod
    def sampler_shape(cls, config) -> SamplerShape:
        """A round mixes, one request per trial, base attempts, reflection requests and
        guided retry attempts. A late attempt holds the earlier attempts (all but a
        token of the budget), their feedback turns (each quoting a wrong answer) and,
        in a retry, the report's lessons (its root cause and suggestion, at most the
        report's tokens); a reflection request holds up to max_reflection_prompt_len.
        Either can meet a first attempt with the whole budget, or a reflection's."""
        s = R3LSettings.from_config(config)
        r = config.rollout
        n = s.max_attempts
        feedback = CHAT_TURN_TOKENS + max(
            tokens_at_most(templates.verifier_feedback(None)),
            tokens_at_most(templates.verifier_feedback("x")) - 1 + ANSWER_TOKENS)
        guidance = 0
        if s.reflect_retry:
            empty = templates.ReflectionReport("", "", "", "", 0)
            # Each field re-encoded apart may take a token more at either end.
            guidance = (tokens_at_most("\n\n" + templates.guidance_text(empty))
                        + s.reflection_max_new_tokens + 4)
        attempt = (r.max_prompt_len + guidance + (n - 1) * feedback
                   + (r.max_new_tokens - 1 if n > 1 else 0))
        rows = int(r.prompts_per_step * r.group_size * s.base_episodes_share)
        why = (f"attempt {n}: prompt <= {r.max_prompt_len} + {n - 1} feedback turns <= "
               f"{feedback} each (an answer <= {ANSWER_TOKENS} tokens, {CHAT_TURN_TOKENS} "
               f"template tokens a turn) + earlier attempts < {r.max_new_tokens}")
        if not s.reflect_retry:
            return SamplerShape(rows_per_call(config, rows), attempt, r.max_new_tokens,
                                why + f", next to a first attempt with {r.max_new_tokens} new")
        return SamplerShape(
            rows_per_call(config, rows), max(attempt, s.max_reflection_prompt_len),
            max(r.max_new_tokens, s.reflection_max_new_tokens),
            why + f" + guidance <= {guidance}; reflection requests <= "
            f"max_reflection_prompt_len={s.max_reflection_prompt_len}; budgets "
            f"{r.max_new_tokens} (attempts) and {s.reflection_max_new_tokens} (reports) "
            f"in one call")

    # ------------------------------------------------------------------ rounds
    def prepare(self, ctx: StepContext) -> list[Request]:
        r = self.config.rollout
        n = int(r.group_size * self.settings.base_episodes_share)
        requests = []
        for q, record in enumerate(ctx.draw_records(r.prompts_per_step)):
            for j in range(n):
                episode = Episode.start(record, templates.plain_prompt(record.problem),
                                        self.turns, budget=r.max_new_tokens,
                                        max_attempts=self.settings.max_attempts,
                                        group=f"{record.id}#r3l{q}")
                episode.meta["trial"] = Trial(base=episode, index=j)
                requests.append(self.attempt_request(episode))
        return requests

    def attempt_request(self, episode: Episode) -> Request:
        trial = episode.meta["trial"]
        if episode is trial.base:
            return episode.request(tag=FRESH, trial=trial)
        return episode.request(tag=RETRY, context=trial.guided_context(), trial=trial)

    def follow_up(self, samples: Sequence[Sample], ctx: StepContext) -> list[Request]:
        """Records each new sample and asks for what follows it, all in one round: the
        next attempt of a live episode (base or retry), the reflection on a finished
        base episode, the retry a fresh report calls for."""
        requests = []
        for s in samples:
            trial = s.request.meta.get("trial")
            if trial is None:
                continue
            if s.request.tag == REFLECTION:
                if trial.reflection is None:
                    trial.reflection = s
                    requests += self.judge(trial, s.text)
                continue
            episode = s.request.meta["episode"]
            if len(episode.attempts) != s.request.meta["attempt"]:
                continue     # recorded in an earlier round
            episode.add_attempt(episodes_lib.attempt_from_sample(self.tokenizer, s))
            if not episode.done:
                episode.add_feedback(self.turns.feedback(
                    episode.messages, r3l_trial.feedback_turn(episode.attempts[-1])))
                requests.append(self.attempt_request(episode))
            elif episode is trial.base and self.settings.reflect_retry:
                requests += self.reflect(trial)
        return requests

    def reflect(self, trial: Trial) -> list[Request]:
        context = r3l_trial.reflection_context(self.turns, trial.base)
        if len(context) > self.settings.max_reflection_prompt_len:
            trial.outcome = r3l_trial.TOO_LONG
            return []
        return [Request(record=trial.base.record, context=context, num_samples=1,
                        group=f"{trial.base.group}/reflection{trial.index}", tag=REFLECTION,
                        meta={"trial": trial},
                        max_new_tokens=self.settings.reflection_max_new_tokens)]

    def judge(self, trial: Trial, text: str) -> list[Request]:
        """The report's verdict, and the retry's first request when it calls for one."""
        trial.report, trial.outcome = r3l_trial.verdict(text, len(trial.base.attempts))
        if trial.outcome != r3l_trial.RETRY:
            return []
        return [self.attempt_request(trial.start_retry(self.turns, trial.report,
                                                       self.settings.retry_mode))]

    # ------------------------------------------------------------------- batch
    def build_batch(self, samples: Sequence[Sample], ctx: StepContext) -> list[Row]:
        trials = [t for t in r3l_trial.trials_of(samples) if t.base.done]
        s = self.settings
        # (row builder, reward, group) of every member, groups named by the trials.
        members: list[tuple] = []
        for t in trials:
            pivot = t.pivot if (s.pivotal_credit and t.retried) else 0
            members.append((self.episode_row(t.base, pivot), reward(t.base), t.base.group))
            if t.retried:
                members.append((self.episode_row(t.retry, pivot), reward(t.retry), t.base.group))
        for t in trials:
            for kind, row in self.positive_experiences(t):
                members.append((row, MAX_REWARD, f"{t.base.group}/{kind}{t.index}"))
        rewards = np.array([r for _, r, _ in members], np.float32)
        advantages = self.advantages([g for _, _, g in members], rewards)
        rows = [build(a, g) for (build, _, g), a in zip(members, advantages)]
        ctx.metrics.update(self.step_metrics(trials))
        return rows

    def episode_row(self, episode: Episode, pivot: int):
        mask_truncated = self.config.reward.mask_truncated
        trained = not (mask_truncated and episode.out_of_budget and not episode.solved)

        def build(advantage: float, group: str) -> Row:
            row = episode.row(advantage, trained=trained, first_trained_attempt=pivot)
            row.group = group
            return row
        return build

    def positive_experiences(self, t: Trial) -> list[tuple[str, object]]:
        """(kind, row builder) of the trial's one-member experiences with reward 1."""
        out = []
        beats = t.retried and t.retry.solved and reward(t.retry) > reward(t.base)
        success_report = (t.outcome == r3l_trial.SUCCESS and t.base.solved
                          and self.settings.train_success_reflections)
        if beats or success_report:
            reflection = t.reflection

            def reflection_row(advantage: float, group: str) -> Row:
                row = common.response_row(reflection, advantage)
                row.group = group
                return row
            out.append((REFLECTION, reflection_row))
        if beats:
            out.append((RETRY, t.guided_row))
        return out

    def advantages(self, groups: Sequence[str], rewards: np.ndarray) -> np.ndarray:
        s = self.settings
        if not len(groups):
            return np.zeros((0,), np.float32)
        if s.objective == "grpo":
            return common.group_advantages(groups, rewards,
                                           common.AdvantageSettings.from_config(self.config))
        if not s.amplification:
            return common.group_advantages(groups, rewards, common.AdvantageSettings(
                estimator="grpo", norm_by_std=False))
        ids, names = common.group_ids(groups)
        return np.asarray(adv_lib.r3l_advantages(rewards, ids, num_groups=len(names),
                                                 max_reward=MAX_REWARD, alpha=s.alpha),
                          np.float32)

    def loss_config(self):
        if self.settings.objective == "grpo":
            return loss_config_from(self.config)
        return loss_config_from(self.config, loss_type="reinforce",
                                pg_scale=1.0 / (1.0 + self.settings.tau))

    # ----------------------------------------------------------------- metrics
    def outcomes(self, samples: Sequence[Sample]) -> list[Outcome]:
        """One outcome per base episode: the headline reward, accuracy (solved within
        max_attempts) and group fractions count base episodes only."""
        episodes = [e for e in episodes_lib.episodes_of([s for s in samples
                                                         if s.request.tag == FRESH]) if e.done]
        return [Outcome(group=e.group, reward=reward(e), correct=e.solved,
                        length=sum(a.generated for a in e.attempts),
                        truncated=e.out_of_budget and not e.solved)
                for e in episodes]

    def step_metrics(self, trials: Sequence[Trial]) -> dict:
        """r3l/...: base episodes, reports by verdict, retries and how they fared, the
        retry_from_step spread, positive experiences, pivotal credit's masked share."""
        p = "r3l/"
        if not trials:
            return {p + "base_episodes": 0}
        bases = [t.base for t in trials]
        m = {p + "base_episodes": len(bases),
             p + "base_solved": float(np.mean([e.solved for e in bases])),
             p + "attempts_per_episode": float(np.mean([len(e.attempts) for e in bases]))}
        solved: dict[str, bool] = {}
        for t in trials:
            solved[t.base.group] = (solved.get(t.base.group, False) or t.base.solved
                                    or (t.retried and t.retry.solved))
        m[p + "problems_solved"] = float(np.mean(list(solved.values())))
        if not self.settings.reflect_retry:
            return m
        verdicts = collections.Counter(t.outcome for t in trials if t.outcome)
        for v in r3l_trial.VERDICTS:
            m[f"{p}reports/{v}"] = verdicts[v]
        m[p + "reports/valid"] = verdicts[r3l_trial.RETRY] + verdicts[r3l_trial.SUCCESS]
        m[p + "reports/invalid"] = verdicts[r3l_trial.UNPARSEABLE] + verdicts[r3l_trial.OUT_OF_RANGE]
        m[p + "reports/success_on_unsolved"] = sum(
            t.outcome == r3l_trial.SUCCESS and not t.base.solved for t in trials)
        retried = [t for t in trials if t.retried]
        m[p + "retries"] = len(retried)
        for k in range(self.settings.max_attempts):
            m[f"{p}retry_from_step/{k}"] = sum(t.pivot == k for t in retried)
        if retried:
            m[p + "retry_success"] = float(np.mean([t.retry.solved for t in retried]))
            m[p + "retry_beats_base"] = float(np.mean([reward(t.retry) > reward(t.base)
                                                       for t in retried]))
        m[p + "positive_experiences"] = sum(len(self.positive_experiences(t)) for t in trials)
        # Attempt tokens of the base and distilled rows that pivotal credit leaves untrained.
        masked = total = 0.0
        for t in trials:
            pivot = t.pivot if (self.settings.pivotal_credit and t.retried) else 0
            for e in [t.base] + ([t.retry] if t.retried else []):
                full = float(e.loss_mask().sum())
                masked += full - float(e.loss_mask(first_trained_attempt=pivot).sum())
                total += full
        m[p + "pivotal_masked_share"] = masked / total if total else 0.0
        return m
