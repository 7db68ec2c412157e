"""The trap task: arithmetic with a precedence trap, where a wrong answer says why.

A problem is a sum of terms, some of them products, written the ordinary way:

    What is 7+5*3-4?
    5*3=15. 7+15=22. 22-4=18. \\boxed{18}              (multiplication first)
    7+5=12. 12*3=36. 36-4=32. \\boxed{32}              (the trap: left to right)

Every problem has a product after a + or -, where reading left to
right gives another answer. That is the systematic mistake the embedded base policy
makes, more often on longer problems (`TRAP_RATES`), as language models misapply a
rule they mostly know. Its wrong answer is therefore informative: the trap answer
is one number, the same every time the policy falls into the trap, so a policy that
is told "32 is incorrect" and works the problem out to 32 again knows it read it
left to right, and can redo it multiplication first. Occasional slips (one line
miscomputed, the rest carried on) are the other, uninformative kind of mistake.

A working is a list of `Line`s (one operation each); `working(problem, order, slip)`
builds it in either order with an optional slip, so every text the warm-start data
and the probes need comes from one function. Splits and records work as in the
arithmetic task (rl_reason/data/synthetic.py): a fixed hash bucket of problem texts
is held out, levels take turns, generation is deterministic and prefix-stable.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Sequence

import numpy as np

from rl_reason.data.record import Record, problem_id

SOURCE = "synthetic_traps"
SPLITS = ("train", "held_out")
HELD_OUT_BUCKETS = 8
EXHAUSTED_AFTER_DRAWS = 5000
CORRECT, TRAP = "correct", "trap"
ORDERS = (CORRECT, TRAP)


@dataclasses.dataclass(frozen=True)
class Level:
    """terms: how many terms; products: how many of the terms after the first are
    products b*c (each one a trap); max_start bounds the first number, max_operand
    every other; every value of the correct working is at most max_value, of the
    trap working at most max_trap_value."""

    terms: int
    products: int
    max_start: int = 9
    max_operand: int = 9
    max_value: int = 30
    max_trap_value: int = 60


LEVELS: dict[int, Level] = {
    1: Level(terms=2, products=1, max_start=30),
    2: Level(terms=3, products=1),
    3: Level(terms=4, products=1),
    4: Level(terms=4, products=2),
    5: Level(terms=5, products=2),
}

# How often the base policy's warm-start data reads a problem of each level left to
# right: the misconception grows with the length of the expression. Level 1 is
# nearly always right (failure-prefix conditioning's saturated problems), levels 2-3
# are the RL levels, 4-5 are mostly out of reach.
TRAP_RATES: dict[int, float] = {1: 0.1, 2: 0.5, 3: 0.7, 4: 0.85, 5: 0.9}


@dataclasses.dataclass(frozen=True)
class Term:
    """'+' / '-' (empty for the first term) and its factors: (x,) or (b, c)."""

    sign: str
    factors: tuple[int, ...]

    @property
    def text(self) -> str:
        return self.sign + "*".join(str(f) for f in self.factors)


@dataclasses.dataclass(frozen=True)
class Line:
    """One operation of a working: `left op right = value`."""

    left: int
    op: str
    right: int
    value: int

    @property
    def text(self) -> str:
        return f"{self.left}{self.op}{self.right}={self.value}."


def apply_op(left: int, op: str, right: int) -> int:
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    raise ValueError(f"traps.apply_op: unknown operator {op!r}")


@dataclasses.dataclass(frozen=True)
class Problem:
    terms: tuple[Term, ...]
    level: int

    @property
    def expression(self) -> str:
        return "".join(t.text for t in self.terms)

    @property
    def question(self) -> str:
        return f"What is {self.expression}?"

    @property
    def answer(self) -> int:
        return working(self, CORRECT)[-1].value

    @property
    def trap_answer(self) -> int:
        return working(self, TRAP)[-1].value

    @property
    def has_trap(self) -> bool:
        """Whether reading left to right changes a line (any product after a sign)."""
        return any(len(t.factors) > 1 for t in self.terms[1:])

    def solution(self, order: str = CORRECT, slip: tuple[int, int] | None = None) -> str:
        return format_working(working(self, order, slip))

    def to_record(self, split: str, seed: int, index: int) -> Record:
        return Record(
            problem=self.question, answer=str(self.answer), id=problem_id(self.question),
            source=SOURCE,
            meta={"level": self.level, "num_ops": num_lines(self), "solution": self.solution(),
                  "trap_answer": str(self.trap_answer), "split": split, "seed": seed,
                  "index": index})


def _program(problem: Problem, order: str) -> list[tuple[object, str, object]]:
    """The working's operations; an operand is an int or ('line', i) for line i's value."""
    if order not in ORDERS:
        raise ValueError(f"traps.working: order must be one of {ORDERS}, got {order!r}")
    ops: list[tuple[object, str, object]] = []
    first = problem.terms[0].factors
    acc: object = first[0]
    for factor in first[1:]:
        ops.append((acc, "*", factor))
        acc = ("line", len(ops) - 1)
    for term in problem.terms[1:]:
        if len(term.factors) == 1:
            ops.append((acc, term.sign, term.factors[0]))
        elif order == CORRECT:
            product: object = term.factors[0]
            for factor in term.factors[1:]:
                ops.append((product, "*", factor))
                product = ("line", len(ops) - 1)
            ops.append((acc, term.sign, product))
        else:
            ops.append((acc, term.sign, term.factors[0]))
            for factor in term.factors[1:]:
                ops.append((("line", len(ops) - 1), "*", factor))
        acc = ("line", len(ops) - 1)
    return ops


def working(problem: Problem, order: str = CORRECT,
            slip: tuple[int, int] | None = None) -> list[Line]:
    """The lines of the working in `order`; slip = (line, delta): that line's value is
    off by delta and every later line carries the wrong value on."""
    values: list[int] = []
    lines = []
    for i, (left, op, right) in enumerate(_program(problem, order)):
        a = values[left[1]] if isinstance(left, tuple) else left
        b = values[right[1]] if isinstance(right, tuple) else right
        value = apply_op(a, op, b)
        if slip is not None and slip[0] == i:
            value += slip[1]
        values.append(value)
        lines.append(Line(a, op, b, value))
    return lines


def num_lines(problem: Problem) -> int:
    return len(_program(problem, CORRECT))


def format_working(lines: Sequence[Line], boxed: bool = True) -> str:
    """'5*3=15. 7+15=22. \\boxed{22}' (without the box when not `boxed`)."""
    text = " ".join(line.text for line in lines)
    return f"{text} \\boxed{{{lines[-1].value}}}" if boxed else text


def first_trap_line(problem: Problem) -> int:
    """Index of the first line where the two orders differ (None if they never do)."""
    for i, (a, b) in enumerate(zip(working(problem, CORRECT), working(problem, TRAP))):
        if a != b:
            return i
    return None


# ------------------------------------------------------------------------ mistakes

# How far a slipped line is off.
SLIP_DELTAS = (-10, -2, -1, 1, 2, 10)


def _in_range(lines: Sequence[Line], max_value: int) -> bool:
    return all(0 <= line.value <= max_value for line in lines)


def random_slip(problem: Problem, order: str, rng: np.random.Generator, *,
                avoid_answers: Sequence[int] = ()) -> tuple[int, int] | None:
    """A (line, delta) slip of the working in `order` whose values stay in range and
    whose answer is neither right, the other order's answer, nor in `avoid_answers`;
    None when there is none."""
    spec = LEVELS[problem.level]
    n = num_lines(problem)
    excluded = {problem.answer, problem.trap_answer, *avoid_answers}
    candidates = [(i, d) for i in range(n) for d in SLIP_DELTAS]
    for k in rng.permutation(len(candidates)):
        slip = candidates[int(k)]
        lines = working(problem, order, slip)
        if _in_range(lines, spec.max_trap_value) and lines[-1].value not in excluded:
            return slip
    return None


# ------------------------------------------------------------------------- problems

# Draws of one term before the whole problem is drawn again.
TERM_DRAWS = 20


def _draw_term(rng: np.random.Generator, sign_first: bool, product: bool, hi: int) -> Term:
    sign = "" if sign_first else "+-"[int(rng.integers(2))]
    if product:
        return Term(sign, (int(rng.integers(2, hi + 1)), int(rng.integers(2, hi + 1))))
    return Term(sign, (int(rng.integers(1, hi + 1)),))


def sample_problem(rng: np.random.Generator, level: int) -> Problem | None:
    """A random problem of `level`, or None when no draw kept every value in bounds
    (the caller draws again). Terms are drawn one at a time, each redrawn until both
    workings of the terms so far stay in bounds."""
    if level not in LEVELS:
        raise ValueError(f"traps.sample_problem: unknown level {level}; levels are {sorted(LEVELS)}")
    spec = LEVELS[level]
    positions = set(rng.choice(np.arange(1, spec.terms), size=spec.products,
                               replace=False).tolist())
    terms = (Term("", (int(rng.integers(1, spec.max_start + 1)),)),)
    for i in range(1, spec.terms):
        for _ in range(TERM_DRAWS):
            candidate = Problem(terms + (_draw_term(rng, False, i in positions,
                                                    spec.max_operand),), level)
            if (_in_range(working(candidate, CORRECT), spec.max_value)
                    and _in_range(working(candidate, TRAP), spec.max_trap_value)):
                terms = candidate.terms
                break
        else:
            return None
    problem = Problem(terms, level)
    return None if problem.answer == problem.trap_answer else problem


def is_held_out(question: str) -> bool:
    return zlib.crc32(question.encode("utf-8")) % HELD_OUT_BUCKETS == 0


def _draw(rng: np.random.Generator, level: int, want_held_out: bool,
          seen: set[str] | None) -> Problem | None:
    for _ in range(EXHAUSTED_AFTER_DRAWS):
        problem = sample_problem(rng, level)
        if problem is None:
            continue
        if is_held_out(problem.question) == want_held_out and (
                seen is None or problem.question not in seen):
            return problem
    return None


def generate_problems(split: str, num: int, *, seed: int = 0,
                      levels: Sequence[int] = tuple(LEVELS),
                      level_weights: Sequence[float] | None = None,
                      distinct: bool = False) -> list[Problem]:
    """`num` problems of one split; see synthetic.generate_problems for the rules."""
    if split not in SPLITS:
        raise ValueError(f"traps: unknown split {split!r}; splits are {SPLITS}")
    levels = [int(level) for level in levels]
    if not levels or any(level not in LEVELS for level in levels):
        raise ValueError(f"traps.generate_problems: levels {levels} must be a non-empty "
                         f"subset of {sorted(LEVELS)}")
    if num < 0:
        raise ValueError(f"traps.generate_problems: num must be >= 0, got {num}")
    probabilities = None
    if level_weights is not None:
        weights = np.asarray(level_weights, np.float64)
        if weights.shape != (len(levels),) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"traps.generate_problems: level_weights {list(level_weights)} "
                             f"must be {len(levels)} non-negative numbers, not all zero")
        probabilities = weights / weights.sum()
    rng = np.random.default_rng([seed, SPLITS.index(split), 0x7A9])
    problems, seen, exhausted = [], set(), set()
    while len(problems) < num:
        turn = (len(problems) % len(levels) if probabilities is None
                else int(rng.choice(len(levels), p=probabilities)))
        problem = None
        for level in (levels[(turn + i) % len(levels)] for i in range(len(levels))):
            if level not in exhausted:
                problem = _draw(rng, level, split == "held_out", seen if distinct else None)
                if problem is not None:
                    break
                exhausted.add(level)
        if problem is None:
            raise ValueError(f"traps.generate_problems: levels {levels} hold fewer than "
                             f"{num} distinct {split} problems ({len(problems)} found)")
        seen.add(problem.question)
        problems.append(problem)
    return problems


def generate(split: str, num: int, *, seed: int = 0, levels: Sequence[int] = tuple(LEVELS),
             level_weights: Sequence[float] | None = None, distinct: bool = True) -> list[Record]:
    """`num` Records of one split (distinct texts unless told otherwise); meta holds
    level, num_ops, the worked solution and the trap's answer."""
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
    counts: dict[int, int] = {}
    for record in records:
        counts[record.meta["level"]] = counts.get(record.meta["level"], 0) + 1
    return dict(sorted(counts.items()))
