"""One R3L trial at the token level: a base episode, the policy's reflection on it, and
the retry the reflection guides (docs/methods.md, "R3L").

The conversations are the ones the embedded base policy is warm-started on
(rl_reason/data/warm_start.py renders them from the same templates):

    base episode   plain prompt | attempt 0 | feedback 0 | attempt 1 | ... (up to 3)
                   feedback after a wrong attempt: templates.verifier_feedback(answer),
                   "... has no final answer ..." when the verifier found none
    reflection     a new conversation: templates.reflection_request(question, steps),
                   steps = (attempt text, its feedback), "Correct." after a correct one;
                   the policy answers with a report (templates.parse_reflection_report)
    guided retry   the base episode's first k attempts and their feedback, unchanged,
                   with the report's lessons (templates.guidance_text) added to the last
                   user turn before attempt k (the question's turn when k = 0), then
                   sampling on from attempt k with the same feedback
    distilled      the guided retry without the guidance: the base episode's own ids for
                   the first k attempts and feedback, then the retry's ids

Token ids the policy sampled are never decoded and encoded again: the distilled row
is `Episode.replay(k)` grown by the retry's attempts, and the guided context differs
from it only in its head (prompt, replayed attempts, the guided feedback block), which
is built with the same rules as any feedback block (episodes.ChatTurns, Episode.add_feedback).
The reflection reads the attempts as text, as the warm-start data shows them.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Sequence

import numpy as np

from rl_reason.data import templates
from rl_reason.protocol import Row, Sample
from rl_reason.episodes import Attempt, ChatTurns, Episode

# What became of a report: a retry, or why there was none.
RETRY = "retry"
SUCCESS = "success_skipped"          # outcome "success": nothing to retry
UNPARSEABLE = "unparseable"          # a field missing or empty, or not a known value
OUT_OF_RANGE = "step_out_of_range"   # retry_from_step not an attempt of the episode
TOO_LONG = "prompt_too_long"         # the reflection request exceeds its prompt limit
VERDICTS = (RETRY, SUCCESS, UNPARSEABLE, OUT_OF_RANGE, TOO_LONG)

# Retry modes: replay the first k attempts (the paper), or restart from the question
# with the guidance and mask the first k attempts anyway (the released code for math).
from rl_reason.methods.r3l.settings import REPLAY, RESTART  # noqa: E402


def feedback_turn(attempt: Attempt) -> dict:
    """The user turn after a failed attempt: its wrong answer, or that it had none."""
    return {"role": "user",
            "content": templates.verifier_feedback(attempt.extracted if attempt.answered else None)}


def reflection_log(episode: Episode) -> list[tuple[str, str]]:
    """(attempt text, feedback) per attempt, as templates.reflection_request numbers them."""
    return [(a.text, templates.CORRECT_FEEDBACK if a.correct else feedback_turn(a)["content"])
            for a in episode.attempts]


def reflection_context(turns: ChatTurns, episode: Episode) -> list[int]:
    """The reflection request's prompt ids."""
    return turns.prompt(templates.reflection_request(episode.record.problem,
                                                     reflection_log(episode)))


def verdict(text: str, num_steps: int) -> tuple[templates.ReflectionReport | templates.InvalidReport, str]:
    """The parsed report and what it leads to (one of VERDICTS but TOO_LONG)."""
    report = templates.parse_reflection_report(text, num_steps)
    if report.valid:
        return report, RETRY if report.needs_retry else SUCCESS
    # Invalid: only because of the step's range if it parses with any step allowed.
    if templates.parse_reflection_report(text, sys.maxsize).valid:
        return report, OUT_OF_RANGE
    return report, UNPARSEABLE


def guided_head(turns: ChatTurns, base: Episode, k: int,
                report: templates.ReflectionReport) -> list[int]:
    """Ids of the guided retry's context before attempt k: the base episode's replayed
    attempts 0..k-1 with their feedback, the guidance in the last user turn."""
    if k == 0:
        return turns.prompt(templates.insert_guidance(base.messages, report))
    head = base.replay(k - 1)
    head.add_attempt(base.attempts[k - 1])
    guided = templates.insert_guidance([feedback_turn(base.attempts[k - 1])], report)[0]
    head.add_feedback(turns.feedback(base.messages, guided))
    return head.context()


@dataclasses.dataclass(eq=False)
class Trial:
    """A base episode and what R3L made of it (filled in round by round).

    index: the base episode's place in its group. reflection: the sampled report.
    outcome: one of VERDICTS once reflected. retry: the distilled episode (the base
    episode's first `replayed` attempts, then the retry's own), sampled with
    `guided_head` in place of its first `replay_len` tokens. pivot: retry_from_step.
    """

    base: Episode
    index: int
    reflection: Sample | None = None
    report: templates.ReflectionReport | templates.InvalidReport | None = None
    outcome: str = ""
    retry: Episode | None = None
    guided: list[int] = dataclasses.field(default_factory=list)
    replay_len: int = 0
    replayed: int = 0
    pivot: int = 0

    def start_retry(self, turns: ChatTurns, report: templates.ReflectionReport,
                    mode: str) -> Episode:
        """The retry episode (module docstring), in the base episode's group."""
        if mode not in (REPLAY, RESTART):
            raise ValueError(f"Trial.start_retry: mode {mode!r} is not {REPLAY!r} or {RESTART!r}")
        self.pivot = report.retry_from_step
        self.replayed = self.pivot if mode == REPLAY else 0
        retry = self.base.replay(self.replayed)
        retry.group = self.base.group
        retry.meta["trial"] = self
        self.retry = retry
        self.replay_len = len(retry.context())
        self.guided = guided_head(turns, self.base, self.replayed, report)
        return retry

    def guided_context(self) -> list[int]:
        """What the retry's next attempt is sampled from: the guided head, then the
        retry's own attempts and feedback so far."""
        return self.guided + self.retry.context()[self.replay_len:]

    @property
    def retried(self) -> bool:
        return self.retry is not None and self.retry.done

    def guided_row(self, advantage: float, group: str) -> Row:
        """The guided retry as a training row: guidance in context, only the retry's own
        attempts trained (never the replayed ones, which failed)."""
        tail = self.retry.loss_mask()[self.replay_len:]
        return Row(tokens=self.guided_context(),
                   loss_mask=np.concatenate([np.zeros(len(self.guided), np.float32), tail]),
                   advantage=float(advantage), group=group)


def trials_of(samples: Sequence[Sample]) -> list[Trial]:
    """The distinct trials the samples belong to, in first-seen order."""
    seen: dict[int, Trial] = {}
    for s in samples:
        trial = s.request.meta.get("trial")
        if isinstance(trial, Trial):
            seen.setdefault(id(trial), trial)
    return list(seen.values())
