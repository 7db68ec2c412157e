"""The protocol every method speaks with the trainer and the rollout engine.

A method says what to sample with `Request`s, gets back verified `Sample`s, and hands
the update its training `Row`s; during a step it reads and acts through the
`StepContext` the trainer builds. The method interface itself is
`rl_reason/methods/base.py`; the engine that turns requests into samples is
`rl_reason/rollout.py`. Nothing here imports a method.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from rl_reason.data.record import Record

# The tag of the step's fresh on-policy samples: the headline rollout metrics
# (reward, accuracy, none-pass fraction) summarise these alone; every other tag
# (hinted, replay, mining, ...) gets its own `rollout/<tag>/...` breakdown.
FRESH = "fresh"


@dataclasses.dataclass
class Request:
    """One prompt to sample `num_samples` responses for.

    context: the token ids the sampler conditions on (prompt and earlier turns).
    prefix: the start of the response, given rather than sampled (a failure prefix,
        replayed attempts): the sampler continues context + prefix, the verifier
        scores prefix + continuation as one response, and it is never trained.
    group: the advantage group of the samples; "" gives the request a group of its
        own, named uniquely by the engine (so a record requested twice in one step
        makes two groups). A method that adds samples to an existing group (LTE's
        hinted retries) passes that group's name.
    tag, meta: the method's own bookkeeping (FRESH for on-policy samples).
    max_new_tokens: this request's generation budget (None: rollout.max_new_tokens).
    answer_at_first_box: the response is an attempt of a multi-turn episode
        (rl_reason/episodes.py): it is verified up to its first complete box
        (verifiers.cut_after_first_box), and `Sample.text` is that part; the response
        ids are everything sampled (the episode cuts them).
    """

    record: Record
    context: list[int]
    num_samples: int
    group: str = ""
    tag: str = FRESH
    meta: dict = dataclasses.field(default_factory=dict)
    max_new_tokens: int | None = None
    prefix: list[int] = dataclasses.field(default_factory=list)
    answer_at_first_box: bool = False


@dataclasses.dataclass
class Sample:
    """One sampled and verified response."""

    request: Request
    response: list[int]          # generated ids (after the prefix), stop token included
    logprobs: np.ndarray         # [len(response)] under the sampling distribution
    policy_logprobs: np.ndarray  # [len(response)] under the policy at the rollout
                                 # temperature, before top-k / top-p (off-policy use)
    truncated: bool              # hit its budget without a stop token
    text: str                    # decoded prefix + response (special tokens dropped; up to
                                 # the first box with request.answer_at_first_box)
    reward: float
    status: str                  # verifier status: correct / wrong / no_answer / ...
    extracted: str | None = None

    @property
    def correct(self) -> bool:
        return self.status == "correct"

    @property
    def full_response(self) -> list[int]:
        """The response as scored: the given prefix, then what was sampled."""
        return list(self.request.prefix) + list(self.response)


@dataclasses.dataclass
class Row:
    """One training sequence before padding: context + response with per-token data.

    Arrays are aligned with `tokens` (see rl_reason/rl): loss_mask marks trained
    tokens; behaviour_logp is only read where off_policy is set.
    """

    tokens: list[int]
    loss_mask: np.ndarray        # float32 [len(tokens)]
    advantage: float | np.ndarray  # scalar, or per token [len(tokens)]
    off_policy: np.ndarray | None = None      # bool [len(tokens)]
    behaviour_logp: np.ndarray | None = None  # float32 [len(tokens)]
    group: str = ""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One on-policy result the headline rollout metrics count (a sample, or a whole
    multi-attempt episode)."""

    group: str
    reward: float
    correct: bool
    length: int        # generated tokens
    truncated: bool


@dataclasses.dataclass(frozen=True)
class TokenScores:
    """A sequence scored under the current weights (`StepContext.score`)."""

    logprobs: np.ndarray   # [response length] log p of each response token
    mean_entropy: float    # mean entropy of the predictive distribution over the
                           # response's own tokens (never over padding or prompt)


@dataclasses.dataclass
class StepContext:
    """What a method may read and do during one step; built by the trainer.

    draw_records(n): the next n fresh records of the training stream (fewer, or
        DataExhausted, when retirement has left too few: see `data.when_exhausted`).
    retire(ids): never serve these question ids again.
    rollout(requests): sample and verify now, outside the rollout rounds (mining,
        probing); the samples count towards the generation budget and show up in the
        metrics under their tag, and are trained only if the method builds rows
        from them.
    score(sequences): for (tokens, response_start) pairs, the TokenScores of each
        response under the current weights, in one jitted, batched pass.
    held_out: the latest held-out evaluation metrics ("eval/..." keys and "step");
        empty before the first evaluation.
    metrics: the method's own metrics for this step (merged into the step's line).
    """

    step: int
    config: Any
    tokenizer: Any
    rng: np.random.Generator
    draw_records: Callable[[int], list[Record]]
    retire: Callable[[Iterable[str]], None]
    rollout: Callable[[Sequence[Request]], list[Sample]]
    score: Callable[[Sequence[tuple[Sequence[int], int]]], list[TokenScores]]
    held_out: Mapping[str, float] = dataclasses.field(default_factory=dict)
    metrics: dict = dataclasses.field(default_factory=dict)
