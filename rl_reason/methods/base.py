"""The method interface: how a training method plugs into the one trainer loop.

A step runs, in order (see rl_reason/train.py):

    requests = method.prepare(records, ctx)           # what to sample
    loop:                                             # rollout rounds
        samples += engine.rollout(requests)           # sample + verify
        requests = method.follow_up(new samples, ctx) # more turns / hinted retries
        until no requests
    batch = method.build_batch(samples, ctx)          # rows, masks, advantages
    update(batch)                                     # pure jitted loss
    method.after_step(samples, metrics, ctx)          # buffers, schedules

Each hook has a do-nothing default except `prepare` and `build_batch`, so a method
overrides only what it changes. Methods keep their own state (a replay buffer, the
mined prefixes) and expose it through `state()` / `restore()` so it is saved with the
checkpoint.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from rl_reason.data.record import Record
from rl_reason.rl.losses import LossConfig


@dataclasses.dataclass
class Request:
    """One prompt to sample `num_samples` responses for.

    `context` is the full token sequence the sampler conditions on (prompt, earlier
    turns, a prefix). `group` names the advantage group the samples belong to.
    `tag` and `meta` are the method's own bookkeeping (e.g. 'hinted', attempt number).
    """

    record: Record
    context: list[int]
    num_samples: int
    group: str
    tag: str = "fresh"
    meta: dict = dataclasses.field(default_factory=dict)
    max_new_tokens: int | None = None   # None = rollout.max_new_tokens


@dataclasses.dataclass
class Sample:
    """One sampled and verified response."""

    request: Request
    response: list[int]          # generated ids, stop token included
    logprobs: np.ndarray         # sampler log-probs of `response` [len(response)]
    truncated: bool              # hit the length limit without a stop token
    text: str                    # decoded response (special tokens dropped)
    reward: float
    status: str                  # verifier status: correct / wrong / no_answer / ...
    extracted: str | None = None

    @property
    def correct(self) -> bool:
        return self.status == "correct"


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


@dataclasses.dataclass
class StepContext:
    """What a method may read about the run: the step, config, tokenizer, rng."""

    step: int
    config: Any
    tokenizer: Any
    rng: np.random.Generator
    metrics: dict = dataclasses.field(default_factory=dict)


class Method:
    """Base class; subclasses implement `prepare` and `build_batch`."""

    name = "base"
    # Upper bound on rollout rounds per step, so a buggy follow_up cannot loop forever.
    max_rollout_rounds = 16

    def __init__(self, config, tokenizer):
        self.config = config
        self.tokenizer = tokenizer

    def prepare(self, records: Sequence[Record], ctx: StepContext) -> list[Request]:
        raise NotImplementedError

    def follow_up(self, samples: Sequence[Sample], ctx: StepContext) -> list[Request]:
        """Requests that depend on verified samples (hints, next attempts, retries)."""
        return []

    def build_batch(self, samples: Sequence[Sample], ctx: StepContext) -> list[Row]:
        raise NotImplementedError

    def loss_config(self) -> LossConfig:
        """The policy-loss settings (docs/methods.md, "GRPO" and "Off-policy tokens")
        from `config.loss`; methods with their own loss (R3L's REINFORCE, dropped clips
        once mixing is on) override."""
        return loss_config_from(self.config)

    def after_step(self, samples: Sequence[Sample], ctx: StepContext) -> None:
        """Update method state once the step's update is applied."""

    def state(self) -> dict:
        """Checkpointable state: nested dict of numpy arrays / scalars / strings."""
        return {}

    def restore(self, state: dict) -> None:
        if state:
            raise ValueError(f"method {self.name!r} keeps no state but the checkpoint has "
                             f"method state with keys {sorted(state)}")


def loss_config_from(config, **overrides) -> LossConfig:
    l = config.loss
    settings = dict(
        loss_type="ppo_clip", clip_low=l.clip_low, clip_high=l.clip_high,
        clip_on_policy=l.clip_on_policy, shaping_gamma=l.shaping_gamma,
        aggregation=l.aggregation, kl_coef=l.kl_coef, kl_estimator=l.kl_estimator,
        entropy_coef=l.entropy_coef,
        constant_norm=(float(config.rollout.max_new_tokens)
                       if l.aggregation == "constant" else None))
    settings.update(overrides)
    return LossConfig(**settings)
