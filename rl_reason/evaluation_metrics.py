"""Evaluation metrics: pass@k, avg@k, maj@k over n samples per problem, and the
multi-attempt metrics over episodes (attempts@k, answer-repeat rate).

Inputs are per problem, in sampling order: `correct[p][i]` says whether sample i of
problem p was verified correct, `answers[p][i]` is its extracted answer (None when
it gave none). Every metric is averaged over problems and returned as a fraction.

- pass@k: the unbiased estimator 1 - C(n-c, k) / C(n, k) of "at least one of k
  samples is correct" from n >= k samples with c correct (Chen et al., 2021),
  computed as a product so that large n cannot overflow.
- avg@k: mean accuracy of the first k samples (the usual "avg@k": k samples, mean
  correctness). With k = n it uses every sample and has the lowest variance.
- maj@k: the most common extracted answer among the first k samples is the
  prediction; it scores its sample's correctness. Answers are compared as strings
  after a light LaTeX normalisation (spacing, \\left/\\right, \\dfrac/\\tfrac), so
  equal values written differently (0.5 vs \\frac12) are separate votes. Ties go to
  the answer that appeared first; a problem whose k samples gave no answer scores 0.

Episodes (`attempt_metrics`): per problem, the attempts made in order as (extracted
answer, correct); a correct attempt ends its episode, so every attempt but the last
was rejected.
- attempts@k: share of problems solved within the first k attempts.
- answer-repeat rate: among attempts 2, 3, ... that give an answer, the share whose
  answer (normalised as for maj@k) equals one rejected earlier in the same episode:
  whether the model uses the feedback or says the same thing again.
"""

import collections
from typing import Sequence


def _check_k(k: int, n: int, what: str) -> None:
    if not 1 <= k <= n:
        raise ValueError(f"{what} needs 1 <= k <= n samples per problem, got k={k}, n={n}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with n samples of which c are correct."""
    _check_k(k, n, "pass@k")
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n, got c={c}, n={n}")
    if n - c < k:
        return 1.0  # Every k-subset holds a correct sample.
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
    fail_all = 1.0
    for i in range(n - c + 1, n + 1):
        fail_all *= 1.0 - k / i
    return 1.0 - fail_all


def _sample_counts(correct: Sequence[Sequence[bool]]) -> int:
    if not correct:
        raise ValueError("no problems to score")
    sizes = {len(samples) for samples in correct}
    if len(sizes) != 1:
        raise ValueError(f"every problem needs the same number of samples, got sizes {sorted(sizes)}")
    return sizes.pop()


def mean_pass_at_k(correct: Sequence[Sequence[bool]], k: int) -> float:
    n = _sample_counts(correct)
    return sum(pass_at_k(n, sum(map(bool, samples)), k) for samples in correct) / len(correct)


def avg_at_k(correct: Sequence[Sequence[bool]], k: int) -> float:
    n = _sample_counts(correct)
    _check_k(k, n, "avg@k")
    return sum(sum(map(bool, samples[:k])) / k for samples in correct) / len(correct)


def normalize_answer(answer: str) -> str:
    """Vote key for maj@k: spacing and purely presentational LaTeX removed."""
    key = answer.replace("\\left", "").replace("\\right", "")
    key = key.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return "".join(key.split()).removesuffix(".")


def majority_answer(answers: Sequence[str | None]) -> int | None:
    """Index of the first sample carrying the most common answer, None if none answered."""
    votes: dict[str, list[int]] = collections.defaultdict(list)
    for index, answer in enumerate(answers):
        if answer is not None and normalize_answer(answer):
            votes[normalize_answer(answer)].append(index)
    if not votes:
        return None
    # dicts keep insertion order and max() keeps the first maximum: first-seen wins ties.
    return max(votes.values(), key=len)[0]


def maj_at_k(answers: Sequence[Sequence[str | None]], correct: Sequence[Sequence[bool]], k: int) -> float:
    n = _sample_counts(correct)
    _check_k(k, n, "maj@k")
    if len(answers) != len(correct) or any(len(a) != len(c) for a, c in zip(answers, correct)):
        raise ValueError("answers and correct must have the same shape")
    total = 0.0
    for problem_answers, problem_correct in zip(answers, correct):
        winner = majority_answer(problem_answers[:k])
        total += float(winner is not None and bool(problem_correct[winner]))
    return total / len(correct)


def sample_metrics(
    answers: Sequence[Sequence[str | None]], correct: Sequence[Sequence[bool]], ks: Sequence[int]
) -> dict[str, float]:
    """{"avg@n", "pass@k", "avg@k", "maj@k" for each k in ks}; n is the samples per problem."""
    n = _sample_counts(correct)
    metrics = {f"avg@{n}": avg_at_k(correct, n)}
    for k in ks:
        metrics[f"pass@{k}"] = mean_pass_at_k(correct, k)
        metrics[f"avg@{k}"] = avg_at_k(correct, k)
        metrics[f"maj@{k}"] = maj_at_k(answers, correct, k)
    return metrics


def _vote_key(answer: str | None) -> str | None:
    key = normalize_answer(answer) if answer is not None else ""
    return key or None


def attempt_metrics(episodes: Sequence[Sequence[tuple[str | None, bool]]],
                    max_attempts: int) -> dict[str, float]:
    """{"attempts@k" for k = 1..max_attempts, "attempts_answer_repeat_rate",
    "attempts_repeated_answers", "attempts_later_answers"} (the last two are the rate's
    numerator and denominator; the rate is 0 when no later attempt gave an answer)."""
    if not episodes:
        raise ValueError("no episodes to score")
    if max_attempts < 1 or any(len(e) > max_attempts for e in episodes):
        raise ValueError(f"every episode needs at most max_attempts={max_attempts} >= 1 attempts")
    if any(correct for episode in episodes for _, correct in episode[:-1]):
        raise ValueError("a correct attempt must end its episode")
    solved_at = [next((i + 1 for i, (_, correct) in enumerate(e) if correct), None)
                 for e in episodes]
    metrics = {f"attempts@{k}": sum(s is not None and s <= k for s in solved_at) / len(episodes)
               for k in range(1, max_attempts + 1)}
    repeated = later = 0
    for episode in episodes:
        rejected: set[str] = set()
        for attempt, (answer, _) in enumerate(episode):
            key = _vote_key(answer)
            if key is None:
                continue
            if attempt > 0:
                later += 1
                repeated += key in rejected
            rejected.add(key)
    metrics["attempts_answer_repeat_rate"] = repeated / later if later else 0.0
    metrics["attempts_repeated_answers"] = repeated
    metrics["attempts_later_answers"] = later
    return metrics
