"""Prompt wording (pinned: a change must be deliberate), reflection reports, rendering.

The expected strings are written out in full rather than built from the module's
constants, so editing a constant fails here. Changing the wording also means
rebuilding the embedded base policy (bump pretrain.VERSION).
"""

import copy
import re

import pytest

from rl_reason.data import synthetic, templates, tokenizer_builder

Q = "What is (7+5)*3-4?"
REASON = "Please reason step by step, and put your final answer within \\boxed{}."
CONCISE = ("Your earlier answers were too long. Please reason step by step more concisely, "
           "and put your final answer within \\boxed{}.")


@pytest.fixture(scope="module")
def chat_tokenizer(tmp_path_factory):
    """The project's tokenizer (ChatML template), trained on the task's own texts."""
    records = synthetic.train_records(200, seed=1)
    corpus = [r.problem for r in records] + [r.meta["solution"] for r in records]
    corpus += [templates.plain_prompt(r.problem)[0]["content"] for r in records[:20]]
    return tokenizer_builder.build_tokenizer(corpus, str(tmp_path_factory.mktemp("tok")),
                                             vocab_size=300)


@pytest.fixture(scope="module")
def plain_tokenizer(chat_tokenizer):
    """The same vocabulary without a chat template, like a base model's tokenizer."""
    tok = copy.deepcopy(chat_tokenizer)
    tok.chat_template = None
    return tok


def user(content):
    return {"role": "user", "content": content}


# ------------------------------------------------------------------------- wording

def test_plain_prompt():
    assert templates.plain_prompt(Q) == [user(
        "What is (7+5)*3-4?\nPlease reason step by step, and put your final answer within \\boxed{}.")]


def test_lte_prompts():
    hint = "Hint: these answers are incorrect: 31, 40. Do not mention this hint in your answer."
    # Distinct answers, first-seen order, whitespace stripped, numbers accepted.
    assert templates.wrong_answers_hint(["31", " 40 ", "31", 40]) == hint
    assert templates.hint_prompt(Q, ["31", "40", "31"]) == [user(f"{Q}\n{REASON}\n{hint}")]
    assert templates.concise_prompt(Q) == [user(
        "What is (7+5)*3-4?\nYour earlier answers were too long. Please reason step by step more "
        "concisely, and put your final answer within \\boxed{}.")]
    assert templates.concise_hint_prompt(Q, ["31", "40"]) == [user(f"{Q}\n{CONCISE}\n{hint}")]
    assert templates.wrong_answers_hint(["5"]) == (
        "Hint: these answers are incorrect: 5. Do not mention this hint in your answer.")


def test_lte_hint_without_wrong_answers_says_no_final_answer_was_given():
    # Every failed response ended without a final answer: nothing to list as wrong.
    no_answer = ("Hint: earlier attempts ended without a final answer in \\boxed{}. "
                 "Do not mention this hint in your answer.")
    assert templates.wrong_answers_hint([]) == templates.NO_ANSWER_HINT == no_answer
    assert templates.hint_prompt(Q, []) == [user(f"{Q}\n{REASON}\n{no_answer}")]
    assert templates.concise_hint_prompt(Q, ()) == [user(f"{Q}\n{CONCISE}\n{no_answer}")]


@pytest.mark.parametrize("wrong", [[""], ["3", "  "]])
def test_lte_hint_rejects_empty_wrong_answers(wrong):
    with pytest.raises(ValueError, match="wrong answers must be non-empty"):
        templates.hint_prompt(Q, wrong)


def test_multi_attempt_prompt_and_feedback():
    assert templates.multi_attempt_prompt(Q, 3) == [
        {"role": "system", "content": "You have 3 attempts to solve the problem. Give your full "
                                      "reasoning in each attempt, and put your final answer within "
                                      "\\boxed{}."},
        user("What is (7+5)*3-4?")]
    assert templates.multi_attempt_system(1) == (
        "You have 1 attempt to solve the problem. Give your full reasoning in each attempt, "
        "and put your final answer within \\boxed{}.")
    assert templates.attempt_feedback(2) == (
        "Your answer is incorrect. You have 2 attempts left. Please try an alternative approach.")
    assert templates.attempt_feedback(1) == (
        "Your answer is incorrect. You have 1 attempt left. Please try an alternative approach.")
    with pytest.raises(ValueError, match="num_attempts must be >= 1"):
        templates.multi_attempt_prompt(Q, 0)
    with pytest.raises(ValueError, match="attempts_left must be >= 1"):
        templates.attempt_feedback(0)


def test_r3l_feedback():
    assert templates.verifier_feedback(" 32 ") == (
        "Incorrect. Your answer 32 does not match. Please try again.")
    for nothing in (None, "", "  "):
        assert templates.verifier_feedback(nothing) == (
            "Incorrect. Your response has no final answer in \\boxed{}. Please try again.")
    assert templates.CORRECT_FEEDBACK == "Correct."


def test_reflection_request():
    steps = [("7+5=12. 12*3=35. 35-4=31. \\boxed{31}",
              "Incorrect. Your answer 31 does not match. Please try again."),
             ("7+5=12. 12*3=36. 36-4=32. \\boxed{32}", "Correct.")]
    assert templates.reflection_request(Q, steps) == [user(
        "Read the log of your earlier episode and reflect on it.\n"
        "\n"
        "Problem: What is (7+5)*3-4?\n"
        "Step 0 answer: 7+5=12. 12*3=35. 35-4=31. \\boxed{31}\n"
        "Step 0 feedback: Incorrect. Your answer 31 does not match. Please try again.\n"
        "Step 1 answer: 7+5=12. 12*3=36. 36-4=32. \\boxed{32}\n"
        "Step 1 feedback: Correct.\n"
        "\n"
        "Write a report in exactly this format:\n"
        "Summary: <what happened, in one sentence>\n"
        "Root cause: <the first mistake, or None>\n"
        "Outcome: <success, success but inefficient, or failure>\n"
        "Suggestion: <what to do differently>\n"
        "Retry from step: <the number of the step where the root cause first appeared>")]
    with pytest.raises(ValueError, match="no steps"):
        templates.reflection_request(Q, [])


REPORT = templates.ReflectionReport(
    summary="The correct answer 32 was found only at step 1.",
    root_cause="In step 0 the line 12*3=35 is wrong; 12*3=36.",
    outcome="success but inefficient", suggestion="Recompute 12*3 carefully.", retry_from_step=0)
REPORT_TEXT = ("Summary: The correct answer 32 was found only at step 1.\n"
               "Root cause: In step 0 the line 12*3=35 is wrong; 12*3=36.\n"
               "Outcome: success but inefficient\n"
               "Suggestion: Recompute 12*3 carefully.\n"
               "Retry from step: 0")


def test_guidance_wording_and_insertion():
    guidance = ("Guidance from a reflection on an earlier try:\n"
                "Root cause: In step 0 the line 12*3=35 is wrong; 12*3=36.\n"
                "Suggestion: Recompute 12*3 carefully.\n"
                "Apply these lessons, and do not mention this guidance in your answer.")
    assert templates.guidance_text(REPORT) == guidance
    feedback = templates.verifier_feedback("31")
    messages = templates.plain_prompt(Q) + [{"role": "assistant", "content": "\\boxed{31}"},
                                            user(feedback)]
    original = copy.deepcopy(messages)
    guided = templates.insert_guidance(messages, REPORT)
    # Only the last user turn (where the retry starts) carries the guidance ...
    assert guided[:2] == original[:2]
    assert guided[2] == user(f"{feedback}\n\n{guidance}")
    # ... and the input, which is the distilled trajectory's prompt, is untouched.
    assert messages == original
    assert templates.insert_guidance(templates.plain_prompt(Q), REPORT) == [
        user(f"{Q}\n{REASON}\n\n{guidance}")]


def test_insert_guidance_errors():
    invalid = templates.parse_reflection_report("nonsense", 1)
    with pytest.raises(ValueError, match="needs a valid ReflectionReport"):
        templates.insert_guidance(templates.plain_prompt(Q), invalid)
    with pytest.raises(ValueError, match="no user turn"):
        templates.insert_guidance([{"role": "system", "content": "s"}], REPORT)


# ------------------------------------------------------------------ reflection parsing

def test_report_format_and_round_trip():
    assert templates.format_reflection_report(REPORT) == REPORT_TEXT
    parsed = templates.parse_reflection_report(REPORT_TEXT, num_steps=2)
    assert parsed == REPORT
    assert parsed.valid and parsed.needs_retry
    for outcome, retry in (("success", False), ("failure", True)):
        report = templates.ReflectionReport("s", "None.", outcome, "Keep going.", 1)
        again = templates.parse_reflection_report(templates.format_reflection_report(report), 2)
        assert again == report and again.needs_retry is retry


def test_parse_tolerates_markdown_case_and_surrounding_text():
    text = ("Let me look at the episode.\n"
            "**Summary:** Step 0 was wrong.\n"
            "- root cause: a slip in 12*3\n"
            "## OUTCOME: Failure.\n"
            "> Suggestion: **Check each line.**\n"
            "* Retry From Step: 1.\n"
            "Summary: a second summary is ignored\n")
    report = templates.parse_reflection_report(text, num_steps=3)
    assert report == templates.ReflectionReport(
        summary="Step 0 was wrong.", root_cause="a slip in 12*3", outcome="failure",
        suggestion="Check each line.", retry_from_step=1)


@pytest.mark.parametrize("text, num_steps, reason", [
    ("", 2, "missing or empty field 'Summary'"),
    (REPORT_TEXT.replace("Root cause: In step 0 the line 12*3=35 is wrong; 12*3=36.\n", ""), 2,
     "missing or empty field 'Root cause'"),
    (REPORT_TEXT.replace("Suggestion: Recompute 12*3 carefully.", "Suggestion:   "), 2,
     "missing or empty field 'Suggestion'"),
    (REPORT_TEXT.replace("success but inefficient", "partial success"), 2,
     "outcome 'partial success' is not one of"),
    (REPORT_TEXT.replace("Retry from step: 0", "Retry from step: two"), 2,
     "retry_from_step 'two' is not a step number"),
    (REPORT_TEXT.replace("Retry from step: 0", "Retry from step: -1"), 2,
     "retry_from_step '-1' is not a step number"),
    (REPORT_TEXT.replace("Retry from step: 0", "Retry from step: 2"), 2,
     r"retry_from_step 2 is outside the episode's steps 0\.\.1"),
    (REPORT_TEXT, 0, "outside the episode's steps"),
])
def test_malformed_reports_are_invalid(text, num_steps, reason):
    report = templates.parse_reflection_report(text, num_steps)
    assert isinstance(report, templates.InvalidReport)
    assert not report.valid and not report.needs_retry
    assert report.text == text
    assert re.search(reason, report.reason), report.reason


# ------------------------------------------------------------------------ rendering

def test_render_with_chat_template(chat_tokenizer):
    assert templates.render_prompt(chat_tokenizer, templates.plain_prompt(Q)) == (
        f"<|im_start|>user\n{Q}\n{REASON}<|im_end|>\n<|im_start|>assistant\n")
    # Multi-attempt conversation with a wrong attempt and feedback, plus a response prefix.
    messages = templates.multi_attempt_prompt(Q, 2) + [
        {"role": "assistant", "content": "\\boxed{31}"}, user(templates.attempt_feedback(1))]
    assert templates.render_prompt(chat_tokenizer, messages, response_prefix="7+5=") == (
        f"<|im_start|>system\n{templates.multi_attempt_system(2)}<|im_end|>\n"
        f"<|im_start|>user\n{Q}<|im_end|>\n"
        "<|im_start|>assistant\n\\boxed{31}<|im_end|>\n"
        f"<|im_start|>user\n{templates.attempt_feedback(1)}<|im_end|>\n"
        "<|im_start|>assistant\n7+5=")


def test_render_without_chat_template(plain_tokenizer):
    assert templates.render_prompt(plain_tokenizer, templates.plain_prompt(Q)) == (
        f"User: {Q}\n{REASON}\n\nAssistant:")
    messages = templates.multi_attempt_prompt(Q, 2)
    assert templates.render_prompt(plain_tokenizer, messages, response_prefix=" 7+5=") == (
        f"System: {templates.multi_attempt_system(2)}\n\nUser: {Q}\n\nAssistant: 7+5=")


@pytest.mark.parametrize("which", ["chat_tokenizer", "plain_tokenizer"])
def test_encode_prompt_matches_the_rendered_text(which, request):
    tok = request.getfixturevalue(which)
    for messages in (templates.plain_prompt(Q), templates.hint_prompt(Q, ["31"]),
                     templates.multi_attempt_prompt(Q, 3)):
        text = templates.render_prompt(tok, messages)
        ids = templates.encode_prompt(tok, messages)
        assert ids == tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text
        # A prefix is encoded on its own and appended: prompt tokens, then response tokens.
        prefix = "7+5=12. 12*3="
        with_prefix = templates.encode_prompt(tok, messages, response_prefix=prefix)
        assert with_prefix == ids + tok.encode(prefix, add_special_tokens=False)
        assert tok.decode(with_prefix) == templates.render_prompt(tok, messages, prefix)
    if which == "chat_tokenizer":
        # The chat markup is made of single special tokens, not spelled out in bytes.
        ids = templates.encode_prompt(tok, templates.plain_prompt(Q))
        assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")
        assert ids.count(tok.convert_tokens_to_ids("<|im_end|>")) == 1


class _BosTokenizer:
    """Character-level stand-in for a base tokenizer that starts text with BOS (Llama 3)."""

    bos_token_id = 1
    chat_template = None

    def __init__(self, adds_bos):
        self.adds_bos = adds_bos

    def encode(self, text, add_special_tokens=True):
        ids = [ord(c) for c in text]
        return ([1] + ids) if (add_special_tokens and self.adds_bos) else ids


def test_encode_prompt_keeps_the_bos_a_base_tokenizer_adds():
    messages = templates.plain_prompt("What is 1+1?")
    with_bos = templates.encode_prompt(_BosTokenizer(adds_bos=True), messages, "1+1")
    without = templates.encode_prompt(_BosTokenizer(adds_bos=False), messages, "1+1")
    assert with_bos[0] == 1 and with_bos[1:] == without and without[0] != 1
