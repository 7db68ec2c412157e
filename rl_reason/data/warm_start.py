"""The base policy's supervised data: conversations on the embedded task in every
prompt format the methods use (data/templates.py), so each method runs in
distribution. Only assistant turns that are right are trained; wrong attempts appear
as untrained context, as the policy's own failures will at RL time.

The data is built so that a difference between methods is the method's doing:

- Format is the same everywhere. Every trained answer on a multi-step problem ends
  "The result is 32." instead of the box with probability `unboxed_share`, whatever
  the prompt (plain, hinted, concise, multi-attempt, R3L episode, guided retry,
  continuation). Attempts shown as context are unboxed with the same probability,
  drawn independently of the answer, so no prompt teaches "box because the earlier
  attempt did" (or did not); after an unboxed attempt R3L's feedback says that there
  was no final answer, as the verifier would. One-step answers are always boxed, so
  level 1 keeps problems the base policy always solves.
- R3L's pivotal credit has a prefix to mask. A failed episode (3 attempts) is built
  around the attempt where the mistake it never recovers from first appears: attempts
  before it each make a different slip, and from it on every attempt repeats the same
  miscomputed line. Its reflection names that line and attempt (`Retry from step:` 0,
  1 or 2) and a guided retry replays the attempts before it, then solves the problem.
  An episode solved after failures is retried from step 0 (its first attempt is
  where the inefficiency starts).
- Failure-prefix conditioning has a behaviour to strengthen. `failure_continuation`
  gives a solution whose prefix (untrained) ends in a miscomputed line, and trains
  the repair: "7+5=13. | Wait, 7+5=12. 12*3=36. ...". The slip itself is never
  trained, so plain accuracy does not pay for it.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from rl_reason.data import templates
from rl_reason.data.synthetic import (FailedAttempt, Problem, attempt_with_mistake,
                                      failed_attempts, generate_problems, random_mistake,
                                      repaired_solution)

# R3L's math episodes stop at the first success or after this many attempts.
R3L_ATTEMPTS = 3


@dataclasses.dataclass(frozen=True)
class Conversation:
    """Chat messages with a per-message training flag (only assistant turns are
    trained). prefix_chars > 0: the first characters of the last message are a given
    prefix (continuation), untrained. boxed: whether the trained answer states its
    result in the box. retry_from_step: the step a reflection names, or from which a
    guided retry diverges (None for other kinds). num_ops: the problem's steps."""

    messages: tuple[dict, ...]
    trained: tuple[bool, ...]
    kind: str
    prefix_chars: int = 0
    boxed: bool = True
    retry_from_step: int | None = None
    num_ops: int = 0


@dataclasses.dataclass(frozen=True)
class Episode:
    """An attempt-and-feedback episode: the failed attempts, then (if `solved`) a
    correct one. `root`: the attempt where the mistake behind the outcome first
    appears, which a reflection reports as retry_from_step."""

    problem: Problem
    failed: tuple[FailedAttempt, ...]
    solved: bool
    root: int


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


def _draw_boxed(problem: Problem, rng: np.random.Generator, unboxed_share: float) -> bool:
    """The one format draw every response of the warm-start data goes through."""
    return not (len(problem.ops) > 1 and rng.random() < unboxed_share)


def _attempts(problem: Problem, mistakes: Sequence[tuple[int, int]], rng: np.random.Generator,
              unboxed_share: float) -> tuple[FailedAttempt, ...]:
    return tuple(attempt_with_mistake(problem, step, value,
                                      boxed=_draw_boxed(problem, rng, unboxed_share))
                 for step, value in mistakes)


def _distinct_mistakes(problem: Problem, rng: np.random.Generator, count: int,
                       avoid: Sequence[tuple[int, int]] = ()) -> list[tuple[int, int]]:
    mistakes: list[tuple[int, int]] = []
    for _ in range(count):
        mistake = random_mistake(problem, rng, avoid=list(avoid) + mistakes)
        if mistake is None:
            raise ValueError(f"warm_start: {problem.question} has too few distinct mistakes")
        mistakes.append(mistake)
    return mistakes


def failed_episode(problem: Problem, rng: np.random.Generator, root: int, *,
                   unboxed_share: float = 0.0) -> Episode:
    """R3L_ATTEMPTS failed attempts: those before `root` each make their own slip; from
    `root` on every attempt repeats one miscomputed line, never seen before it."""
    if not 0 <= root < R3L_ATTEMPTS:
        raise ValueError(f"warm_start.failed_episode: root must be in [0, {R3L_ATTEMPTS}), got {root}")
    [final] = _distinct_mistakes(problem, rng, 1)
    earlier = _distinct_mistakes(problem, rng, root, avoid=[final])
    mistakes = earlier + [final] * (R3L_ATTEMPTS - root)
    return Episode(problem, _attempts(problem, mistakes, rng, unboxed_share), False, root)


def solved_episode(problem: Problem, rng: np.random.Generator, num_failed: int, *,
                   unboxed_share: float = 0.0) -> Episode:
    """`num_failed` attempts with distinct slips, then a correct one."""
    mistakes = _distinct_mistakes(problem, rng, num_failed)
    return Episode(problem, _attempts(problem, mistakes, rng, unboxed_share), True, 0)


def answer_feedback(attempt: FailedAttempt) -> str:
    return templates.verifier_feedback(str(attempt.answer) if attempt.boxed else None)


def reflection_report(episode: Episode) -> templates.ReflectionReport:
    """The report a careful reviewer writes about an episode."""
    problem, failed = episode.problem, episode.failed
    answer = problem.answer
    if not failed:
        return templates.ReflectionReport(
            summary=f"The first attempt answered {answer}, which is correct.", root_cause="None.",
            outcome=templates.OUTCOME_SUCCESS,
            suggestion="Keep the same careful step by step approach.", retry_from_step=0)
    step, wrong = failed[episode.root].mistake
    line = problem.line(step)
    root_cause = (f"In step {episode.root} the line {line}={wrong} is wrong; "
                  f"{line}={problem.values[step]}.")
    suggestion = f"Recompute {line} carefully and check every line."
    if episode.solved:
        summary = f"The correct answer {answer} was found only at step {len(failed)}."
        outcome = templates.OUTCOME_INEFFICIENT
    else:
        last = failed[-1]
        stated = f"answered {last.answer}" if last.boxed else "gave no final answer"
        summary = f"No attempt found the correct answer; step {len(failed) - 1} {stated}."
        outcome = templates.OUTCOME_FAILURE
    return templates.ReflectionReport(summary=summary, root_cause=root_cause, outcome=outcome,
                                      suggestion=suggestion, retry_from_step=episode.root)


def episode_log(episode: Episode, final_answer: str) -> list[tuple[str, str]]:
    """The (response, feedback) steps a reflection request shows."""
    log = [(a.text, answer_feedback(a)) for a in episode.failed]
    if episode.solved:
        log.append((final_answer, templates.CORRECT_FEEDBACK))
    return log


def r3l_replay(episode: Episode, count: int) -> list[dict]:
    """The plain prompt, then the first `count` failed attempts with their feedback."""
    messages = templates.plain_prompt(episode.problem.question)
    for attempt in episode.failed[:count]:
        messages += [_assistant(attempt.text), _user(answer_feedback(attempt))]
    return messages


def _draw_episode(problem: Problem, rng: np.random.Generator, unboxed_share: float, *,
                  failure_share: float) -> Episode:
    if rng.random() < failure_share:
        return failed_episode(problem, rng, int(rng.integers(R3L_ATTEMPTS)),
                              unboxed_share=unboxed_share)
    return solved_episode(problem, rng, int(rng.integers(1, R3L_ATTEMPTS)),
                          unboxed_share=unboxed_share)


def warm_start_conversation(problem: Problem, kind: str, rng: np.random.Generator, *,
                            unboxed_share: float = 0.0) -> Conversation:
    """One training conversation of the given kind (see WARM_START_KINDS)."""
    q = problem.question
    boxed = _draw_boxed(problem, rng, unboxed_share)
    answer = problem.solution(boxed=boxed)

    def ending_with(messages, *, prefix_chars=0, text=answer, step=None):
        messages = list(messages) + [_assistant(text)]
        trained = (False,) * (len(messages) - 1) + (True,)
        return Conversation(tuple(messages), trained, kind, prefix_chars, boxed, step,
                            len(problem.ops))

    if kind == "plain":
        return ending_with(templates.plain_prompt(q))
    if kind == "continuation":
        # The model resumes a correct solution anywhere, even mid-number.
        return ending_with(templates.plain_prompt(q), prefix_chars=int(rng.integers(1, len(answer))))
    if kind == "failure_continuation":
        repaired = repaired_solution(problem, rng, boxed=boxed)
        # The prefix ends in the slip, with or without its full stop.
        cut = repaired.repair_at - int(rng.integers(2))
        return ending_with(templates.plain_prompt(q), prefix_chars=cut, text=repaired.text)
    if kind in ("hint", "concise", "concise_hint"):
        wrong = [str(a.answer) for a in failed_attempts(problem, rng, int(rng.integers(1, 4)))]
        prompt = {"hint": lambda: templates.hint_prompt(q, wrong),
                  "concise": lambda: templates.concise_prompt(q),
                  "concise_hint": lambda: templates.concise_hint_prompt(q, wrong)}[kind]()
        return ending_with(prompt)
    if kind == "multi_attempt":
        budget = int(rng.integers(1, 6))
        num_wrong = min(budget - 1, int(rng.choice([0, 0, 1, 1, 2, 3])))
        messages = templates.multi_attempt_prompt(q, budget)
        for i, attempt in enumerate(solved_episode(problem, rng, num_wrong,
                                                   unboxed_share=unboxed_share).failed):
            messages += [_assistant(attempt.text), _user(templates.attempt_feedback(budget - i - 1))]
        return ending_with(messages)
    if kind == "r3l_episode":
        episode = solved_episode(problem, rng, int(rng.integers(1, R3L_ATTEMPTS)),
                                 unboxed_share=unboxed_share)
        return ending_with(r3l_replay(episode, len(episode.failed)))
    if kind == "reflection":
        draw = rng.random()
        if draw < 0.2:
            episode = solved_episode(problem, rng, 0, unboxed_share=unboxed_share)
        else:
            episode = _draw_episode(problem, rng, unboxed_share, failure_share=0.5)
        report = reflection_report(episode)
        # A solved episode ends in a boxed answer: the verifier accepts nothing else.
        request = templates.reflection_request(q, episode_log(episode, problem.solution()))
        return dataclasses.replace(
            ending_with(request, text=templates.format_reflection_report(report),
                        step=report.retry_from_step), boxed=True)
    if kind == "guided_retry":
        # Replays the attempts before the root cause, then diverges with a solution.
        episode = _draw_episode(problem, rng, unboxed_share, failure_share=0.6)
        messages = templates.insert_guidance(r3l_replay(episode, episode.root),
                                             reflection_report(episode))
        return ending_with(messages, step=episode.root)
    raise ValueError(f"warm_start.warm_start_conversation: unknown kind {kind!r}; "
                     f"kinds are {sorted(WARM_START_KINDS)}")


# Share of each kind in the warm-start data: mostly the plain format (what RL and
# evaluation use), enough of each other to put every method's prompts in distribution.
# A reflection is 300-450 tokens (6 plain conversations), hence its small share.
WARM_START_KINDS = {
    "plain": 0.52, "hint": 0.06, "concise": 0.03, "concise_hint": 0.03, "multi_attempt": 0.10,
    "r3l_episode": 0.07, "reflection": 0.03, "guided_retry": 0.06, "continuation": 0.06,
    "failure_continuation": 0.04,
}


def warm_start_conversations(num: int, *, seed: int = 0,
                             level_weights: Sequence[float] | None = None,
                             unboxed_share: float = 0.0) -> list[Conversation]:
    """`num` conversations on training-split problems, kinds drawn by WARM_START_KINDS.

    `unboxed_share`: the share of responses on multi-step problems (trained answers
    and attempts shown as context alike) that end "The result is 32." instead of
    "\\boxed{32}". A model trained on the mix often works a longer problem out and then
    states the result in a form the verifier does not accept, as real base models
    often do: the format is a behaviour RL has to learn from the reward alone, the
    first and most reliable gain of RLVR on a base model.
    """
    if not 0.0 <= unboxed_share <= 1.0:
        raise ValueError(f"warm_start.warm_start_conversations: unboxed_share must be in "
                         f"[0, 1], got {unboxed_share}")
    problems = generate_problems("train", num, seed=seed, level_weights=level_weights)
    rng = np.random.default_rng([seed, 0xC0DE])
    kinds = list(WARM_START_KINDS)
    probabilities = np.array([WARM_START_KINDS[k] for k in kinds])
    drawn = rng.choice(len(kinds), size=num, p=probabilities / probabilities.sum())
    return [warm_start_conversation(p, kinds[k], rng, unboxed_share=unboxed_share)
            for p, k in zip(problems, drawn)]


def census(conversations: Sequence[Conversation]) -> dict:
    """What the data holds: conversations by kind, the boxed share of the trained
    answers on multi-step problems by kind, and the spread of retry_from_step by kind
    (reflections of failed episodes apart: only they can name a step other than 0)."""
    kinds: dict[str, list[Conversation]] = {}
    multi_step: dict[str, list[bool]] = {}
    for c in conversations:
        kinds.setdefault(c.kind, []).append(c)
        if c.num_ops > 1 and c.kind != "reflection":
            multi_step.setdefault(c.kind, []).append(c.boxed)
    spread: dict[str, dict[str, int]] = {}
    for c in conversations:
        if c.retry_from_step is None:
            continue
        label = c.kind
        if c.kind == "reflection" and "Outcome: failure" in c.messages[-1]["content"]:
            label = "reflection (failed episodes)"
        counts = spread.setdefault(label, {})
        counts[str(c.retry_from_step)] = counts.get(str(c.retry_from_step), 0) + 1
    return {
        "conversations": len(conversations),
        "by_kind": {kind: len(cs) for kind, cs in sorted(kinds.items())},
        "multi_step_boxed_share_by_kind": {kind: round(float(np.mean(boxed)), 3)
                                           for kind, boxed in sorted(multi_step.items())},
        "retry_from_step": {label: dict(sorted(counts.items()))
                            for label, counts in sorted(spread.items())},
    }
