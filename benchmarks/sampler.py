"""Sampler throughput: rl_reason's continuous batch against its static batch, tunix's
sampler and transformers' generate, on uniform or long-tailed response lengths.

    python benchmarks/sampler.py [--lengths uniform|longtail] [--batches 64,256]
                                 [--new-tokens 512] [--slots 0] [--repeats 2]
                                 [--model-preset bench-19m] [--cache-dtype bfloat16]
                                 [--skip-tunix] [--skip-transformers] [--skip-static]
                                 [--envs DIR] [--ceiling] [--json results.json]
    python benchmarks/sampler.py --gpu          # Qwen2.5-1.5B shape, bf16, batch 256

One random checkpoint (preset bench-19m by default: Qwen3 family, hidden 512, 8
layers, 8 heads, 4 KV heads, MLP 1024, vocab 512, 19.1M parameters; bench-qwen2-53m
has the layer proportions of Qwen2.5-Math-1.5B) is saved in Hugging Face format, with
a character-level tokenizer, to a temporary folder, then loaded by each library from
there: rl_reason with models.load, transformers with AutoModelForCausalLM (torch, CPU,
float32, torch.set_num_threads(number of usable cores)), tunix 0.1.7 with its own
Qwen3 / Qwen2 loader and tunix.generate.sampler (the vanilla rollout engine's sampler;
in its own virtual environment, built or reused under --envs as benchmarks/grpo_step.py
does, and driven in lock step through benchmarks/peers/tunix_sampler.py). Every row is
a prompt of --prompt-len random printable characters (one token each), sampled at
temperature 1 with no top-k or top-p.

Lengths (benchmarks/sampler_lengths.py): `uniform`, every row generates --new-tokens
tokens; `longtail`, row i stops after L_i tokens, lognormal with a median of 0.15 x
--new-tokens and 5% of rows at it. The stop points are forced through per-row budgets
for rl_reason (no stop ids; its scheduler reacts to a row ending as it would to a stop
token, and does not read the budgets ahead). tunix and transformers take no per-row
budgets: they run every row to --new-tokens (tunix with a stop id never drawn,
transformers with min_new_tokens = max_new_tokens), which is the time a static batch
takes on this workload anyway, since its last row runs to the budget; the same holds
for rl_reason's static batch (`continuous=False`, today's sampler before issue 28),
which is given the per-row budgets. Every runner is credited with the useful tokens
only: sum_i L_i.

With --slots below the batch, the rows go through that many slots: rl_reason's
continuous batch refills them; every static sampler (rl_reason's static batch, tunix,
transformers) makes one call per --slots rows in turn, as a rollout with
rollout.max_sample_batch = --slots did before issue 28.

Runners, each batch size in turn: one untimed warm-up call each (compilation), then
--repeats rounds of one timed call of each in turn; the best of each is reported, since
the quickest run is the one least disturbed by other processes. Times are whole calls
as a caller sees them: prefill, decode, host transfers (tunix: from prompt strings,
its tokenization included).
    rl_reason   sampling.generate, continuous batching with --slots slots (0: all rows)
    static      sampling.generate(continuous=False), the static batch
    tunix, transformers   as above
    ceiling     (--ceiling, uniform) the matmul-only ceiling of
                benchmarks/decode_ceiling.py: the weight matmuls of --new-tokens decode
                steps at the same batch, one jitted loop, random weights in the compute
                dtype (no prefill, attention, norms or sampling, so 1.0 is out of reach)

Columns: useful tok/s of each runner; "vs X" is rl_reason's over X's; flop_frac is
rl_reason's useful FLOP/s over the measured matmul peak; slot_use is the useful tokens
over the continuous batch's decode work (slot-steps, sampling.scheduler.WORK; the static
batch's would be rows x budget); bw_frac (GPU only, always in --json) the bytes decoding
must read per step over the measured copy bandwidth.

Model FLOPs (useful work only: no padding, no finished rows, no masked cache slots).
Every position fed through the model, i.e. the prompt (prefill) and all generated
tokens but the last, costs
    2 * (matmul parameters: q, k, v, o, gate, up, down of every layer + the V x D
         unembedding; the embedding lookup and norms are free)
  + 4 * layers * heads * head_dim * context      (q.k scores and the weighted sum of v)
where context is the number of tokens that position attends to (itself included).
The peak (benchmarks/timing.py, shared by every benchmark) is the best of several
jitted jnp.dot calls on two N x N matrices in the compute dtype (N = 2048 float32 on CPU, 8192 on GPU), 2 N^3 FLOPs each.

--gpu switches to the shape of Qwen2.5-1.5B (preset qwen2.5-math-1.5b: 28 layers,
hidden 1536, 12 heads, 2 KV heads, vocab 151936, tied) in bfloat16 at batch 256;
transformers runs there only if torch has CUDA, tunix is skipped.

CPU numbers need idle cores: the load average is printed. Expect compilation to take
tens of seconds per batch size on CPU (warm-up, not timed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import sampler_lengths  # noqa: E402
from benchmarks.sampler_peers import TunixSampler, run_transformers  # noqa: E402
from benchmarks.timing import copy_bandwidth, matmul_peak_flops, usable_cores  # noqa: E402
from rl_reason import models, sampling  # noqa: E402
from rl_reason.models import transformer  # noqa: E402


def matmul_params(config: models.ModelConfig) -> int:
    c = config
    q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    per_layer = c.hidden_size * (2 * q + 2 * kv) + 3 * c.hidden_size * c.intermediate_size
    return c.num_layers * per_layer + c.vocab_size * c.hidden_size


def generation_flops(config: models.ModelConfig, prompt_len: int, lengths) -> float:
    """Useful FLOPs of one generate call whose rows generate `lengths` tokens (see the
    module docstring)."""
    c = config
    return sampler_lengths.useful_flops(2 * matmul_params(c),
                                        4 * c.num_layers * c.num_heads * c.head_dim,
                                        prompt_len, np.asarray(lengths))


def decode_step_bytes(config: models.ModelConfig, batch: int, prompt_len: int,
                      new_tokens: int) -> float:
    """Bytes a decode step must read: all parameters and the real K/V cache entries
    (uniform lengths)."""
    c = config
    param_bytes = c.num_params() * jnp.dtype(c.param_dtype).itemsize
    mean_context = prompt_len + (new_tokens - 1) / 2
    kv_bytes = (2 * c.num_layers * c.num_kv_heads * c.head_dim * jnp.dtype(c.dtype).itemsize
                * mean_context * batch)
    return param_bytes + kv_bytes


def save_random_checkpoint(config: models.ModelConfig, path: str, seed: int = 0):
    """The checkpoint and its character-level tokenizer (returned)."""
    from benchmarks.grpo_step import build_char_tokenizer
    # One jitted init: op-by-op jax.random costs a compile per parameter shape.
    init = jax.jit(transformer.init_params, static_argnums=0)
    models.save(models.Model(init(config, jax.random.PRNGKey(seed)), config), path)
    return build_char_tokenizer(path, config.vocab_size)


def random_prompts(tokenizer, batch: int, length: int, rng) -> tuple[list[str], np.ndarray]:
    """`batch` strings of `length` printable characters, and their token ids (one each)."""
    chars = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789+-*=()"))
    texts = ["".join(rng.choice(chars, length)) for _ in range(batch)]
    ids = np.array([tokenizer.encode(t, add_special_tokens=False) for t in texts])
    assert ids.shape == (batch, length), ids.shape
    return texts, ids




def chunks(rows, slots: int) -> list:
    """The calls a static sampler holding at most `slots` rows (0: all) makes."""
    size = slots or len(rows)
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def chunk_name(batch: int, index: int) -> str:
    return f"{batch}.{index}"


def in_turn(calls: list):
    """One callable running `calls` one after the other."""
    return lambda: [call() for call in calls]


def time_runners(runners: dict, repeats: int) -> dict[str, float]:
    """Best of `repeats` interleaved rounds, one call of each runner in turn (a runner
    may return its own measured seconds, e.g. tunix's without the pipe round trip)."""
    times = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            reported = run()
            elapsed = time.perf_counter() - start
            times[name].append(reported if isinstance(reported, float) else elapsed)
            print(f"  {name}: {times[name][-1]:.2f} s", file=sys.stderr, flush=True)
    return {name: min(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", choices=sampler_lengths.LENGTHS, default="uniform")
    parser.add_argument("--batches", default=None,
                        help="comma-separated batch sizes (rows per call; default 1,16,64,256; "
                             "--gpu: 256)")
    parser.add_argument("--new-tokens", type=int, default=64, help="the budget of each row")
    parser.add_argument("--slots", type=int, default=0,
                        help="rl_reason's slots (max_slots; 0: all rows); the static batch "
                             "runs this many rows per call")
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpu", action="store_true",
                        help="Qwen2.5-1.5B shape in bfloat16 at batch 256 on the accelerator")
    parser.add_argument("--model-preset", default=None,
                        help="default bench-19m (CPU) or qwen2.5-math-1.5b (--gpu)")
    parser.add_argument("--dtype", default=None,
                        help="compute and parameter dtype (default float32; --gpu: bfloat16)")
    parser.add_argument("--cache-dtype", default=None,
                        help="rl_reason's KV cache dtype (default: the compute dtype)")
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--skip-tunix", action="store_true")
    parser.add_argument("--skip-static", action="store_true")
    parser.add_argument("--envs", default=os.environ.get(
                            "RL_REASON_PEER_ENVS",
                            os.path.expanduser("~/.cache/rl_reason/peer_envs")),
                        help="where the tunix environment is built or reused "
                             "(as in benchmarks/grpo_step.py)")
    parser.add_argument("--decode-segments", type=int, default=None,
                        help="sampling.shapes.DECODE_SEGMENTS (default 4; 1: one window)")
    parser.add_argument("--ceiling", action="store_true",
                        help="also time the matmul-only ceiling (benchmarks/decode_ceiling.py) "
                             "interleaved with the samplers and print the fraction of it")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    if args.decode_segments is not None:
        if args.decode_segments < 1:
            parser.error(f"--decode-segments={args.decode_segments} must be >= 1")
        sampling.shapes.DECODE_SEGMENTS = args.decode_segments
    if args.ceiling and args.lengths != "uniform":
        parser.error("--ceiling times uniform lengths only (the ceiling decodes every row)")
    batches = [int(b) for b in (args.batches or ("256" if args.gpu else "1,16,64,256")).split(",")]
    preset = args.model_preset or ("qwen2.5-math-1.5b" if args.gpu else "bench-19m")
    dtype = args.dtype or ("bfloat16" if args.gpu else "float32")
    config = models.get_preset(preset, dtype=dtype, param_dtype=dtype)
    eos = config.vocab_size - 1
    config = config.replace(eos_token_id=eos, bos_token_id=None, pad_token_id=None)

    import torch
    torch_device = "cuda" if args.gpu and torch.cuda.is_available() else "cpu"
    with_transformers = not args.skip_transformers and (not args.gpu or torch_device == "cuda")

    device = jax.devices()[0]
    print(f"jax {jax.__version__} on {device.platform} ({device.device_kind}), "
          f"{usable_cores()} usable cores, load average {os.getloadavg()[0]:.2f}; "
          f"{platform.processor() or platform.machine()}")
    peak = matmul_peak_flops(8192 if device.platform == "gpu" else 2048, repeats=8,
                             dtype=jnp.dtype(dtype))
    bandwidth = copy_bandwidth(2 ** 30 if device.platform == "gpu" else 2 ** 28)
    print(f"model {preset} ({config.num_params() / 1e6:.1f}M params, {dtype}, KV cache "
          f"{args.cache_dtype or dtype}); prompt {args.prompt_len} + budget {args.new_tokens}, "
          f"{args.lengths} lengths; rl_reason slots {args.slots or 'all rows'}; best of "
          f"{args.repeats}")
    print(f"measured {dtype} matmul peak {peak / 1e9:.1f} GFLOP/s, copy bandwidth "
          f"{bandwidth / 1e9:.1f} GB/s")

    with_tunix = not args.skip_tunix and not args.gpu
    show_bw = device.platform == "gpu"
    others = (["static"] if not args.skip_static else []) + (["tunix"] if with_tunix else []) + (
        ["transformers"] if with_transformers else [])
    print(f"{'batch':>6} {'useful':>8} {'rl_reason tok/s':>16}"
          + "".join(f" {name + ' tok/s':>18} {'vs ' + name:>16}" for name in others)
          + f" {'flop_frac':>10} {'slot_use':>9}" + (f" {'bw_frac':>8}" if show_bw else "")
          + (f" {'ceiling tok/s':>14} {'of ceiling':>11}" if args.ceiling else ""))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = save_random_checkpoint(config, folder)
        model = models.load(folder)
        rng = np.random.default_rng(0)
        prompts = {b: random_prompts(tokenizer, b, args.prompt_len, rng) for b in batches}
        tunix = (TunixSampler(args.envs, folder,
                              {chunk_name(b, i): texts for b, p in prompts.items()
                               for i, texts in enumerate(chunks(p[0], args.slots))},
                              args.new_tokens, args.prompt_len, folder)
                 if with_tunix else None)
        if args.ceiling:
            from benchmarks import decode_ceiling
            ceiling_weights = decode_ceiling.random_weights(config)
        try:
            for batch in batches:
                ids = prompts[batch][1].tolist()
                lengths = sampler_lengths.stop_points(args.lengths, batch, args.new_tokens)
                useful = int(lengths.sum())

                def ours(continuous, seed=[0]):
                    seed[0] += 1
                    out = sampling.generate(model, ids, max_new_tokens=lengths.tolist(),
                                            rng=seed[0], temperature=1.0, top_k=0, top_p=1.0,
                                            stop_token_ids=(), max_slots=args.slots,
                                            continuous=continuous, cache_dtype=args.cache_dtype)
                    assert (out.lengths == lengths).all()

                runners = {"rl_reason": lambda: ours(True)}
                if not args.skip_static:
                    runners["static"] = lambda: ours(False)
                calls = len(chunks(ids, args.slots))
                if tunix is not None:
                    runners["tunix"] = lambda batch=batch, calls=calls: sum(
                        tunix.call("time", chunk_name(batch, i)) for i in range(calls))
                if with_transformers:
                    runners["transformers"] = in_turn([
                        run_transformers(folder, part, args.new_tokens, eos, torch_device, dtype)
                        for part in chunks(prompts[batch][1], args.slots)])
                if args.ceiling:
                    runners["ceiling"] = decode_ceiling.xla_runner(
                        config, ceiling_weights, batch, args.new_tokens, dtype=dtype)
                for name, run in runners.items():   # compilation, first-touch allocations
                    start = time.perf_counter()
                    if name == "tunix":
                        for i in range(calls):
                            tunix.call("warm", chunk_name(batch, i))
                    else:
                        run()
                    print(f"  {name} warm-up: {time.perf_counter() - start:.1f} s",
                          file=sys.stderr, flush=True)
                work = sampling.scheduler.WORK["slot_steps"]
                best = time_runners(runners, args.repeats)
                slot_steps = (sampling.scheduler.WORK["slot_steps"] - work) / args.repeats
                row = dict(batch=batch, lengths=args.lengths, useful_tokens=useful,
                           rl_reason_tok_s=useful / best["rl_reason"],
                           rl_reason_s=best["rl_reason"],
                           # Each row's first token comes from the prefill, not a decode step.
                           slot_use=(useful - batch) / slot_steps if slot_steps else None)
                for name in others:
                    row.update({f"{name}_tok_s": useful / best[name], f"{name}_s": best[name],
                                f"vs_{name}": best[name] / best["rl_reason"]})
                flops = generation_flops(config, args.prompt_len, lengths)
                step_bytes = decode_step_bytes(config, batch, args.prompt_len, args.new_tokens)
                row.update(flop_frac=flops / best["rl_reason"] / peak,
                           bw_frac=step_bytes / (best["rl_reason"] / args.new_tokens) / bandwidth)
                if "ceiling" in best:
                    row.update(ceiling_tok_s=useful / best["ceiling"], ceiling_s=best["ceiling"],
                               of_ceiling=best["ceiling"] / best["rl_reason"])
                rows.append(row)
                print(f"{batch:6d} {useful:8d} {row['rl_reason_tok_s']:16.0f}"
                      + "".join(f" {row[name + '_tok_s']:18.0f} {row['vs_' + name]:16.2f}"
                                for name in others)
                      + f" {row['flop_frac']:10.3f} {row['slot_use'] or 0:9.3f}"
                      + (f" {row['bw_frac']:8.3f}" if show_bw else "")
                      + (f" {row['ceiling_tok_s']:14.0f} {row['of_ceiling']:11.3f}"
                         if "ceiling" in best else "")
                      + f"   (load {os.getloadavg()[0]:.1f})", flush=True)
        finally:
            if tunix is not None:
                tunix.close()

    if args.json:
        meta = dict(preset=preset, dtype=dtype, cache_dtype=args.cache_dtype or dtype,
                    num_params=config.num_params(), prompt_len=args.prompt_len,
                    new_tokens=args.new_tokens, lengths=args.lengths, slots=args.slots,
                    repeats=args.repeats, platform=device.platform,
                    device_kind=device.device_kind, cores=usable_cores(),
                    load_average=os.getloadavg()[0], matmul_peak_flops=peak,
                    copy_bandwidth_bytes_s=bandwidth, jax=jax.__version__,
                    torch=torch.__version__, torch_device=torch_device)
        with open(args.json, "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
