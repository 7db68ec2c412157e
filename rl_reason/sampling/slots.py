"""The continuous batch's jitted pieces: a batch of B decode slots, rows admitted into
free slots (prefill + insert), decode segments over all slots, compaction.

A slot holds one row of the call at a time. Its cache keeps the static batch's layout
(rl_reason/sampling/static.py): the context left-padded into positions [0, P), token j
generated at position P + j, so a row attends to exactly what it would in a static
batch. The rows of one batch are at different steps, so each writes its own cache
position (transformer's per-row cache_index). The cache holds `window` positions,
enough for the furthest row (the static batch's decode segments,
shapes.segment_ends), and is resized between segments: a step's attention reads the
whole cache, and reading a slice of a larger one made XLA copy the slice at every
step and layer.

Outputs are kept by row of the call ([N, W]) and written through each slot's row
index at every step, so a row that finishes needs no copy before its slot is reused
and compaction moves only the caches.

Shape letters as in rl_reason/__init__.py; here B is the slot count, A the rows of
one admission, N the rows of the call, P the bucketed context length, W the
bucketed capacity of the largest budget and S <= P + W cache positions (the
transformer's key / cache slots).
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
class SlotState:
    cache: dict              # per layer: k [B, K, E, S], v [B, K, S, E]; S: the window
    row_B: jax.Array         # int32: the row of the call in each slot (N: none yet)
    step_B: jax.Array        # int32: tokens that row has generated
    last_B: jax.Array        # int32: its last token, the next step's input
    context_B: jax.Array     # int32: its context length (prompt + prefix)
    budget_B: jax.Array      # int32: its budget of new tokens
    done_B: jax.Array        # bool: its row stopped or reached its budget, or none yet
    # By row of the call:
    tokens_NW: jax.Array           # int32, pad_id after a row's length
    logprobs_NW: jax.Array         # float32, 0 after a row's length
    policy_logprobs_NW: jax.Array | None  # float32; None unless filtered: logprobs_NW
    lengths_N: jax.Array           # int32
    stopped_N: jax.Array           # bool: emitted a stop token

    @property
    def slots(self) -> int:
        return self.row_B.shape[0]


def _constrain(state: SlotState, config, mesh) -> SlotState:
    """Slots and rows split over the batch axes, each cache as the static batch's."""
    if mesh is None:
        return state
    B, S = state.slots, state.cache["k"][0].shape[-1]
    batch = sharding.batch_sharding(mesh)
    cache = jax.lax.with_sharding_constraint(state.cache,
                                             sharding.cache_sharding(config, B, S, mesh))
    others = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)
              if f.name != "cache"}
    others = jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, batch), others)
    return SlotState(cache=cache, **others)


def _record(state: SlotState, slot_A, token_A, logprob_A, policy_logprob_A, live_A,
            settings: draw.Settings) -> SlotState:
    """Writes token number step of the rows in slots slot_A (where live_A) to the
    outputs and advances those slots; slots past B and rows not live are dropped."""
    B, N = state.slots, state.lengths_N.shape[0]
    slot_A = jnp.where(live_A, slot_A, B)
    row_A = jnp.where(live_A, state.row_B.at[slot_A].get(mode="fill", fill_value=N), N)
    step_A = state.step_B.at[slot_A].get(mode="fill", fill_value=0)
    stop_A = draw.is_stop(token_A, settings)
    budget_A = state.budget_B.at[slot_A].get(mode="fill", fill_value=1)

    def put(values_NW, value_A):
        return values_NW.at[row_A, step_A].set(value_A, mode="drop")

    policy = state.policy_logprobs_NW
    return dataclasses.replace(
        state,
        step_B=state.step_B.at[slot_A].add(1, mode="drop"),
        last_B=state.last_B.at[slot_A].set(token_A, mode="drop"),
        # A row's length is its step count, so it reaches its budget at step + 1.
        done_B=state.done_B.at[slot_A].set(stop_A | (step_A + 1 >= budget_A), mode="drop"),
        tokens_NW=put(state.tokens_NW, token_A),
        logprobs_NW=put(state.logprobs_NW, logprob_A),
        policy_logprobs_NW=None if policy is None else put(policy, policy_logprob_A),
        lengths_N=state.lengths_N.at[row_A].set(step_A + 1, mode="drop"),
        stopped_N=state.stopped_N.at[row_A].set(stop_A, mode="drop"),
    )


@functools.partial(jax.jit, static_argnames=("config", "slots", "rows", "window", "capacity",
                                             "filtered", "cache_dtype", "mesh"))
def empty(pad_id, *, config, slots: int, rows: int, window: int, capacity: int,
          filtered: bool, cache_dtype: str | None, mesh) -> SlotState:
    """B = slots empty slots (done, no row) with caches of `window` slots, and N = rows
    rows of outputs of `capacity` tokens."""
    TRACE_COUNT["slots.empty"] += 1
    B, N, W = slots, rows, capacity
    state = SlotState(
        cache=transformer.init_cache(config, B, window, cache_dtype),
        row_B=jnp.full((B,), N, jnp.int32),
        step_B=jnp.zeros((B,), jnp.int32),
        last_B=jnp.zeros((B,), jnp.int32),
        context_B=jnp.ones((B,), jnp.int32),
        budget_B=jnp.ones((B,), jnp.int32),
        done_B=jnp.ones((B,), bool),
        tokens_NW=jnp.full((N, W), pad_id, jnp.int32),
        logprobs_NW=jnp.zeros((N, W), jnp.float32),
        policy_logprobs_NW=jnp.zeros((N, W), jnp.float32) if filtered else None,
        lengths_N=jnp.zeros((N,), jnp.int32),
        stopped_N=jnp.zeros((N,), bool),
    )
    return _constrain(state, config, mesh)


@jax.jit
def unstack_layers(model: Model) -> Model:
    """The model with its layers as a list of per-layer trees (transformer.unstack_layers),
    once per call: slicing them inside every decode segment copied all weights each time
    (6% of a 64-token call at batch 64 on bench-19m)."""
    TRACE_COUNT["slots.unstack_layers"] += 1
    layers = transformer.unstack_layers(model.params["layers"], model.config.num_layers)
    return model.replace(params=dict(model.params, layers=layers))


@functools.partial(jax.jit, static_argnames=("greedy", "filtered", "mesh"),
                   donate_argnames=("state",))
def admit(model: Model, state: SlotState, tokens_AP, context_A, row_A, budget_A, slot_A, rng,
          settings: draw.Settings, *, greedy: bool, filtered: bool, mesh) -> SlotState:
    """Prefills the left-padded contexts tokens_AP, draws each row's first token and
    puts the rows into slots slot_A. Padding entries of an admission have slot B (out of
    range: dropped). The model's layers are unstacked (`unstack_layers`), as for
    `decode`."""
    TRACE_COUNT["slots.admit"] += 1
    config, params = model.config, model.params
    A, P = tokens_AP.shape
    valid_AP = jnp.arange(P)[None, :] >= (P - context_A)[:, None]
    positions_AP, mask_APP = transformer.padded_positions_and_mask(valid_AP)
    cache = transformer.init_cache(config, A, P, state.cache["k"][0].dtype)
    if mesh is not None:
        cache = jax.lax.with_sharding_constraint(cache,
                                                 sharding.cache_sharding(config, A, P, mesh))
    h_APD, cache = transformer.hidden_states(params, config, tokens_AP, positions_AP, mask_APP,
                                             cache, 0)
    # Only the last position's logits are needed: skip the [A, P, V] unembedding.
    logits_AV = transformer.unembed(params, config, h_APD[:, -1:])[:, 0]
    # Cache positions [0, P) of each slot are overwritten; positions from P on keep the
    # previous row's entries, which the mask hides until the new row writes them.
    state = dataclasses.replace(
        state,
        cache={"k": [k.at[slot_A, :, :, :P].set(new, mode="drop")
                     for k, new in zip(state.cache["k"], cache["k"])],
               "v": [v.at[slot_A, :, :P].set(new, mode="drop")
                     for v, new in zip(state.cache["v"], cache["v"])]},
        row_B=state.row_B.at[slot_A].set(row_A, mode="drop"),
        step_B=state.step_B.at[slot_A].set(0, mode="drop"),
        context_B=state.context_B.at[slot_A].set(context_A, mode="drop"),
        budget_B=state.budget_B.at[slot_A].set(budget_A, mode="drop"),
    )
    token_A, logprob_A, policy_logprob_A = draw.sample(
        logits_AV, rng, jnp.zeros_like(row_A), row_A, settings, greedy, filtered)
    state = _record(state, slot_A, token_A, logprob_A, policy_logprob_A,
                    slot_A < state.slots, settings)
    return _constrain(state, config, mesh)


@functools.partial(jax.jit, static_argnames=("context", "greedy", "filtered", "mesh"),
                   donate_argnames=("state",))
def decode(model: Model, state: SlotState, rng, settings: draw.Settings, exit_at, *,
           context: int, greedy: bool, filtered: bool, mesh) -> tuple[SlotState, jax.Array]:
    """Decodes every live slot until all are done, the furthest row fills the cache's
    window (window - context new tokens), or exit_at slots are done (the host then
    admits waiting rows into them, or compacts). Returns the state and the number of
    decode steps run."""
    TRACE_COUNT["slots.decode"] += 1
    config, params = model.config, model.params
    P, B = context, state.slots
    window = state.cache["k"][0].shape[-1]
    slot_S = jnp.arange(window)
    slot_B = jnp.arange(B)

    def cond(carry):
        state, _ = carry
        furthest = jnp.max(jnp.where(state.done_B, 0, state.step_B))
        done = jnp.sum(state.done_B)
        return (done < B) & (done < exit_at) & (furthest < window - P)

    def body(carry):
        state, steps = carry
        # Step s of a row feeds its token s - 1 at cache position P + s - 1.
        index_B = P + state.step_B - 1
        start_B = P - state.context_B
        positions_B1 = (state.context_B + state.step_B - 1)[:, None]
        mask_B1S = ((slot_S[None, :] >= start_B[:, None])
                    & (slot_S[None, :] <= index_B[:, None]))[:, None, :]
        logits_B1V, cache = transformer.forward(params, config, state.last_B[:, None],
                                                positions_B1, mask_B1S, state.cache, index_B)
        state = dataclasses.replace(state, cache=cache)
        token_B, logprob_B, policy_logprob_B = draw.sample(
            logits_B1V[:, 0], rng, state.step_B, state.row_B, settings, greedy, filtered)
        return _record(state, slot_B, token_B, logprob_B, policy_logprob_B, ~state.done_B,
                       settings), steps + 1

    state, steps = jax.lax.while_loop(cond, body, (state, jnp.zeros((), jnp.int32)))
    return _constrain(state, config, mesh), steps


def compact(model: Model, state: SlotState, keep_C, *, mesh) -> SlotState:
    """The state with only slots keep_C (every live slot, then done ones to fill C):
    the later decode steps run C slots instead of B. The outputs stay where they are."""
    slot_fields = ("cache", "row_B", "step_B", "last_B", "context_B", "budget_B", "done_B")
    taken = _take_slots(model, {name: getattr(state, name) for name in slot_fields}, keep_C,
                        mesh=mesh)
    return dataclasses.replace(state, **taken)


@functools.partial(jax.jit, static_argnames=("mesh",))
def _take_slots(model: Model, slots: dict, keep_C, *, mesh) -> dict:
    # Not donated: the C-slot arrays are new buffers (smaller than the B-slot ones).
    TRACE_COUNT["slots.compact"] += 1
    slots = jax.tree.map(lambda x: jnp.take(x, keep_C, axis=0), slots)
    if mesh is None:
        return slots
    C, S = keep_C.shape[0], slots["cache"]["k"][0].shape[-1]
    batch = sharding.batch_sharding(mesh)
    return dict(jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, batch),
                             {k: v for k, v in slots.items() if k != "cache"}),
                cache=jax.lax.with_sharding_constraint(
                    slots["cache"], sharding.cache_sharding(model.config, C, S, mesh)))


@functools.partial(jax.jit, static_argnames=("window", "mesh"))
def resize(model: Model, cache: dict, *, window: int, mesh) -> dict:
    """The caches cut or padded (with empty positions) to `window` positions. Once per
    segment, not per step; cut only past every live row's entries."""
    TRACE_COUNT["slots.resize"] += 1
    B, S = cache["k"][0].shape[0], cache["k"][0].shape[-1]

    def fit(array, axis):
        if window <= S:
            return jax.lax.slice_in_dim(array, 0, window, axis=axis)
        widths = [(0, 0)] * array.ndim
        widths[axis] = (0, window - S)
        return jnp.pad(array, widths)

    cache = {"k": [fit(k, 3) for k in cache["k"]], "v": [fit(v, 2) for v in cache["v"]]}
    if mesh is None:
        return cache
    return jax.lax.with_sharding_constraint(
        cache, sharding.cache_sharding(model.config, B, window, mesh))
