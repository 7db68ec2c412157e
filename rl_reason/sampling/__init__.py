"""The sampler: prefill, then decoding over a KV cache, with continuous batching.

    out = generate(model, prompts, max_new_tokens=256, rng=0, temperature=1.0,
                   max_slots=64)
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

`prefixes[i]` continues a partial response: prompt + prefix is the context and the
outputs hold only the continuation (its log-probs are those of the continuation).

Sampling: logits / temperature, then top-k (top_k=0: off), then top-p over what is
left (top_p=1: off), then a categorical draw. Tokens tied with the last one kept are
kept too. greedy=True (or temperature=0) takes the argmax; both its log-probs are
then those of the untempered model distribution (a point mass would always give 0).

A row's output depends only on its own context, budget, index in the call and the
rng: each row draws its step-s token with the key fold_in(fold_in(rng, s), row)
(rl_reason/sampling/draw.py), so padding, batch size, sharding, the other rows'
budgets and the slot or step a continuous batch runs it at do not change it (up to
float rounding where the compiled shapes differ: tokens agree, log-probs to ~1e-5).

Continuous batching (the default). A call decodes at most `max_slots` rows at a time
(0: all of them) in a batch of slots. When a row stops, a waiting row is prefilled
into its slot; when none waits, the live rows are compacted into fewer slots, so a
finished row costs no more decode work: a call costs about the sum of its rows'
lengths, not rows x the longest. The jitted pieces (rl_reason/sampling/slots.py) are
driven by a host loop (rl_reason/sampling/scheduler.py) that reads two [slots]
arrays between decode segments. `continuous=False` runs the static batch
(rl_reason/sampling/static.py: every row until the last one stops, one jitted call
per `max_slots` rows), kept for comparison.

Shapes are bucketed (rl_reason/sampling/shapes.py: context length, rows, slots and
the largest budget rounded up; a few attention windows; compaction to powers of two)
so calls with similar inputs reuse compilations; temperature, top_p, top_k, stop ids
and the budgets themselves are runtime values.

cache_dtype stores the KV cache in another dtype than the model's (e.g. 'bfloat16':
half the cache's memory and reads; keys and values are rounded, so outputs change
slightly). Default: the model's dtype.

With `mesh`, parameters are placed by sharding.param_shardings, and the slots and KV
cache are split over ('data', 'fsdp'); the slots are padded to a multiple of that
size. In a multi-host job every process passes the same arguments and gets every
row back.

Shape letters as in rl_reason/__init__.py; here N prompts, X the largest budget.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from rl_reason import sharding
from rl_reason.models.model import Model
from rl_reason.sampling import draw, scheduler, shapes, static
from rl_reason.sampling.output import SampleOutput
from rl_reason.sampling.shapes import TRACE_COUNT, bucket, segment_ends

__all__ = ["generate", "SampleOutput", "TRACE_COUNT", "bucket", "segment_ends"]


def _check(model: Model, prompts, prefixes, max_new_tokens, temperature, top_p, top_k,
           max_slots) -> tuple[list[list[int]], list[int]]:
    """The contexts (prompt + prefix) and budgets, or a ValueError naming the argument."""
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
    for i, (context, budget) in enumerate(zip(contexts, budgets)):
        name = f"max_new_tokens[{i}]" if per_row else "max_new_tokens"
        if budget < 1:
            raise ValueError(f"generate: {name}={budget} must be >= 1")
        if len(context) + budget > model.config.max_position_embeddings:
            raise ValueError(f"generate: row {i}: context of {len(context)} tokens + "
                             f"{name}={budget} exceeds max_position_embeddings="
                             f"{model.config.max_position_embeddings}")
    if temperature < 0:
        raise ValueError(f"generate: temperature={temperature} must be >= 0 (0 = greedy)")
    if not 0 < top_p <= 1:
        raise ValueError(f"generate: top_p={top_p} must be in (0, 1]")
    if top_k < 0:
        raise ValueError(f"generate: top_k={top_k} must be >= 0 (0 = off)")
    if max_slots < 0:
        raise ValueError(f"generate: max_slots={max_slots} must be >= 0 (0 = all rows)")
    return contexts, budgets


def generate(model: Model, prompts: Sequence[Sequence[int]], *,
             max_new_tokens: int | Sequence[int],
             rng: jax.Array | int, temperature: float = 1.0, top_p: float = 1.0,
             top_k: int = 0, greedy: bool = False,
             stop_token_ids: Sequence[int] | None = None,
             prefixes: Sequence[Sequence[int]] | None = None, pad_id: int = 0,
             max_slots: int = 0, continuous: bool = True, cache_dtype: str | None = None,
             mesh: jax.sharding.Mesh | None = None) -> SampleOutput:
    """Samples a continuation of every prompt (see the module docstring).

    max_new_tokens: one budget for all rows, or one per prompt.
    stop_token_ids defaults to model.config.eos_token_ids; pass () to never stop early.
    max_slots: rows decoded at once (0: all); continuous=False: the static batch.
    """
    contexts, budgets = _check(model, prompts, prefixes, max_new_tokens, temperature, top_p,
                               top_k, max_slots)
    config = model.config
    greedy = greedy or temperature == 0
    filtered = not greedy and (top_p < 1 or top_k > 0)
    stop_ids = config.eos_token_ids if stop_token_ids is None else tuple(stop_token_ids)

    N = len(contexts)
    # 16, not bucket's 32: a 16-token prompt padded to 32 doubled the prefill and made
    # every decode step attend over 16 more empty slots (measured on bench-19m: +10% /
    # +17% tokens/s at batch 64 / 256); at most two more shapes below 32.
    P = bucket(max(len(c) for c in contexts), minimum=16)
    tokens_NP = np.full((N, P), pad_id, np.int32)
    for i, c in enumerate(contexts):
        tokens_NP[i, P - len(c):] = c
    rows = scheduler.Rows(tokens_NP=tokens_NP,
                          context_N=np.array([len(c) for c in contexts], np.int32),
                          budget_N=np.array(budgets, np.int32))
    stop_array = np.full((max(8, -(-len(stop_ids) // 8) * 8),), -1, np.int32)
    stop_array[:len(stop_ids)] = stop_ids
    W = max(budgets)
    capacity = bucket(W)
    rng = jax.random.PRNGKey(rng) if isinstance(rng, int) else rng
    same = sharding.replicated(mesh) if mesh is not None else None
    if mesh is not None:
        model = model.replace(params=sharding.shard_params(model.params, config, mesh))
        rng = jax.device_put(rng, same)
    settings = draw.Settings(
        temperature=scheduler.put(np.float32(temperature if not greedy else 1.0), same),
        top_p=scheduler.put(np.float32(top_p), same),
        top_k=scheduler.put(np.int32(top_k), same),
        stop_ids=scheduler.put(stop_array, same),
        pad_id=scheduler.put(np.int32(pad_id), same),
    )
    multiple = sharding.data_parallel_size(mesh) if mesh is not None else 1
    slots = shapes.slot_count(N, max_slots, multiple)
    options = dict(capacity=capacity, greedy=greedy, filtered=filtered, cache_dtype=cache_dtype,
                   mesh=mesh)
    if continuous:
        state = scheduler.run(model, rows, slots=slots, rng=rng, settings=settings, **options)
        tokens, logprobs, policy_logprobs, lengths, stopped = scheduler.fetch(
            (state.tokens_NW, state.logprobs_NW, state.policy_logprobs_NW, state.lengths_N,
             state.stopped_N))
    else:
        tokens, logprobs, policy_logprobs, lengths, stopped = _static_in_chunks(
            model, rows, slots, rng, settings, **options)
    logprobs = np.asarray(logprobs)[:N, :W]
    return SampleOutput(
        tokens=np.asarray(tokens)[:N, :W],
        lengths=np.asarray(lengths)[:N],
        logprobs=logprobs,
        policy_logprobs=(logprobs if policy_logprobs is None
                         else np.asarray(policy_logprobs)[:N, :W]),
        truncated=~np.asarray(stopped)[:N],
    )


def _static_in_chunks(model, rows: scheduler.Rows, slots: int, rng, settings, *, capacity,
                      greedy, filtered, cache_dtype, mesh):
    """The static batch over `slots` rows at a time (rows keep their index in the call,
    so their keys); the outputs concatenated."""
    N = rows.count
    multiple = sharding.data_parallel_size(mesh) if mesh is not None else 1
    batch = sharding.batch_sharding(mesh) if mesh is not None else None
    parts = []
    for start in range(0, N, slots):
        n = min(slots, N - start)
        B = shapes.slot_count(n, slots, multiple)
        tokens_BP = np.full((B, rows.tokens_NP.shape[1]), 0, np.int32)
        tokens_BP[:n] = rows.tokens_NP[start:start + n]
        context_B = np.ones(B, np.int32)   # padding rows: one token
        context_B[:n] = rows.context_N[start:start + n]
        budget_B = np.ones(B, np.int32)
        budget_B[:n] = rows.budget_N[start:start + n]
        real_B = np.arange(B) < n
        row_B = (start + np.arange(B)).astype(np.int32)
        out = static.generate_static(
            model, *(scheduler.put(a, batch) for a in (tokens_BP, context_B, real_B, row_B,
                                                       budget_B)),
            rng, settings, capacity=capacity, segments=segment_ends(capacity), greedy=greedy,
            filtered=filtered, cache_dtype=cache_dtype, mesh=mesh)
        parts.append([None if x is None else np.asarray(x)[:n]
                      for x in scheduler.fetch(out)])
    return [None if part[0] is None else np.concatenate(part)
            for part in zip(*parts)]
