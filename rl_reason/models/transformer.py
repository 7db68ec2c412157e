"""Decoder-only transformer as a pure function over a plain parameter pytree.

Shape letters as in rl_reason/__init__.py (here T is the query length and S the key /
cache length).

Parameters (per-layer arrays are stacked on a leading L axis and scanned over, so
compile time does not grow with depth):

    embed       [V, D]
    layers/
      attn_norm [L, D]      mlp_norm [L, D]
      q [L, D, H, E]   k [L, D, K, E]   v [L, D, K, E]   o [L, H, E, D]
      q_bias [L, H, E] k_bias [L, K, E] v_bias [L, K, E]  (qwen2 only)
      q_norm [L, E]    k_norm [L, E]                      (qwen3 only)
      gate [L, D, F]   up [L, D, F]     down [L, F, D]
    final_norm  [D]
    lm_head     [D, V]   (absent when embeddings are tied)

The KV cache is an explicit pytree {'k': L x [B, K, E, S], 'v': L x [B, K, S, E]} (one
array per layer, so a decode step writes its new token in place without moving the
rest of the cache) passed in and returned. Both are heads-major and keys are stored
transposed, so a decode step's scores (q . k over E) and output (p . v over S) each
reduce over a non-minor axis: several times faster on CPU than the token-major
[B, S, K, E] layout (benchmarks/decode_attention.py; figures in docs/measurements.md), and plain
matmuls without a transpose on accelerators. The cached path takes the layers stacked
or already split by `unstack_layers` (the sampler splits them once, outside its
loop). Callers say which slots each query may attend to with a boolean mask
[B, T, S], so left padding, prompts of different lengths and continuation all reduce
to building the right mask and positions.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from rl_reason.models.config import ModelConfig

Params = dict[str, Any]
Cache = dict[str, list[jax.Array]]


def _dtype(name: str):
    return jnp.dtype(name)


def init_params(config: ModelConfig, rng: jax.Array) -> Params:
    """Random parameters (normal, std 0.02; norms at 1), in config.param_dtype."""
    c = config
    D, F, H, K, E, L, V = (c.hidden_size, c.intermediate_size, c.num_heads, c.num_kv_heads,
                           c.head_dim, c.num_layers, c.vocab_size)
    dtype = _dtype(c.param_dtype)
    keys = iter(jax.random.split(rng, 16))

    def normal(shape):
        return (0.02 * jax.random.normal(next(keys), shape, jnp.float32)).astype(dtype)

    layers = {
        "attn_norm": jnp.ones((L, D), dtype),
        "mlp_norm": jnp.ones((L, D), dtype),
        "q": normal((L, D, H, E)),
        "k": normal((L, D, K, E)),
        "v": normal((L, D, K, E)),
        "o": normal((L, H, E, D)),
        "gate": normal((L, D, F)),
        "up": normal((L, D, F)),
        "down": normal((L, F, D)),
    }
    if c.qkv_bias:
        layers.update(q_bias=normal((L, H, E)), k_bias=normal((L, K, E)), v_bias=normal((L, K, E)))
    if c.qk_norm:
        layers.update(q_norm=jnp.ones((L, E), dtype), k_norm=jnp.ones((L, E), dtype))
    params = {"embed": normal((V, D)), "layers": layers, "final_norm": jnp.ones((D,), dtype)}
    if not c.tie_embeddings:
        params["lm_head"] = normal((D, V))
    return params


def rms_norm(x, weight, eps: float):
    # Normalise in float32 and cast back before the weight, as the HF reference does.
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return weight.astype(x.dtype) * x32.astype(x.dtype)


def rope_inverse_frequencies(config: ModelConfig) -> jax.Array:
    E = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (jnp.arange(0, E, 2, dtype=jnp.float32) / E))
    s = config.rope_scaling
    if s is None:
        return inv_freq
    # Llama 3.1: long wavelengths are slowed down by `factor`, short ones kept, and
    # the band in between is interpolated smoothly.
    low_freq_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_freq_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = jnp.where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq)
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor)
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return jnp.where(is_medium, smoothed, scaled)


def rope_cos_sin(positions_BT, inv_freq):
    """cos and sin of the rotary angles, [B, T, E/2] each; one forward computes them
    once for all layers."""
    angles = positions_BT.astype(jnp.float32)[..., None] * inv_freq
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x_BTNE, cos_sin):
    """Rotary embedding in the HF 'rotate_half' layout (first half, second half)."""
    cos, sin = (a[:, :, None, :] for a in cos_sin)
    x = x_BTNE.astype(jnp.float32)
    x1, x2 = jnp.split(x, 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BTNE.dtype)


def _einsum_attention(q_BTHE, k, v, mask_BTS, k_axes: str, v_axes: str):
    """Masked softmax attention as two einsums; k_axes / v_axes name the key and value
    layouts in einsum letters (b batch, s slot, k kv head, q query heads per kv head,
    e head dim)."""
    B, T, H, E = q_BTHE.shape
    K = k.shape[k_axes.index("k")]
    q = q_BTHE.reshape(B, T, K, H // K, E)
    scores = jnp.einsum(f"btkqe,{k_axes}->bkqts", q, k,
                        preferred_element_type=jnp.float32) / math.sqrt(E)
    scores = jnp.where(mask_BTS[:, None, None, :, :], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum(f"bkqts,{v_axes}->btkqe", probs, v)
    return out.reshape(B, T, H, E)


def _attention(q_BTHE, k_BSKE, v_BSKE, mask_BTS):
    """Attention of T queries over the T keys of the same pass (no cache)."""
    return _einsum_attention(q_BTHE, k_BSKE, v_BSKE, mask_BTS, "bske", "bske")


def _cached_attention(q_BTHE, k_BKES, v_BKSE, mask_BTS):
    """Attention of T queries over the S cache slots (cache layout: module docstring)."""
    if q_BTHE.shape[1] == 1 and jax.default_backend() == "cpu":
        # One query per sequence as fused multiply-and-reduce over non-minor axes:
        # faster than the einsum on CPU (benchmarks/decode_attention.py).
        B, _, H, E = q_BTHE.shape
        K = k_BKES.shape[1]
        q_BKQE1 = q_BTHE.reshape(B, K, H // K, E, 1).astype(jnp.float32)
        scores = jnp.sum(q_BKQE1 * k_BKES[:, :, None], axis=3) / math.sqrt(E)  # [B,K,Q,S]
        scores = jnp.where(mask_BTS[:, :, None, :], scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(v_BKSE.dtype)
        out = jnp.sum(probs[..., None] * v_BKSE[:, :, None], axis=3)           # [B,K,Q,E]
        return out.reshape(B, 1, H, E)
    return _einsum_attention(q_BTHE, k_BKES, v_BKSE, mask_BTS, "bkes", "bkse")


def _dense(x, w, in_dims: int = 1):
    """x's last `in_dims` axes contracted with w's first ones, as one 2-D matmul over
    all B * T rows. For the 3-D einsum XLA's CPU backend wrote each weight gradient's
    operand transposed, element by element, before the matmul; the 2-D form needs no
    transpose (docs/measurements.md, "Sampler against transformers")."""
    lead, contracted = x.shape[:x.ndim - in_dims], x.shape[x.ndim - in_dims:]
    out = w.shape[in_dims:]
    x_ND = x.reshape(math.prod(lead), math.prod(contracted))
    w_DO = w.astype(x.dtype).reshape(math.prod(contracted), math.prod(out))
    return (x_ND @ w_DO).reshape(*lead, *out)


def _write_cache(k_cache_BKES, v_cache_BKSE, k_BTKE, v_BTKE, cache_index):
    """The caches with the T new keys and values written at slots [cache_index,
    cache_index + T): one index for every row, or (T == 1) a [B] vector of each row's
    own slot, as a continuous batch's rows are at different steps."""
    k_BKET = jnp.transpose(k_BTKE, (0, 2, 3, 1)).astype(k_cache_BKES.dtype)
    v_BKTE = jnp.transpose(v_BTKE, (0, 2, 1, 3)).astype(v_cache_BKSE.dtype)
    if jnp.ndim(cache_index) == 0:
        return (jax.lax.dynamic_update_slice_in_dim(k_cache_BKES, k_BKET, cache_index, axis=3),
                jax.lax.dynamic_update_slice_in_dim(v_cache_BKSE, v_BKTE, cache_index, axis=2))
    # One scatter per cache, in place: a select over all slots would read and write the
    # whole cache at every step.
    rows_B = jnp.arange(k_cache_BKES.shape[0])
    return (k_cache_BKES.at[rows_B, :, :, cache_index].set(k_BKET[..., 0]),
            v_cache_BKSE.at[rows_B, :, cache_index].set(v_BKTE[:, :, 0]))


def _layer(config: ModelConfig, cos_sin, h_BTD, layer, mask_BTS,
           k_cache_BKES, v_cache_BKSE, cache_index, attend=None):
    """One decoder layer. attend: (q, k, v) -> attention output, replacing the masked
    self-attention (the shared-prefix layout's attention)."""
    c = config
    x = rms_norm(h_BTD, layer["attn_norm"], c.rms_norm_eps)
    q = _dense(x, layer["q"])
    k = _dense(x, layer["k"])
    v = _dense(x, layer["v"])
    if c.qkv_bias:
        q = q + layer["q_bias"].astype(x.dtype)
        k = k + layer["k_bias"].astype(x.dtype)
        v = v + layer["v_bias"].astype(x.dtype)
    if c.qk_norm:
        q = rms_norm(q, layer["q_norm"], c.rms_norm_eps)
        k = rms_norm(k, layer["k_norm"], c.rms_norm_eps)
    q = apply_rope(q, cos_sin)
    k = apply_rope(k, cos_sin)
    if attend is not None:
        attn = attend(q, k, v)
    elif k_cache_BKES is None:
        attn = _attention(q, k, v, mask_BTS)
    else:
        k_cache_BKES, v_cache_BKSE = _write_cache(k_cache_BKES, v_cache_BKSE, k, v, cache_index)
        attn = _cached_attention(q, k_cache_BKES.astype(x.dtype),
                                 v_cache_BKSE.astype(x.dtype), mask_BTS)
    h_BTD = h_BTD + _dense(attn, layer["o"], in_dims=2)
    x = rms_norm(h_BTD, layer["mlp_norm"], c.rms_norm_eps)
    gate = _dense(x, layer["gate"])
    up = _dense(x, layer["up"])
    h_BTD = h_BTD + _dense(jax.nn.silu(gate) * up, layer["down"])
    return h_BTD, k_cache_BKES, v_cache_BKSE


def hidden_states(params: Params, config: ModelConfig, tokens_BT, positions_BT, mask_BTS,
                  cache: Cache | None = None, cache_index=0, remat: bool = False):
    """Final (normed) hidden states [B, T, D] and the updated cache.

    mask_BTS[b, t, s] says whether query t of sequence b attends to key slot s. Without a
    cache the keys are the T query tokens themselves (S == T); with a cache, the T new
    keys are written at slots [cache_index, cache_index + T) before attending over S.
    cache_index is one slot for every row, or, for one new token (T == 1), a [B] vector
    of each row's own slot.
    """
    c = config
    dtype = _dtype(c.dtype)
    cos_sin = rope_cos_sin(positions_BT, rope_inverse_frequencies(c))
    h = params["embed"].astype(dtype)[tokens_BT]

    def layer_fn(h, layer, k_cache, v_cache):
        return _layer(c, cos_sin, h, layer, mask_BTS, k_cache, v_cache, cache_index)

    if remat:
        layer_fn = jax.checkpoint(layer_fn)

    if cache is None:
        def body(h, layer):
            h, _, _ = layer_fn(h, layer, None, None)
            return h, None
        h, _ = jax.lax.scan(body, h, params["layers"])
        new_cache = None
    else:
        # Layers unrolled over per-layer caches: each cache buffer is updated in place.
        # A stacked [L, ...] cache in a scan carry is sliced out and written back per
        # layer, moving the whole cache twice per decode step (on CPU at batch 256,
        # more than three times the time of the step's matmuls).
        new_cache = {"k": [], "v": []}
        layers = params["layers"]
        if not isinstance(layers, list):
            layers = unstack_layers(layers, c.num_layers)
        for i, layer in enumerate(layers):
            h, k_i, v_i = layer_fn(h, layer, cache["k"][i], cache["v"][i])
            new_cache["k"].append(k_i)
            new_cache["v"].append(v_i)
    return rms_norm(h, params["final_norm"], c.rms_norm_eps), new_cache


def shared_prefix_hidden_states(params: Params, config: ModelConfig, prefix_tokens_PT,
                                prefix_valid_PT, tokens_NT, valid_NT, prefix_index_N,
                                blocks: int = 1, remat: bool = False):
    """Final (normed) hidden states of a shared-prefix batch: (prefix [P, Tp, D],
    suffix [N, Ts, D]).

    Row i is the sequence prefix_tokens[j] + tokens[i] (each right-padded; valid marks
    the real tokens), with j its prefix row: rows that repeat a prompt (a GRPO group)
    run it once. The batch is cut into `blocks` equal blocks of prefix rows and of
    suffix rows (the rows a device, or a micro-batch on it, holds), and
    prefix_index_N[i] is row i's prefix row counted within its own block, so every
    gather stays inside a block. The prefix rows attend causally to themselves; suffix
    token t of row i attends to every real token of its prefix and causally to its
    own row; its position continues from the prefix's length. Gradients reach each
    prefix through every row that uses it. The states equal those of the rows run
    whole (`hidden_states` on prefix + suffix) to float tolerance.
    """
    c = config
    dtype = _dtype(c.dtype)
    P, Tp = prefix_tokens_PT.shape
    N, Ts = tokens_NT.shape
    if P % blocks or N % blocks:
        raise ValueError(f"{P} prefix rows and {N} rows do not split into {blocks} blocks")
    p, n = P // blocks, N // blocks
    prefix_valid_PT = prefix_valid_PT.astype(bool)
    valid_NT = valid_NT.astype(bool)
    index_bn = prefix_index_N.astype(jnp.int32).reshape(blocks, n)

    def gather(x_P):
        """Each row's prefix row of x [P, ...] -> [N, ...] (within blocks)."""
        x_bp = x_P.reshape(blocks, p, *x_P.shape[1:])
        return jax.vmap(lambda x, i: x[i])(x_bp, index_bn).reshape(N, *x_P.shape[1:])

    prefix_positions, prefix_mask_PTT = padded_positions_and_mask(prefix_valid_PT)
    prefix_len_P = jnp.sum(prefix_valid_PT, axis=1)
    positions_NT = gather(prefix_len_P)[:, None] + jnp.arange(Ts)[None, :]
    # Suffix queries: every real prefix key, then causally their own row's keys (a
    # padding query attends to itself only, so its output stays finite).
    own_mask_NTT = padded_positions_and_mask(valid_NT)[1]
    to_prefix_NTS = gather(prefix_valid_PT)[:, None, :] & valid_NT[:, :, None]
    suffix_mask_NTS = jnp.concatenate(
        [jnp.broadcast_to(to_prefix_NTS, (N, Ts, Tp)), own_mask_NTT], axis=2)

    # One [blocks, p * Tp + n * Ts] token axis: each block's prefix tokens, then its
    # suffix tokens. Projections and MLPs run over all of them as one batch of rows.
    def join(prefix_P, suffix_N):
        return jnp.concatenate([prefix_P.reshape(blocks, p * Tp, *prefix_P.shape[2:]),
                                suffix_N.reshape(blocks, n * Ts, *suffix_N.shape[2:])],
                               axis=1)

    def split(x):
        return (x[:, :p * Tp].reshape(P, Tp, *x.shape[2:]),
                x[:, p * Tp:].reshape(N, Ts, *x.shape[2:]))

    cos_sin = rope_cos_sin(join(prefix_positions, positions_NT), rope_inverse_frequencies(c))
    h = params["embed"].astype(dtype)[join(prefix_tokens_PT, tokens_NT)]

    def attend(q, k, v):
        (q_p, q_s), (k_p, k_s), (v_p, v_s) = split(q), split(k), split(v)
        out_p = _attention(q_p, k_p, v_p, prefix_mask_PTT)
        k_all = jnp.concatenate([gather(k_p), k_s], axis=1)
        v_all = jnp.concatenate([gather(v_p), v_s], axis=1)
        out_s = _attention(q_s, k_all, v_all, suffix_mask_NTS)
        return join(out_p, out_s)

    def layer_fn(h, layer):
        return _layer(c, cos_sin, h, layer, None, None, None, 0, attend=attend)[0]

    if remat:
        layer_fn = jax.checkpoint(layer_fn)
    h, _ = jax.lax.scan(lambda h, layer: (layer_fn(h, layer), None), h, params["layers"])
    h = rms_norm(h, params["final_norm"], c.rms_norm_eps)
    return split(h)


def shared_prefix_predicting_states(prefix_h_PTD, prefix_valid_PT, h_NTD, prefix_index_N,
                                    blocks: int = 1):
    """[N, Ts, D]: the hidden state that predicts each suffix token (its prefix's last
    real token for the first, the previous suffix token for the others)."""
    P, N = prefix_h_PTD.shape[0], h_NTD.shape[0]
    p, n = P // blocks, N // blocks
    last_P = jnp.maximum(jnp.sum(prefix_valid_PT.astype(jnp.int32), axis=1) - 1, 0)
    last_PD = jnp.take_along_axis(prefix_h_PTD, last_P[:, None, None], axis=1)[:, 0]
    last_ND = jax.vmap(lambda x, i: x[i])(
        last_PD.reshape(blocks, p, -1), prefix_index_N.astype(jnp.int32).reshape(blocks, n))
    return jnp.concatenate([last_ND.reshape(N, 1, -1), h_NTD[:, :-1]], axis=1)


def unstack_layers(layers, num_layers: int) -> list:
    """Per-layer parameter trees from the stacked [L, ...] ones. A decode loop does this
    once, outside the loop: slicing inside it copied every weight at every step."""
    return [jax.tree.map(lambda w: w[i], layers) for i in range(num_layers)]


def unembed(params: Params, config: ModelConfig, h_BTD) -> jax.Array:
    """Logits in float32."""
    if config.tie_embeddings:
        w = params["embed"].astype(h_BTD.dtype)
        return jnp.einsum("btd,vd->btv", h_BTD, w, preferred_element_type=jnp.float32)
    w = params["lm_head"].astype(h_BTD.dtype)
    return jnp.einsum("btd,dv->btv", h_BTD, w, preferred_element_type=jnp.float32)


def forward(params: Params, config: ModelConfig, tokens_BT, positions_BT, mask_BTS,
            cache: Cache | None = None, cache_index=0, remat: bool = False):
    """Logits [B, T, V] (float32) and the updated cache (None without one)."""
    h, cache = hidden_states(params, config, tokens_BT, positions_BT, mask_BTS, cache,
                             cache_index, remat)
    return unembed(params, config, h), cache


def init_cache(config: ModelConfig, batch: int, length: int, dtype=None) -> Cache:
    """Empty cache of `length` slots (layout: module docstring)."""
    dtype = _dtype(dtype or config.dtype)
    K, E = config.num_kv_heads, config.head_dim
    return {"k": [jnp.zeros((batch, K, E, length), dtype) for _ in range(config.num_layers)],
            "v": [jnp.zeros((batch, K, length, E), dtype) for _ in range(config.num_layers)]}


def padded_positions_and_mask(valid_BT):
    """Positions and causal mask for a padded batch (left or right padding).

    Positions count only real tokens, so a left-padded prompt gets the same positions
    as the unpadded one; padding keys are never attended to. Padding queries attend to
    themselves only, which keeps their (ignored) outputs finite.
    """
    valid_BT = valid_BT.astype(bool)
    positions = jnp.maximum(jnp.cumsum(valid_BT, axis=1) - 1, 0)
    T = valid_BT.shape[1]
    causal_TS = jnp.tril(jnp.ones((T, T), bool))
    mask = causal_TS[None] & valid_BT[:, None, :]
    mask = mask | (jnp.eye(T, dtype=bool)[None] & ~valid_BT[:, :, None])
    return positions, mask
