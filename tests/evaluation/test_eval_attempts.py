"""k attempts with feedback, on scripted responses: what the conversation keeps, which
feedback follows, the episode's one shared token budget, and the metrics worked out by
hand. (Token counts below are the tiny test tokenizer's: digits, punctuation and most
letters are one token each.)"""

import jax

from rl_reason.data import record as record_lib
from rl_reason.data import templates
from rl_reason.evaluation import attempts
from rl_reason.evaluation.settings import EvalSettings

KEY = jax.random.PRNGKey(0)


def records(*pairs):
    return [record_lib.Record(problem=q, answer=a, id=record_lib.problem_id(q), source="test")
            for q, a in pairs]


PROBLEMS = records(("What is 3+4?", "7"), ("What is 2*5?", "10"), ("What is 9-1?", "8"))


def test_verifier_feedback_episodes(scripted_session):
    settings = EvalSettings(num_samples=0, attempts=3, attempt_feedback="verifier",
                            attempt_temperature=0.4, max_new_tokens=64)
    session = scripted_session(PROBLEMS, settings, [
        # attempt 1: problems 0, 1, 2
        "3+4=7. \\boxed{7} and then \\boxed{9}",   # correct (the later box is cut off)
        "2*5=12. \\boxed{12} extra words",         # wrong: 12
        "9-1=7. \\boxed{7}",                       # wrong: 7
        # attempt 2: problems 1, 2
        "2*5=12. \\boxed{ 12 }",                   # wrong, repeats 12
        "I am not sure",                           # no answer
        # attempt 3: problems 1, 2
        "2*5=10. \\boxed{10}",                     # correct
        "9-1=6. \\boxed{6}",                       # wrong, a new answer
    ])
    metrics = attempts.evaluate_attempts(session, rng=KEY)
    assert metrics == {
        "attempts@1": 1 / 3, "attempts@2": 1 / 3, "attempts@3": 2 / 3,
        # Later attempts with an answer: 12 (a repeat), 10, 6.
        "attempts_answer_repeat_rate": 1 / 3, "attempts_repeated_answers": 1,
        "attempts_later_answers": 3, "attempts_context_overflow": 0}
    assert [len(call["prompts"]) for call in session.calls] == [3, 2, 2]
    # One budget per episode, shared by its attempts: attempt 1 of problem 1 is charged
    # its 13 tokens up to the box (the 13 after it are not), problem 2's 11 + end-of-turn;
    # then 15 + 1 and 13 + 1.
    assert [call["budgets"] for call in session.calls] == [[64, 64, 64], [51, 52], [35, 38]]
    assert {call["temperature"] for call in session.calls} == {0.4}
    first, retry_1, retry_2 = session.calls[0]["prompts"][1], *session.calls[2]["prompts"]
    assert "attempts" not in first            # R3L's episodes start from the plain prompt
    # The attempt kept in the conversation ends at its first box.
    assert "2*5=12. \\boxed{12}<|im_end|>" in retry_1 and "extra words" not in retry_1
    assert retry_1.count("Incorrect. Your answer 12 does not match. Please try again.") == 2
    assert "Incorrect. Your answer 7 does not match." in retry_2
    assert "Your response has no final answer in \\boxed{}. Please try again." in retry_2
    rows = session.generations
    assert [(r["problem"], r["attempt"], r["status"]) for r in rows] == [
        (0, 1, "correct"), (1, 1, "wrong"), (2, 1, "wrong"), (1, 2, "wrong"),
        (2, 2, "no_answer"), (1, 3, "correct"), (2, 3, "wrong")]
    assert rows[0]["response"] == "3+4=7. \\boxed{7}" and rows[0]["mode"] == "attempts"
    assert session.statuses == {"correct": 2, "wrong": 4, "no_answer": 1, "timeout": 0,
                                "error": 0}


def test_multi_attempt_feedback_announces_the_budget(scripted_session):
    settings = EvalSettings(num_samples=0, attempts=2, max_new_tokens=32)
    session = scripted_session(PROBLEMS[:1], settings,
                               ["3+4=8. \\boxed{8}", "3+4=7. \\boxed{7}"])
    metrics = attempts.evaluate_attempts(session, rng=KEY)
    assert (metrics["attempts@1"], metrics["attempts@2"]) == (0.0, 1.0)
    assert metrics["attempts_later_answers"] == 1 and metrics["attempts_answer_repeat_rate"] == 0.0
    assert session.calls[0]["temperature"] == 0.0            # greedy by default
    retry = session.calls[1]["prompts"][0]
    assert "You have 2 attempts to solve the problem." in retry
    assert ("Your answer is incorrect. You have 1 attempt left. Please try an alternative "
            "approach.") in retry


def test_a_conversation_that_outgrows_the_context_counts_as_overflow(scripted_session, tiny_tokenizer):
    settings = EvalSettings(num_samples=0, attempts=3, max_new_tokens=16)
    first = attempts.first_turns(PROBLEMS[0].problem, "multi_attempt", 3)
    room = len(templates.encode_prompt(tiny_tokenizer, first)) + settings.max_new_tokens
    # The first attempt fits exactly; the second prompt (first + attempt + feedback) cannot.
    session = scripted_session(PROBLEMS[:1], settings, ["3+4=8. \\boxed{8}"], context=room)
    metrics = attempts.evaluate_attempts(session, rng=KEY)
    assert metrics["attempts_context_overflow"] == 1
    assert metrics["attempts@3"] == 0.0 and len(session.calls) == 1


def test_the_shared_budget_running_out_mid_attempt_ends_the_episode(scripted_session):
    settings = EvalSettings(num_samples=0, attempts=3, max_new_tokens=20)
    # Attempt 1: 11 tokens and the end-of-turn, wrong; 8 of the budget left, so
    # attempt 2 is cut after "3+4=7. \\boxed" (8 tokens, no answer): out of tokens, no
    # attempt 3.
    session = scripted_session(PROBLEMS[:1], settings,
                               ["3+4=8. \\boxed{8}", "3+4=7. \\boxed{7}"])
    metrics = attempts.evaluate_attempts(session, rng=KEY)
    assert [call["budgets"] for call in session.calls] == [[20], [8]]
    assert metrics["attempts@3"] == 0.0 and metrics["attempts_later_answers"] == 0
    last = session.generations[-1]
    assert (last["attempt"], last["status"], last["num_tokens"], last["truncated"]) == (
        2, "no_answer", 8, True)
    assert last["response"] == "3+4=7. \\boxed"


def test_the_multi_attempt_config_evaluates_k_1_to_7(scripted_session):
    """configs/multi_attempt.py evaluates as the paper does: up to 7 attempts (training
    draws N from 1..5), announced in the system prompt; a problem solved at the 7th
    attempt counts in attempts@7 only."""
    from configs import multi_attempt

    settings = EvalSettings.from_config(multi_attempt.get_config(""))
    assert (settings.attempts, settings.attempt_feedback, settings.attempt_temperature) == (
        7, "multi_attempt", 0.0)
    wrong = [f"\\boxed{{{n}}}" for n in range(1, 7)]
    # The test tokenizer spends many tokens on the feedback turns' words: a context
    # long enough for seven turns.
    session = scripted_session(PROBLEMS[:1], settings, wrong + ["3+4=7. \\boxed{7}"],
                               context=4096)
    metrics = attempts.evaluate_attempts(session, rng=KEY)
    assert [metrics[f"attempts@{k}"] for k in range(1, 8)] == [0.0] * 6 + [1.0]
    assert metrics["attempts_context_overflow"] == 0
    assert "attempts@8" not in metrics and len(session.calls) == 7
    assert "You have 7 attempts to solve the problem." in session.calls[0]["prompts"][0]
    assert "You have 1 attempt left." in session.calls[6]["prompts"][0]
