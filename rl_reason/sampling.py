"""The sampler: one jitted prefill plus a `lax.while_loop` decode over the KV cache.

    out = generate(model, prompts, max_new_tokens=256, rng=0, temperature=1.0)
    out.tokens           [N, X] int32    generated tokens incl. the stop token, then
                                         pad_id
    out.lengths          [N] int32       generated tokens incl. the stop token
    out.logprobs         [N, X] float32  log-prob of each sampled token under the
                                         distribution it was drawn from (after
                                         temperature, top-k, top-p); 0 after `lengths`
    out.policy_logprobs  [N, X] float32  the same tokens' log-probs under the policy,
                                         log_softmax(logits / temperature) with no
                                         top-k or top-p (what rl.logprobs computes);
                                         the `logprobs` array itself when no filter is
                                         on; 0 after `lengths`
    out.truncated        [N] bool        hit its budget with no stop token
    out.response_tokens()                list of each row's tokens
    out.decode(tokenizer)                list of each row's text

max_new_tokens is one budget for every row, or a sequence of one budget per prompt:
each row stops at its own budget or at its first stop token, and X = max(budgets).
A row's output does not depend on the other rows' budgets: row i of a call with
budgets [5, 30] is row i of the same call with max_new_tokens=5, padded to width 30.

`prefixes[i]` continues a partial response: prompt + prefix is the context and the
outputs hold only the continuation (its log-probs are those of the continuation).

Sampling: logits / temperature, then top-k (top_k=0: off), then top-p over what is
left (top_p=1: off), then a categorical draw. Tokens tied with the last one kept are
kept too. greedy=True (or temperature=0) takes the argmax; both its log-probs are
then those of the untempered model distribution (a point mass would always give 0).

Each row draws from its own key, fold_in(fold_in(rng, step), row), so a row's
output does not depend on padding, batch size or sharding; the same rng gives the
same output.

Shapes are bucketed (context length, batch and the largest budget rounded up, see
`bucket`) so that calls with similar inputs reuse one compilation; temperature,
top_p, top_k, stop ids and the budgets themselves are runtime values.

With `mesh`, parameters are placed by sharding.param_shardings, and the batch and KV
cache are split over ('data', 'fsdp'); the batch is padded to a multiple of that
size. In a multi-host job every process passes the same arguments and gets every
row back.

Decoding runs in up to DECODE_SEGMENTS segments, each a `lax.while_loop` whose
attention reads only the cache slots filled by the segment's end: with one fixed-size
cache every step would read all P + W slots, and at long lengths that read dominates
a step (docs/measurements.md, "Sampler against transformers"). Each segment compiles its own loop body, so very
short generations (W < 2 x MIN_SEGMENT) stay in one. Splitting a 64-token generation
too (MIN_SEGMENT 16, not 64) cut its attention reads by 30% and gave +7% / +8% tokens/s
at batch 64 / 256 on bench-19m, with bit-identical outputs
(benchmarks/results/sampler_ceiling.md).

Shape letters as in rl_reason/__init__.py; here N prompts, X the largest budget, W its
bucketed capacity, S = P + W cache slots.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from rl_reason import sharding
from rl_reason.models import transformer
from rl_reason.models.model import Model

# How many times each jitted function has been traced; a new trace means a new
# compilation. Diagnostics for tests and benchmarks.
TRACE_COUNT: collections.Counter = collections.Counter()

# Decode segments (module docstring): at most DECODE_SEGMENTS, each at least MIN_SEGMENT
# new tokens long. Four segments read 5/8 of the generated slots one segment reads, for
# four loop bodies. A decode step's attention is bound by reading the cache, so short
# generations gain too: 64 new tokens after a 16-token prompt read 56 slots a step on
# average in four segments, 80 in one.
DECODE_SEGMENTS = 4
MIN_SEGMENT = 16


def segment_ends(capacity: int) -> tuple[int, ...]:
    """Where each decode segment ends, in new tokens: equal parts of `capacity`."""
    n = max(1, min(DECODE_SEGMENTS, capacity // MIN_SEGMENT))
    return tuple(-(-capacity * (j + 1) // n) for j in range(n))


@dataclasses.dataclass(frozen=True)
class SampleOutput:
    tokens: np.ndarray           # [N, W] int32
    lengths: np.ndarray          # [N] int32
    logprobs: np.ndarray         # [N, X] float32, of the sampling distribution
    policy_logprobs: np.ndarray  # [N, X] float32, of the unfiltered policy
    truncated: np.ndarray        # [N] bool

    def response_tokens(self) -> list[list[int]]:
        """Each row's generated tokens, up to and including its stop token."""
        return [row[:n].tolist() for row, n in zip(self.tokens, self.lengths)]

    def decode(self, tokenizer, skip_stop_tokens: Sequence[int] = ()) -> list[str]:
        """Each row's text via tokenizer.decode(list[int]), dropping skip_stop_tokens
        at the end of a row (e.g. the EOS token)."""
        skip = set(skip_stop_tokens)
        texts = []
        for ids in self.response_tokens():
            if ids and ids[-1] in skip:
                ids = ids[:-1]
            texts.append(tokenizer.decode(ids))
        return texts


def bucket(n: int, minimum: int = 32) -> int:
    """Smallest power of two or 1.5 x power of two that is >= max(n, minimum).

    (32, 48, 64, 96, 128, ...): padding stays under a third of the bucket while the
    number of distinct shapes, hence compilations, grows only logarithmically.
    """
    n = max(n, minimum)
    power = 1 << (n - 1).bit_length()
    three_quarters = power // 4 * 3
    return three_quarters if power >= 4 and three_quarters >= n else power


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _Settings:
    """Runtime sampling settings (traced: changing them does not recompile)."""

    temperature: jax.Array  # [] float32
    top_p: jax.Array        # [] float32
    top_k: jax.Array        # [] int32; 0 = off
    stop_ids: jax.Array     # [n] int32, padded with -1
    max_new_tokens_B: jax.Array  # int32, each <= W; batch-padding rows 1
    pad_id: jax.Array       # [] int32


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


def _filter_logits(logits_BV, settings: _Settings):
    """Logits with everything outside top-k, then top-p, set to -inf (one sort)."""
    V = logits_BV.shape[-1]
    sorted_BV = -jnp.sort(-logits_BV, axis=-1)  # descending
    rank_V = jnp.arange(V)
    k = jnp.where(settings.top_k > 0, jnp.minimum(settings.top_k, V), V)
    in_top_k_BV = rank_V < k
    probs_BV = jax.nn.softmax(jnp.where(in_top_k_BV, sorted_BV, -jnp.inf), axis=-1)
    # Keep a token while the mass strictly before it is < top_p: the smallest prefix
    # whose mass reaches top_p. Rank 0 always passes (0 < top_p).
    mass_before_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV
    keep_BV = in_top_k_BV & (mass_before_BV < settings.top_p)
    num_keep_B = jnp.maximum(jnp.sum(keep_BV, axis=-1), 1)
    threshold_B = jnp.take_along_axis(sorted_BV, num_keep_B[:, None] - 1, axis=-1)
    return jnp.where(logits_BV >= threshold_B, logits_BV, -jnp.inf)


def _sample(logits_BV, key, settings: _Settings, greedy: bool, filtered: bool):
    """(token_B, logprob_B, policy_logprob_B) for one step: log-probs under the sampling
    distribution and under the unfiltered one (the same array unless filtered). Each
    row uses its own key fold_in(key, row)."""
    def logprob_of(logits_BV, token_B):
        logprobs_BV = jax.nn.log_softmax(logits_BV, axis=-1)
        return jnp.take_along_axis(logprobs_BV, token_B[:, None], axis=-1)[:, 0]

    if greedy:
        token_B = jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
        logprob_B = logprob_of(logits_BV, token_B)
        return token_B, logprob_B, logprob_B
    policy_BV = logits_BV / settings.temperature
    sampled_BV = _filter_logits(policy_BV, settings) if filtered else policy_BV
    B, V = logits_BV.shape
    row_keys = jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(B))
    gumbel_BV = jax.vmap(lambda k: jax.random.gumbel(k, (V,), jnp.float32))(row_keys)
    token_B = jnp.argmax(sampled_BV + gumbel_BV, axis=-1).astype(jnp.int32)
    logprob_B = logprob_of(sampled_BV, token_B)
    return token_B, logprob_B, logprob_of(policy_BV, token_B) if filtered else logprob_B


def _record(state: _DecodeState, logits_BV, rng, settings: _Settings, greedy: bool,
            filtered: bool) -> _DecodeState:
    """Samples token number `state.step` for every row still running."""
    token_B, logprob_B, policy_logprob_B = _sample(
        logits_BV, jax.random.fold_in(rng, state.step), settings, greedy, filtered)
    live_B = ~state.done_B

    def put(values_BW, value_B, fill):
        value_B = jnp.where(live_B, value_B, fill)
        return jax.lax.dynamic_update_index_in_dim(values_BW, value_B, state.step, 1)

    is_stop_B = jnp.any(token_B[:, None] == settings.stop_ids[None, :], axis=-1) & live_B
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
        done_B=state.done_B | is_stop_B | (state.step + 1 >= settings.max_new_tokens_B),
    )


def _grow_cache(cache, slots: int):
    """The cache with empty slots appended up to `slots` (layout: transformer)."""
    def pad(array, axis):
        widths = [(0, 0)] * array.ndim
        widths[axis] = (0, slots - array.shape[axis])
        return jnp.pad(array, widths)
    return {"k": [pad(k, 3) for k in cache["k"]], "v": [pad(v, 2) for v in cache["v"]]}


@functools.partial(jax.jit, static_argnames=("capacity", "segments", "greedy", "filtered",
                                             "mesh"))
def _generate_padded(model: Model, tokens_BP, context_lengths_B, real_B, rng,
                     settings: _Settings, *, capacity: int, segments: tuple[int, ...],
                     greedy: bool, filtered: bool, mesh):
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

    cache = constrain(transformer.init_cache(config, B, P + segments[0]), P + segments[0])
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
    state = _record(state, logits_BV, rng, settings, greedy, filtered)

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
            return _record(state, logits_B1V[:, 0], rng, settings, greedy, filtered)

        state = jax.lax.while_loop(cond, body, state)
    return (state.tokens_BW, state.logprobs_BW, state.policy_logprobs_BW, state.lengths_B,
            state.stopped_B)


def _put(array: np.ndarray, placement):
    """Host array -> device array; every process holds the same global array."""
    if placement is None:
        return jnp.asarray(array)
    return jax.make_array_from_callback(array.shape, placement, lambda index: array[index])


def _fetch(array: jax.Array) -> np.ndarray:
    if jax.process_count() > 1:
        return np.asarray(multihost_utils.process_allgather(array, tiled=True))
    return np.asarray(array)


def generate(model: Model, prompts: Sequence[Sequence[int]], *,
             max_new_tokens: int | Sequence[int],
             rng: jax.Array | int, temperature: float = 1.0, top_p: float = 1.0,
             top_k: int = 0, greedy: bool = False,
             stop_token_ids: Sequence[int] | None = None,
             prefixes: Sequence[Sequence[int]] | None = None, pad_id: int = 0,
             mesh: jax.sharding.Mesh | None = None) -> SampleOutput:
    """Samples a continuation of every prompt (see the module docstring).

    max_new_tokens: one budget for all rows, or one per prompt.
    stop_token_ids defaults to model.config.eos_token_ids; pass () to never stop early.
    """
    prompts = [list(p) for p in prompts]
    if not prompts:
        raise ValueError("generate: no prompts")
    if prefixes is not None:
        if len(prefixes) != len(prompts):
            raise ValueError(f"generate: {len(prefixes)} prefixes for {len(prompts)} prompts")
        contexts = [p + list(x) for p, x in zip(prompts, prefixes)]
    else:
        contexts = prompts
    if any(len(c) == 0 for c in contexts):
        raise ValueError("generate: every prompt (plus prefix) needs at least one token")
    # An out-of-range id would be clamped by the embedding lookup, not rejected.
    vocab = model.config.vocab_size
    flat = np.concatenate([np.asarray(c, np.int64) for c in contexts])
    bad = flat[(flat < 0) | (flat >= vocab)]
    if bad.size:
        raise ValueError(f"generate: token id {bad[0]} is outside the model's vocabulary "
                         f"[0, vocab_size={vocab})")
    N = len(contexts)
    per_row = np.ndim(max_new_tokens) > 0
    budgets = [int(b) for b in max_new_tokens] if per_row else [int(max_new_tokens)] * N
    if len(budgets) != N:
        raise ValueError(f"generate: {len(budgets)} max_new_tokens for {N} prompts")
    config = model.config
    for i, (context, budget) in enumerate(zip(contexts, budgets)):
        name = f"max_new_tokens[{i}]" if per_row else "max_new_tokens"
        if budget < 1:
            raise ValueError(f"generate: {name}={budget} must be >= 1")
        if len(context) + budget > config.max_position_embeddings:
            raise ValueError(f"generate: row {i}: context of {len(context)} tokens + "
                             f"{name}={budget} exceeds max_position_embeddings="
                             f"{config.max_position_embeddings}")
    if temperature < 0:
        raise ValueError(f"generate: temperature={temperature} must be >= 0 (0 = greedy)")
    if not 0 < top_p <= 1:
        raise ValueError(f"generate: top_p={top_p} must be in (0, 1]")
    if top_k < 0:
        raise ValueError(f"generate: top_k={top_k} must be >= 0 (0 = off)")
    greedy = greedy or temperature == 0
    filtered = not greedy and (top_p < 1 or top_k > 0)
    stop_ids = config.eos_token_ids if stop_token_ids is None else tuple(stop_token_ids)

    # 16, not bucket's 32: a 16-token prompt padded to 32 doubled the prefill and made
    # every decode step attend over 16 more empty slots (measured on bench-19m: +10% /
    # +17% tokens/s at batch 64 / 256); at most two more shapes below 32.
    P = bucket(max(len(c) for c in contexts), minimum=16)
    B = bucket(N, minimum=1)
    if mesh is not None:
        data_parallel = sharding.data_parallel_size(mesh)
        B = -(-B // data_parallel) * data_parallel
    tokens_BP = np.full((B, P), pad_id, np.int32)
    context_lengths_B = np.ones((B,), np.int32)  # padding rows: one pad token
    for i, c in enumerate(contexts):
        tokens_BP[i, P - len(c):] = c
        context_lengths_B[i] = len(c)
    real_B = np.arange(B) < N
    budgets_B = np.ones((B,), np.int32)
    budgets_B[:N] = budgets
    stop_array = np.full((max(8, -(-len(stop_ids) // 8) * 8),), -1, np.int32)
    stop_array[:len(stop_ids)] = stop_ids

    W = max(budgets)
    capacity = bucket(W)
    rng = jax.random.PRNGKey(rng) if isinstance(rng, int) else rng
    batch = sharding.batch_sharding(mesh) if mesh is not None else None
    same = sharding.replicated(mesh) if mesh is not None else None
    if mesh is not None:
        model = model.replace(params=sharding.shard_params(model.params, config, mesh))
        rng = jax.device_put(rng, same)
    settings = _Settings(
        temperature=_put(np.float32(temperature if not greedy else 1.0), same),
        top_p=_put(np.float32(top_p), same),
        top_k=_put(np.int32(top_k), same),
        stop_ids=_put(stop_array, same),
        max_new_tokens_B=_put(budgets_B, batch),
        pad_id=_put(np.int32(pad_id), same),
    )
    tokens, logprobs, policy_logprobs, lengths, stopped = _generate_padded(
        model, _put(tokens_BP, batch), _put(context_lengths_B, batch), _put(real_B, batch),
        rng, settings, capacity=capacity, segments=segment_ends(capacity), greedy=greedy,
        filtered=filtered, mesh=mesh)
    logprobs = _fetch(logprobs)[:N, :W]
    return SampleOutput(
        tokens=_fetch(tokens)[:N, :W],
        lengths=_fetch(lengths)[:N],
        logprobs=logprobs,
        policy_logprobs=(logprobs if policy_logprobs is None
                         else _fetch(policy_logprobs)[:N, :W]),
        truncated=~_fetch(stopped)[:N],
    )
