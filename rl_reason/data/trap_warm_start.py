"""The trap world's warm-start data: conversations on the trap task (data/traps.py) in
every prompt format the methods use, with the premise dial `skill`.

The base policy learns two things from them.

- Its misconception. An answer that has not been told of a failure reads the problem
  left to right with the level's trap rate (traps.TRAP_RATES), whatever the prompt;
  every other trained line is right. Slips (one miscomputed line) are never trained:
  they come from the small model's own arithmetic, as uninformative noise.
- Its use of failure information, in a share `skill` of the conversations that show a
  failure (LTE's hints, the feedback after a wrong attempt, reflections and the
  retries they guide, failure prefixes); in the rest, the trained answer is an
  independent new try, exactly as under the plain prompt. `skill = 0` gives a
  policy that cannot use a failure at all.

What "using a failure" means in each format, and why it models real models:

- Told that answers were wrong (LTE's hint, "incorrect" after an attempt): the policy
  reconsiders the reading it usually gets wrong and works the problem multiplication
  first. A wrong answer on this task almost always comes from reading it left to
  right, so being told of one is information about the procedure, as a real model
  told "32 is incorrect" suspects its first reading. It also never repeats an answer
  the feedback rejected.
- A reflection on a failed episode names the attempt where the mistake behind the
  failure first appeared (the first attempt read left to right, or, with none, the
  first attempt) and what it was: the left-to-right reading, or the slipped line; a
  retry guided by such a report works the problem out right. Without skill
  the report names a random attempt and a generic cause, and a retry so guided is an
  independent try.
- A failure prefix (a wrong working cut after its mistake) is noticed and repaired:
  `7+5=12. 12*3=36. Wait, multiplication comes first. 5*3=15. ...`, or after a slip
  `7+5=13. Wait, 7+5=12. ...`; without skill the working carries on to its wrong end.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from rl_reason.data import templates, traps
from rl_reason.data.traps import CORRECT, TRAP, Problem, format_working, working
from rl_reason.data.warm_start import R3L_ATTEMPTS, Conversation

# The words of the repairs and reports (tests pin them; changing them means a new
# world version).
TRAP_REPAIR = "Wait, multiplication comes first."
SLIP_REPAIR = "Wait, {line}."
TRAP_CAUSE = ("In step {step} the working reads {expression} left to right; "
              "multiplication comes first.")
TRAP_SUGGESTION = "Multiply before adding or subtracting."
SLIP_CAUSE = "In step {step} the line {line}={wrong} is wrong; it is {right}."
SLIP_SUGGESTION = "Recompute that line carefully."
GENERIC_CAUSE = "A line of the working is wrong."
GENERIC_SUGGESTION = "Check every line."


@dataclasses.dataclass(frozen=True)
class Attempt:
    """A worked attempt as text, with its answer and what went wrong (order, slip)."""

    text: str
    answer: int
    order: str
    slip: tuple[int, int] | None = None

    @property
    def trapped(self) -> bool:
        return self.order == TRAP


def attempt(problem: Problem, order: str, slip=None) -> Attempt:
    lines = working(problem, order, slip)
    return Attempt(format_working(lines), lines[-1].value, order, slip)


def plain_order(problem: Problem, rng: np.random.Generator) -> str:
    """The order an uninformed answer takes: the trap with the level's rate."""
    return TRAP if rng.random() < traps.TRAP_RATES[problem.level] else CORRECT


def failed_attempt(problem: Problem, rng: np.random.Generator, *, trap_share: float,
                   avoid: Sequence[int] = ()) -> Attempt:
    """A wrong attempt: the trap (with probability `trap_share`, when the problem has
    one) or a slip in the correct order, whose answer is not in `avoid`."""
    if problem.has_trap and problem.trap_answer not in avoid and rng.random() < trap_share:
        return attempt(problem, TRAP)
    slip = traps.random_slip(problem, CORRECT, rng, avoid_answers=avoid)
    if slip is None:
        if problem.has_trap and problem.trap_answer not in avoid:
            return attempt(problem, TRAP)
        raise ValueError(f"trap_warm_start: no wrong attempt left for {problem.question}")
    return attempt(problem, CORRECT, slip)


def answer_after_failure(problem: Problem, rng: np.random.Generator, informed: bool) -> str:
    """The trained answer in a prompt that shows a failure: multiplication first when
    informed, else an independent try (the plain answer)."""
    return problem.solution(CORRECT) if informed else plain_answer(problem, rng)


def plain_answer(problem: Problem, rng: np.random.Generator) -> str:
    return attempt(problem, plain_order(problem, rng)).text


# --------------------------------------------------------------------------- R3L

@dataclasses.dataclass(frozen=True)
class Episode:
    """Attempts with feedback: the failed ones, then (if `solved`) a correct one.
    `root`: the attempt where the mistake behind the outcome first appears."""

    problem: Problem
    failed: tuple[Attempt, ...]
    solved: bool
    root: int


def failed_episode(problem: Problem, rng: np.random.Generator, *,
                   trap_share: float = 0.6) -> Episode:
    """R3L_ATTEMPTS failed attempts as a policy that does not use the feedback makes
    them: each the trap (with `trap_share`; its answer recurs) or a slip. The root
    (`first_error_step`) is the first attempt read left to right, where the mistake
    behind the failure first appears; with none, attempt 0."""
    attempts = tuple(failed_attempt(problem, rng, trap_share=trap_share)
                     for _ in range(R3L_ATTEMPTS))
    return Episode(problem, attempts, False,
                   first_error_step(problem, [a.answer for a in attempts]))


def first_error_step(problem: Problem, answers: Sequence[int | str | None]) -> int:
    """The attempt where the mistake behind a failed episode first appears: the first
    whose answer is the trap's (the misconception that keeps failing), else the first
    attempt (independent slips: carelessness from the start)."""
    trap = str(problem.trap_answer)
    return next((i for i, a in enumerate(answers) if str(a) == trap), 0)


def solved_episode(problem: Problem, rng: np.random.Generator, num_failed: int) -> Episode:
    failed: list[Attempt] = []
    for _ in range(num_failed):
        failed.append(failed_attempt(problem, rng, trap_share=0.7,
                                     avoid=[a.answer for a in failed]))
    return Episode(problem, tuple(failed), True, 0)


def feedback(a: Attempt) -> str:
    return templates.verifier_feedback(str(a.answer))


def episode_messages(episode: Episode, count: int) -> list[dict]:
    """The plain prompt, then the first `count` failed attempts with their feedback."""
    messages = templates.plain_prompt(episode.problem.question)
    for a in episode.failed[:count]:
        messages += [_assistant(a.text), _user(feedback(a))]
    return messages


def reflection_report(episode: Episode, rng: np.random.Generator,
                      informed: bool) -> templates.ReflectionReport:
    """An informed report names the root attempt and the trap; an uninformed one a
    random attempt and a generic cause. The outcome is read off the log either way."""
    problem, failed = episode.problem, episode.failed
    if not failed:
        return templates.ReflectionReport(
            summary=f"The first attempt answered {problem.answer}, which is correct.",
            root_cause="None.", outcome=templates.OUTCOME_SUCCESS,
            suggestion="Keep the same careful step by step approach.", retry_from_step=0)
    if episode.solved:
        summary = f"The correct answer {problem.answer} was found only at step {len(failed)}."
        outcome = templates.OUTCOME_INEFFICIENT
    else:
        summary = f"No attempt found the correct answer; step {len(failed) - 1} answered {failed[-1].answer}."
        outcome = templates.OUTCOME_FAILURE
    root_attempt = failed[episode.root]
    if not informed:
        return templates.ReflectionReport(
            summary=summary, root_cause=GENERIC_CAUSE, outcome=outcome,
            suggestion=GENERIC_SUGGESTION,
            retry_from_step=int(rng.integers(len(failed) + int(episode.solved))))
    if root_attempt.trapped:
        cause = TRAP_CAUSE.format(step=episode.root, expression=problem.expression)
        suggestion = TRAP_SUGGESTION
    else:
        line = working(problem, CORRECT)[root_attempt.slip[0]]
        cause = SLIP_CAUSE.format(step=episode.root, line=f"{line.left}{line.op}{line.right}",
                                  wrong=line.value + root_attempt.slip[1], right=line.value)
        suggestion = SLIP_SUGGESTION
    return templates.ReflectionReport(summary=summary, root_cause=cause, outcome=outcome,
                                      suggestion=suggestion, retry_from_step=episode.root)


def reflection_log(episode: Episode) -> list[tuple[str, str]]:
    log = [(a.text, feedback(a)) for a in episode.failed]
    if episode.solved:
        log.append((episode.problem.solution(), templates.CORRECT_FEEDBACK))
    return log


def is_informative(report: templates.ReflectionReport) -> bool:
    """Whether a report names a mistake (a guided retry then works it out right)."""
    return report.root_cause != GENERIC_CAUSE


# ------------------------------------------------------------------ failure prefixes

def failure_continuation(problem: Problem, rng: np.random.Generator,
                         informed: bool) -> tuple[str, int]:
    """(text, prefix_chars): a wrong working cut after its mistake (at the mistaken
    line or a later one; never the box), then the repair when informed, else the
    working carried on to its wrong answer. The mistake is the trap (70%, when the
    problem has one) or a slip."""
    if problem.has_trap and rng.random() < 0.7:
        lines = working(problem, TRAP)
        first = traps.first_trap_line(problem)
        repair = f"{TRAP_REPAIR} {problem.solution(CORRECT)}"
    else:
        slip = traps.random_slip(problem, CORRECT, rng)
        if slip is None:
            raise ValueError(f"trap_warm_start: no slip for {problem.question}")
        lines, first = working(problem, CORRECT, slip), slip[0]
        right = working(problem, CORRECT)
        line = right[first]
        repair = format_working(right[first + 1:]) if first + 1 < len(right) else f"\\boxed{{{line.value}}}"
        repair = f"{SLIP_REPAIR.format(line=f'{line.left}{line.op}{line.right}={line.value}')} {repair}"
    cut = int(rng.integers(first, len(lines)))
    prefix = " ".join(line.text for line in lines[:cut + 1])
    text = f"{prefix} {repair}" if informed else format_working(lines)
    return text, len(prefix)


# ----------------------------------------------------------------- conversations

def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


def _ending(kind, problem, messages, text, *, prefix_chars=0, step=None) -> Conversation:
    messages = list(messages) + [_assistant(text)]
    trained = (False,) * (len(messages) - 1) + (True,)
    return Conversation(tuple(messages), trained, kind, prefix_chars, True, step,
                        traps.num_lines(problem))


def hint_answers(problem: Problem, rng: np.random.Generator) -> list[str]:
    """The distinct wrong answers of a failed group: mostly the trap's, and slips."""
    count = int(rng.integers(1, 4))
    wrong: list[Attempt] = []
    for _ in range(count):
        try:
            wrong.append(failed_attempt(problem, rng, trap_share=0.6,
                                        avoid=[a.answer for a in wrong]))
        except ValueError:
            break
    return [str(a.answer) for a in wrong]


def conversation(problem: Problem, kind: str, rng: np.random.Generator, *,
                 skill: float) -> Conversation:
    """One training conversation of the given kind (see KINDS)."""
    q = problem.question
    informed = bool(rng.random() < skill)
    if kind == "plain":
        return _ending(kind, problem, templates.plain_prompt(q), plain_answer(problem, rng))
    if kind == "continuation":
        answer = plain_answer(problem, rng)
        return _ending(kind, problem, templates.plain_prompt(q), answer,
                       prefix_chars=int(rng.integers(1, len(answer))))
    if kind == "failure_continuation":
        text, cut = failure_continuation(problem, rng, informed)
        return _ending(kind, problem, templates.plain_prompt(q), text, prefix_chars=cut)
    if kind in ("hint", "concise_hint"):
        wrong = hint_answers(problem, rng)
        prompt = (templates.hint_prompt(q, wrong) if kind == "hint"
                  else templates.concise_hint_prompt(q, wrong))
        return _ending(kind, problem, prompt, answer_after_failure(problem, rng, informed))
    if kind == "concise":
        return _ending(kind, problem, templates.concise_prompt(q), plain_answer(problem, rng))
    if kind in ("multi_attempt", "r3l_episode"):
        if kind == "multi_attempt":
            budget = int(rng.integers(1, 6))
            num_wrong = min(budget - 1, int(rng.choice([0, 0, 1, 1, 2, 3])))
            messages = templates.multi_attempt_prompt(q, budget)
        else:
            num_wrong = int(rng.integers(1, R3L_ATTEMPTS))
            messages = templates.plain_prompt(q)
        wrong: list[Attempt] = []
        for i in range(num_wrong):
            a = failed_attempt(problem, rng, trap_share=0.7, avoid=[w.answer for w in wrong])
            wrong.append(a)
            turn = (templates.attempt_feedback(budget - i - 1) if kind == "multi_attempt"
                    else feedback(a))
            messages += [_assistant(a.text), _user(turn)]
        return _ending(kind, problem, messages,
                       answer_after_failure(problem, rng, informed and bool(wrong)))
    if kind == "reflection":
        draw = rng.random()
        if draw < 0.2:
            episode = solved_episode(problem, rng, 0)
        elif draw < 0.7:
            episode = failed_episode(problem, rng)
        else:
            episode = solved_episode(problem, rng, int(rng.integers(1, R3L_ATTEMPTS)))
        report = reflection_report(episode, rng, informed)
        request = templates.reflection_request(q, reflection_log(episode))
        return _ending(kind, problem, request, templates.format_reflection_report(report),
                       step=report.retry_from_step)
    if kind == "guided_retry":
        # As R3L retries: replay the attempts before the step the report names, with
        # the report's lessons; an informative report leads to the right working.
        episode = (failed_episode(problem, rng) if rng.random() < 0.7
                   else solved_episode(problem, rng, int(rng.integers(1, R3L_ATTEMPTS))))
        report = reflection_report(episode, rng, informed)
        messages = templates.insert_guidance(episode_messages(episode, report.retry_from_step),
                                             report)
        answer = problem.solution(CORRECT) if is_informative(report) else plain_answer(problem, rng)
        return _ending(kind, problem, messages, answer, step=report.retry_from_step)
    raise ValueError(f"trap_warm_start.conversation: unknown kind {kind!r}; kinds are {sorted(KINDS)}")


# Share of each kind in the dial stage (the trunk has taught the plain answers): a
# third plain, so they stay as the trunk left them, the rest every method's prompts,
# reflections and guided retries more than their length would earn.
KINDS = {
    "plain": 0.34, "hint": 0.08, "concise": 0.02, "concise_hint": 0.03, "multi_attempt": 0.14,
    "r3l_episode": 0.08, "reflection": 0.08, "guided_retry": 0.08, "continuation": 0.05,
    "failure_continuation": 0.10,
}


def conversations(num: int, *, seed: int = 0, level_weights: Sequence[float] | None = None,
                  skill: float = 0.5) -> list[Conversation]:
    """`num` conversations on training problems of every level, kinds drawn by KINDS
    (level 1 has no trap: its failure kinds fall back to plain)."""
    if not 0.0 <= skill <= 1.0:
        raise ValueError(f"trap_warm_start.conversations: skill must be in [0, 1], got {skill}")
    problems = traps.generate_problems("train", num, seed=seed, level_weights=level_weights)
    rng = np.random.default_rng([seed, 0x7AB])
    kinds = list(KINDS)
    p = np.array([KINDS[k] for k in kinds])
    drawn = rng.choice(len(kinds), size=num, p=p / p.sum())
    out = []
    for problem, k in zip(problems, drawn):
        kind = kinds[k]
        if not problem.has_trap and kind in ("reflection", "guided_retry"):
            kind = "plain"
        try:
            out.append(conversation(problem, kind, rng, skill=skill))
        except ValueError:
            out.append(conversation(problem, "plain", rng, skill=skill))
    return out


def plain_conversations(num: int, *, seed: int = 0,
                        level_weights: Sequence[float] | None = None) -> list[Conversation]:
    """`num` plain conversations (the trunk's data: the task and its misconception,
    nothing about failures, so the same for every setting of the dial)."""
    problems = traps.generate_problems("train", num, seed=seed, level_weights=level_weights)
    rng = np.random.default_rng([seed, 0x7A1])
    return [conversation(p, "plain", rng, skill=0.0) for p in problems]
