"""k attempts with feedback, on scripted responses: what the conversation keeps, which
feedback follows, and the metrics worked out by hand."""

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
                            attempt_temperature=0.4, max_new_tokens=16)
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
    settings = EvalSettings(num_samples=0, attempts=2, max_new_tokens=16)
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
