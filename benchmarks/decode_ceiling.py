"""How fast can decoding be on this machine? The matmuls of a decode step, alone.

    python benchmarks/decode_ceiling.py [--batches 16,64,256] [--new-tokens 64]

For the sampler benchmark's model (preset bench-19m), each of --new-tokens steps runs
only the weight matmuls of one decode step: per layer q, k, v, o, gate, up and down
on a [batch, hidden] activation, then the unembedding. No attention, no norms, no
sampling, no cache: whatever a real sampler adds can only make it slower, so the
tokens/s printed is a ceiling for any sampler built on that library's matmuls.

Two libraries run the same work:
    xla    one jitted lax.fori_loop over the steps (jnp.dot; what rl_reason's sampler
           compiles to, minus everything but the matmuls)
    torch  a Python loop of torch.matmul under inference_mode, with
           torch.set_num_threads(usable cores) (what transformers' generate calls)

Compare the columns with benchmarks/sampler.py's: if the XLA ceiling is below twice
transformers' measured tokens/s, no XLA sampler reaches "2x transformers" here.
Best of --repeats timed calls after one warm-up.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import usable_cores, warm_best_time  # noqa: E402
from rl_reason import models  # noqa: E402


def weight_shapes(config: models.ModelConfig) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """Per-layer (in, out) shapes of q, k, v, o, gate, up, down; and the unembedding."""
    c = config
    q, kv, d, f = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.hidden_size, c.intermediate_size
    return [(d, q), (d, kv), (d, kv), (q, d), (d, f), (d, f), (f, d)], (d, c.vocab_size)


def random_weights(config: models.ModelConfig, seed: int = 0) -> list[np.ndarray]:
    layer_shapes, unembed = weight_shapes(config)
    rng = np.random.default_rng(seed)
    shapes = layer_shapes * config.num_layers + [unembed]
    return [(rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32) for s in shapes]


def step_flops(config: models.ModelConfig, batch: int) -> float:
    layer_shapes, unembed = weight_shapes(config)
    params = config.num_layers * sum(i * o for i, o in layer_shapes) + unembed[0] * unembed[1]
    return 2.0 * batch * params


def _decode_step(mm, x, w, num_layers: int, silu):
    """One step's matmuls; the cheap elementwise glue only keeps every result live."""
    for layer in range(num_layers):
        wq, wk, wv, wo, wg, wu, wd = w[7 * layer:7 * layer + 7]
        q, k, v = mm(x, wq), mm(x, wk), mm(x, wv)
        attended = q + 1e-3 * (k.sum(-1, keepdims=True) + v.sum(-1, keepdims=True))
        x = x + mm(attended, wo)
        x = x + mm(silu(mm(x, wg)) * mm(x, wu), wd)
    logits = mm(x, w[-1])
    return x + 1e-6 * logits.mean(-1, keepdims=True)


def xla_runner(config, weights, batch: int, steps: int, dtype="float32"):
    """The jitted loop as a callable; weights and activations in `dtype` (the sampler
    benchmark's --ceiling passes its compute dtype)."""
    w = [jnp.asarray(a, dtype) for a in weights]
    x0 = (jnp.ones((batch, config.hidden_size), jnp.float32) * 0.01).astype(dtype)

    @jax.jit
    def run(w, x):
        body = lambda _, x: _decode_step(jnp.dot, x, w, config.num_layers, jax.nn.silu)
        return jax.lax.fori_loop(0, steps, body, x)

    return lambda: run(w, x0).block_until_ready()


def torch_runner(config, weights, batch: int, steps: int):
    import torch

    torch.set_num_threads(usable_cores())
    w = [torch.from_numpy(a) for a in weights]
    x0 = torch.ones((batch, config.hidden_size)) * 0.01

    def run():
        with torch.inference_mode():
            x = x0
            for _ in range(steps):
                x = _decode_step(torch.matmul, x, w, config.num_layers, torch.nn.functional.silu)
        return x

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="16,64,256")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model-preset", default="bench-19m")
    args = parser.parse_args()

    config = models.get_preset(args.model_preset)
    weights = random_weights(config)
    print(f"decode-step matmuls of {args.model_preset}, {args.new_tokens} steps, float32, "
          f"{usable_cores()} usable cores, load average {os.getloadavg()[0]:.2f}; best of "
          f"{args.repeats}")
    print(f"{'batch':>6} {'xla tok/s':>10} {'xla GFLOP/s':>12} {'torch tok/s':>12} "
          f"{'torch GFLOP/s':>14}")
    for batch in [int(b) for b in args.batches.split(",")]:
        tokens = batch * args.new_tokens
        flops = step_flops(config, batch) * args.new_tokens
        xla = warm_best_time(xla_runner(config, weights, batch, args.new_tokens), args.repeats)
        torch_time = warm_best_time(torch_runner(config, weights, batch, args.new_tokens), args.repeats)
        print(f"{batch:>6} {tokens / xla:>10.0f} {flops / xla / 1e9:>12.1f} "
              f"{tokens / torch_time:>12.0f} {flops / torch_time / 1e9:>14.1f}", flush=True)


if __name__ == "__main__":
    main()
