"""Multi-attempt RL (docs/methods.md section 2): several tries per question in one
episode, "incorrect, k attempts left" after each wrong one, trained with the GRPO
estimator over a group of episodes per question.

Per step, for each of B questions, G episodes (rl_reason/episodes.py):
1. The attempt budget N is drawn uniformly from {min_attempts..max_attempts}, once per
   question by default (`budget_per`): the G episodes of a group then face the same
   N, so the group mean, GRPO's baseline, compares like with like (the authors' PPO
   critic reads N from the prompt; a group baseline cannot). "episode" draws it per
   episode, as the released code does.
2. The system prompt states N and asks for a boxed answer; each round samples the next
   attempt of every live episode together (one engine call: all per-row budgets in one
   sampler call, rollout.max_sample_batch rows decoded at a time). A correct attempt
   ends the episode; a wrong one (or one without an answer) is followed by a feedback
   turn while attempts and budget remain.
3. Reward, one per episode (config values): reward_correct if an attempt was correct;
   otherwise, rule "sticky" (the released code): reward_wrong if any attempt gave a
   wrong answer, else reward_no_answer (no answer in the whole episode, e.g. every
   attempt ran out of tokens or had no box); rule "last_attempt": reward_no_answer when
   the last attempt had no answer or ran out of tokens, else reward_wrong.
4. Advantages: the group estimator over each question's G episode rewards; the scalar
   advantage goes on every attempt token of the episode's row. Feedback blocks and the
   end-of-turn closing a failed attempt are masked out of the loss, the KL and the
   token normalisation.

The episode budget is rollout.max_new_tokens: generated tokens for all attempts.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Sequence

import numpy as np

from rl_reason import evaluation_metrics
from rl_reason.data import templates
from rl_reason import episodes as episodes_lib
from rl_reason.methods.components import common
from rl_reason.methods.base import Method
from rl_reason.methods.multi_attempt.settings import OUTCOMES, MultiAttemptSettings
from rl_reason.protocol import FRESH, Outcome, Sample, StepContext
from rl_reason.episodes import Episode
from rl_reason.methods.components.sampler_shape import (CHAT_TURN_TOKENS, SamplerShape, rows_per_call,
                                             tokens_at_most)

def outcome_of(episode: Episode, rule: str) -> str:
    """Which reward the episode earns (module docstring, point 3): solved, wrong (an
    answer was given) or no_answer."""
    if any(a.correct for a in episode.attempts):
        return "solved"
    if rule == "sticky":
        return "wrong" if any(a.answered for a in episode.attempts) else "no_answer"
    last = episode.attempts[-1]
    return "wrong" if last.answered and not last.truncated else "no_answer"


def episode_reward(episode: Episode, s: MultiAttemptSettings) -> float:
    return {"solved": s.reward_correct, "wrong": s.reward_wrong,
            "no_answer": s.reward_no_answer}[outcome_of(episode, s.reward_rule)]


class MultiAttempt(Method):
    name = "multi_attempt"
    Settings = MultiAttemptSettings

    def __init__(self, config, tokenizer):
        super().__init__(config, tokenizer)
        self.settings = MultiAttemptSettings.from_config(config)
        self.max_rollout_rounds = self.settings.max_attempts
        self.turns = episodes_lib.ChatTurns(tokenizer)

    @classmethod
    def sampler_shape(cls, config) -> SamplerShape:
        """A round samples the next attempt of every live episode in one call: attempt N
        of one episode (its system turn, N - 1 attempts using all but a token of the
        budget, N - 1 feedback turns in context) can meet another episode's first
        attempt with the whole budget still to sample."""
        s = MultiAttemptSettings.from_config(config)
        r = config.rollout
        n = s.max_attempts
        system = CHAT_TURN_TOKENS + max(tokens_at_most(templates.multi_attempt_system(k))
                                        for k in range(s.min_attempts, n + 1))
        feedback = CHAT_TURN_TOKENS + max(
            [tokens_at_most(templates.attempt_feedback(k)) for k in range(1, n)], default=0)
        earlier = r.max_new_tokens - 1 if n > 1 else 0
        return SamplerShape(
            rows_per_call(config, r.prompts_per_step * r.group_size),
            r.max_prompt_len + system + (n - 1) * feedback + earlier, r.max_new_tokens,
            f"attempt {n}: prompt <= {r.max_prompt_len} + system turn <= {system} + "
            f"{n - 1} feedback turns <= {feedback} each + earlier attempts < "
            f"{r.max_new_tokens}, next to a first attempt with {r.max_new_tokens} new "
            f"({CHAT_TURN_TOKENS} template tokens a turn)")

    def draw_budget(self, rng: np.random.Generator, size: int) -> list[int]:
        s = self.settings
        return [int(n) for n in rng.integers(s.min_attempts, s.max_attempts + 1, size=size)]

    def prepare(self, ctx: StepContext):
        G = self.config.rollout.group_size
        requests = []
        for q, record in enumerate(ctx.draw_records(self.config.rollout.prompts_per_step)):
            budgets = self.draw_budget(ctx.rng, 1 if self.settings.budget_per == "question" else G)
            for j in range(G):
                n = budgets[j % len(budgets)]
                episode = Episode.start(
                    record, templates.multi_attempt_prompt(record.problem, n), self.turns,
                    budget=self.config.rollout.max_new_tokens, max_attempts=n,
                    group=f"{record.id}#episodes{q}")
                requests.append(episode.request())
        return requests

    def follow_up(self, samples: Sequence[Sample], ctx: StepContext):
        """Records each new attempt, adds feedback after a failed one, and asks for the
        next attempt of every episode still going, all in one round."""
        live = []
        for s in samples:
            episode = s.request.meta.get("episode")
            if episode is None or len(episode.attempts) != s.request.meta["attempt"]:
                continue     # not an episode's, or recorded in an earlier round
            episode.add_attempt(episodes_lib.attempt_from_sample(self.tokenizer, s))
            if not episode.done:
                left = episode.max_attempts - len(episode.attempts)
                episode.add_feedback(self.turns.feedback(
                    episode.messages, {"role": "user", "content": templates.attempt_feedback(left)}))
                live.append(episode)
        return [episode.request() for episode in live]

    def rewards(self, episodes: Sequence[Episode]) -> np.ndarray:
        return np.array([episode_reward(e, self.settings) for e in episodes], np.float32)

    def build_batch(self, samples: Sequence[Sample], ctx: StepContext):
        episodes = [e for e in episodes_lib.episodes_of(samples) if e.done]
        rewards = self.rewards(episodes)
        advantages = common.group_advantages([e.group for e in episodes], rewards,
                                             common.AdvantageSettings.from_config(self.config))
        mask_truncated = self.config.reward.mask_truncated
        rows = [e.row(a, trained=not (mask_truncated and e.out_of_budget and not e.solved))
                for e, a in zip(episodes, advantages)]
        ctx.metrics.update(self.episode_metrics(episodes, samples))
        return rows

    def outcomes(self, samples: Sequence[Sample]) -> list[Outcome]:
        """One outcome per episode: the headline reward, accuracy (solved within N) and
        none-pass fraction count episodes, not attempts."""
        episodes = episodes_lib.episodes_of([s for s in samples if s.request.tag == FRESH])
        rewards = self.rewards(episodes)
        return [Outcome(group=e.group, reward=float(r), correct=e.solved,
                        length=sum(a.generated for a in e.attempts),
                        truncated=e.out_of_budget and not e.solved)
                for e, r in zip(episodes, rewards)]

    def episode_metrics(self, episodes: Sequence[Episode], samples: Sequence[Sample]) -> dict:
        """multi_attempt/...: episodes, attempts per episode, success by attempt index,
        episodes by reward outcome, the answer-repeat rate, where the tokens went."""
        if not episodes:
            return {"multi_attempt/episodes": 0}
        p = "multi_attempt/"
        m = {p + "episodes": len(episodes),
             p + "attempts_per_episode": float(np.mean([len(e.attempts) for e in episodes])),
             p + "attempt_budget_mean": float(np.mean([e.max_attempts for e in episodes])),
             p + "out_of_tokens": float(np.mean([e.out_of_budget and not e.solved
                                                 for e in episodes]))}
        outcomes = collections.Counter(outcome_of(e, self.settings.reward_rule) for e in episodes)
        for outcome in OUTCOMES:
            m[f"{p}outcome/{outcome}"] = outcomes[outcome] / len(episodes)
        for i in range(self.settings.max_attempts):
            made = [e.attempts[i] for e in episodes if len(e.attempts) > i]
            m[f"{p}attempt_{i + 1}/count"] = len(made)
            if made:
                m[f"{p}attempt_{i + 1}/accuracy"] = float(np.mean([a.correct for a in made]))
        repeated, later = evaluation_metrics.answer_repeats(
            [[a.extracted if a.answered else None for a in e.attempts] for e in episodes])
        m[p + "answer_repeat_rate"] = repeated / later if later else 0.0
        attempt_tokens = sum(len(a.ids) for e in episodes for a in e.attempts)
        m[p + "attempt_tokens"] = attempt_tokens
        m[p + "cut_tokens"] = sum(a.generated for e in episodes for a in e.attempts) - attempt_tokens
        m[p + "feedback_tokens"] = sum(len(s.ids) for e in episodes for s in e.segments
                                       if not s.trained)
        return m
