"""The trap task: both workings worked by hand, the bounds, the splits."""

import numpy as np
import pytest

from rl_reason.data import traps
from rl_reason.data.traps import CORRECT, TRAP, Problem, Term


def problem(text_terms, level=2):
    """Problem from [(sign, factors)], e.g. [("", (7,)), ("+", (5, 3)), ("-", (4,))]."""
    return Problem(tuple(Term(sign, tuple(f)) for sign, f in text_terms), level)


def test_both_workings_by_hand():
    p = problem([("", (7,)), ("+", (5, 3)), ("-", (4,))])
    assert p.question == "What is 7+5*3-4?"
    assert p.solution(CORRECT) == "5*3=15. 7+15=22. 22-4=18. \\boxed{18}"
    assert p.solution(TRAP) == "7+5=12. 12*3=36. 36-4=32. \\boxed{32}"
    assert (p.answer, p.trap_answer) == (18, 32)
    assert traps.first_trap_line(p) == 0


def test_trap_after_a_shared_line_and_a_subtracted_product():
    p = problem([("", (9,)), ("-", (2,)), ("-", (2, 3)), ("+", (1,))])
    assert p.solution(CORRECT) == "9-2=7. 2*3=6. 7-6=1. 1+1=2. \\boxed{2}"
    assert p.solution(TRAP) == "9-2=7. 7-2=5. 5*3=15. 15+1=16. \\boxed{16}"
    assert traps.first_trap_line(p) == 1


def test_the_trap_answer_is_the_left_to_right_reading():
    """Reading the expression strictly left to right (Python's precedence removed by
    parenthesising every prefix) gives the trap's answer; Python's own reading gives
    the right one."""
    rng = np.random.default_rng(0)
    for level in traps.LEVELS:
        for _ in range(20):
            p = traps.sample_problem(rng, level)
            if p is None:
                continue
            assert p.answer == eval(p.expression)
            left_to_right = p.terms[0].text
            for term in p.terms[1:]:
                for i, factor in enumerate(term.factors):
                    left_to_right = f"({left_to_right}{term.sign if i == 0 else '*'}{factor})"
            assert p.trap_answer == eval(left_to_right) != p.answer


def test_slips_carry_on_and_avoid_both_answers():
    p = problem([("", (7,)), ("+", (5, 3)), ("-", (4,))])
    assert traps.format_working(traps.working(p, CORRECT, (1, 1))) == \
        "5*3=15. 7+15=23. 23-4=19. \\boxed{19}"
    rng = np.random.default_rng(1)
    for _ in range(20):
        slip = traps.random_slip(p, CORRECT, rng, avoid_answers=[19])
        answer = traps.working(p, CORRECT, slip)[-1].value
        assert answer not in (p.answer, p.trap_answer, 19)


@pytest.mark.parametrize("level", sorted(traps.LEVELS))
def test_levels_respect_their_bounds(level):
    spec = traps.LEVELS[level]
    for p in traps.generate_problems("train", 50, seed=3, levels=[level]):
        assert len(p.terms) == spec.terms
        assert sum(len(t.factors) > 1 for t in p.terms[1:]) == spec.products
        assert all(0 <= line.value <= spec.max_value for line in traps.working(p, CORRECT))
        assert all(0 <= line.value <= spec.max_trap_value for line in traps.working(p, TRAP))
        assert p.has_trap and p.answer != p.trap_answer


def test_splits_are_disjoint_deterministic_and_prefix_stable():
    train = traps.train_records(200, seed=0, levels=(2, 3))
    held = traps.held_out_records(100, seed=0, levels=(2, 3))
    assert not {r.problem for r in train} & {r.problem for r in held}
    assert [r.problem for r in traps.train_records(50, seed=0, levels=(2, 3))] == \
        [r.problem for r in train[:50]]
    assert traps.level_counts(train) == {2: 100, 3: 100}
    assert all(r.meta["trap_answer"] != r.answer for r in train)
