"""The embedded task: arithmetic chains with worked step-by-step solutions.

A problem is a start value followed by operations (+, -, *), written as an ordinary
expression whose parentheses force left-to-right evaluation, so any reader (the tiny
model or a real Qwen) evaluates it the same way:

    What is (7+5)*3-4?
    7+5=12. 12*3=36. 36-4=32. \\boxed{32}

Each step evaluates one operation, so longer chains need more steps and offer more
chances of error, and bigger operands make each step harder. `LEVELS` orders the
difficulty knob from one single-digit operation to six operations on values up to
999; a few-million-parameter model solves the first reliably and the last rarely,
which gives RL the none-pass, mixed and all-pass groups it needs.

Splits: the held-out split is the set of problems whose text hashes into a fixed
bucket (`is_held_out`), the training split is the rest, so the two never share a
problem whatever the seeds and sizes. Generation is deterministic in (split, seed,
levels) and prefix-stable: the first n problems of a longer list are the list of n.
Pure Python with numpy RNGs, fast enough to build tens of thousands per second.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Sequence

import numpy as np

from rl_reason.data import templates
from rl_reason.data.record import Record, problem_id

SOURCE = "synthetic_arith"
SPLITS = ("train", "held_out")
# 1 problem text in HELD_OUT_BUCKETS belongs to the held-out split.
HELD_OUT_BUCKETS = 8
OPERATORS = ("+", "-", "*")


@dataclasses.dataclass(frozen=True)
class Level:
    """One difficulty setting.

    max_operand bounds the start value and the operands of + and -; multipliers are
    2..max_multiplier (the one-digit times table below the hardest levels keeps *
    learnable). Every intermediate value stays in [0, max_value].
    """

    num_ops: int
    max_operand: int
    max_value: int
    max_multiplier: int = 9


LEVELS: dict[int, Level] = {
    1: Level(num_ops=1, max_operand=9, max_value=99),
    2: Level(num_ops=2, max_operand=9, max_value=99),
    3: Level(num_ops=3, max_operand=9, max_value=99),
    4: Level(num_ops=3, max_operand=30, max_value=199),
    5: Level(num_ops=4, max_operand=50, max_value=299),
    6: Level(num_ops=4, max_operand=99, max_value=999),
    7: Level(num_ops=5, max_operand=99, max_value=999),
    8: Level(num_ops=5, max_operand=99, max_value=999, max_multiplier=19),
}


@dataclasses.dataclass(frozen=True)
class Problem:
    """A start value and a chain of (operator, operand) applied left to right."""

    start: int
    ops: tuple[tuple[str, int], ...]
    level: int

    @property
    def values(self) -> list[int]:
        """The value after each step (the last one is the answer)."""
        values, value = [], self.start
        for op, operand in self.ops:
            value = apply_op(value, op, operand)
            values.append(value)
        return values

    @property
    def answer(self) -> int:
        return self.values[-1]

    @property
    def expression(self) -> str:
        expr, sum_at_top_level = str(self.start), False
        for op, operand in self.ops:
            # Parentheses only where standard precedence would differ from left-to-right.
            if op == "*" and sum_at_top_level:
                expr, sum_at_top_level = f"({expr})", False
            expr += f"{op}{operand}"
            sum_at_top_level = sum_at_top_level or op in "+-"
        return expr

    @property
    def question(self) -> str:
        return f"What is {self.expression}?"

    def solution(self) -> str:
        """The worked solution: one operation per step, then the boxed answer."""
        return format_steps(self.start, self.ops, self.values)

    def to_record(self, split: str, seed: int, index: int) -> Record:
        return Record(
            problem=self.question, answer=str(self.answer), id=problem_id(self.question),
            source=SOURCE,
            meta={"level": self.level, "num_ops": len(self.ops), "solution": self.solution(),
                  "split": split, "seed": seed, "index": index})


def apply_op(value: int, op: str, operand: int) -> int:
    if op == "+":
        return value + operand
    if op == "-":
        return value - operand
    if op == "*":
        return value * operand
    raise ValueError(f"synthetic.apply_op: unknown operator {op!r}; known: {OPERATORS}")


def format_steps(start: int, ops: Sequence[tuple[str, int]], values: Sequence[int]) -> str:
    """'a+b=c. c*d=e. \\boxed{e}' for the given (possibly wrong) step results."""
    steps, previous = [], start
    for (op, operand), value in zip(ops, values):
        steps.append(f"{previous}{op}{operand}={value}.")
        previous = value
    return " ".join(steps) + f" \\boxed{{{values[-1]}}}"


def unboxed_solution(problem: Problem) -> str:
    """The worked solution ending in a sentence instead of the box, which the task's
    verifier does not read as an answer: right working, no reward."""
    solution = problem.solution()
    return solution[:solution.rindex("\\boxed{")] + f"The result is {problem.answer}."


def sample_problem(rng: np.random.Generator, level: int) -> Problem:
    """A random problem of the given level (see `LEVELS`)."""
    if level not in LEVELS:
        raise ValueError(f"synthetic.sample_problem: unknown level {level}; levels are {sorted(LEVELS)}")
    spec = LEVELS[level]
    value = int(rng.integers(1, spec.max_operand + 1))
    start, ops = value, []
    for _ in range(spec.num_ops):
        choices = []
        if value + 1 <= spec.max_value:
            choices.append(("+", int(rng.integers(1, min(spec.max_operand, spec.max_value - value) + 1))))
        if value >= 1:
            choices.append(("-", int(rng.integers(1, min(spec.max_operand, value) + 1))))
        top_multiplier = min(spec.max_multiplier, spec.max_value // value) if value else 0
        if top_multiplier >= 2:
            choices.append(("*", int(rng.integers(2, top_multiplier + 1))))
        op, operand = choices[int(rng.integers(len(choices)))]
        ops.append((op, operand))
        value = apply_op(value, op, operand)
    return Problem(start=start, ops=tuple(ops), level=level)


@dataclasses.dataclass(frozen=True)
class FailedAttempt:
    """A worked solution with step `wrong_step` miscomputed as `wrong_value`."""

    text: str
    answer: int
    wrong_step: int
    wrong_value: int


def wrong_solution(problem: Problem, rng: np.random.Generator) -> FailedAttempt:
    """A plausible failed attempt: one step miscomputed, the rest carried on from it.

    Used for the wrong attempts, hints and logs of the warm-start data, so they look
    like the mistakes the model itself makes.
    """
    correct = problem.values
    step = int(rng.integers(len(problem.ops)))
    # Adding one always works (later steps are +, - or * of a positive value), so it
    # is the fallback when the random deltas keep failing.
    for delta in [int(d) for d in rng.choice([-10, -2, -1, 1, 2, 10], size=8)] + [1]:
        values = list(correct[:step]) + [correct[step] + delta]
        for op, operand in problem.ops[step + 1:]:
            values.append(apply_op(values[-1], op, operand))
        if min(values) >= 0 and values[-1] != correct[-1]:
            break
    return FailedAttempt(format_steps(problem.start, problem.ops, values), values[-1], step,
                         values[step])


def is_held_out(question: str) -> bool:
    """Whether a problem text belongs to the held-out split (a fixed hash bucket)."""
    return zlib.crc32(question.encode("utf-8")) % HELD_OUT_BUCKETS == 0


def _split_index(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"synthetic: unknown split {split!r}; splits are {SPLITS}")
    return SPLITS.index(split)


def generate_problems(split: str, num: int, *, seed: int = 0,
                      levels: Sequence[int] = tuple(LEVELS),
                      level_weights: Sequence[float] | None = None) -> list[Problem]:
    """`num` problems of one split.

    Without weights the levels take turns (problem i has levels[i % len(levels)]), so
    any slice spans the difficulty range evenly; with weights each level is drawn.
    Problems repeat within a split when a level has few distinct ones (level 1).
    """
    split_index = _split_index(split)
    levels = [int(level) for level in levels]
    unknown = [level for level in levels if level not in LEVELS]
    if not levels or unknown:
        raise ValueError(f"synthetic.generate_problems: levels {levels} must be a non-empty "
                         f"subset of {sorted(LEVELS)}")
    if num < 0:
        raise ValueError(f"synthetic.generate_problems: num must be >= 0, got {num}")
    probabilities = None
    if level_weights is not None:
        weights = np.asarray(level_weights, np.float64)
        if weights.shape != (len(levels),) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"synthetic.generate_problems: level_weights {list(level_weights)} "
                             f"must be {len(levels)} non-negative numbers, not all zero")
        probabilities = weights / weights.sum()
    rng = np.random.default_rng([seed, split_index, 0x5EED])
    want_held_out = split == "held_out"
    problems = []
    while len(problems) < num:
        if probabilities is None:
            level = levels[len(problems) % len(levels)]
        else:
            level = levels[int(rng.choice(len(levels), p=probabilities))]
        # Rejection keeps the split membership a property of the text alone.
        while True:
            problem = sample_problem(rng, level)
            if is_held_out(problem.question) == want_held_out:
                break
        problems.append(problem)
    return problems


def generate(split: str, num: int, *, seed: int = 0, levels: Sequence[int] = tuple(LEVELS),
             level_weights: Sequence[float] | None = None) -> list[Record]:
    """`num` Records of one split; meta holds level, num_ops and the worked solution."""
    problems = generate_problems(split, num, seed=seed, levels=levels, level_weights=level_weights)
    return [problem.to_record(split, seed, i) for i, problem in enumerate(problems)]


def train_records(num: int, *, seed: int = 0, levels: Sequence[int] = tuple(LEVELS)) -> list[Record]:
    return generate("train", num, seed=seed, levels=levels)


def held_out_records(num: int, *, seed: int = 0, levels: Sequence[int] = tuple(LEVELS)) -> list[Record]:
    return generate("held_out", num, seed=seed, levels=levels)


# ------------------------------------------------------------- warm-start conversations
#
# The base policy's supervised data (rl_reason/pretrain.py): worked solutions of this
# task in every prompt format of data/templates.py, so each method runs in
# distribution. Only correct attempts and reports are trained; wrong attempts appear
# as context (as the policy's own failures will at RL time).

@dataclasses.dataclass(frozen=True)
class Conversation:
    """Chat messages with a per-message training flag (only assistant turns are
    trained). prefix_chars > 0: the first characters of the last message are a given
    prefix (continuation), untrained."""

    messages: tuple[dict, ...]
    trained: tuple[bool, ...]
    kind: str
    prefix_chars: int = 0


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def failed_attempts(problem: Problem, rng: np.random.Generator, count: int) -> list[FailedAttempt]:
    """Up to `count` failed attempts with distinct wrong answers."""
    attempts, seen = [], set()
    for _ in range(4 * count):
        attempt = wrong_solution(problem, rng)
        if attempt.answer not in seen:
            seen.add(attempt.answer)
            attempts.append(attempt)
        if len(attempts) == count:
            break
    return attempts


def reflection_report(problem: Problem, failed: Sequence[FailedAttempt],
                      solved: bool) -> templates.ReflectionReport:
    """The report a careful reviewer writes about an episode: the `failed` attempts,
    then a correct one if `solved`. The root cause is the first miscomputed line of
    the first failed attempt, so retries start from step 0."""
    answer = problem.answer
    if not failed:
        return templates.ReflectionReport(
            summary=f"The first attempt answered {answer}, which is correct.", root_cause="None.",
            outcome=templates.OUTCOME_SUCCESS,
            suggestion="Keep the same careful step by step approach.", retry_from_step=0)
    first = failed[0]
    op, operand = problem.ops[first.wrong_step]
    before = problem.start if first.wrong_step == 0 else problem.values[first.wrong_step - 1]
    line = f"{before}{op}{operand}"
    root_cause = (f"In step 0 the line {line}={first.wrong_value} is wrong; "
                  f"{line}={problem.values[first.wrong_step]}.")
    suggestion = f"Recompute {line} carefully and check every line."
    if solved:
        summary = f"The correct answer {answer} was found only at step {len(failed)}."
        outcome = templates.OUTCOME_INEFFICIENT
    else:
        summary = f"No attempt found the correct answer; step 0 answered {first.answer}."
        outcome = templates.OUTCOME_FAILURE
    return templates.ReflectionReport(summary=summary, root_cause=root_cause, outcome=outcome,
                                      suggestion=suggestion, retry_from_step=0)


def warm_start_conversation(problem: Problem, kind: str, rng: np.random.Generator, *,
                            unboxed_share: float = 0.0) -> Conversation:
    """One training conversation of the given kind (see WARM_START_KINDS).

    An `unboxed_share` of the plain multi-step ones end in an unboxed sentence (see
    `warm_start_conversations`).
    """
    q, solution = problem.question, problem.solution()
    if kind == "plain" and len(problem.ops) > 1 and rng.random() < unboxed_share:
        messages = templates.plain_prompt(q) + [_assistant(unboxed_solution(problem))]
        return Conversation(tuple(messages), (False, True), "plain_unboxed")
    if kind in ("plain", "continuation"):
        messages = templates.plain_prompt(q) + [_assistant(solution)]
        # Continuation: the model resumes a correct solution anywhere, even mid-number.
        cut = int(rng.integers(1, len(solution))) if kind == "continuation" else 0
        return Conversation(tuple(messages), (False, True), kind, prefix_chars=cut)
    if kind in ("hint", "concise", "concise_hint"):
        wrong = [str(a.answer) for a in failed_attempts(problem, rng, int(rng.integers(1, 4)))]
        prompt = {"hint": lambda: templates.hint_prompt(q, wrong),
                  "concise": lambda: templates.concise_prompt(q),
                  "concise_hint": lambda: templates.concise_hint_prompt(q, wrong)}[kind]()
        return Conversation(tuple(prompt + [_assistant(solution)]), (False, True), kind)
    if kind == "multi_attempt":
        budget = int(rng.integers(1, 6))
        num_wrong = min(budget - 1, int(rng.choice([0, 0, 1, 1, 2, 3])))
        messages, trained = templates.multi_attempt_prompt(q, budget), [False, False]
        for i, attempt in enumerate(failed_attempts(problem, rng, num_wrong)):
            messages += [_assistant(attempt.text), {"role": "user",
                                            "content": templates.attempt_feedback(budget - i - 1)}]
            trained += [False, False]
        return Conversation(tuple(messages + [_assistant(solution)]), tuple(trained + [True]), kind)
    if kind in ("r3l_episode", "reflection", "guided_retry"):
        # R3L's math episodes stop at the first success or after 3 attempts.
        num_wrong = int(rng.choice([0, 1, 1, 2, 3])) if kind == "reflection" else int(rng.integers(1, 3))
        failed = failed_attempts(problem, rng, num_wrong)
        solved = len(failed) < 3
        if kind == "reflection":
            log = [(a.text, templates.verifier_feedback(str(a.answer))) for a in failed]
            if solved:
                log.append((solution, templates.CORRECT_FEEDBACK))
            report = templates.format_reflection_report(reflection_report(problem, failed, solved))
            return Conversation(tuple(templates.reflection_request(q, log) + [_assistant(report)]),
                                (False, True), kind)
        # r3l_episode: every failed attempt with feedback, then the correct one.
        # guided_retry: the first k attempts replayed (mostly none: the root cause is
        # at step 0), the report's lessons in the last user turn, then the correct one.
        replayed = len(failed) if kind == "r3l_episode" else int(rng.choice([0, 0, 0, len(failed) - 1]))
        messages, trained = templates.plain_prompt(q), [False]
        for attempt in failed[:replayed]:
            messages += [_assistant(attempt.text),
                         {"role": "user", "content": templates.verifier_feedback(str(attempt.answer))}]
            trained += [False, False]
        if kind == "guided_retry":
            messages = templates.insert_guidance(messages, reflection_report(problem, failed, solved))
        return Conversation(tuple(messages + [_assistant(solution)]), tuple(trained + [True]), kind)
    raise ValueError(f"synthetic.warm_start_conversation: unknown kind {kind!r}; "
                     f"kinds are {sorted(WARM_START_KINDS)}")


# Share of each kind in the warm-start data: mostly the plain format (what RL and
# evaluation use), enough of each other to put every method's prompts in distribution.
WARM_START_KINDS = {
    "plain": 0.50, "hint": 0.06, "concise": 0.03, "concise_hint": 0.03, "multi_attempt": 0.10,
    "r3l_episode": 0.07, "reflection": 0.06, "guided_retry": 0.05, "continuation": 0.10,
}


def warm_start_conversations(num: int, *, seed: int = 0,
                             level_weights: Sequence[float] | None = None,
                             unboxed_share: float = 0.0) -> list[Conversation]:
    """`num` conversations on training-split problems, kinds drawn by WARM_START_KINDS.

    `unboxed_share`: the share of plain conversations on multi-step problems whose
    worked solution ends "The result is 32." instead of "\\boxed{32}" (kind
    "plain_unboxed"); one-step answers stay boxed. A model trained on the mix often
    works a longer problem out and then states the result in a form the verifier does
    not accept, as real base models often do (no box, another format): the format is a
    behaviour RL has to learn from the reward alone, the first and most reliable gain
    of RLVR on a base model. Keeping one-step answers boxed keeps problems the base
    policy always solves.
    """
    if not 0.0 <= unboxed_share <= 1.0:
        raise ValueError(f"synthetic.warm_start_conversations: unboxed_share must be in "
                         f"[0, 1], got {unboxed_share}")
    problems = generate_problems("train", num, seed=seed, level_weights=level_weights)
    rng = np.random.default_rng([seed, 0xC0DE])
    kinds = list(WARM_START_KINDS)
    probabilities = np.array([WARM_START_KINDS[k] for k in kinds])
    drawn = rng.choice(len(kinds), size=num, p=probabilities / probabilities.sum())
    return [warm_start_conversation(p, kinds[k], rng, unboxed_share=unboxed_share)
            for p, k in zip(problems, drawn)]
