"""Every prompt the methods send to the model, in one place.

Prompts are chat messages [{"role", "content"}]; `render_prompt` turns them into the
model's text through `models.tokenizer.apply_chat` (the tokenizer's chat template when
it has one), so the same code serves the embedded tiny model and a real Qwen. The
embedded base policy is warm-started on exactly these strings (rl_reason/pretrain.py),
so each method runs in distribution; tests pin the wording, so changing it is a
deliberate act (and means rebuilding the embedded base policy: bump its version).

    plain             plain_prompt(question)
    LTE               hint_prompt / concise_prompt / concise_hint_prompt (wrong answers,
                      or NO_ANSWER_HINT when the failures gave none)
    multi-attempt     multi_attempt_prompt(question, n), then attempt_feedback(k) turns
    R3L               plain_prompt + verifier_feedback(answer) turns,
                      reflection_request(question, steps) -> a report the policy writes,
                      parse_reflection_report(text, num_steps), insert_guidance(...)
    failure prefix    render_prompt(tok, plain_prompt(q), response_prefix=partial)
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

from rl_reason.models.tokenizer import apply_chat

Message = dict[str, str]

REASONING_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CONCISE_INSTRUCTION = ("Your earlier answers were too long. Please reason step by step more "
                       "concisely, and put your final answer within \\boxed{}.")
HINT_NOTICE = "Do not mention this hint in your answer."
# LTE's hint when the failed responses gave no final answer to list as wrong.
NO_ANSWER_HINT = ("Hint: earlier attempts ended without a final answer in \\boxed{}. "
                  f"{HINT_NOTICE}")
CORRECT_FEEDBACK = "Correct."
GUIDANCE_HEADER = "Guidance from a reflection on an earlier try:"
GUIDANCE_NOTICE = "Apply these lessons, and do not mention this guidance in your answer."

OUTCOME_SUCCESS = "success"
OUTCOME_INEFFICIENT = "success but inefficient"
OUTCOME_FAILURE = "failure"
OUTCOMES = (OUTCOME_SUCCESS, OUTCOME_INEFFICIENT, OUTCOME_FAILURE)

# Report fields in the order the request asks for them: (line label, dataclass field).
REPORT_FIELDS = (
    ("Summary", "summary"),
    ("Root cause", "root_cause"),
    ("Outcome", "outcome"),
    ("Suggestion", "suggestion"),
    ("Retry from step", "retry_from_step"),
)

REFLECTION_INSTRUCTION = (
    "Write a report in exactly this format:\n"
    "Summary: <what happened, in one sentence>\n"
    "Root cause: <the first mistake, or None>\n"
    "Outcome: <success, success but inefficient, or failure>\n"
    "Suggestion: <what to do differently>\n"
    "Retry from step: <the number of the step where the root cause first appeared>")


def _user(content: str) -> Message:
    return {"role": "user", "content": content}


# ---------------------------------------------------------------- plain and LTE prompts

def plain_prompt(question: str) -> list[Message]:
    """The plain RL / evaluation prompt."""
    return [_user(f"{question}\n{REASONING_INSTRUCTION}")]


def wrong_answers_hint(wrong_answers: Sequence[str]) -> str:
    """LTE's hint: the distinct wrong final answers, in first-seen order.

    No wrong answers at all (every failed response ended without a final answer) gives
    NO_ANSWER_HINT, which says so instead (docs/methods.md, LTE). An empty answer
    string is a caller's bug and raises.
    """
    distinct = list(dict.fromkeys(str(a).strip() for a in wrong_answers))
    if not all(distinct):
        raise ValueError(f"templates.wrong_answers_hint: wrong answers must be non-empty, "
                         f"got {list(wrong_answers)!r}")
    if not distinct:
        return NO_ANSWER_HINT
    listed = ", ".join(distinct)
    return f"Hint: these answers are incorrect: {listed}. {HINT_NOTICE}"


def hint_prompt(question: str, wrong_answers: Sequence[str]) -> list[Message]:
    """LTE, no response truncated: the question plus the wrong answers to avoid (or,
    with none, NO_ANSWER_HINT)."""
    return [_user(f"{question}\n{REASONING_INSTRUCTION}\n{wrong_answers_hint(wrong_answers)}")]


def concise_prompt(question: str) -> list[Message]:
    """LTE, every response truncated: ask for shorter reasoning."""
    return [_user(f"{question}\n{CONCISE_INSTRUCTION}")]


def concise_hint_prompt(question: str, wrong_answers: Sequence[str]) -> list[Message]:
    """LTE, some responses truncated: concise, plus the wrong answers of the others (or,
    with none, NO_ANSWER_HINT)."""
    return [_user(f"{question}\n{CONCISE_INSTRUCTION}\n{wrong_answers_hint(wrong_answers)}")]


# ------------------------------------------------------------------------ multi-attempt

def _attempts(n: int) -> str:
    return f"{n} attempt" if n == 1 else f"{n} attempts"


def multi_attempt_system(num_attempts: int) -> str:
    if num_attempts < 1:
        raise ValueError(f"templates.multi_attempt_system: num_attempts must be >= 1, got {num_attempts}")
    return (f"You have {_attempts(num_attempts)} to solve the problem. Give your full reasoning "
            f"in each attempt, and put your final answer within \\boxed{{}}.")


def multi_attempt_prompt(question: str, num_attempts: int) -> list[Message]:
    """Episode start; after a wrong attempt append the assistant turn and attempt_feedback."""
    return [{"role": "system", "content": multi_attempt_system(num_attempts)}, _user(question)]


def attempt_feedback(attempts_left: int) -> str:
    """The user turn after a wrong boxed answer when attempts remain."""
    if attempts_left < 1:
        raise ValueError(f"templates.attempt_feedback: attempts_left must be >= 1, got {attempts_left}")
    return (f"Your answer is incorrect. You have {_attempts(attempts_left)} left. "
            f"Please try an alternative approach.")


# -------------------------------------------------------------------------------- R3L

def verifier_feedback(answer: str | None) -> str:
    """R3L's feedback turn after a wrong attempt (answer None: nothing was boxed)."""
    if answer is None or not str(answer).strip():
        return "Incorrect. Your response has no final answer in \\boxed{}. Please try again."
    return f"Incorrect. Your answer {str(answer).strip()} does not match. Please try again."


def reflection_request(question: str, steps: Sequence[tuple[str, str]]) -> list[Message]:
    """Asks the policy to reflect on an episode: steps are (response, feedback) pairs,
    numbered from 0; a correct last step carries CORRECT_FEEDBACK."""
    if not steps:
        raise ValueError("templates.reflection_request: the episode has no steps")
    lines = ["Read the log of your earlier episode and reflect on it.", "",
             f"Problem: {question}"]
    for i, (response, feedback) in enumerate(steps):
        lines.append(f"Step {i} answer: {response}")
        lines.append(f"Step {i} feedback: {feedback}")
    lines += ["", REFLECTION_INSTRUCTION]
    return [_user("\n".join(lines))]


@dataclasses.dataclass(frozen=True)
class ReflectionReport:
    summary: str
    root_cause: str
    outcome: str
    suggestion: str
    retry_from_step: int
    valid = True

    @property
    def needs_retry(self) -> bool:
        """R3L retries everything but a clean success."""
        return self.outcome != OUTCOME_SUCCESS


@dataclasses.dataclass(frozen=True)
class InvalidReport:
    """What the parser returns for a report R3L must skip; `reason` says why."""

    reason: str
    text: str
    valid = False
    needs_retry = False


def format_reflection_report(report: ReflectionReport) -> str:
    """The canonical text of a report (what the warm-start teaches the policy to write)."""
    return "\n".join(f"{label}: {getattr(report, field)}" for label, field in REPORT_FIELDS)


_REPORT_LINE = re.compile(
    r"^[\s*#>-]*(summary|root cause|outcome|suggestion|retry from step)[\s*]*:[\s*]*(.*?)\s*$",
    re.IGNORECASE)


def parse_reflection_report(text: str, num_steps: int) -> ReflectionReport | InvalidReport:
    """The report in `text`, or InvalidReport when a field is missing or empty, the
    outcome is not one of OUTCOMES, or retry_from_step is not in [0, num_steps).
    Labels are case-insensitive; light markdown (bullets, bold) is tolerated; the
    first occurrence of a label counts."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        match = _REPORT_LINE.match(line)
        if match:
            found.setdefault(match.group(1).lower(), match.group(2).strip().strip("*").strip())
    values = {}
    for label, field in REPORT_FIELDS:
        value = found.get(label.lower(), "")
        if not value:
            return InvalidReport(f"missing or empty field {label!r}", text)
        values[field] = value
    outcome = values["outcome"].lower().rstrip(".").strip()
    if outcome not in OUTCOMES:
        return InvalidReport(f"outcome {values['outcome']!r} is not one of {OUTCOMES}", text)
    step_text = values["retry_from_step"].rstrip(".").strip()
    if not re.fullmatch(r"\d+", step_text):
        return InvalidReport(f"retry_from_step {values['retry_from_step']!r} is not a step number",
                             text)
    step = int(step_text)
    if not 0 <= step < num_steps:
        return InvalidReport(f"retry_from_step {step} is outside the episode's steps "
                             f"0..{num_steps - 1}", text)
    return ReflectionReport(summary=values["summary"], root_cause=values["root_cause"],
                            outcome=outcome, suggestion=values["suggestion"], retry_from_step=step)


def guidance_text(report: ReflectionReport) -> str:
    return (f"{GUIDANCE_HEADER}\nRoot cause: {report.root_cause}\n"
            f"Suggestion: {report.suggestion}\n{GUIDANCE_NOTICE}")


def insert_guidance(messages: Sequence[Message], report: ReflectionReport) -> list[Message]:
    """A copy of `messages` (the replayed first k steps) with the report's lessons added
    to the last user turn, where the retry starts. The distilled trajectory is the same
    conversation without it, i.e. the original `messages`."""
    if not isinstance(report, ReflectionReport):
        raise ValueError(f"templates.insert_guidance: needs a valid ReflectionReport, got {report!r}")
    out = [dict(m) for m in messages]
    for m in reversed(out):
        if m["role"] == "user":
            m["content"] = f"{m['content']}\n\n{guidance_text(report)}"
            return out
    raise ValueError("templates.insert_guidance: the conversation has no user turn")


# -------------------------------------------------------------------------- rendering

def render_prompt(tokenizer, messages: Sequence[Message], response_prefix: str = "") -> str:
    """The text the model continues: the chat up to the assistant's turn, then an
    optional start of the assistant's response (failure-prefix continuation)."""
    return apply_chat(tokenizer, list(messages), add_generation_prompt=True) + response_prefix


def _adds_bos(tokenizer, bos: int) -> bool:
    ids = tokenizer.encode("a", add_special_tokens=True)
    return bool(ids) and ids[0] == bos


def encode_prompt(tokenizer, messages: Sequence[Message], response_prefix: str = "") -> list[int]:
    """Token ids of render_prompt. The prefix is encoded on its own and appended, so
    the split matches the one at generation time (prompt tokens, then response tokens).
    A chat template writes its own special tokens, hence add_special_tokens=False; a
    tokenizer that normally starts text with BOS (Llama 3 base) still gets it once."""
    ids = tokenizer.encode(apply_chat(tokenizer, list(messages), add_generation_prompt=True),
                           add_special_tokens=False)
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None and (not ids or ids[0] != bos) and _adds_bos(tokenizer, bos):
        ids = [bos] + ids
    if response_prefix:
        ids = ids + tokenizer.encode(response_prefix, add_special_tokens=False)
    return ids
