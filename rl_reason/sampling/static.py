"""The static batch: one jitted prefill plus `lax.while_loop` decode segments over all
rows of a call until its last row stops (the sampler before continuous batching).

Kept as a selectable path (`generate(..., continuous=False)`): tests and the sampler
benchmark compare the continuous batch against it, and it has no host round trips
(a call is one jitted function).

Every row runs until the call's last row stops; a row that has finished still goes
through every decode step, masked. Decoding runs in the segments of
shapes.segment_ends, each a while_loop whose attention reads only the cache slots
filled by the segment's end (the cache grows between segments).

Shape letters as in rl_reason/__init__.py; here W is the bucketed capacity of the
largest budget and P the bucketed context length.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from rl_reason import sharding
from rl_reason.models import transformer
from rl_reason.models.model import Model
from rl_reason.sampling import draw
from rl_reason.sampling.shapes import TRACE_COUNT


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _DecodeState:
    step: jax.Array          # [] int32: tokens generated so far (per row, until done)
    tokens_BW: jax.Array     # int32
    logprobs_BW: jax.Array   # float32
    policy_logprobs_BW: jax.Array | None  # float32; None unless filtered: logprobs_BW
    lengths_B: jax.Array     # int32
    stopped_B: jax.Array     # bool: emitted a stop token
    done_B: jax.Array        # bool: stopped, reached its budget, or a batch-padding row
    cache: dict


def _record(state: _DecodeState, logits_BV, rng, row_B, budget_B, settings: draw.Settings,
            greedy: bool, filtered: bool) -> _DecodeState:
    """Samples token number `state.step` for every row still running."""
    step_B = jnp.broadcast_to(state.step, row_B.shape)
    token_B, logprob_B, policy_logprob_B = draw.sample(logits_BV, rng, step_B, row_B, settings,
                                                       greedy, filtered)
    live_B = ~state.done_B

    def put(values_BW, value_B, fill):
        value_B = jnp.where(live_B, value_B, fill)
        return jax.lax.dynamic_update_index_in_dim(values_BW, value_B, state.step, 1)

    is_stop_B = draw.is_stop(token_B, settings) & live_B
    policy_logprobs_BW = state.policy_logprobs_BW
    if policy_logprobs_BW is not None:
        policy_logprobs_BW = put(policy_logprobs_BW, policy_logprob_B, 0.0)
    return dataclasses.replace(
        state,
        step=state.step + 1,
        tokens_BW=put(state.tokens_BW, token_B, settings.pad_id),
        logprobs_BW=put(state.logprobs_BW, logprob_B, 0.0),
        policy_logprobs_BW=policy_logprobs_BW,
        lengths_B=state.lengths_B + live_B.astype(jnp.int32),
        stopped_B=state.stopped_B | is_stop_B,
        # A live row's length is the step count, so it reaches its budget at step + 1.
        done_B=state.done_B | is_stop_B | (state.step + 1 >= budget_B),
    )


def _grow_cache(cache, slots: int):
    """The cache with empty slots appended up to `slots` (layout: transformer)."""
    def pad(array, axis):
        widths = [(0, 0)] * array.ndim
        widths[axis] = (0, slots - array.shape[axis])
        return jnp.pad(array, widths)
    return {"k": [pad(k, 3) for k in cache["k"]], "v": [pad(v, 2) for v in cache["v"]]}


@functools.partial(jax.jit, static_argnames=("capacity", "segments", "greedy", "filtered",
                                             "cache_dtype", "mesh"))
def generate_static(model: Model, tokens_BP, context_lengths_B, real_B, row_B, budget_B, rng,
                    settings: draw.Settings, *, capacity: int, segments: tuple[int, ...],
                    greedy: bool, filtered: bool, cache_dtype: str | None, mesh):
    """(tokens_BW, logprobs_BW, policy_logprobs_BW or None, lengths_B, stopped_B) of the
    left-padded rows tokens_BP; row_B is each row's index in the call (its keys),
    budget_B its budget (<= capacity; batch-padding rows: real_B False, budget 1)."""
    TRACE_COUNT["generate"] += 1
    config, params = model.config, model.params
    params = dict(params, layers=transformer.unstack_layers(params["layers"], config.num_layers))
    B, P = tokens_BP.shape
    start_B = P - context_lengths_B  # first real slot of each left-padded row

    def constrain(cache, slots):
        if mesh is None:
            return cache
        return jax.lax.with_sharding_constraint(
            cache, sharding.cache_sharding(config, B, slots, mesh))

    cache = constrain(transformer.init_cache(config, B, P + segments[0], cache_dtype),
                      P + segments[0])
    valid_BP = jnp.arange(P)[None, :] >= start_B[:, None]
    positions_BP, mask_BPP = transformer.padded_positions_and_mask(valid_BP)
    mask_BPS = jnp.pad(mask_BPP, ((0, 0), (0, 0), (0, segments[0])))
    # Only the last position's logits are needed: skip the [B, P, V] unembedding.
    h_BPD, cache = transformer.hidden_states(params, config, tokens_BP, positions_BP,
                                             mask_BPS, cache, 0)
    logits_BV = transformer.unembed(params, config, h_BPD[:, -1:])[:, 0]

    state = _DecodeState(
        step=jnp.zeros((), jnp.int32),
        tokens_BW=jnp.full((B, capacity), settings.pad_id, jnp.int32),
        logprobs_BW=jnp.zeros((B, capacity), jnp.float32),
        policy_logprobs_BW=jnp.zeros((B, capacity), jnp.float32) if filtered else None,
        lengths_B=jnp.zeros((B,), jnp.int32),
        stopped_B=jnp.zeros((B,), bool),
        done_B=~real_B,
        cache=cache,
    )
    record = functools.partial(_record, rng=rng, row_B=row_B, budget_B=budget_B,
                               settings=settings, greedy=greedy, filtered=filtered)
    state = record(state, logits_BV)

    for j, end in enumerate(segments):
        if j:
            cache = constrain(_grow_cache(state.cache, P + end), P + end)
            state = dataclasses.replace(state, cache=cache)
        slot_S = jnp.arange(P + end)

        def cond(state: _DecodeState, end=end):
            # Step `step` writes cache slot P + step - 1: the segment's slots last
            # while step < end. Every row is done by the largest budget (<= capacity).
            return (state.step < end) & ~jnp.all(state.done_B)

        def body(state: _DecodeState, slot_S=slot_S):
            last_B1 = jax.lax.dynamic_slice_in_dim(state.tokens_BW, state.step - 1, 1, axis=1)
            cache_index = P + state.step - 1
            positions_B1 = (context_lengths_B + state.step - 1)[:, None]
            # Each row sees its own prompt slots [start, P) and everything decoded so far.
            mask_B1S = ((slot_S[None, :] >= start_B[:, None])
                        & (slot_S[None, :] <= cache_index))[:, None, :]
            logits_B1V, cache = transformer.forward(params, config, last_B1, positions_B1,
                                                    mask_B1S, state.cache, cache_index)
            state = dataclasses.replace(state, cache=cache)
            return record(state, logits_B1V[:, 0])

        state = jax.lax.while_loop(cond, body, state)
    return (state.tokens_BW, state.logprobs_BW, state.policy_logprobs_BW, state.lengths_B,
            state.stopped_B)
