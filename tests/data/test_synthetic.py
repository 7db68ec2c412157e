"""The embedded arithmetic task: determinism, disjoint splits, verifiable answers,
the difficulty knob, and the warm-start conversations."""

import re

import numpy as np
import pytest

from rl_reason.data import Record, problem_id, synthetic, templates
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
    assert synthetic.warm_start_conversations(40, seed=5) == synthetic.warm_start_conversations(40, seed=5)
    assert synthetic.warm_start_conversations(40, seed=5) != synthetic.warm_start_conversations(40, seed=6)


def test_train_and_held_out_never_overlap():
    train = {r.problem for seed in (0, 1) for r in synthetic.train_records(3000, seed=seed)}
    held_out = {r.problem for seed in (0, 1) for r in synthetic.held_out_records(1000, seed=seed)}
    assert len(held_out) > 1000 and len(train) > 3000  # enough distinct problems to mean something
    assert not train & held_out
    assert all(synthetic.is_held_out(q) for q in held_out)
    assert not any(synthetic.is_held_out(q) for q in train)
    # The warm-start data is drawn from the training split only.
    for conversation in synthetic.warm_start_conversations(300, seed=0):
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


def test_warm_start_covers_every_format_and_trains_only_correct_answers():
    conversations = synthetic.warm_start_conversations(600, seed=0)
    assert {c.kind for c in conversations} == set(synthetic.WARM_START_KINDS)
    verifier = ExactIntVerifier()
    for c in conversations:
        assert len(c.messages) == len(c.trained)
        assert c.trained[-1] and c.messages[-1]["role"] == "assistant"
        # Only assistant turns are trained; wrong attempts appear as untrained context.
        assert all(m["role"] == "assistant" for m, t in zip(c.messages, c.trained) if t)
        assert sum(c.trained) == 1
        assert 0 <= c.prefix_chars < len(c.messages[-1]["content"])
        assert (c.prefix_chars > 0) == (c.kind == "continuation")
        if c.kind == "reflection":
            steps = c.messages[0]["content"].count("feedback: ")
            report = templates.parse_reflection_report(c.messages[-1]["content"], steps)
            assert report.valid, report
        else:
            gold = str(eval(question_of(c).removeprefix("What is ").removesuffix("?")))
            [result] = verifier.verify_batch([c.messages[-1]["content"]], [gold])
            assert result.correct
    # The system prompt of a multi-attempt conversation matches its feedback turns.
    for c in conversations:
        if c.kind == "multi_attempt":
            budget = int(re.search(r"You have (\d+) attempt", c.messages[0]["content"]).group(1))
            feedback = [m["content"] for m in c.messages if m["role"] == "user"][1:]
            assert feedback == [templates.attempt_feedback(budget - i - 1) for i in range(len(feedback))]


def test_unboxed_share_ends_plain_solutions_without_the_box():
    none = synthetic.warm_start_conversations(400, seed=3)
    half = synthetic.warm_start_conversations(400, seed=3, unboxed_share=0.5)
    every = synthetic.warm_start_conversations(400, seed=3, unboxed_share=1.0)
    assert not any(c.kind == "plain_unboxed" for c in none)
    # Multi-step solutions only: one-step answers stay boxed.
    kept = [c for c in every if c.kind == "plain"]
    assert kept and all(len(_problem_of(question_of(c)).ops) == 1 for c in kept)
    unboxed = [c for c in half if c.kind == "plain_unboxed"]
    boxed = [c for c in half if c.kind == "plain"]
    multi_step = [c for c in boxed if len(_problem_of(question_of(c)).ops) > 1]
    assert 0.35 < len(unboxed) / (len(unboxed) + len(multi_step)) < 0.65
    verifier = ExactIntVerifier()
    for c in unboxed:
        response = c.messages[-1]["content"]
        assert c.trained == (False, True) and "\\boxed" not in response
        # The working is the worked solution's; only the last sentence differs.
        solution = _problem_of(question_of(c)).solution()
        assert response == re.sub(r"\\boxed\{(\d+)\}$", r"The result is \1.", solution)
        assert verifier.verify_batch([response], [response.split()[-1][:-1]])[0].status == "no_answer"
    assert all(c.messages[-1]["content"] == _problem_of(question_of(c)).solution() for c in boxed)
    with pytest.raises(ValueError, match="unboxed_share"):
        synthetic.warm_start_conversations(4, unboxed_share=1.5)


def _problem_of(question: str) -> synthetic.Problem:
    """A question's problem, read back from its text (evaluated left to right)."""
    tokens = re.findall(r"\d+|[-+*]", question)
    ops = tuple((tokens[i], int(tokens[i + 1])) for i in range(1, len(tokens), 2))
    return synthetic.Problem(start=int(tokens[0]), ops=ops, level=0)
