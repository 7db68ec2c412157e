"""The warm-start conversations: every prompt kind, the same format everywhere,
reflections whose step is where the episode's lasting mistake first appears, guided
retries that diverge there, and repairs after a failure prefix."""

import collections
import re

import numpy as np
import pytest

from rl_reason.data import synthetic, templates, warm_start
from rl_reason.verifiers.exact_int import ExactIntVerifier

LINE = re.compile(r"(\d+)([-+*])(\d+)=(\d+)\.")


def question_of(conversation):
    text = "\n".join(m["content"] for m in conversation.messages)
    return re.search(r"What is [^?]+\?", text).group(0)


def problem_of(question: str) -> synthetic.Problem:
    """A question's problem, read back from its text (evaluated left to right)."""
    tokens = re.findall(r"\d+|[-+*]", question)
    ops = tuple((tokens[i], int(tokens[i + 1])) for i in range(1, len(tokens), 2))
    return synthetic.Problem(start=int(tokens[0]), ops=ops, level=0)


def first_wrong_line(text: str) -> str | None:
    """The first line 'a op b=c.' of a response whose arithmetic is wrong."""
    for a, op, b, c in LINE.findall(text):
        if synthetic.apply_op(int(a), op, int(b)) != int(c):
            return f"{a}{op}{b}={c}"
    return None


def gold(conversation) -> str:
    return str(problem_of(question_of(conversation)).answer)


@pytest.fixture(scope="module")
def conversations():
    return warm_start.warm_start_conversations(3000, seed=0, unboxed_share=0.5)


def by_kind(conversations, kind):
    found = [c for c in conversations if c.kind == kind]
    assert found, kind
    return found


def test_every_kind_occurs_and_only_right_answers_are_trained(conversations):
    assert {c.kind for c in conversations} == set(warm_start.WARM_START_KINDS)
    assert sum(warm_start.WARM_START_KINDS.values()) == pytest.approx(1.0)
    verifier = ExactIntVerifier()
    for c in conversations:
        assert len(c.messages) == len(c.trained) and sum(c.trained) == 1
        assert c.trained[-1] and c.messages[-1]["role"] == "assistant"
        assert 0 <= c.prefix_chars < len(c.messages[-1]["content"])
        assert (c.prefix_chars > 0) == (c.kind in ("continuation", "failure_continuation"))
        assert not synthetic.is_held_out(question_of(c))
        if c.kind == "reflection":
            continue
        answer = c.messages[-1]["content"]
        # The trained answer's working is right (a repair's slip is in the untrained prefix).
        checked = answer[answer.index("Wait"):] if c.kind == "failure_continuation" else answer
        assert first_wrong_line(checked) is None, answer
        result = verifier.verify_batch([answer], [gold(c)])[0]
        assert result.correct == c.boxed
        if not c.boxed:
            assert answer.endswith(f"The result is {gold(c)}.") and result.status == "no_answer"


def test_the_format_is_the_same_in_every_prompt_kind(conversations):
    """Every trained answer and every attempt shown as context on a multi-step problem
    is unboxed with the same probability, drawn independently."""
    shares = {}
    for kind in warm_start.WARM_START_KINDS:
        if kind == "reflection":
            continue
        multi = [c for c in by_kind(conversations, kind)
                 if len(problem_of(question_of(c)).ops) > 1]
        shares[kind] = np.mean([c.boxed for c in multi])
        assert 0.35 < shares[kind] < 0.65, (kind, shares[kind])
    one_step = [c for c in conversations if c.kind != "reflection"
                and len(problem_of(question_of(c)).ops) == 1]
    assert one_step and all(c.boxed for c in one_step)
    # Context attempts: unboxed as often; the trained answer's format does not follow theirs.
    pairs = []
    for c in conversations:
        if c.kind not in ("multi_attempt", "r3l_episode") or len(problem_of(question_of(c)).ops) < 2:
            continue
        attempts = [m["content"] for m, t in zip(c.messages, c.trained)
                    if m["role"] == "assistant" and not t]
        pairs += [("\\boxed" in a, c.boxed) for a in attempts[-1:]]
    context_boxed = np.array([p[0] for p in pairs])
    answer_boxed = np.array([p[1] for p in pairs])
    assert len(pairs) > 200 and 0.35 < context_boxed.mean() < 0.65
    after_boxed, after_unboxed = answer_boxed[context_boxed].mean(), answer_boxed[~context_boxed].mean()
    assert abs(after_boxed - after_unboxed) < 0.15, (after_boxed, after_unboxed)


def test_feedback_matches_the_attempt_it_follows(conversations):
    for c in by_kind(conversations, "r3l_episode") + by_kind(conversations, "guided_retry"):
        for attempt, feedback in zip(c.messages[1::2], c.messages[2::2]):
            assert attempt["role"] == "assistant" and feedback["role"] == "user"
            extracted = re.search(r"\\boxed\{(\d+)\}", attempt["content"])
            text = feedback["content"].split("\n\n")[0]   # guidance follows in the last turn
            assert text == templates.verifier_feedback(extracted and extracted.group(1))
    for c in by_kind(conversations, "multi_attempt"):
        budget = int(re.search(r"You have (\d+) attempt", c.messages[0]["content"]).group(1))
        feedback = [m["content"] for m in c.messages if m["role"] == "user"][1:]
        assert feedback == [templates.attempt_feedback(budget - i - 1) for i in range(len(feedback))]


def lasting_mistake_step(attempts: list[str]) -> int:
    """Recomputed from the episode: the first attempt from which every attempt repeats
    the last attempt's first wrong line (the mistake the episode never recovers from)."""
    lines = [first_wrong_line(a) for a in attempts]
    assert all(lines), attempts
    step = len(lines) - 1
    while step > 0 and lines[step - 1] == lines[-1]:
        step -= 1
    assert lines[-1] not in lines[:step]   # it had not appeared before
    return step


def episode_attempts(reflection):
    request = reflection.messages[0]["content"]
    answers = re.findall(r"^Step \d+ answer: (.*)$", request, re.M)
    feedback = re.findall(r"^Step \d+ feedback: (.*)$", request, re.M)
    return answers, feedback


def test_a_reflection_names_the_step_where_the_lasting_mistake_first_appears(conversations):
    steps = collections.Counter()
    for c in by_kind(conversations, "reflection"):
        answers, feedback = episode_attempts(c)
        report = templates.parse_reflection_report(c.messages[-1]["content"], len(answers))
        assert report.valid and report.retry_from_step == c.retry_from_step
        problem = problem_of(question_of(c))
        if feedback[-1] == templates.CORRECT_FEEDBACK:
            assert report.retry_from_step == 0
            assert report.outcome == (templates.OUTCOME_SUCCESS if len(answers) == 1
                                      else templates.OUTCOME_INEFFICIENT)
            if len(answers) == 1:
                continue
            root = 0   # an inefficient success: the first attempt is where it went wrong
        else:
            assert len(answers) == warm_start.R3L_ATTEMPTS
            assert report.outcome == templates.OUTCOME_FAILURE
            root = lasting_mistake_step(answers)
            steps[root] += 1
        assert report.retry_from_step == root
        wrong = first_wrong_line(answers[root])
        left, value = wrong.split("=")
        right = synthetic.apply_op(*_operands(left))
        assert report.root_cause == f"In step {root} the line {wrong} is wrong; {left}={right}."
        assert str(right) in problem.solution()
    # Failed episodes spread their root over every step.
    assert set(steps) == {0, 1, 2} and min(steps.values()) > 0.2 * sum(steps.values())


def _operands(left: str):
    a, op, b = re.fullmatch(r"(\d+)([-+*])(\d+)", left).groups()
    return int(a), op, int(b)


def test_hand_checked_failed_episode_and_its_report():
    problem = synthetic.Problem(start=7, ops=(("+", 5), ("*", 3), ("-", 4)), level=3)
    rng = np.random.default_rng(0)
    for root in range(warm_start.R3L_ATTEMPTS):
        episode = warm_start.failed_episode(problem, rng, root)
        assert [a.mistake == episode.failed[-1].mistake for a in episode.failed] == [
            i >= root for i in range(warm_start.R3L_ATTEMPTS)]
        assert lasting_mistake_step([a.text for a in episode.failed]) == root
    episode = warm_start.Episode(problem, (
        synthetic.attempt_with_mistake(problem, 0, 13),
        synthetic.attempt_with_mistake(problem, 1, 37, boxed=False),
        synthetic.attempt_with_mistake(problem, 1, 37)), solved=False, root=1)
    assert episode.failed[0].text == "7+5=13. 13*3=39. 39-4=35. \\boxed{35}"
    assert episode.failed[1].text == "7+5=12. 12*3=37. 37-4=33. The result is 33."
    assert templates.format_reflection_report(warm_start.reflection_report(episode)) == (
        "Summary: No attempt found the correct answer; step 2 answered 33.\n"
        "Root cause: In step 1 the line 12*3=37 is wrong; 12*3=36.\n"
        "Outcome: failure\n"
        "Suggestion: Recompute 12*3 carefully and check every line.\n"
        "Retry from step: 1")
    replay = warm_start.r3l_replay(episode, 2)
    assert [m["content"] for m in replay[1:]] == [
        episode.failed[0].text, "Incorrect. Your answer 35 does not match. Please try again.",
        episode.failed[1].text,
        "Incorrect. Your response has no final answer in \\boxed{}. Please try again."]


def test_a_guided_retry_replays_the_attempts_before_the_root_then_solves(conversations):
    retries = by_kind(conversations, "guided_retry")
    assert {c.retry_from_step for c in retries} == {0, 1, 2}
    for c in retries:
        replayed = [m["content"] for m in c.messages[:-1] if m["role"] == "assistant"]
        assert len(replayed) == c.retry_from_step
        assert all(first_wrong_line(a) for a in replayed)
        guidance = c.messages[-2]["content"]
        assert guidance.count(templates.GUIDANCE_HEADER) == 1 and c.messages[-2]["role"] == "user"
        # The guidance names a mistake none of the replayed attempts made: the retry
        # diverges from the episode at the step the guidance points to.
        named = re.search(r"the line (\S+) is wrong", guidance).group(1)
        lines = {f"{a}{op}{b}={c}" for text in replayed for a, op, b, c in LINE.findall(text)}
        assert named not in lines
        assert first_wrong_line(c.messages[-1]["content"]) is None


def test_a_failure_continuation_repairs_the_slip_its_prefix_ends_with(conversations):
    verifier = ExactIntVerifier()
    for c in by_kind(conversations, "failure_continuation"):
        text = c.messages[-1]["content"]
        prefix, continuation = text[:c.prefix_chars], text[c.prefix_chars:]
        wrong = first_wrong_line(prefix + ".")
        assert wrong and (prefix + ".").rstrip(".").endswith(wrong)   # cut right after the slip
        assert re.match(r"\.? Wait, ", continuation)
        left = wrong.split("=")[0]
        assert f"Wait, {left}={synthetic.apply_op(*_operands(left))}." in continuation
        assert verifier.verify_batch([text], [gold(c)])[0].correct == c.boxed


def test_hand_checked_repaired_solution():
    problem = synthetic.Problem(start=7, ops=(("+", 5), ("*", 3), ("-", 4)), level=3)
    for seed in range(20):
        repaired = synthetic.repaired_solution(problem, np.random.default_rng(seed))
        step, wrong = repaired.wrong_step, repaired.wrong_value
        line = problem.line(step)
        assert repaired.text[:repaired.repair_at].endswith(f"{line}={wrong}.")
        assert repaired.text[repaired.repair_at:].startswith(
            f" Wait, {line}={problem.values[step]}.")
        assert repaired.text.endswith("\\boxed{32}")
        if (step, wrong) == (0, 13):
            assert repaired.text == "7+5=13. Wait, 7+5=12. 12*3=36. 36-4=32. \\boxed{32}"


def test_census_counts_kinds_formats_and_steps(conversations):
    census = warm_start.census(conversations)
    assert census["conversations"] == 3000 == sum(census["by_kind"].values())
    failed = census["retry_from_step"]["reflection (failed episodes)"]
    assert set(failed) <= {"0", "1", "2"}
    assert sum(census["retry_from_step"]["guided_retry"].values()) == census["by_kind"]["guided_retry"]
    shares = census["multi_step_boxed_share_by_kind"]
    assert "reflection" not in shares and all(0.3 < v < 0.7 for v in shares.values())
    assert all(c.num_ops == len(problem_of(question_of(c)).ops) for c in conversations)


def test_deterministic_and_argument_errors():
    assert warm_start.warm_start_conversations(40, seed=5) == warm_start.warm_start_conversations(40, seed=5)
    assert warm_start.warm_start_conversations(40, seed=5) != warm_start.warm_start_conversations(40, seed=6)
    with pytest.raises(ValueError, match="unboxed_share"):
        warm_start.warm_start_conversations(4, unboxed_share=1.5)
    with pytest.raises(ValueError, match="unknown kind"):
        warm_start.warm_start_conversation(problem_of("What is 1+2?"), "poem", np.random.default_rng(0))
    with pytest.raises(ValueError, match="root"):
        warm_start.failed_episode(problem_of("What is 1+2?"), np.random.default_rng(0), 3)
