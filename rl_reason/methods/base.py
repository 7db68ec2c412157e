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

from typing import Sequence

from rl_reason.methods.components.sampler_shape import SamplerShape, default_shape
from rl_reason.protocol import (FRESH, Outcome, Request, Row, Sample,  # noqa: F401
                                StepContext, TokenScores)
from rl_reason.rl.losses import LossConfig


class Method:
    """Base class; subclasses implement `prepare` and `build_batch`."""

    name = "base"
    # Upper bound on rollout rounds per step, so a buggy follow_up cannot loop forever.
    max_rollout_rounds = 16
    # The method's typed knobs: a class whose `from_config(config)` parses and checks
    # `config.method` (raising errors.ConfigError); the config check calls it
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
        """The largest sampler call a run of `config` makes (methods/components/sampler_shape.py):
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
