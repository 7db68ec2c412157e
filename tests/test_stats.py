"""Standard errors and paired differences, checked by hand; per-problem scores from
evaluation rows agree with the logged metrics."""

import json
import math

import numpy as np
import pytest

from rl_reason import evaluation_metrics, stats


def test_mean_and_se_by_hand():
    # mean 0.5; sd (ddof 1) of [1, 0, 1, 0] = sqrt(1/3); se = sqrt(1/3) / 2
    got = stats.mean_and_se([1, 0, 1, 0])
    assert got.mean == 0.5 and got.n == 4
    assert got.se == pytest.approx(math.sqrt(1 / 3) / 2)
    assert str(got) == "0.500 ± 0.289"
    assert stats.mean_and_se({7: 0.25, 9: 0.75}).mean == 0.5
    assert math.isnan(stats.mean_and_se([1.0]).se)
    with pytest.raises(ValueError, match="non-empty"):
        stats.mean_and_se([])


def test_paired_difference_by_hand():
    before = {0: 0.0, 1: 1.0, 2: 0.0, 3: 1.0}
    after = {0: 1.0, 1: 1.0, 2: 1.0, 3: 0.0}
    # differences 1, 0, 1, -1: mean 0.25, sd sqrt(((0.75)^2 + 0.25^2 + 0.75^2 + 1.25^2) / 3)
    got = stats.paired_difference(before, after)
    assert got.mean == 0.25
    assert got.se == pytest.approx(math.sqrt((0.5625 + 0.0625 + 0.5625 + 1.5625) / 3) / 2)
    # Correlated scores: the paired SE is far below the unpaired one.
    rng = np.random.default_rng(0)
    base = rng.random(500)
    paired = stats.paired_difference(base, base + 0.05 + 0.01 * rng.normal(size=500))
    unpaired = math.hypot(stats.mean_and_se(base).se, stats.mean_and_se(base + 0.05).se)
    assert paired.mean == pytest.approx(0.05, abs=0.002) and paired.se < unpaired / 10
    with pytest.raises(ValueError, match="different problems"):
        stats.paired_difference({0: 1.0}, {1: 1.0})
    with pytest.raises(ValueError, match="before"):
        stats.paired_difference([1.0, 0.0], [1.0])


def rows(correct, answers=None, greedy=None):
    """Evaluation rows as rl_reason.evaluate writes them."""
    out = []
    for p, flags in enumerate(correct):
        if greedy is not None:
            out.append(dict(mode="greedy", problem=p, sample=0, status="correct" if greedy[p]
                            else "wrong", extracted=None))
        for j, ok in enumerate(flags):
            answer = answers[p][j] if answers else ("1" if ok else None)
            out.append(dict(mode="sample", problem=p, sample=j, extracted=answer,
                            status="correct" if ok else ("wrong" if answer else "no_answer")))
    return out


def test_per_problem_scores_match_the_logged_metrics():
    rng = np.random.default_rng(1)
    correct = (rng.random((30, 8)) < rng.random((30, 1))).tolist()
    answers = [[("7" if ok else str(rng.integers(3))) for ok in flags] for flags in correct]
    greedy = [bool(x) for x in rng.random(30) < 0.4]
    generations = rows(correct, answers, greedy)
    rng.shuffle(generations)   # order in the file does not matter
    scores = stats.per_problem_scores(generations, ks=(1, 4, 8))
    assert set(scores) == {"greedy_accuracy", "avg@1", "avg@4", "avg@8", "pass@1", "pass@4",
                           "pass@8", "maj@1", "maj@4", "maj@8"}
    logged = evaluation_metrics.sample_metrics(answers, correct, (1, 4, 8))
    for name, value in logged.items():
        assert stats.mean_and_se(scores[name]).mean == pytest.approx(value), name
    assert stats.mean_and_se(scores["greedy_accuracy"]).mean == pytest.approx(np.mean(greedy))


def test_pass_at_k_per_problem_by_hand():
    # 8 samples, 2 correct: pass@4 = 1 - C(6,4)/C(8,4) = 1 - 15/70
    scores = stats.per_problem_scores(rows([[1, 0, 0, 1, 0, 0, 0, 0]]), ks=(4,))
    assert scores["pass@4"][0] == pytest.approx(1 - 15 / 70)
    assert scores["avg@4"][0] == 0.5 and scores["avg@8"][0] == 0.25
    # Default ks: 1 and powers of two up to n.
    assert set(stats.per_problem_scores(rows([[1] * 8]))) == {
        f"{m}@{k}" for m in ("avg", "pass", "maj") for k in (1, 2, 4, 8)}
    with pytest.raises(ValueError, match="different numbers of samples"):
        stats.per_problem_scores(rows([[1, 0], [1]]))


def test_read_generations_skips_a_cut_line(tmp_path):
    path = tmp_path / "step_0.jsonl"
    path.write_text(json.dumps({"mode": "greedy", "problem": 0, "status": "correct"})
                    + '\n{"mode": "gre')
    assert stats.read_generations(path) == [{"mode": "greedy", "problem": 0, "status": "correct"}]


def test_attempt_scores_by_hand():
    # Problem 0 solved at attempt 2, problem 1 never (3 attempts), problem 2 at attempt 1.
    rows = [dict(mode="attempts", problem=p, attempt=a, status=s) for p, a, s in [
        (0, 1, "wrong"), (1, 1, "no_answer"), (2, 1, "correct"), (0, 2, "correct"),
        (1, 2, "wrong"), (1, 3, "wrong")]] + [dict(mode="greedy", problem=0, status="correct")]
    assert stats.attempt_scores(rows) == {
        "attempts@1": {0: 0.0, 1: 0.0, 2: 1.0},
        "attempts@2": {0: 1.0, 1: 0.0, 2: 1.0},
        "attempts@3": {0: 1.0, 1: 0.0, 2: 1.0}}
    assert stats.attempt_scores(rows[-1:]) == {}
