import math
from fractions import Fraction

import pytest

from rl_reason.evaluation_metrics import (
    attempt_metrics,
    avg_at_k,
    maj_at_k,
    majority_answer,
    mean_pass_at_k,
    normalize_answer,
    pass_at_k,
    sample_metrics,
)

T, F = True, False


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (8, 3, 4, 1 - 5 / 70),  # 1 - C(5,4)/C(8,4)
        (4, 1, 1, 0.25),  # pass@1 is c/n
        (10, 0, 3, 0.0),
        (10, 8, 3, 1.0),  # fewer than k wrong samples: always passes
        (3, 3, 3, 1.0),
        (1, 0, 1, 0.0),
    ],
)
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_large_n_matches_exact_binomials():
    n, c, k = 1024, 17, 256
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12)


@pytest.mark.parametrize("n, c, k", [(4, 1, 5), (4, 1, 0), (4, 5, 1), (4, -1, 1)])
def test_pass_at_k_rejects_impossible_inputs(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_mean_pass_at_k_averages_problems():
    # Problem 1: 1 - C(3,2)/C(4,2) = 1/2. Problem 2: 1 - C(2,2)/C(4,2) = 5/6.
    assert mean_pass_at_k([[T, F, F, F], [T, T, F, F]], 2) == pytest.approx(2 / 3)


def test_avg_at_k_uses_first_k_samples():
    correct = [[T, T, F, F], [F, T, F, T]]
    assert avg_at_k(correct, 2) == pytest.approx((1.0 + 0.5) / 2)
    assert avg_at_k(correct, 4) == pytest.approx(0.5)
    assert avg_at_k(correct, 1) == pytest.approx(0.5)


def test_maj_at_k_with_deterministic_ties():
    answers = [["1", "2", "2", "1"]]
    correct = [[T, F, F, T]]
    assert maj_at_k(answers, correct, 3) == 0.0  # "2" has two of three votes
    assert maj_at_k(answers, correct, 4) == 1.0  # 2-2 tie goes to the first seen, "1"
    assert majority_answer(["b", "a", "a", "b"]) == 0
    assert majority_answer(["a", None, "b", "b"]) == 2


def test_maj_at_k_normalises_latex_and_skips_missing_answers():
    assert normalize_answer("\\left( \\dfrac{1}{2}, 3 \\right)") == "(\\frac{1}{2},3)"
    answers = [["0.5", "\\dfrac{1}{2}", "\\frac{1}{2}"], [None, None, None], [None, "7", None]]
    correct = [[T, T, T], [F, F, F], [F, T, F]]
    assert majority_answer(answers[0]) == 1
    assert majority_answer(answers[1]) is None
    assert maj_at_k(answers, correct, 3) == pytest.approx(2 / 3)


def test_sample_metrics_keys_and_values():
    answers = [["3", "4"], ["5", "5"]]
    correct = [[T, F], [F, F]]
    assert sample_metrics(answers, correct, [1, 2]) == pytest.approx(
        {"avg@2": 0.25, "pass@1": 0.25, "avg@1": 0.5, "maj@1": 0.5, "pass@2": 0.5, "maj@2": 0.5}
    )


def test_shape_errors():
    with pytest.raises(ValueError, match="same number of samples"):
        avg_at_k([[T], [T, F]], 1)
    with pytest.raises(ValueError, match="no problems"):
        mean_pass_at_k([], 1)
    with pytest.raises(ValueError, match="same shape"):
        maj_at_k([["1"]], [[T], [F]], 1)


def test_attempt_metrics_by_hand():
    episodes = [
        [("7", T)],                                   # solved at 1
        [("12", F), (" 12 ", F), ("10", T)],          # a repeat (spacing ignored), solved at 3
        [("\\dfrac12", F), (None, F), ("\\frac12", F)],  # no answer skipped; \dfrac = \frac
        [("4", F), ("5", F), ("6", F)],               # three different wrong answers
        [],                                           # overflowed before its first attempt
    ]
    metrics = attempt_metrics(episodes, 3)
    assert metrics == {
        "attempts@1": 1 / 5, "attempts@2": 1 / 5, "attempts@3": 2 / 5,
        # Later attempts with an answer: " 12 " (repeat), "10", \frac12 (repeat), "5", "6".
        "attempts_answer_repeat_rate": 2 / 5, "attempts_repeated_answers": 2,
        "attempts_later_answers": 5}


def test_attempt_metrics_repeat_rate_without_later_answers_is_zero():
    metrics = attempt_metrics([[("3", T)], [("4", F), (None, F)]], 2)
    assert metrics["attempts_answer_repeat_rate"] == 0.0 and metrics["attempts_later_answers"] == 0
    assert (metrics["attempts@1"], metrics["attempts@2"]) == (0.5, 0.5)


@pytest.mark.parametrize("episodes, max_attempts, message", [
    ([], 2, "no episodes"),
    ([[("1", F), ("2", F), ("3", F)]], 2, "at most max_attempts=2"),
    ([[("1", T), ("2", F)]], 2, "a correct attempt must end its episode"),
])
def test_attempt_metrics_rejects_impossible_episodes(episodes, max_attempts, message):
    with pytest.raises(ValueError, match=message):
        attempt_metrics(episodes, max_attempts)
