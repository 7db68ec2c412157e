"""k attempts with feedback: multi-attempt RL's "solved within k attempts" and R3L's
"success within 3 attempts" (docs/methods.md, sections 2 and 3).

An episode is one conversation per problem. The model answers; an attempt is its
response up to the first complete box (rl_reason.verifiers.cut_after_first_box: what
it wrote after that box is not part of the attempt), and that attempt is what is
scored and what the conversation keeps. A correct attempt ends the episode; after a
wrong one (or one without an answer, which also uses up an attempt) a feedback turn
follows, up to settings.attempts attempts:

    multi_attempt  system prompt announcing K attempts + question, then
                   "incorrect, you have k attempts left" user turns
    verifier       the plain prompt, then R3L's "Your answer X does not match" turns

Each attempt gets max_new_tokens of its own. (The multi-attempt authors' evaluation
shares one token budget across the episode, docs/methods.md; that is not modelled
here.) A conversation that no longer fits the context with max_new_tokens to spare
stops there, unsolved, and is counted in `attempts_context_overflow`.
"""

from __future__ import annotations

import jax

from rl_reason import evaluation_metrics
from rl_reason.data import templates
from rl_reason.evaluation.session import EvalSession
from rl_reason.verifiers import cut_after_first_box


def first_turns(question: str, feedback: str, num_attempts: int) -> list[dict]:
    """The conversation an episode starts from."""
    if feedback == "multi_attempt":
        return templates.multi_attempt_prompt(question, num_attempts)
    if feedback == "verifier":
        return templates.plain_prompt(question)
    raise ValueError(f"unknown attempt feedback {feedback!r}")


def feedback_turn(feedback: str, attempts_left: int, extracted: str | None) -> str:
    """The user turn after a wrong attempt, when attempts remain."""
    if feedback == "multi_attempt":
        return templates.attempt_feedback(attempts_left)
    if feedback == "verifier":
        return templates.verifier_feedback(extracted)
    raise ValueError(f"unknown attempt feedback {feedback!r}")


def evaluate_attempts(session: EvalSession, rng: jax.Array) -> dict[str, float]:
    """attempts@k for k = 1..K, the answer-repeat rate (evaluation_metrics.attempt_metrics)
    and the context-overflow count, over session.records; each attempt is logged as a
    generation of mode "attempts"."""
    settings = session.settings
    K, feedback = settings.attempts, settings.attempt_feedback
    records = session.records
    conversations = [first_turns(r.problem, feedback, K) for r in records]
    episodes: list[list[tuple[str | None, bool]]] = [[] for _ in records]
    active = list(range(len(records)))
    overflow = 0
    limit = session.context_limit - settings.max_new_tokens
    for attempt in range(1, K + 1):
        prompts = {i: templates.encode_prompt(session.tokenizer, conversations[i]) for i in active}
        fits = [i for i in active if len(prompts[i]) <= limit]
        overflow += len(active) - len(fits)
        if not fits:
            break
        rows = session.generate([prompts[i] for i in fits],
                                temperature=settings.attempt_temperature,
                                rng=jax.random.fold_in(rng, attempt))
        texts = [cut_after_first_box(session.decode(ids)) for ids, _ in rows]
        results = session.score("attempts", fits, texts, rows, attempt=attempt)
        active = []
        for i, text, result in zip(fits, texts, results):
            episodes[i].append((result.extracted, result.correct))
            if not result.correct and attempt < K:
                feedback_text = feedback_turn(feedback, K - attempt, result.extracted)
                conversations[i] = conversations[i] + [
                    {"role": "assistant", "content": text},
                    {"role": "user", "content": feedback_text}]
                active.append(i)
    metrics = evaluation_metrics.attempt_metrics(episodes, K)
    metrics["attempts_context_overflow"] = overflow
    return metrics
