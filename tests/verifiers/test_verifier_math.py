import pytest

from rl_reason.verifiers import (
    STATUSES,
    ExactIntVerifier,
    MathVerifier,
    VerifyResult,
    count_statuses,
    make_verifier,
    parse_integer,
    verify_batch,
)


@pytest.fixture(scope="module")
def verifier():
    with MathVerifier(num_workers=2, timeout_s=5.0) as shared:
        yield shared


EQUIVALENT = [
    ("\\boxed{1/2}", "\\frac{1}{2}"),
    ("\\boxed{0.5}", "\\frac{1}{2}"),
    ("\\boxed{\\frac12}", "\\frac{1}{2}"),
    ("\\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{\\frac{1}{2}}", "0.5"),
    ("\\boxed{\\{2, 1\\}}", "\\{1,2\\}"),
    ("\\boxed{(0, 1]}", "(0,1]"),
    ("\\boxed{\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}"),
    ("\\boxed{10}", "10\\text{ cm}"),
    ("\\boxed{\\text{(B)}}", "B"),
    ("\\boxed{\\sqrt{18}}", "3\\sqrt{2}"),
    ("\\boxed{x = 5}", "5"),
    ("\\boxed{1,000}", "1000"),
    ("Answer: 1 + x^2", "x^2+1"),
    ("\\boxed{7}", 7),
    ("\\boxed{3}", "$3$"),
]

DIFFERENT = [
    ("\\boxed{[0, 1]}", "(0,1]"),
    ("\\boxed{\\frac{1}{3}}", "\\frac{1}{2}"),
    ("\\boxed{\\{1, 3\\}}", "\\{1,2\\}"),
    ("\\boxed{-5}", "5"),
]


def test_equivalent_forms_are_correct(verifier):
    responses, answers = zip(*EQUIVALENT)
    results = verifier.verify_batch(list(responses), list(answers))
    assert [(result.status, result.reward) for result in results] == [("correct", 1.0)] * len(EQUIVALENT)


def test_different_answers_are_wrong(verifier):
    responses, answers = zip(*DIFFERENT)
    results = verifier.verify_batch(list(responses), list(answers))
    assert [(result.status, result.reward) for result in results] == [("wrong", 0.0)] * len(DIFFERENT)
    assert results[0].extracted == "[0, 1]"


def test_statuses_and_counts(verifier):
    before = dict(verifier.counts)
    results = verifier.verify_batch(
        ["so \\boxed{4}", "I give up", "\\boxed{5}", "\\boxed{\\frac{}{}}", "\\boxed{4}"],
        ["4", "4", "4", "4", ""],
    )
    assert [result.status for result in results] == ["correct", "no_answer", "wrong", "wrong", "error"]
    assert results[1].extracted is None
    assert "could not be parsed" in results[4].detail
    assert count_statuses(results) == {"correct": 1, "wrong": 2, "no_answer": 1, "timeout": 0, "error": 1}
    assert {status: verifier.counts[status] - before[status] for status in STATUSES} == count_statuses(results)


def test_empty_batch_and_input_checks(verifier):
    assert verifier.verify_batch([], []) == []
    with pytest.raises(ValueError, match="2 responses but 1 answers"):
        verifier.verify_batch(["a", "b"], ["1"])
    with pytest.raises(TypeError, match="response 0 is bytes"):
        verifier.verify_batch([b"\\boxed{1}"], ["1"])
    with pytest.raises(TypeError, match="answer 0 is float"):
        verifier.verify_batch(["\\boxed{1}"], [1.0])


def test_module_level_verify_batch():
    results = verify_batch(["\\boxed{\\frac{2}{4}}", "nothing"], ["1/2", "1"], timeout_s=5.0, num_workers=1)
    assert [result.status for result in results] == ["correct", "no_answer"]


@pytest.mark.parametrize(
    "text, value",
    [("42", 42), (" -7 ", -7), ("+3", 3), ("1,234,567", 1234567), ("007", 7), ("12,34", None), ("4.0", None),
     ("1,2", None), ("four", None), ("", None), ("--1", None), ("1" * 5000, None)],
)
def test_parse_integer(text, value):
    assert parse_integer(text) == value


def test_exact_int_verifier():
    verifier = make_verifier("exact_int", timeout_s=1.0)
    assert isinstance(verifier, ExactIntVerifier)
    results = verifier.verify_batch(
        ["\\boxed{12}", "Answer: 1,000", "\\boxed{12.0}", "no answer", "\\boxed{-3}"], ["12", 1000, "12", "5", "-3"]
    )
    assert [result.status for result in results] == ["correct", "correct", "wrong", "no_answer", "correct"]
    assert [result.reward for result in results] == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert results[2].extracted == "12.0"
    assert verifier.counts == {"correct": 3, "wrong": 1, "no_answer": 1, "timeout": 0, "error": 0}
    with pytest.raises(ValueError, match="gold answer 0 .* not an integer"):
        verifier.verify_batch(["\\boxed{1}"], ["1/2"])


def test_factory_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown verifier 'sympy'.*exact_int.*math"):
        make_verifier("sympy")


def test_result_validation():
    with pytest.raises(ValueError, match="unknown verifier status"):
        VerifyResult(0.0, "maybe")
    with pytest.raises(ValueError, match="must carry reward 0"):
        VerifyResult(1.0, "timeout")
    assert VerifyResult(1.0, "correct", "3").correct
