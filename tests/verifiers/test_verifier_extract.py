import time

import pytest

from rl_reason.verifiers import cut_after_first_box, extract_answer


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so the answer is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("first \\boxed{1}, then \\boxed{2}", "2"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\boxed{ \\dfrac{a}{b} }", "\\dfrac{a}{b}"),
        ("\\fbox{7}", "7"),
        ("\\boxed {8}", "8"),
        ("the answer is \\boxed 5.", "5"),
        ("$\\boxed 5$", "5"),
        ("\\boxed{\\boxed{5}}", "5"),
        ("\\boxed{3} then truncated \\boxed{4", "3"),
        ("put it in \\boxed{} ... \\boxed{9}", "9"),
        ("\\boxed{9} ... \\boxed{}", "9"),
        ("\\boxed{\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}}", "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}"),
        ("reasoning\nAnswer: 42\n", "42"),
        ("Answer: 1\nmore work\nFinal Answer: 2", "2"),
        ("**Final Answer:** $\\frac12$.", "\\frac12"),
        ("## Answer: x = 3", "x = 3"),
        ("\\boxed{10} beats\nAnswer: 11", "10"),
        ("no final answer here", None),
        ("Answer:", None),
        ("\\boxed{}", None),
        ("\\boxedx{3}", None),
        ("\\boxed", None),
        ("", None),
    ],
)
def test_extracts_last_answer(text, expected):
    assert extract_answer(text) == expected


def test_rejects_non_strings():
    with pytest.raises(TypeError, match="expects a str"):
        extract_answer(b"\\boxed{1}")


def test_surrogates_and_replacement_characters_pass_through():
    text = b"\xff\xfe \\boxed{3}".decode("utf-8", "surrogateescape") + "\ud800\ufffd"
    assert extract_answer(text) == "3"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("x" * 1_000_000 + "\\boxed{5}", "5"),
        ("\\boxed" + "{" * 1_000_000, None),
        ("\\boxed" + "{" * 300_000 + "}" * 300_000, "{" * 299_999 + "}" * 299_999),
        ("\\boxed{" * 150_000, None),
        ("\\" * 1_000_000, None),
        (" " * 1_000_000 + "answer", None),
        ("answer:\n" * 100_000 + "Answer" + " " * 500_000, None),
    ],
    ids=["long", "open-braces", "nested", "many-boxes", "backslashes", "spaces", "answer-lines"],
)
def test_pathological_text_is_linear(text, expected):
    # Robustness bound: a quadratic scan of these inputs would take minutes.
    start = time.monotonic()
    assert extract_answer(text) == expected
    assert time.monotonic() - start < 5.0


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3+4=7. \\boxed{7} and then more \\boxed{8}", "3+4=7. \\boxed{7}"),
        ("\\boxed{\\frac{1}{2}} tail", "\\boxed{\\frac{1}{2}}"),
        ("\\boxed{\\{1, 2\\}} tail", "\\boxed{\\{1, 2\\}}"),
        ("put it in \\boxed{} ... \\boxed{9}. Done", "put it in \\boxed{} ... \\boxed{9}"),
        ("the answer is \\boxed 5. Then \\boxed{6}", "the answer is \\boxed 5."),
        ("\\boxed{3 never closes \\boxed{4} x", "\\boxed{3 never closes \\boxed{4}"),
        ("\\fbox{2}\\boxed{3}", "\\fbox{2}"),
        ("no box at all", "no box at all"),
        ("truncated \\boxed{1", "truncated \\boxed{1"),
        ("", ""),
    ],
)
def test_cut_after_first_box(text, expected):
    cut = cut_after_first_box(text)
    assert cut == expected
    # The cut attempt's answer is the first answer of the whole text.
    assert extract_answer(cut) == extract_answer(expected)


def test_cut_after_first_box_is_linear():
    text = "\\boxed{" * 200_000 + "\\boxed{1}" + "}" * 10
    start = time.perf_counter()
    assert cut_after_first_box(text).endswith("\\boxed{1}")
    assert time.perf_counter() - start < 2.0
