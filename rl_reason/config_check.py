"""Validate a run config before any compute starts, with messages that name the key."""

from __future__ import annotations

import math

from rl_reason.evaluation.settings import ATTEMPT_FEEDBACKS
from rl_reason.errors import ConfigError

ESTIMATORS = ("grpo", "rloo")
AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "constant")
KL_ESTIMATORS = ("k1", "k2", "k3")
DTYPES = ("float32", "bfloat16", "float16")
VERIFIERS = ("math", "exact_int")
OFF_POLICY_WEIGHTS = ("shaped", "ratio", "none")
WHEN_EXHAUSTED = ("stop", "shrink")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def check(c, num_devices: int | None = None) -> None:
    """Raise ConfigError for impossible or inconsistent settings."""
    from rl_reason.methods.registry import METHODS  # late: methods import heavy modules

    _require(c.method_name in METHODS,
             f"method_name={c.method_name!r}: known methods are {sorted(METHODS)}")
    # A method with typed settings (`Settings.from_config`) checks its `method` block.
    if METHODS[c.method_name].Settings is not None:
        METHODS[c.method_name].Settings.from_config(c)
    _require(c.model.dtype in DTYPES, f"model.dtype={c.model.dtype!r}: one of {DTYPES}")
    _require(c.model.param_dtype in DTYPES,
             f"model.param_dtype={c.model.param_dtype!r}: one of {DTYPES}")
    _require(c.model.logprob_chunk >= 0, "model.logprob_chunk must be >= 0")
    _require(c.verifier.name in VERIFIERS,
             f"verifier.name={c.verifier.name!r}: one of {VERIFIERS}")
    _require(c.verifier.timeout_s > 0, "verifier.timeout_s must be > 0")
    _require(c.verifier.num_workers >= 1, "verifier.num_workers must be >= 1")

    from rl_reason.data import worlds
    world = worlds.get(c.world.name)
    world.resolve_skill(c.world.skill)
    LEVELS = world.task.LEVELS
    levels = tuple(c.data.embedded_levels)
    _require(bool(levels) and all(level in LEVELS for level in levels),
             f"data.embedded_levels={levels}: a non-empty subset of the {world.name!r} "
             f"world's levels {sorted(LEVELS)}")
    eval_levels = tuple(c.data.embedded_eval_levels)
    _require(all(level in LEVELS for level in eval_levels),
             f"data.embedded_eval_levels={eval_levels}: a subset of {sorted(LEVELS)} "
             "(empty: data.embedded_levels)")

    _require(c.data.when_exhausted in WHEN_EXHAUSTED,
             f"data.when_exhausted={c.data.when_exhausted!r}: one of {WHEN_EXHAUSTED}")

    r = c.rollout
    _require(r.prompts_per_step >= 1, "rollout.prompts_per_step must be >= 1")
    _require(r.group_size >= 1, "rollout.group_size must be >= 1")
    _require(r.max_new_tokens >= 1, "rollout.max_new_tokens must be >= 1")
    _require(r.max_prompt_len >= 1, "rollout.max_prompt_len must be >= 1")
    _require(r.temperature > 0, "rollout.temperature must be > 0 (greedy rollouts give "
             "every group member the same response)")
    _require(0 < r.top_p <= 1, "rollout.top_p must be in (0, 1]")
    _require(r.top_k >= 0, "rollout.top_k must be >= 0 (0 = off)")
    _require(r.max_sample_batch >= 0, "rollout.max_sample_batch must be >= 0 (0 = all rows)")
    _require(r.cache_dtype in ("",) + DTYPES,
             f"rollout.cache_dtype={r.cache_dtype!r}: '' (model.dtype) or one of {DTYPES}")

    _require(r.max_refill_rounds >= 0, "rollout.max_refill_rounds must be >= 0")

    a = c.advantage
    _require(a.estimator in ESTIMATORS,
             f"advantage.estimator={a.estimator!r}: one of {ESTIMATORS}")
    _require(r.group_size >= 2, f"rollout.group_size={r.group_size}: a group estimator "
             f"({a.estimator!r}) needs at least 2 samples per prompt")

    _require(0 <= c.reward.overlong_buffer < r.max_new_tokens,
             f"reward.overlong_buffer={c.reward.overlong_buffer} must be in "
             "[0, rollout.max_new_tokens)")

    l = c.loss
    _require(l.aggregation in AGGREGATIONS,
             f"loss.aggregation={l.aggregation!r}: one of {AGGREGATIONS}")
    _require(l.kl_estimator in KL_ESTIMATORS,
             f"loss.kl_estimator={l.kl_estimator!r}: one of {KL_ESTIMATORS}")
    _require(l.clip_low >= 0 and l.clip_high >= 0, "loss.clip_low/clip_high must be >= 0")
    _require(l.clip_low < 1, "loss.clip_low must be < 1 (the ratio floor is 1 - clip_low)")
    _require(l.kl_coef >= 0, "loss.kl_coef must be >= 0")
    _require(l.shaping_gamma > 0, "loss.shaping_gamma must be > 0")
    _require(l.off_policy_weight in OFF_POLICY_WEIGHTS,
             f"loss.off_policy_weight={l.off_policy_weight!r}: one of {OFF_POLICY_WEIGHTS}")

    o = c.optim
    _require(o.learning_rate > 0, "optim.learning_rate must be > 0")
    _require(o.warmup_steps >= 0, "optim.warmup_steps must be >= 0")
    _require(o.ppo_epochs >= 1, "optim.ppo_epochs must be >= 1")
    _require(o.num_minibatches >= 1, "optim.num_minibatches must be >= 1")
    _require(o.micro_batches >= 1, "optim.micro_batches must be >= 1")
    _require(o.grad_clip >= 0, "optim.grad_clip must be >= 0 (0 = off)")

    t = c.train
    _require(t.num_steps >= 1, "train.num_steps must be >= 1")
    _require(t.max_generated_tokens >= 0, "train.max_generated_tokens must be >= 0 (0 = off)")
    _require(t.checkpoint_every >= 1, "train.checkpoint_every must be >= 1")
    _require(t.keep_checkpoints >= 1, "train.keep_checkpoints must be >= 1")
    _require(t.seq_bucket >= 1, "train.seq_bucket must be >= 1")
    _require(t.shared_seq_bucket >= 1, "train.shared_seq_bucket must be >= 1")

    e = c.eval
    _require(e.num_samples >= 1, "eval.num_samples must be >= 1")
    for k in e.ks:
        _require(1 <= k <= e.num_samples,
                 f"eval.ks contains {k}: pass@k needs 1 <= k <= eval.num_samples="
                 f"{e.num_samples}")
    _require(e.temperature > 0, "eval.temperature must be > 0 (sampled metrics; greedy "
             "accuracy is reported separately)")
    _require(e.attempts >= 0, "eval.attempts must be >= 0 (0 = off)")
    _require(e.attempt_feedback in ATTEMPT_FEEDBACKS,
             f"eval.attempt_feedback={e.attempt_feedback!r}: one of {ATTEMPT_FEEDBACKS}")
    _require(e.attempt_temperature >= 0, "eval.attempt_temperature must be >= 0 (0 = greedy)")
    _require(0 < e.prefix_fraction < 1,
             f"eval.prefix_fraction={e.prefix_fraction} must be in (0, 1)")
    _require(e.prefix_samples >= 1, "eval.prefix_samples must be >= 1")

    if c.logging.wandb:
        from rl_reason import wandb_sink
        wandb_sink.import_wandb()   # a missing package is a user error here, before compute
        _require(bool(c.logging.wandb_project), "logging.wandb_project must not be empty "
                 "when logging.wandb=True")

    if num_devices is not None:
        axes = {name: c.mesh[name] for name in ("data", "fsdp", "tensor")}
        fills = [n for n, v in axes.items() if v == -1]
        _require(len(fills) <= 1, f"mesh: only one axis may be -1, got {fills}")
        fixed = math.prod(v for v in axes.values() if v != -1)
        _require(all(v == -1 or v >= 1 for v in axes.values()),
                 f"mesh axes must be >= 1 or -1, got {axes}")
        _require(num_devices % fixed == 0 and (fills or fixed == num_devices),
                 f"mesh {axes} does not fit {num_devices} devices")
        sizes = dict(axes)
        if fills:
            sizes[fills[0]] = num_devices // fixed
        batch_shards = sizes["data"] * sizes["fsdp"]
        rows = r.prompts_per_step * r.group_size
        per_minibatch = rows // o.num_minibatches
        _require(rows % o.num_minibatches == 0,
                 f"rollout.prompts_per_step * group_size = {rows} rows is not divisible by "
                 f"optim.num_minibatches={o.num_minibatches}")
        _require(per_minibatch % batch_shards == 0,
                 f"a minibatch of {per_minibatch} rows does not divide over the "
                 f"{batch_shards} batch shards of mesh {sizes} (data x fsdp)")
