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

Besides the correct worked solution, a problem has the texts the warm-start data
(data/warm_start.py) is made of: the same working ending in a sentence instead of the
box, a failed attempt with one miscomputed line carried on to a wrong answer, and a
repaired solution that miscomputes a line, notices and corrects it:

    7+5=13. Wait, 7+5=12. 12*3=36. 36-4=32. \\boxed{32}

Splits: the held-out split is the set of problems whose text hashes into a fixed
bucket (`is_held_out`), the training split is the rest, so the two never share a
problem whatever the seeds and sizes. Records (`train_records`, `held_out_records`)
are distinct texts with the levels taking turns, so every level has the same share.
Generation is deterministic in (split, seed, levels) and prefix-stable: the first n
problems of a longer list are the list of n. Pure Python with numpy RNGs.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Sequence

import numpy as np

from rl_reason.data.record import Record, problem_id

SOURCE = "synthetic_arith"
SPLITS = ("train", "held_out")
# 1 problem text in HELD_OUT_BUCKETS belongs to the held-out split.
HELD_OUT_BUCKETS = 8
OPERATORS = ("+", "-", "*")
# A level that yields no new distinct problem in this many draws in a row is taken as
# exhausted (level 1 has 198 problems in all, 25 of them held out).
EXHAUSTED_AFTER_DRAWS = 5000
# How a worked solution states its result when it does not box it (no reward: the
# verifier reads only the box), and the words of a repaired line.
UNBOXED_ENDING = "The result is {}."
REPAIR = "Wait, {line}={value}."


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
        return carry_on(self, 0, self.start)

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

    def line(self, step: int) -> str:
        """The left side of step `step`'s line, e.g. '12*3' (from the correct values)."""
        before = self.start if step == 0 else self.values[step - 1]
        op, operand = self.ops[step]
        return f"{before}{op}{operand}"

    def solution(self, boxed: bool = True) -> str:
        """The worked solution: one operation per step, then the (boxed) answer."""
        return format_steps(self.start, self.ops, self.values, boxed=boxed)

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


def carry_on(problem: Problem, step: int, value: int) -> list[int]:
    """The values of steps step.. when `value` enters step `step` (right or not)."""
    values = []
    for op, operand in problem.ops[step:]:
        value = apply_op(value, op, operand)
        values.append(value)
    return values


def ending(answer: int, boxed: bool) -> str:
    return f"\\boxed{{{answer}}}" if boxed else UNBOXED_ENDING.format(answer)


def format_steps(start: int, ops: Sequence[tuple[str, int]], values: Sequence[int], *,
                 boxed: bool = True) -> str:
    """'a+b=c. c*d=e. \\boxed{e}' for the given (possibly wrong) step results."""
    steps, previous = [], start
    for (op, operand), value in zip(ops, values):
        steps.append(f"{previous}{op}{operand}={value}.")
        previous = value
    return " ".join(steps) + " " + ending(values[-1], boxed)


def unboxed_solution(problem: Problem) -> str:
    """The worked solution ending in a sentence instead of the box, which the task's
    verifier does not read as an answer: right working, no reward."""
    return problem.solution(boxed=False)


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


# ------------------------------------------------------------ mistakes and repairs

# How far a miscomputed line is off: the slips the model itself makes.
MISTAKE_DELTAS = (-10, -2, -1, 1, 2, 10)


@dataclasses.dataclass(frozen=True)
class FailedAttempt:
    """A worked solution with step `wrong_step` miscomputed as `wrong_value` and the
    rest carried on from it; `answer` is its (wrong) result, stated in the box or,
    when not `boxed`, in the unboxed sentence."""

    text: str
    answer: int
    wrong_step: int
    wrong_value: int
    boxed: bool = True

    @property
    def mistake(self) -> tuple[int, int]:
        return self.wrong_step, self.wrong_value


def attempt_with_mistake(problem: Problem, step: int, wrong_value: int, *,
                         boxed: bool = True) -> FailedAttempt:
    values = problem.values[:step] + [wrong_value] + carry_on(problem, step + 1, wrong_value)
    return FailedAttempt(format_steps(problem.start, problem.ops, values, boxed=boxed),
                         values[-1], step, wrong_value, boxed)


def _mistake_is_usable(problem: Problem, step: int, wrong_value: int) -> bool:
    if wrong_value < 0 or wrong_value == problem.values[step]:
        return False
    values = [wrong_value] + carry_on(problem, step + 1, wrong_value)
    return min(values) >= 0 and values[-1] != problem.answer


def random_mistake(problem: Problem, rng: np.random.Generator, *,
                   avoid: Sequence[tuple[int, int]] = ()) -> tuple[int, int] | None:
    """(step, wrong value) of a plausible slip that gives a wrong, non-negative answer,
    other than those in `avoid`; None when there is none left."""
    for _ in range(8):
        step = int(rng.integers(len(problem.ops)))
        value = problem.values[step] + int(rng.choice(MISTAKE_DELTAS))
        if (step, value) not in avoid and _mistake_is_usable(problem, step, value):
            return step, value
    # Few usable slips (small values): take the first one left, in a random step order.
    for step in rng.permutation(len(problem.ops)):
        for delta in (1, 2, 10, -1, -2, -10, 3, 4, 5):
            value = problem.values[int(step)] + delta
            if (int(step), value) not in avoid and _mistake_is_usable(problem, int(step), value):
                return int(step), value
    return None


def wrong_solution(problem: Problem, rng: np.random.Generator, *,
                   boxed: bool = True) -> FailedAttempt:
    """A plausible failed attempt: one step miscomputed, the rest carried on from it.

    Used for the wrong attempts, hints and logs of the warm-start data, so they look
    like the mistakes the model itself makes.
    """
    step, value = random_mistake(problem, rng)
    return attempt_with_mistake(problem, step, value, boxed=boxed)


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


@dataclasses.dataclass(frozen=True)
class RepairedSolution:
    """A worked solution that miscomputes step `wrong_step` as `wrong_value`, then
    says so and recomputes it (REPAIR) and finishes correctly. text[:repair_at] ends
    with the wrong line; text[repair_at:] starts with ' Wait,'."""

    text: str
    wrong_step: int
    wrong_value: int
    repair_at: int


def repaired_solution(problem: Problem, rng: np.random.Generator, *,
                      boxed: bool = True) -> RepairedSolution:
    step, wrong_value = random_mistake(problem, rng)
    values = problem.values
    lines = [f"{problem.line(i)}={values[i]}." for i in range(len(values))]
    head = " ".join(lines[:step] + [f"{problem.line(step)}={wrong_value}."])
    repair = REPAIR.format(line=problem.line(step), value=values[step])
    text = " ".join([head, repair] + lines[step + 1:] + [ending(problem.answer, boxed)])
    return RepairedSolution(text, step, wrong_value, len(head))


# ------------------------------------------------------------------------- splits

def is_held_out(question: str) -> bool:
    """Whether a problem text belongs to the held-out split (a fixed hash bucket)."""
    return zlib.crc32(question.encode("utf-8")) % HELD_OUT_BUCKETS == 0


def _split_index(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"synthetic: unknown split {split!r}; splits are {SPLITS}")
    return SPLITS.index(split)


def generate_problems(split: str, num: int, *, seed: int = 0,
                      levels: Sequence[int] = tuple(LEVELS),
                      level_weights: Sequence[float] | None = None,
                      distinct: bool = False) -> list[Problem]:
    """`num` problems of one split.

    Without weights the levels take turns (problem i has levels[i % len(levels)]), so
    any slice spans the difficulty range evenly; with weights each level is drawn.
    distinct: no problem text twice. A level whose distinct problems run out
    (EXHAUSTED_AFTER_DRAWS) hands its later turns to the next level in the list;
    ValueError when every level has run out. Without `distinct`, problems repeat when
    a level has few (level 1).
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
    problems, seen, exhausted = [], set(), set()
    while len(problems) < num:
        if probabilities is None:
            turn = len(problems) % len(levels)
        else:
            turn = int(rng.choice(len(levels), p=probabilities))
        problem = None
        for level in (levels[(turn + i) % len(levels)] for i in range(len(levels))):
            if level not in exhausted:
                problem = _draw(rng, level, want_held_out, seen if distinct else None)
                if problem is not None:
                    break
                exhausted.add(level)
        if problem is None:
            raise ValueError(f"synthetic.generate_problems: levels {levels} hold fewer than "
                             f"{num} distinct {split} problems ({len(problems)} found)")
        seen.add(problem.question)
        problems.append(problem)
    return problems


def _draw(rng: np.random.Generator, level: int, want_held_out: bool,
          seen: set[str] | None) -> Problem | None:
    """A problem of `level` in the split, not in `seen`; None after too many misses."""
    for _ in range(EXHAUSTED_AFTER_DRAWS):
        problem = sample_problem(rng, level)
        # Rejection keeps the split membership a property of the text alone.
        if is_held_out(problem.question) == want_held_out and (
                seen is None or problem.question not in seen):
            return problem
    return None


def generate(split: str, num: int, *, seed: int = 0, levels: Sequence[int] = tuple(LEVELS),
             level_weights: Sequence[float] | None = None, distinct: bool = True) -> list[Record]:
    """`num` Records of one split (distinct texts unless told otherwise); meta holds
    level, num_ops and the worked solution."""
    problems = generate_problems(split, num, seed=seed, levels=levels,
                                 level_weights=level_weights, distinct=distinct)
    return [problem.to_record(split, seed, i) for i, problem in enumerate(problems)]


def train_records(num: int, *, seed: int = 0, levels: Sequence[int] = tuple(LEVELS)) -> list[Record]:
    """`num` distinct training problems, the levels taking turns (equal shares)."""
    return generate("train", num, seed=seed, levels=levels)


def held_out_records(num: int, *, seed: int = 0, levels: Sequence[int] = tuple(LEVELS)) -> list[Record]:
    """`num` distinct held-out problems, the levels taking turns (equal shares)."""
    return generate("held_out", num, seed=seed, levels=levels)


def level_counts(records: Sequence[Record]) -> dict[int, int]:
    """How many records each level has."""
    counts: dict[int, int] = {}
    for record in records:
        counts[record.meta["level"]] = counts.get(record.meta["level"], 0) + 1
    return dict(sorted(counts.items()))
