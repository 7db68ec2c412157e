"""The pure, jitted pieces of a training step: optimizer, log-prob pass, update.

`TrainState` holds everything the update changes. The update is one jitted function
with explicit shardings and the state donated; an update whose loss or gradient is
not finite (or whose gradient norm exceeds a threshold) is computed but not applied,
and counted in `skipped`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from rl_reason import sharding
from rl_reason.models.config import ModelConfig
from rl_reason.rl import batch as batch_lib
from rl_reason.rl import logprobs as logprobs_lib
from rl_reason.rl import losses



@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
    params: dict
    opt_state: optax.OptState
    step: jax.Array        # RL steps completed
    skipped: jax.Array     # updates not applied (non-finite or over the norm limit)


def lr_schedule(optim) -> optax.Schedule:
    """Learning rate by optimizer update: linear warm-up from 0 over
    `optim.warmup_steps` updates, then constant `optim.learning_rate`."""
    warmup = max(int(optim.warmup_steps), 0)
    if not warmup:
        return optax.constant_schedule(optim.learning_rate)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, optim.learning_rate, warmup),
         optax.constant_schedule(optim.learning_rate)], [warmup])


def make_optimizer(optim) -> optax.GradientTransformation:
    """AdamW on lr_schedule(optim), after global-norm clipping."""
    parts = []
    if optim.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(optim.grad_clip))
    parts.append(optax.adamw(lr_schedule(optim), b1=optim.b1, b2=optim.b2,
                             weight_decay=optim.weight_decay))
    return optax.chain(*parts)


def learning_rate(optim, update_count: int) -> float:
    """The rate the optimizer applies at update `update_count` (for the logs)."""
    return float(lr_schedule(optim)(update_count))


def state_shardings(params_shardings, optimizer, abstract_params, mesh):
    """Shardings for TrainState: optimizer moments follow their parameters."""
    abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
    replicated = NamedSharding(mesh, P())
    opt_shardings = optax.tree_map_params(
        optimizer, lambda _, s: s, abstract_opt, params_shardings,
        transform_non_params=lambda _: replicated)
    return TrainState(params=params_shardings, opt_state=opt_shardings,
                      step=replicated, skipped=replicated)


def init_state(params, optimizer, shardings: TrainState) -> TrainState:
    init = jax.jit(lambda p: TrainState(p, optimizer.init(p), jnp.zeros((), jnp.int32),
                                        jnp.zeros((), jnp.int32)),
                   out_shardings=shardings)
    return init(params)


@dataclasses.dataclass(frozen=True)
class StepFunctions:
    """The run's jitted functions, built once (shapes are bucketed, see rl/batch.py)."""

    logprobs: callable   # (params, batch) -> logp_BT
    update: callable     # (state, batch) -> (state, metrics)


def build_step_functions(model_config: ModelConfig, loss_config: losses.LossConfig,
                         optimizer, state_sh: TrainState, mesh, *, temperature: float,
                         logprob_chunk: int, remat: bool, skip_grad_norm_above: float,
                         micro_batches: int = 1):
    """micro_batches: each update's rows are cut into this many micro-batches whose
    gradients are accumulated (one micro-batch's activations live at a time), weighted
    so that the update is that of the whole batch (losses.aggregation_count).

    Both functions take `collate`'s batches and shared-prefix ones (`collate_shared`,
    told apart by their keys); a shared-prefix batch must hold one block per data
    shard and micro-batch (blocks = data_parallel_size(mesh) * micro_batches), so that
    each device's rows, and each micro-batch's, come with their own prefix rows."""
    if micro_batches < 1:
        raise ValueError(f"micro_batches={micro_batches} must be >= 1")
    rows = sharding.batch_sharding(mesh)
    chunk = logprob_chunk or None
    shards = sharding.data_parallel_size(mesh)

    def token_logp(params, batch, with_entropy, blocks):
        if batch_lib.is_shared(batch):
            keys = ("tokens", "valid", "prefix_tokens", "prefix_valid", "prefix_index")
            return logprobs_lib.shared_prefix_logprobs(
                params, model_config, {k: batch[k] for k in keys}, temperature=temperature,
                chunk_size=chunk, with_entropy=with_entropy, remat=remat, blocks=blocks)
        return logprobs_lib.token_logprobs(
            params, model_config, batch["tokens"], batch["valid"], temperature=temperature,
            chunk_size=chunk, with_entropy=with_entropy, remat=remat)

    @functools.partial(jax.jit, out_shardings=rows)
    def logprobs_fn(params, batch):
        return token_logp(params, batch, False, shards * micro_batches)

    def loss_fn(params, batch):
        logp, entropy = token_logp(params, batch, True, shards)
        # Without a separate log-prob pass (one update per rollout batch) the behaviour
        # policy is the current one: rho == 1 in value, gradient unchanged.
        old = batch.get("old_logp")
        old = jax.lax.stop_gradient(logp) if old is None else old
        return losses.policy_loss(
            logp, old, batch["advantages"], batch["loss_mask"], loss_config,
            off_policy_BT=batch["off_policy"], behaviour_logp_BT=batch["behaviour_logp"],
            ref_logp_BT=batch.get("ref_logp"), entropy_BT=entropy)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def accumulated_grad_fn(params, batch):
        """grad_fn's result for the whole batch, one micro-batch at a time."""
        N = batch["tokens"].shape[0]
        if N % micro_batches:
            raise ValueError(f"{N} rows do not split into micro_batches={micro_batches}")
        if batch_lib.is_shared(batch):
            # Each device's rows (and prefix rows) are micro_batches blocks in a row;
            # micro-batch i is block i of every device.
            parts = jax.tree.map(
                lambda x: jnp.swapaxes(x.reshape(shards, micro_batches, -1, *x.shape[1:]),
                                       0, 1).reshape(micro_batches, -1, *x.shape[1:]), batch)
        else:
            # Micro-batch i holds rows i, i + M, i + 2M, ...: each device's block of
            # rows keeps an equal share of every micro-batch.
            parts = jax.tree.map(
                lambda x: jnp.swapaxes(x.reshape(N // micro_batches, micro_batches,
                                                 *x.shape[1:]), 0, 1), batch)
        count = functools.partial(losses.aggregation_count,
                                  aggregation=loss_config.aggregation)
        weight_M = jax.vmap(count)(parts["loss_mask"]) / count(batch["loss_mask"])

        def add(total, part):
            mb, weight = part
            (loss, metrics), grads = grad_fn(params, mb)
            # num_tokens is a count: summed, not weighted. The other metrics are
            # weighted like the loss (exact for the loss terms, a weighted mean for
            # the fractions).
            scaled = jax.tree.map(lambda x: x * weight, (loss, metrics, grads))
            scaled[1]["num_tokens"] = metrics["num_tokens"]
            return jax.tree.map(jnp.add, total, scaled), None

        shapes = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], parts))
        (loss_s, metrics_s), grads_s = shapes
        zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), (loss_s, metrics_s, grads_s))
        (loss, metrics, grads), _ = jax.lax.scan(add, zeros, (parts, weight_M))
        return (loss, metrics), grads

    @functools.partial(jax.jit, out_shardings=(state_sh, None), donate_argnums=0)
    def update_fn(state: TrainState, batch):
        compute = grad_fn if micro_batches == 1 else accumulated_grad_fn
        (loss, metrics), grads = compute(state.params, batch)
        grad_norm = optax.tree.norm(grads)
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        if skip_grad_norm_above > 0:
            ok = ok & (grad_norm <= skip_grad_norm_above)
        updates, new_opt = optimizer.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
        # Select, not branch: both sides exist already, and a skipped update must leave
        # parameters and optimizer moments exactly as they were.
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
        state = TrainState(params=keep(new_params, state.params),
                           opt_state=keep(new_opt, state.opt_state),
                           step=state.step, skipped=state.skipped + (~ok).astype(jnp.int32))
        metrics = dict(metrics, loss=loss, grad_norm=grad_norm,
                       update_applied=ok.astype(jnp.float32))
        return state, metrics

    return StepFunctions(logprobs=logprobs_fn, update=update_fn)


def build_scorer(model_config: ModelConfig, mesh, *, temperature: float, logprob_chunk: int):
    """(params, batch with tokens, valid) -> (logp_BT, entropy_BT), jitted: what
    methods read through StepContext.score (no gradient, so no remat)."""
    rows = sharding.batch_sharding(mesh)

    @functools.partial(jax.jit, out_shardings=(rows, rows))
    def score_fn(params, batch):
        return logprobs_lib.token_logprobs(
            params, model_config, batch["tokens"], batch["valid"], temperature=temperature,
            chunk_size=logprob_chunk or None, with_entropy=True)

    return score_fn
