"""k attempts with feedback: multi-attempt RL's "solved within k attempts" and R3L's
"success within 3 attempts" (docs/methods.md, sections 2 and 3).

An episode per problem, built exactly as in training (rl_reason/episodes.py):
token ids as sampled, an attempt is the response up to its first complete box (what
follows the box is not part of it), feedback turns cut from the chat template, and one
budget of max_new_tokens for all attempts of the episode (feedback tokens are not
charged). A correct attempt ends the episode; after a wrong one (or one without an
answer, which also uses up an attempt) a feedback turn follows, up to
settings.attempts attempts, while budget remains:

    multi_attempt  system prompt announcing K attempts + question, then
                   "incorrect, you have k attempts left" user turns
    verifier       the plain prompt, then R3L's "Your answer X does not match" turns

Each round generates the next attempt of every live episode, each row with its own
remaining budget. An episode whose context plus remaining budget no longer fits the
model's context stops there, unsolved, and is counted in `attempts_context_overflow`.
"""

from __future__ import annotations

import jax

from rl_reason import evaluation_metrics
from rl_reason.data import templates
from rl_reason.evaluation.session import EvalSession
from rl_reason.episodes import ChatTurns, Episode, attempt_length, new_attempt


def first_turns(question: str, feedback: str, num_attempts: int) -> list[dict]:
    """The conversation an episode starts from."""
    if feedback == "multi_attempt":
        return templates.multi_attempt_prompt(question, num_attempts)
    if feedback == "verifier":
        return templates.plain_prompt(question)
    raise ValueError(f"unknown attempt feedback {feedback!r}")


def feedback_turn(feedback: str, attempts_left: int, extracted: str | None) -> dict:
    """The user turn after a wrong attempt, when attempts remain."""
    if feedback == "multi_attempt":
        return {"role": "user", "content": templates.attempt_feedback(attempts_left)}
    if feedback == "verifier":
        return {"role": "user", "content": templates.verifier_feedback(extracted)}
    raise ValueError(f"unknown attempt feedback {feedback!r}")


def evaluate_attempts(session: EvalSession, rng: jax.Array) -> dict[str, float]:
    """attempts@k for k = 1..K, the answer-repeat rate (evaluation_metrics.attempt_metrics)
    and the context-overflow count, over session.records; each attempt is logged as a
    generation of mode "attempts"."""
    settings = session.settings
    K, feedback = settings.attempts, settings.attempt_feedback
    turns = ChatTurns(session.tokenizer)
    episodes = [Episode.start(r, first_turns(r.problem, feedback, K), turns,
                              budget=settings.max_new_tokens, max_attempts=K)
                for r in session.records]
    live = list(range(len(episodes)))
    overflow = 0
    for attempt in range(1, K + 1):
        fits = [i for i in live
                if len(episodes[i].context()) + episodes[i].remaining <= session.context_limit]
        overflow += len(live) - len(fits)
        if not fits:
            break
        rows = session.generate([episodes[i].context() for i in fits],
                                budgets=[episodes[i].remaining for i in fits],
                                temperature=settings.attempt_temperature,
                                rng=jax.random.fold_in(rng, attempt))
        cuts = [attempt_length(session.tokenizer, ids) for ids, _ in rows]
        # Logged per attempt: its own tokens, and whether it ran out of tokens before a box.
        results = session.score("attempts", fits, [text for _, text in cuts],
                                [(ids[:n], truncated and n == len(ids))
                                 for (ids, truncated), (n, _) in zip(rows, cuts)],
                                attempt=attempt)
        live = []
        for i, (ids, truncated), (n, text), result in zip(fits, rows, cuts, results):
            episode = episodes[i]
            episode.add_attempt(new_attempt(ids, n, text, truncated=truncated,
                                            status=result.status, extracted=result.extracted))
            if not episode.done:
                left = K - len(episode.attempts)
                episode.add_feedback(turns.feedback(
                    episode.messages, feedback_turn(feedback, left, result.extracted)))
                live.append(i)
    metrics = evaluation_metrics.attempt_metrics(
        [[(a.extracted, a.correct) for a in e.attempts] for e in episodes], K)
    metrics["attempts_context_overflow"] = overflow
    return metrics
