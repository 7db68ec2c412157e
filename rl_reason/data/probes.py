"""Probe prompts: the same problems posed in every prompt kind the methods use, to
measure a base policy's accuracy and format (boxed share) by kind before training.

    plain                  the plain prompt (also R3L's first attempt)
    hint                   LTE: the wrong answers of two failed attempts as a hint
    concise                LTE: the concise instruction
    multi_attempt_first    multi-attempt: the first attempt of a 3-attempt episode
    multi_attempt_second   multi-attempt: after one wrong attempt and its feedback
    r3l_after_feedback     R3L: after one wrong attempt and the verifier's feedback
    guided_retry           R3L: a failed episode replayed up to its root cause, with
                           the reflection's guidance
    continuation_correct   continuation of a correct solution cut inside its working
    continuation_failure   continuation of a failed attempt cut right after its
                           miscomputed line (failure-prefix conditioning)

Attempts shown as context are unboxed with the warm-start's probability, so a probe
sees the mix of formats the data had. A probe's response is scored with its prefix
(the failure-prefix method scores prefix + continuation).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from rl_reason.data import templates, warm_start
from rl_reason.data.synthetic import Problem, attempt_with_mistake, failed_attempts, random_mistake

KINDS = ("plain", "hint", "concise", "multi_attempt_first", "multi_attempt_second",
         "r3l_after_feedback", "guided_retry", "continuation_correct", "continuation_failure")
MULTI_ATTEMPT_BUDGET = 3


@dataclasses.dataclass(frozen=True)
class Probe:
    kind: str
    problem: int                # index into the probed problems
    messages: tuple[dict, ...]
    answer: str
    response_prefix: str = ""
    context_boxed: bool | None = None   # format of the attempt shown as context, if any


def _wrong_attempt(problem: Problem, rng: np.random.Generator, unboxed_share: float):
    step, value = random_mistake(problem, rng)
    boxed = not (len(problem.ops) > 1 and rng.random() < unboxed_share)
    return attempt_with_mistake(problem, step, value, boxed=boxed)


def probes_for(problem: Problem, index: int, rng: np.random.Generator, *,
               unboxed_share: float) -> list[Probe]:
    """One probe of every kind in KINDS for `problem`."""
    q, answer = problem.question, str(problem.answer)
    out = []

    def add(kind, messages, prefix="", context=None):
        out.append(Probe(kind, index, tuple(messages), answer, prefix,
                         None if context is None else context.boxed))

    add("plain", templates.plain_prompt(q))
    hints = [str(a.answer) for a in failed_attempts(problem, rng, 2)]
    add("hint", templates.hint_prompt(q, hints))
    add("concise", templates.concise_prompt(q))
    add("multi_attempt_first", templates.multi_attempt_prompt(q, MULTI_ATTEMPT_BUDGET))
    wrong = _wrong_attempt(problem, rng, unboxed_share)
    add("multi_attempt_second", templates.multi_attempt_prompt(q, MULTI_ATTEMPT_BUDGET) + [
        {"role": "assistant", "content": wrong.text},
        {"role": "user", "content": templates.attempt_feedback(MULTI_ATTEMPT_BUDGET - 1)}],
        context=wrong)
    wrong = _wrong_attempt(problem, rng, unboxed_share)
    feedback = templates.verifier_feedback(str(wrong.answer) if wrong.boxed else None)
    add("r3l_after_feedback", templates.plain_prompt(q) + [
        {"role": "assistant", "content": wrong.text}, {"role": "user", "content": feedback}],
        context=wrong)
    episode = warm_start.failed_episode(problem, rng, int(rng.integers(warm_start.R3L_ATTEMPTS)),
                                        unboxed_share=unboxed_share)
    add("guided_retry", templates.insert_guidance(warm_start.r3l_replay(episode, episode.root),
                                                  warm_start.reflection_report(episode)))
    working = problem.solution()[:problem.solution().rindex(" ") + 1]
    add("continuation_correct", templates.plain_prompt(q),
        prefix=working[:int(rng.integers(1, len(working) + 1))])
    wrong = _wrong_attempt(problem, rng, unboxed_share)
    lines = wrong.text.split(" ")
    add("continuation_failure", templates.plain_prompt(q),
        prefix=" ".join(lines[:wrong.wrong_step + 1]))
    return out


def build_probes(problems: Sequence[Problem], *, seed: int = 0,
                 unboxed_share: float = 0.0) -> list[Probe]:
    rng = np.random.default_rng([seed, 0x9B0BE])
    return [probe for i, problem in enumerate(problems)
            for probe in probes_for(problem, i, rng, unboxed_share=unboxed_share)]
