"""The RL update alone: model FLOP/s of rl_reason.update's jitted update against the matmul peak.

    python benchmarks/update_step.py [--shapes 64x64,64x128,512x128] [--repeats 3]
                                     [--micro-batches 0] [--remat] [--json PATH]

The update is rl_reason's own (update.build_step_functions: log-probs with
entropy, GRPO loss, backward pass, global-norm clip, AdamW, the skip guard), on the
Qwen2 19M model of benchmarks/grpo_step.py with random weights, for batches of
[rows, length] whose rows are all real tokens but the last one (as a 95-token prompt
plus 32 sampled tokens fills 127 of 128). Each shape compiles once, then --repeats
rounds time one update and one float32 matmul peak measurement
(benchmarks/timing.py) in turn, so both see the same load; the fraction is the
median update FLOP/s over the median peak.

FLOPs are counted as benchmarks/train_step.py counts them: per token 6 * (matmul
parameters, the tied unembedding included) + 12 * layers * heads * head_dim * length;
recomputation (remat) is not counted.

--shared G times, in the same rounds, the same rows as a shared-prefix batch
(train.share_prefixes: rows/G groups of G rows, each group's prompt of length - 1 -
32 tokens run once, rl/batch.py collate_shared) and prints its seconds and its ratio to
the unshared update's; its FLOP/s counts the unshared batch's FLOPs (the work it
replaces).

--micro-batches M accumulates gradients over micro-batches of M rows (optim.micro_batches
= rows / M); 0 (default): 64-row micro-batches for batches of more than 64 rows, so
that [512, 128] fits in memory without remat, and none otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import matmul_peak_flops  # noqa: E402
from benchmarks.train_step import update_flops_per_token  # noqa: E402
from rl_reason import models, sharding, update  # noqa: E402
from rl_reason.models import transformer  # noqa: E402
from rl_reason.rl import losses  # noqa: E402

MODEL = models.ModelConfig(
    family="qwen2", vocab_size=512, hidden_size=512, intermediate_size=1024, num_layers=8,
    num_heads=8, num_kv_heads=4, head_dim=64, rope_theta=10000.0, rms_norm_eps=1e-6,
    tie_embeddings=True, max_position_embeddings=4096)


def grpo_batch(rows: int, length: int, response: int = 32, seed: int = 0) -> dict:
    """A GRPO-like batch: every row real up to length - 1, the last `response` tokens
    trained, one advantage per row."""
    rng = np.random.default_rng(seed)
    real = length - 1
    valid = np.zeros((rows, length), bool)
    valid[:, :real] = True
    loss_mask = np.zeros((rows, length), np.float32)
    loss_mask[:, max(real - response, 1):real] = 1.0
    return dict(tokens=rng.integers(2, MODEL.vocab_size, (rows, length)).astype(np.int32),
                valid=valid, loss_mask=loss_mask,
                advantages=np.repeat(rng.normal(size=(rows, 1)), length, 1).astype(np.float32),
                off_policy=np.zeros((rows, length), bool),
                behaviour_logp=np.zeros((rows, length), np.float32))


def shared_batch(batch: dict, group: int, blocks: int, response: int = 32) -> dict:
    """grpo_batch's rows with each group of `group` rows given its first row's prompt:
    the shared-prefix layout (rl/batch.py collate_shared) of those rows."""
    from rl_reason.protocol import Row
    from rl_reason.rl import batch as batch_lib
    rows = []
    for i in range(batch["tokens"].shape[0]):
        real = int(batch["valid"][i].sum())
        start = int(np.flatnonzero(batch["loss_mask"][i])[0])
        prompt = batch["tokens"][i - i % group, :start]
        tokens = list(prompt) + list(batch["tokens"][i, start:real])
        rows.append(Row(tokens=tokens, loss_mask=batch["loss_mask"][i, :real],
                        advantage=float(batch["advantages"][i, 0])))
    return batch_lib.collate_shared(rows, blocks=blocks, seq_bucket=16, pad_id=0)


def build_update(rows: int, micro_batches: int, remat: bool):
    """(update, state, batch maker) for the benchmark model on one device mesh."""
    mesh = sharding.make_mesh()
    params = jax.jit(transformer.init_params, static_argnums=0)(MODEL, jax.random.PRNGKey(0))
    optim = ml_collections.ConfigDict(dict(learning_rate=1e-5, warmup_steps=0,
                                           weight_decay=0.0, b1=0.9, b2=0.999, grad_clip=1.0))
    optimizer = update.make_optimizer(optim)
    state_sh = update.state_shardings(sharding.param_shardings(MODEL, mesh), optimizer,
                                          jax.eval_shape(lambda p: p, params), mesh)
    state = update.init_state(params, optimizer, state_sh)
    fns = update.build_step_functions(
        MODEL, losses.LossConfig(), optimizer, state_sh, mesh, temperature=1.0,
        logprob_chunk=0, remat=remat, skip_grad_norm_above=0.0, micro_batches=micro_batches)
    return fns.update, state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="64x64,64x128,512x128")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--micro-batches", type=int, default=0,
                        help="rows per micro-batch (0: 64 when there are more rows)")
    parser.add_argument("--remat", action="store_true")
    parser.add_argument("--shared", type=int, default=0,
                        help="also time the shared-prefix layout of groups of this many rows")
    parser.add_argument("--json", default="")
    args = parser.parse_args()

    print(f"update of the Qwen2 {MODEL.num_params() / 1e6:.1f}M model on "
          f"{len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()[0]:.2f}; "
          f"median of {args.repeats}")
    print(f"{'shape':>10} {'micro':>6} {'s/update':>9} {'GFLOP/s':>8} {'peak GFLOP/s':>13} "
          f"{'fraction':>9}")
    results = []
    for shape in args.shapes.split(","):
        rows, length = (int(x) for x in shape.split("x"))
        per_micro = args.micro_batches or (64 if rows > 64 else rows)
        micro_batches = max(rows // per_micro, 1)
        update, state = build_update(rows, micro_batches, args.remat)
        host = grpo_batch(rows, length)
        batch = {k: jnp.asarray(v) for k, v in host.items()}
        state, metrics = update(state, batch)   # compiles
        jax.block_until_ready(metrics)
        shared = None
        if args.shared:
            shared = {k: jnp.asarray(v) for k, v in
                      shared_batch(host, args.shared, micro_batches).items()}
            state, metrics = update(state, shared)   # compiles
            jax.block_until_ready(metrics)
        seconds, peaks, shared_seconds = [], [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            state, metrics = update(state, batch)
            jax.block_until_ready(metrics)
            seconds.append(time.perf_counter() - start)
            if shared is not None:
                start = time.perf_counter()
                state, metrics = update(state, shared)
                jax.block_until_ready(metrics)
                shared_seconds.append(time.perf_counter() - start)
            peaks.append(matmul_peak_flops(repeats=3))
        flops = rows * length * update_flops_per_token(MODEL, length)
        s, peak = statistics.median(seconds), statistics.median(peaks)
        row = dict(rows=rows, length=length, micro_batches=micro_batches, seconds=s,
                   flops=flops, flops_per_s=flops / s, peak=peak, fraction=flops / s / peak,
                   all_seconds=seconds, all_peaks=peaks, load_average=os.getloadavg()[0])
        results.append(row)
        print(f"{shape:>10} {micro_batches:>6} {s:9.2f} {flops / s / 1e9:8.1f} "
              f"{peak / 1e9:13.1f} {flops / s / peak:9.0%}", flush=True)
        if shared is not None:
            s_shared = statistics.median(shared_seconds)
            row.update(shared_group=args.shared, shared_seconds=s_shared,
                       all_shared_seconds=shared_seconds,
                       shared_shapes=dict(prefix=list(shared["prefix_tokens"].shape),
                                          suffix=list(shared["tokens"].shape)))
            print(f"{'shared':>10} {micro_batches:>6} {s_shared:9.2f} "
                  f"{flops / s_shared / 1e9:8.1f} (prefix {list(shared['prefix_tokens'].shape)}, "
                  f"suffix {list(shared['tokens'].shape)}; {s_shared / s:.2f}x the unshared "
                  f"update; all {', '.join(f'{x:.2f}' for x in shared_seconds)} against "
                  f"{', '.join(f'{x:.2f}' for x in seconds)} s)", flush=True)
        del state, batch
    print(f"load average {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(results=results, remat=args.remat), f, indent=2)


if __name__ == "__main__":
    main()
