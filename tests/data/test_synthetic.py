"""The embedded arithmetic task: determinism, disjoint and distinct splits with equal
level shares, verifiable answers, mistakes, and the difficulty knob."""

import re

import numpy as np
import pytest

from rl_reason.data import Record, problem_id, synthetic, warm_start
from rl_reason.verifiers.exact_int import ExactIntVerifier


def question_of(conversation):
    """The problem a warm-start conversation is about: its first "What is ...?"."""
    text = "\n".join(m["content"] for m in conversation.messages)
    return re.search(r"What is [^?]+\?", text).group(0)


def test_worked_example_from_the_docstring():
    problem = synthetic.Problem(start=7, ops=(("+", 5), ("*", 3), ("-", 4)), level=3)
    assert problem.question == "What is (7+5)*3-4?"
    assert problem.solution() == "7+5=12. 12*3=36. 36-4=32. \\boxed{32}"
    assert problem.answer == 32 and problem.values == [12, 36, 32]
    # Parentheses only where precedence would differ from left-to-right.
    assert synthetic.Problem(2, (("*", 3), ("+", 4), ("-", 1)), 3).question == "What is 2*3+4-1?"
    assert eval(problem.expression) == problem.answer


def test_deterministic_by_seed_and_prefix_stable():
    a = synthetic.train_records(300, seed=3)
    assert a == synthetic.train_records(300, seed=3)
    assert a[:100] == synthetic.train_records(100, seed=3)
    assert [r.problem for r in a] != [r.problem for r in synthetic.train_records(300, seed=4)]
    held = synthetic.held_out_records(50, seed=3)
    assert held == synthetic.held_out_records(50, seed=3)


def test_train_and_held_out_never_overlap():
    train = {r.problem for seed in (0, 1) for r in synthetic.train_records(3000, seed=seed, levels=(2, 3, 5))}
    held_out = {r.problem for seed in (0, 1) for r in synthetic.held_out_records(1000, seed=seed, levels=(2, 3, 5))}
    assert len(held_out) > 1000 and len(train) > 3000  # enough distinct problems to mean something
    assert not train & held_out
    assert all(synthetic.is_held_out(q) for q in held_out)
    assert not any(synthetic.is_held_out(q) for q in train)
    # The warm-start data is drawn from the training split only.
    for conversation in warm_start.warm_start_conversations(300, seed=0):
        assert not synthetic.is_held_out(question_of(conversation))


def test_records_have_the_fields_the_stream_expects():
    records = synthetic.train_records(16, seed=0, levels=(2, 5))
    for i, record in enumerate(records):
        assert isinstance(record, Record)
        assert record.problem.startswith("What is ") and record.problem.endswith("?")
        assert record.id == problem_id(record.problem)
        assert record.source == synthetic.SOURCE == "synthetic_arith"
        assert record.meta["level"] == (2, 5)[i % 2]  # levels take turns
        assert record.meta["split"] == "train" and record.meta["index"] == i
        assert record.meta["num_ops"] == synthetic.LEVELS[record.meta["level"]].num_ops
    assert {r.meta["split"] for r in synthetic.held_out_records(4)} == {"held_out"}


def test_answers_are_integers_and_the_verifier_accepts_solutions_only():
    records = synthetic.train_records(400, seed=2) + synthetic.held_out_records(100, seed=2)
    for record in records:
        assert re.fullmatch(r"\d+", record.answer), record.answer
        assert record.meta["solution"].endswith(f"\\boxed{{{record.answer}}}")
    verifier = ExactIntVerifier()
    results = verifier.verify_batch([r.meta["solution"] for r in records], [r.answer for r in records])
    assert all(result.correct for result in results)

    rng = np.random.default_rng(0)
    problems = synthetic.generate_problems("train", 400, seed=2)
    wrong = [synthetic.wrong_solution(p, rng) for p in problems]
    for problem, attempt in zip(problems, wrong):
        assert attempt.answer != problem.answer and attempt.answer >= 0
        assert attempt.text.endswith(f"\\boxed{{{attempt.answer}}}")
        assert attempt.wrong_value != problem.values[attempt.wrong_step]
        # Steps before the mistake are the correct ones; the mistake is carried on.
        before = attempt.wrong_step
        assert attempt.text.split(". ")[:before] == problem.solution().split(". ")[:before]
    results = verifier.verify_batch([a.text for a in wrong], [str(p.answer) for p in problems])
    assert not any(result.correct for result in results)
    assert {result.status for result in results} == {"wrong"}


def test_harder_levels_have_more_steps_and_larger_numbers():
    specs = [synthetic.LEVELS[level] for level in sorted(synthetic.LEVELS)]
    for easier, harder in zip(specs, specs[1:]):
        knobs = lambda s: (s.num_ops, s.max_operand, s.max_value, s.max_multiplier)  # noqa: E731
        assert all(h >= e for e, h in zip(knobs(easier), knobs(harder)))
        assert knobs(harder) != knobs(easier)

    steps, largest = {}, {}
    for level, spec in synthetic.LEVELS.items():
        problems = synthetic.generate_problems("train", 300, seed=0, levels=[level])
        assert {len(p.ops) for p in problems} == {spec.num_ops}
        for p in problems:
            assert all(0 <= v <= spec.max_value for v in [p.start] + p.values)
            assert all(2 <= x <= spec.max_multiplier for op, x in p.ops if op == "*")
            assert all(1 <= x <= spec.max_operand for op, x in p.ops if op != "*")
        steps[level] = np.mean([len(p.solution().split(". ")) for p in problems])
        largest[level] = np.mean([max([p.start] + p.values) for p in problems])
    levels = sorted(synthetic.LEVELS)
    assert all(steps[a] <= steps[b] for a, b in zip(levels, levels[1:]))
    assert all(largest[a] <= largest[b] * 1.05 for a, b in zip(levels, levels[1:]))
    assert steps[levels[-1]] > steps[levels[0]] and largest[levels[-1]] > 10 * largest[levels[0]]


def test_level_weights_and_argument_errors():
    problems = synthetic.generate_problems("train", 200, seed=0, levels=(1, 7), level_weights=(0, 1))
    assert {p.level for p in problems} == {7}
    with pytest.raises(ValueError, match="levels"):
        synthetic.train_records(3, levels=(0,))
    with pytest.raises(ValueError, match="unknown split"):
        synthetic.generate("test", 3)
    with pytest.raises(ValueError, match="num must be >= 0"):
        synthetic.generate("train", -1)
    with pytest.raises(ValueError, match="level_weights"):
        synthetic.generate_problems("train", 3, levels=(1, 2), level_weights=(1,))
    assert synthetic.train_records(0) == []


def test_records_are_distinct_with_equal_level_shares():
    """The RL split of the embedded default (configs/base.py): 512 distinct held-out
    problems and 4000 distinct training problems, half of each level."""
    held_out = synthetic.held_out_records(512, levels=(2, 3))
    assert len({r.problem for r in held_out}) == 512
    assert synthetic.level_counts(held_out) == {2: 256, 3: 256}
    train = synthetic.train_records(4000, levels=(2, 3))
    assert len({r.problem for r in train}) == 4000
    assert synthetic.level_counts(train) == {2: 2000, 3: 2000}
    assert [r.meta["level"] for r in train[:6]] == [2, 3, 2, 3, 2, 3]
    # Without `distinct`, the same draws repeat texts (level 2 has few problems).
    drawn = synthetic.generate_problems("held_out", 512, levels=(2, 3))
    assert len({p.question for p in drawn}) < 500


def test_an_exhausted_level_hands_its_turns_to_the_next():
    # Level 1 has 198 problems, 25 of them held out (is_held_out over all of them).
    held_out = synthetic.held_out_records(25, levels=(1,))
    assert len({r.problem for r in held_out}) == 25
    with pytest.raises(ValueError, match="fewer than 26 distinct held_out problems"):
        synthetic.held_out_records(26, levels=(1,))
    mixed = synthetic.held_out_records(100, levels=(1, 2))
    assert synthetic.level_counts(mixed) == {1: 25, 2: 75}
    assert len({r.problem for r in mixed}) == 100
    assert mixed[:40] == synthetic.held_out_records(40, levels=(1, 2))   # prefix-stable


def test_mistakes_carry_on_and_repairs_correct_them():
    problem = synthetic.Problem(start=7, ops=(("+", 5), ("*", 3), ("-", 4)), level=3)
    attempt = synthetic.attempt_with_mistake(problem, 1, 37)
    assert attempt.text == "7+5=12. 12*3=37. 37-4=33. \\boxed{33}" and attempt.answer == 33
    unboxed = synthetic.attempt_with_mistake(problem, 0, 13, boxed=False)
    assert unboxed.text == "7+5=13. 13*3=39. 39-4=35. The result is 35." and not unboxed.boxed
    assert problem.solution(boxed=False) == synthetic.unboxed_solution(problem) == (
        "7+5=12. 12*3=36. 36-4=32. The result is 32.")
    assert [problem.line(i) for i in range(3)] == ["7+5", "12*3", "36-4"]
    rng = np.random.default_rng(0)
    avoid = []
    for _ in range(5):
        mistake = synthetic.random_mistake(problem, rng, avoid=avoid)
        assert mistake not in avoid and mistake[1] != problem.values[mistake[0]]
        assert synthetic.attempt_with_mistake(problem, *mistake).answer != problem.answer
        avoid.append(mistake)
