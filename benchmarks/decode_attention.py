"""Decode attention per layer: the KV cache layout rl_reason uses against token-major.

    python benchmarks/decode_attention.py [--batch 64] [--slots 80] [--repeats 5]

One query per sequence (a decode step) over a cache of --slots slots, with the
bench-19m attention shape (8 query heads, 4 KV heads, head dim 64), float32, 80% of
the slots visible. Each variant runs 64 steps in one jitted fori_loop; the best of
--repeats is reported in ms per layer-step:

    rl_reason     keys [B, K, E, S], values [B, K, S, E] (transformer._cached_attention;
                  on CPU a fused multiply-and-reduce)
    einsum        the same layout as two einsums (what accelerators run)
    token-major   keys and values [B, S, K, E], fused multiply-and-reduce (the layout
                  before; its reductions run over the minor axis)

All must agree to float32 rounding; the script checks that.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import best_time  # noqa: E402
from rl_reason.models import transformer  # noqa: E402

HEADS, KV_HEADS, HEAD_DIM = 8, 4, 64


def token_major(q_B1HE, k_BSKE, v_BSKE, mask_B1S):
    B, _, H, E = q_B1HE.shape
    K = k_BSKE.shape[2]
    q = q_B1HE.reshape(B, K, H // K, E)
    scores = jnp.sum(q[:, None] * k_BSKE[:, :, :, None, :], axis=-1) / math.sqrt(E)
    scores = jnp.where(mask_B1S[:, 0, :, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=1)                                # [B, S, K, G]
    out = jnp.sum(probs[..., None] * v_BSKE[:, :, :, None, :], axis=1)    # [B, K, G, E]
    return out.reshape(B, 1, H, E)


def einsum(q_B1HE, k_BKES, v_BKSE, mask_B1S):
    return transformer._einsum_attention(q_B1HE, k_BKES, v_BKSE, mask_B1S, "bkes", "bkse")


def timed(attention, q, k, v, mask, repeats: int) -> tuple[float, jax.Array]:
    """(best seconds per step, output) of 64 steps in one jitted loop."""
    @jax.jit
    def loop(q, k, v, mask):
        # Each step's query depends on the last output, so no step can be skipped.
        return jax.lax.fori_loop(0, 64, lambda i, acc: acc + attention(q + 1e-6 * acc, k, v,
                                                                       mask),
                                 jnp.zeros_like(q))
    out = loop(q, k, v, mask).block_until_ready()  # compiles; not timed
    return best_time(lambda: loop(q, k, v, mask).block_until_ready(), repeats) / 64, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--slots", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if min(args.batch, args.slots, args.repeats) < 1:
        parser.error("--batch, --slots and --repeats must be >= 1")

    rng = np.random.default_rng(0)
    B, S = args.batch, args.slots
    q = jnp.asarray(rng.standard_normal((B, 1, HEADS, HEAD_DIM)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((B, S, KV_HEADS, HEAD_DIM)), jnp.float32)
    v = jnp.asarray(rng.standard_normal((B, S, KV_HEADS, HEAD_DIM)), jnp.float32)
    visible = rng.random((B, 1, S)) < 0.8
    visible[:, :, 0] = True
    mask = jnp.asarray(visible)
    k_cache = jnp.transpose(k, (0, 2, 3, 1))  # [B, K, E, S]
    v_cache = jnp.transpose(v, (0, 2, 1, 3))  # [B, K, S, E]

    variants = {
        "rl_reason   [B,K,E,S] / [B,K,S,E]": (transformer._cached_attention, k_cache, v_cache),
        "einsum      [B,K,E,S] / [B,K,S,E]": (einsum, k_cache, v_cache),
        "token-major [B,S,K,E]            ": (token_major, k, v),
    }
    print(f"decode attention, batch {B}, {S} slots, {HEADS} heads / {KV_HEADS} KV heads x "
          f"{HEAD_DIM}, {jax.devices()[0].platform}; best of {args.repeats}, ms per layer-step")
    reference = None
    for name, (attention, keys, values) in variants.items():
        seconds, out = timed(attention, q, keys, values, mask, args.repeats)
        if reference is None:
            reference = np.asarray(out)
        np.testing.assert_allclose(np.asarray(out), reference, rtol=1e-4, atol=1e-4,
                                   err_msg=name)
        print(f"  {name}  {seconds * 1e3:6.2f}", flush=True)


if __name__ == "__main__":
    main()
