"""Sampler throughput: rl_reason's generate against tunix's sampler and transformers'
generate.

    python benchmarks/sampler.py [--batches 1,16,64,256] [--new-tokens 64] [--repeats 3]
                                 [--decode-segments 4] [--skip-tunix] [--envs DIR]
                                 [--ceiling] [--json results.json]
    python benchmarks/sampler.py --gpu          # Qwen2.5-1.5B shape, bf16, batch 256

One random checkpoint (preset bench-19m by default: Qwen3 family, hidden 512, 8
layers, 8 heads, 4 KV heads, MLP 1024, vocab 512, 19.1M parameters) is saved in
Hugging Face format, with a character-level tokenizer, to a temporary folder, then
loaded by each library from there: rl_reason with models.load, transformers with
AutoModelForCausalLM (torch, CPU, float32, torch.set_num_threads(number of usable
cores)), tunix 0.1.7 with its own Qwen3 / Qwen2 loader and tunix.generate.sampler
(the vanilla rollout engine's sampler; in its own virtual environment, built or
reused under --envs as benchmarks/grpo_step.py does, and driven in lock step through
benchmarks/peers/tunix_sampler.py). Every row is a prompt of --prompt-len random
printable characters (one token each) and gets exactly --new-tokens tokens by pure
sampling (temperature 1, no top-k, no top-p; rl_reason with no stop ids, transformers
with min_new_tokens = max_new_tokens so its EOS is never picked, tunix with a stop id
that is never drawn). Each batch size gets one untimed warm-up call per library
(compilation), then --repeats rounds of one timed call of each library in turn; the
best of each is reported, since the quickest run is the one least disturbed by other
processes. Times are whole generate() calls as a caller sees them: prefill, decode,
host transfers (tunix: from prompt strings, its tokenization included).

Columns:
    tok/s        batch * new_tokens / time
    ratio        rl_reason tok/s / transformers tok/s
    vs tunix     rl_reason tok/s / tunix tok/s
    flop_frac    rl_reason's useful FLOP/s over the measured matmul peak (below)
    bw_frac      bytes that decoding must read per step / step time, over the
                 measured copy bandwidth (below); printed on GPU only (on CPU a small
                 model's parameters sit partly in cache), always in --json
    ceiling tok/s, of ceiling   (--ceiling) the matmul-only ceiling of
                 benchmarks/decode_ceiling.py (xla: the weight matmuls of --new-tokens
                 decode steps of the same model at the same batch, one jitted loop,
                 random weights in the compute dtype), timed as one more runner in
                 the same interleaved rounds; "of ceiling" is rl_reason tok/s over it
                 (the ceiling has no prefill, attention, norms or sampling, so 1.0 is
                 out of reach)

Model FLOPs (useful work only: no padding, no masked cache slots). Every position fed
through the model, i.e. the prompt (prefill) and all generated tokens but the last,
costs
    2 * (matmul parameters: q, k, v, o, gate, up, down of every layer + the V x D
         unembedding; the embedding lookup and norms are free)
  + 4 * layers * heads * head_dim * context      (q.k scores and the weighted sum of v)
where context is the number of tokens that position attends to (itself included).
The peak is the best of several jitted jnp.dot calls on two N x N matrices in the
compute dtype (N = 2048 float32 on CPU, 8192 on GPU), 2 N^3 FLOPs each.

Memory traffic per decode step: every parameter once, plus the K and V cache entries
of the real context (mean over the decode steps), for the whole batch. Step time =
call time / new_tokens (prefill included, so slightly pessimistic). The bandwidth is
the best of several jitted device-to-device copies (x + 1 on a large buffer, counted
as one read and one write).

--gpu switches to the shape of Qwen2.5-1.5B (preset qwen2.5-math-1.5b: 28 layers,
hidden 1536, 12 heads, 2 KV heads, vocab 151936, tied) in bfloat16 at batch 256;
transformers runs there only if torch has CUDA. --model-preset picks any preset
(e.g. tiny-qwen3 for a quick check of the --gpu path on CPU).

CPU numbers need idle cores: the load average is printed. Expect compilation to take
tens of seconds per batch size on CPU (warm-up, not timed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rl_reason import models, sampling  # noqa: E402
from rl_reason.models import transformer  # noqa: E402


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peak(dtype, n: int, repeats: int = 8) -> float:
    """FLOP/s of the best jitted n x n matmul."""
    keys = jax.random.split(jax.random.PRNGKey(0))
    a, b = (jax.random.normal(k, (n, n), jnp.float32).astype(dtype) for k in keys)
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()
    return 2 * n ** 3 / best_time(lambda: dot(a, b).block_until_ready(), repeats)


def copy_bandwidth(num_bytes: int, repeats: int = 8) -> float:
    """Bytes/s of the best jitted read-and-write of a num_bytes buffer."""
    x = jnp.zeros((num_bytes // 4,), jnp.float32)
    add = jax.jit(lambda x: x + 1)
    add(x).block_until_ready()
    return 2 * x.nbytes / best_time(lambda: add(x).block_until_ready(), repeats)


def matmul_params(config: models.ModelConfig) -> int:
    c = config
    q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    per_layer = c.hidden_size * (2 * q + 2 * kv) + 3 * c.hidden_size * c.intermediate_size
    return c.num_layers * per_layer + c.vocab_size * c.hidden_size


def generation_flops(config: models.ModelConfig, batch: int, prompt_len: int,
                     new_tokens: int) -> float:
    """Useful FLOPs of one generate call (see the module docstring)."""
    c = config
    positions = prompt_len + new_tokens - 1
    contexts = np.arange(1, positions + 1)  # position t attends to t + 1 tokens
    per_position = 2 * matmul_params(c) + 4 * c.num_layers * c.num_heads * c.head_dim * contexts
    return float(batch * per_position.sum())


def decode_step_bytes(config: models.ModelConfig, batch: int, prompt_len: int,
                      new_tokens: int) -> float:
    """Bytes a decode step must read: all parameters and the real K/V cache entries."""
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


class TunixSampler:
    """benchmarks/peers/tunix_sampler.py in the tunix environment, one call per command."""

    def __init__(self, envs: str, checkpoint: str, prompts: dict, new_tokens: int,
                 prompt_len: int, workdir: str):
        from benchmarks.grpo_step import PEERS_DIR, Worker, ensure_env
        job = os.path.join(workdir, "tunix_sampler_job.json")
        with open(job, "w") as f:
            json.dump(dict(prompts={str(b): p for b, p in prompts.items()},
                           new_tokens=new_tokens, prompt_len=prompt_len), f)
        self.worker = Worker("tunix", [ensure_env("tunix", envs),
                                       os.path.join(PEERS_DIR, "tunix_sampler.py"),
                                       "--checkpoint", checkpoint, "--job", job],
                             os.path.join(workdir, "tunix_sampler.log"))
        self.worker.read("ready")

    def call(self, command: str, batch: int):
        self.worker.proc.stdin.write(f"{command} {batch}\n")
        self.worker.proc.stdin.flush()
        return self.worker.read("step")["seconds"]

    def close(self):
        self.worker.close()


def run_transformers(path: str, prompts: np.ndarray, new_tokens: int, eos: int, device: str,
                     dtype: str):
    """A callable running one transformers generate over the batch."""
    import torch
    import transformers

    torch.set_num_threads(usable_cores())
    transformers.utils.logging.disable_progress_bar()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path, dtype=getattr(torch, dtype)).to(device).eval()
    input_ids = torch.tensor(prompts, dtype=torch.long, device=device)
    attention_mask = torch.ones_like(input_ids)

    def call():
        with torch.inference_mode():
            out = model.generate(
                input_ids, attention_mask=attention_mask, do_sample=True, temperature=1.0,
                top_k=0, top_p=1.0, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                use_cache=True, eos_token_id=eos, pad_token_id=eos)
        if device != "cpu":
            torch.cuda.synchronize()
        assert out.shape == (len(prompts), prompts.shape[1] + new_tokens), out.shape
        return out

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default=None,
                        help="comma-separated batch sizes (default 1,16,64,256; --gpu: 256)")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpu", action="store_true",
                        help="Qwen2.5-1.5B shape in bfloat16 at batch 256 on the accelerator")
    parser.add_argument("--model-preset", default=None,
                        help="default bench-19m (CPU) or qwen2.5-math-1.5b (--gpu)")
    parser.add_argument("--dtype", default=None,
                        help="compute and parameter dtype (default float32; --gpu: bfloat16)")
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--skip-tunix", action="store_true")
    parser.add_argument("--envs", default=os.environ.get(
                            "RL_REASON_PEER_ENVS",
                            os.path.expanduser("~/.cache/rl_reason/peer_envs")),
                        help="where the tunix environment is built or reused "
                             "(as in benchmarks/grpo_step.py)")
    parser.add_argument("--decode-segments", type=int, default=None,
                        help="sampling.DECODE_SEGMENTS (default 4; 1: one fixed-size window)")
    parser.add_argument("--ceiling", action="store_true",
                        help="also time the matmul-only ceiling (benchmarks/decode_ceiling.py) "
                             "interleaved with the samplers and print the fraction of it")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    if args.decode_segments is not None:
        if args.decode_segments < 1:
            parser.error(f"--decode-segments={args.decode_segments} must be >= 1")
        sampling.DECODE_SEGMENTS = args.decode_segments
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
    peak = matmul_peak(jnp.dtype(dtype), 8192 if device.platform == "gpu" else 2048)
    bandwidth = copy_bandwidth(2 ** 30 if device.platform == "gpu" else 2 ** 28)
    segments = sampling.segment_ends(sampling.bucket(args.new_tokens))
    print(f"model {preset} ({config.num_params() / 1e6:.1f}M params, {dtype}); prompt "
          f"{args.prompt_len} + {args.new_tokens} new tokens, decoded in {len(segments)} "
          f"segment(s); best of {args.repeats}")
    print(f"measured {dtype} matmul peak {peak / 1e9:.1f} GFLOP/s, copy bandwidth "
          f"{bandwidth / 1e9:.1f} GB/s")

    with_tunix = not args.skip_tunix and not args.gpu
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = save_random_checkpoint(config, folder)
        model = models.load(folder)
        rng = np.random.default_rng(0)
        prompts = {b: random_prompts(tokenizer, b, args.prompt_len, rng) for b in batches}
        tunix = (TunixSampler(args.envs, folder, {b: p[0] for b, p in prompts.items()},
                              args.new_tokens, args.prompt_len, folder)
                 if with_tunix else None)
        # On CPU the parameters of a small model sit partly in cache and the copy
        # measurement is single-threaded, so bw_frac means little there: GPU only.
        show_bw = device.platform == "gpu"
        if args.ceiling:
            from benchmarks import decode_ceiling
            ceiling_weights = decode_ceiling.random_weights(config)
        print(f"{'batch':>6} {'rl_reason tok/s':>16} {'tunix tok/s':>12} {'vs tunix':>9} "
              f"{'transformers tok/s':>19} {'ratio':>7} {'flop_frac':>10}"
              + (f" {'bw_frac':>8}" if show_bw else "")
              + (f" {'ceiling tok/s':>14} {'of ceiling':>11}" if args.ceiling else ""))
        try:
            for batch in batches:
                ids = prompts[batch][1]

                def ours(seed=[0]):
                    seed[0] += 1
                    out = sampling.generate(model, ids.tolist(), max_new_tokens=args.new_tokens,
                                            rng=seed[0], temperature=1.0, top_k=0, top_p=1.0,
                                            stop_token_ids=())
                    assert (out.lengths == args.new_tokens).all()

                runners = {"rl_reason": ours}
                if tunix is not None:
                    runners["tunix"] = lambda batch=batch: tunix.call("time", batch)
                if with_transformers:
                    runners["transformers"] = run_transformers(
                        folder, ids, args.new_tokens, eos, torch_device, dtype)
                if args.ceiling:
                    runners["ceiling"] = decode_ceiling.xla_runner(
                        config, ceiling_weights, batch, args.new_tokens, dtype=dtype)
                    runners["ceiling"]()  # compilation
                ours()
                if tunix is not None:
                    tunix.call("warm", batch)
                if with_transformers:
                    runners["transformers"]()
                times = {name: [] for name in runners}
                for _ in range(args.repeats):   # one call of each library in turn
                    for name, run in runners.items():
                        start = time.perf_counter()
                        reported = run()
                        elapsed = time.perf_counter() - start
                        # tunix reports its own call time (no pipe round trip).
                        times[name].append(reported if name == "tunix" else elapsed)
                best = {name: min(t) for name, t in times.items()}
                tokens = batch * args.new_tokens
                row = dict(batch=batch, rl_reason_tok_s=tokens / best["rl_reason"],
                           rl_reason_s=best["rl_reason"])
                if "tunix" in best:
                    row.update(tunix_tok_s=tokens / best["tunix"], tunix_s=best["tunix"],
                               vs_tunix=best["tunix"] / best["rl_reason"])
                if "transformers" in best:
                    row.update(transformers_tok_s=tokens / best["transformers"],
                               transformers_s=best["transformers"],
                               ratio=best["transformers"] / best["rl_reason"])
                flops = generation_flops(config, batch, args.prompt_len, args.new_tokens)
                step_bytes = decode_step_bytes(config, batch, args.prompt_len, args.new_tokens)
                row.update(flop_frac=flops / best["rl_reason"] / peak,
                           bw_frac=step_bytes / (best["rl_reason"] / args.new_tokens) / bandwidth)
                if "ceiling" in best:
                    row.update(ceiling_tok_s=tokens / best["ceiling"], ceiling_s=best["ceiling"],
                               of_ceiling=best["ceiling"] / best["rl_reason"])
                rows.append(row)
                tunix_text = (f"{row['tunix_tok_s']:12.0f} {row['vs_tunix']:9.2f}"
                              if "tunix_tok_s" in row else f"{'-':>12} {'-':>9}")
                theirs_text = (f"{row['transformers_tok_s']:19.0f} {row['ratio']:7.2f}"
                               if "ratio" in row else f"{'-':>19} {'-':>7}")
                print(f"{batch:6d} {row['rl_reason_tok_s']:16.0f} {tunix_text} {theirs_text} "
                      f"{row['flop_frac']:10.3f}"
                      + (f" {row['bw_frac']:8.3f}" if show_bw else "")
                      + (f" {row['ceiling_tok_s']:14.0f} {row['of_ceiling']:11.3f}"
                         if "ceiling" in best else ""), flush=True)
        finally:
            if tunix is not None:
                tunix.close()

    if args.json:
        meta = dict(preset=preset, dtype=dtype, num_params=config.num_params(),
                    prompt_len=args.prompt_len, new_tokens=args.new_tokens,
                    repeats=args.repeats, decode_segments=len(segments),
                    platform=device.platform,
                    device_kind=device.device_kind, cores=usable_cores(),
                    load_average=os.getloadavg()[0], matmul_peak_flops=peak,
                    copy_bandwidth_bytes_s=bandwidth, jax=jax.__version__,
                    torch=torch.__version__, torch_device=torch_device)
        with open(args.json, "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
