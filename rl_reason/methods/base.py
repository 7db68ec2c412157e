"""The method interface: how a training method plugs into the one trainer loop.

A step runs, in order (see rl_reason/train.py):

    requests = method.prepare(ctx)                    # draws its records, says what to sample
    loop:                                             # rollout rounds
        samples += engine.rollout(requests)           # sample + verify
        requests = method.follow_up(samples, ctx)     # more turns / hinted retries
        until no requests (or max_rollout_rounds)
    rows = method.build_batch(samples, ctx)           # rows, masks, advantages
    update(rows) with method.loss_config()            # pure jitted loss, per-step settings
    method.after_step(samples, ctx)                   # buffers, schedules

Everything a method may read or do during a step is a field of `StepContext`:
draw fresh records (how many is the method's choice), retire question ids, sample
extra requests outside the rounds (mining, probing; counted in the generation
budget, never trained unless the method builds rows from them), score sequences
under the current weights (log-probs and mean token entropy), read the latest
held-out metrics. Methods keep their own state (a replay buffer, mined prefixes) and
expose it through `state()` / `restore()` so it is saved with the checkpoint;
`restore` runs before the first step, so `loss_config()` may depend on that state.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from rl_reason.data.record import Record
from rl_reason.methods.sampler_shape import SamplerShape, default_shape
from rl_reason.rl.losses import LossConfig

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
        (methods/episodes.py): it is verified up to its first complete box
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


class Method:
    """Base class; subclasses implement `prepare` and `build_batch`."""

    name = "base"
    # Upper bound on rollout rounds per step, so a buggy follow_up cannot loop forever.
    max_rollout_rounds = 16
    # The method's typed knobs: a class whose `from_config(config)` parses and checks
    # `config.method` (raising config_check.ConfigError); the config check calls it
    # before any compute. None: the method has no `method` keys.
    Settings = None
    # Config keys (dotted) besides method_name whose change makes a checkpoint's method
    # state meaningless: resuming a workdir with another value is an error, not a note
    # (rl_reason/run_setup.py prepare_workdir).
    identity_keys: tuple[str, ...] = ()

    def __init__(self, config, tokenizer):
        self.config = config
        self.tokenizer = tokenizer

    def prepare(self, ctx: StepContext) -> list[Request]:
        """The step's first requests; draws its own records with ctx.draw_records."""
        raise NotImplementedError

    def follow_up(self, samples: Sequence[Sample], ctx: StepContext) -> list[Request]:
        """Requests that depend on the samples so far (hints, next attempts, retries)."""
        return []

    def build_batch(self, samples: Sequence[Sample], ctx: StepContext) -> list[Row]:
        raise NotImplementedError

    def outcomes(self, samples: Sequence[Sample]) -> list[Outcome]:
        """What the headline rollout metrics summarise: the fresh on-policy samples.
        Episode methods override this to count whole episodes."""
        return [Outcome(group=s.request.group, reward=s.reward, correct=s.correct,
                        length=len(s.response), truncated=s.truncated)
                for s in samples if s.request.tag == FRESH]

    def loss_config(self) -> LossConfig:
        """This step's policy-loss settings (asked every step; each distinct value
        compiles the update once), from `config.loss` (docs/methods.md, "GRPO" and
        "Off-policy tokens"). Methods with their own loss (R3L's REINFORCE, the clip
        dropped once mixing is on) override."""
        return loss_config_from(self.config)

    def needs_reference(self) -> bool:
        """Whether the frozen reference policy must be kept (asked once, after
        `restore`): True when the loss settings use a KL term."""
        return self.loss_config().kl_coef > 0

    def after_step(self, samples: Sequence[Sample], ctx: StepContext) -> None:
        """Update method state once the step's update is applied."""

    def state(self) -> dict:
        """Checkpointable state: nested dict of numpy arrays / scalars / strings."""
        return {}

    def restore(self, state: dict) -> None:
        if state:
            raise ValueError(f"method {self.name!r} keeps no state but the checkpoint has "
                             f"method state with keys {sorted(state)}")

    @classmethod
    def host_memory(cls, config) -> dict[str, tuple[float, str]]:
        """Host memory the method's state may reach in a run of `config`, per process:
        name -> (bytes, the assumption behind the estimate). Printed by rl_reason.plan."""
        return {}

    @classmethod
    def sampler_shape(cls, config) -> SamplerShape:
        """The largest sampler call a run of `config` makes (methods/sampler_shape.py):
        rl_reason.plan sizes the KV cache by it. Methods whose requests carry more
        context than a plain prompt (hints, earlier attempts, prefixes, reflections)
        override it."""
        return default_shape(config)


def loss_config_from(config, **overrides) -> LossConfig:
    """The LossConfig of `config.loss` (docs/methods.md sections 0 and 0b)."""
    l = config.loss
    settings = dict(
        loss_type="ppo_clip", clip_low=l.clip_low, clip_high=l.clip_high,
        clip_on_policy=l.clip_on_policy, shaping_gamma=l.shaping_gamma,
        off_policy_weight=l.off_policy_weight,
        aggregation=l.aggregation, kl_coef=l.kl_coef, kl_estimator=l.kl_estimator,
        entropy_coef=l.entropy_coef,
        constant_norm=(float(config.rollout.max_new_tokens)
                       if l.aggregation == "constant" else None))
    settings.update(overrides)
    return LossConfig(**settings)
