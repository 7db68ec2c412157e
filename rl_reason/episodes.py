"""Multi-turn attempt episodes at the token level: what multi-attempt RL, R3L and the
k-attempt evaluation share (docs/methods.md, sections 2 and 3).

An episode is one conversation about one question. Its token row is

    prompt | attempt 1 | feedback 1 | attempt 2 | feedback 2 | ... | attempt n

and every piece after the prompt is a `Segment`: an attempt (trained) or a feedback
block (never trained). The row holds the tokens exactly as the sampler produced them;
nothing the policy wrote is ever decoded and encoded again.

Rules, and why:
- An attempt is the response up to its first complete box
  (`verifiers.cut_after_first_box` on the decoded text), cut at the token level: the
  shortest token prefix whose decoded text starts with the cut text (binary search
  over prefix lengths, O(log n) decodes). When nothing but the end-of-turn token
  follows the box, the whole response is the attempt: the policy ended its turn
  there. The tokens after the cut were generated (they count in the run's generation
  budget) but are not part of the attempt: not in the next attempt's context, not in
  the training row, and not charged to the episode's budget.
- A feedback block is built from the chat template without touching the attempt:
  render the first turns, an assistant turn holding a placeholder, then the feedback
  turn and the next assistant header; the text after the placeholder (end of the
  assistant turn, feedback turn, header) is encoded on its own. When the attempt
  ended with its own sampled end-of-turn token, that token stays as sampled and
  becomes the first token of the feedback segment (masked: it closes a failed
  attempt), in place of the block's own copy; when the attempt was cut or ran out of
  tokens, the block's end-of-turn closes it.
- One budget of generated tokens for the whole episode, shared by its attempts: an
  attempt is charged its own ids (its sampled end-of-turn included). Feedback tokens
  are not charged (as in the released multi-attempt code), nor are tokens cut after a
  box, so a row is at most prompt + feedback + budget tokens long.
- An episode ends at a correct attempt, after `max_attempts` attempts, or when its
  budget is spent (an attempt that runs out of tokens spends it). An attempt without
  an answer uses up an attempt like a wrong one.

Methods build on it: `Episode.request()` is the next attempt's Request (context =
prompt + segments, budget = what is left), `add_attempt` / `add_feedback` grow the
episode, `row()` is its training row (optionally with the first k attempts masked,
R3L's pivotal credit), `replay(k)` starts a new episode from the first k attempts and
their feedback (R3L's retry).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from rl_reason.data import templates
from rl_reason.data.record import Record
from rl_reason.protocol import FRESH, Request, Row, Sample
from rl_reason.models.tokenizer import apply_chat
from rl_reason.verifiers import cut_after_first_box

Message = dict[str, str]
# Stands for an attempt when the chat template renders a feedback turn; never encoded.
PLACEHOLDER = "[[rl_reason attempt placeholder]]"
ANSWERED = ("correct", "wrong")


# ----------------------------------------------------------------------------- attempts

def attempt_length(tokenizer, response: Sequence[int]) -> tuple[int, str]:
    """(n, text): the attempt is response[:n]; text is what the verifier scores (the
    decoded response up to its first complete box, special tokens dropped)."""
    response = list(response)
    decode = lambda n: tokenizer.decode(response[:n], skip_special_tokens=True)
    full = decode(len(response))
    text = cut_after_first_box(full)
    if text == full:           # no box, or nothing but special tokens after it
        return len(response), text
    # Decoded prefixes only grow with n, so "starts with the cut text" is monotone.
    lo, hi = 1, len(response)
    while lo < hi:
        mid = (lo + hi) // 2
        if decode(mid).startswith(text):
            hi = mid
        else:
            lo = mid + 1
    return lo, text


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One attempt of an episode, as the episode keeps it.

    ids: the attempt's tokens as sampled (up to its first box; its sampled end-of-turn
        included when the policy ended its turn there).
    generated: tokens sampled for it (>= len(ids): the rest were cut after the box).
    truncated: it hit the episode's budget before a box or the end of its turn.
    closed: ids end with the end-of-turn token the policy sampled.
    policy_logprobs: the policy's log-probs of `ids` at sampling time (None in
        evaluation).
    """

    ids: tuple[int, ...]
    text: str
    status: str
    extracted: str | None
    generated: int
    truncated: bool
    closed: bool
    policy_logprobs: np.ndarray | None = dataclasses.field(default=None, compare=False)

    @property
    def correct(self) -> bool:
        return self.status == "correct"

    @property
    def answered(self) -> bool:
        """The verifier found an answer (right or wrong) in it."""
        return self.status in ANSWERED


def new_attempt(response: Sequence[int], length: int, text: str, *, truncated: bool,
                status: str, extracted: str | None,
                policy_logprobs: np.ndarray | None = None) -> Attempt:
    """The attempt response[:length] (`attempt_length`) of a sampled response that was
    `truncated` (hit its budget without a stop token), with its verifier verdict."""
    if not 1 <= length <= len(response):
        raise ValueError(f"new_attempt: length {length} outside 1..{len(response)}")
    cut = length < len(response)
    logprobs = None if policy_logprobs is None else np.asarray(policy_logprobs)[:length]
    return Attempt(ids=tuple(int(t) for t in response[:length]), text=text, status=status,
                   extracted=extracted, generated=len(response), truncated=truncated and not cut,
                   closed=not truncated and not cut, policy_logprobs=logprobs)


def attempt_from_sample(tokenizer, sample: Sample) -> Attempt:
    """The attempt of a sample requested by `Episode.request` (verified up to its
    first box by the rollout engine)."""
    if not sample.request.answer_at_first_box or sample.request.prefix:
        raise ValueError("attempt_from_sample: the request must be an episode's "
                         "(answer_at_first_box, no prefix)")
    length, text = attempt_length(tokenizer, sample.response)
    if text != sample.text:
        raise ValueError(f"attempt_from_sample: the verified text {sample.text!r} is not the "
                         f"response's cut {text!r}")
    return new_attempt(sample.response, length, text, truncated=sample.truncated,
                       status=sample.status, extracted=sample.extracted,
                       policy_logprobs=sample.policy_logprobs)


# ------------------------------------------------------------------------- chat turns

class ChatTurns:
    """Token ids of an episode's prompt and feedback turns, from the tokenizer's chat
    template (the module docstring says how a feedback block is cut out)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def prompt(self, messages: Sequence[Message]) -> list[int]:
        return templates.encode_prompt(self.tokenizer, messages)

    def feedback(self, messages: Sequence[Message], turn: Message) -> list[int]:
        """The block after an attempt: end of the assistant turn, `turn` (a user or
        system message), the next assistant header. `messages` are the episode's first
        turns (templates may render a turn differently given what precedes it)."""
        head = apply_chat(self.tokenizer, list(messages), add_generation_prompt=True)
        text = apply_chat(self.tokenizer, list(messages) + [
            {"role": "assistant", "content": PLACEHOLDER}, dict(turn)], add_generation_prompt=True)
        at = text.find(PLACEHOLDER)
        if at < 0 or not text[:at].startswith(head):
            raise ValueError("episodes.ChatTurns: the chat template does not render an "
                             "assistant turn as the continuation of its generation prompt, so "
                             "feedback turns cannot be appended to sampled ids")
        return self.tokenizer.encode(text[at + len(PLACEHOLDER):], add_special_tokens=False)


# ---------------------------------------------------------------------------- episodes

@dataclasses.dataclass(frozen=True)
class Segment:
    """A piece of the row after the prompt: attempt `attempt`'s ids (trained) or the
    feedback block after it (not trained)."""

    ids: tuple[int, ...]
    trained: bool
    attempt: int


@dataclasses.dataclass(eq=False)
class Episode:
    """One question's conversation: see the module docstring.

    messages: the first turns as chat messages (prompt = their ids), kept to render
        feedback turns. budget: generated tokens for all attempts together.
    group: the advantage group of the episode's attempts (a method names it).
    """

    record: Record
    messages: list[Message]
    prompt: list[int]
    budget: int
    max_attempts: int
    group: str = ""
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    segments: list[Segment] = dataclasses.field(default_factory=list)
    attempts: list[Attempt] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        if self.budget < 1 or self.max_attempts < 1:
            raise ValueError(f"Episode: budget={self.budget} and max_attempts="
                             f"{self.max_attempts} must be >= 1")

    @classmethod
    def start(cls, record: Record, messages: Sequence[Message], turns: ChatTurns, *,
              budget: int, max_attempts: int, group: str = "", **meta) -> "Episode":
        return cls(record=record, messages=list(messages), prompt=turns.prompt(messages),
                   budget=budget, max_attempts=max_attempts, group=group, meta=dict(meta))

    # ------------------------------------------------------------------ state
    @property
    def used(self) -> int:
        """Budget spent: the attempts' own tokens."""
        return sum(len(a.ids) for a in self.attempts)

    @property
    def remaining(self) -> int:
        return self.budget - self.used

    @property
    def solved(self) -> bool:
        return bool(self.attempts) and self.attempts[-1].correct

    @property
    def out_of_budget(self) -> bool:
        return self.remaining <= 0 or (bool(self.attempts) and self.attempts[-1].truncated)

    @property
    def done(self) -> bool:
        return self.solved or len(self.attempts) >= self.max_attempts or self.out_of_budget

    @property
    def awaiting_feedback(self) -> bool:
        """An attempt failed and the episode goes on: its feedback turn comes next."""
        return bool(self.segments) and self.segments[-1].trained and not self.done

    def context(self) -> list[int]:
        """What the next attempt continues: the prompt and every segment so far."""
        return self.prompt + [t for s in self.segments for t in s.ids]

    def request(self, *, tag: str = FRESH, context: Sequence[int] | None = None,
                **meta) -> Request:
        """The next attempt's Request: one sample in the episode's group, budget = what
        is left, verified up to its first box; meta["episode"] is this episode and
        meta["attempt"] the attempt's index. `context` replaces the context the policy
        sees (R3L samples a retry with guidance the row does not keep)."""
        if self.done or self.awaiting_feedback:
            raise ValueError("Episode.request: the episode is finished or awaits feedback")
        if not self.group:
            raise ValueError("Episode.request: name the episode's group first (every attempt "
                             "of a group of episodes shares it)")
        return Request(record=self.record,
                       context=list(self.context() if context is None else context),
                       num_samples=1, group=self.group, tag=tag,
                       meta={"episode": self, "attempt": len(self.attempts), **meta},
                       max_new_tokens=self.remaining, answer_at_first_box=True)

    # ---------------------------------------------------------------- growing
    def add_attempt(self, attempt: Attempt) -> None:
        if self.done or self.awaiting_feedback:
            raise ValueError("Episode.add_attempt: the episode is finished or awaits feedback")
        if not attempt.ids or len(attempt.ids) > self.remaining:
            raise ValueError(f"Episode.add_attempt: {len(attempt.ids)} tokens with "
                             f"{self.remaining} of the budget left")
        self.attempts.append(attempt)
        self.segments.append(Segment(attempt.ids, True, len(self.attempts) - 1))

    def add_feedback(self, block: Sequence[int]) -> None:
        """Appends the feedback block (`ChatTurns.feedback`) after a failed attempt; a
        sampled end-of-turn closing the attempt moves into it (module docstring)."""
        if not self.awaiting_feedback:
            raise ValueError("Episode.add_feedback: no failed attempt awaits feedback")
        block = list(block)
        attempt = self.attempts[-1]
        if attempt.closed:
            end = attempt.ids[-1]
            self.segments[-1] = Segment(attempt.ids[:-1], True, len(self.attempts) - 1)
            block = [end] + (block[1:] if block and block[0] == end else block)
        self.segments.append(Segment(tuple(block), False, len(self.attempts) - 1))

    # --------------------------------------------------------------- training
    def loss_mask(self, *, first_trained_attempt: int = 0) -> np.ndarray:
        """1 on the tokens of attempts first_trained_attempt.. (their closing
        end-of-turn excluded when feedback follows), 0 on the prompt and feedback."""
        mask = [np.zeros(len(self.prompt), np.float32)]
        for s in self.segments:
            on = s.trained and s.attempt >= first_trained_attempt
            mask.append(np.full(len(s.ids), float(on), np.float32))
        return np.concatenate(mask)

    def row(self, advantage: float, *, trained: bool = True,
            first_trained_attempt: int = 0) -> Row:
        """The training row: the episode's ids as sampled, the advantage on every trained
        token. trained=False keeps the row with no loss (DAPO's truncated masking)."""
        mask = self.loss_mask(first_trained_attempt=first_trained_attempt)
        return Row(tokens=self.context(), loss_mask=mask * float(trained),
                   advantage=float(advantage), group=self.group)

    def replay(self, k: int) -> "Episode":
        """A new episode (no group, no meta) that starts where this one stood before its
        attempt k: a copy of attempts 0..k-1 and their feedback."""
        if not 0 <= k <= len(self.attempts):
            raise ValueError(f"Episode.replay: k={k} outside 0..{len(self.attempts)}")
        keep = [s for s in self.segments if s.attempt < k]
        if k and keep[-1].trained:
            raise ValueError(f"Episode.replay: attempt {k - 1} has no feedback to continue from")
        return Episode(record=self.record, messages=list(self.messages), prompt=list(self.prompt),
                       budget=self.budget, max_attempts=self.max_attempts, segments=keep,
                       attempts=list(self.attempts[:k]))


def episodes_of(samples: Sequence[Sample]) -> list[Episode]:
    """The distinct episodes the samples are attempts of, in first-seen order."""
    seen: dict[int, Episode] = {}
    for s in samples:
        episode = s.request.meta.get("episode")
        if isinstance(episode, Episode):
            seen.setdefault(id(episode), episode)
    return list(seen.values())
