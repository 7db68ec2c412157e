"""Seconds per RL step by phase, and the update's model FLOP/s against the matmul peak.

    python benchmarks/train_step.py [--steps 4] [--prompts 64] [--group 8] [--new-tokens 64]
                                    [--json PATH]

Runs the real trainer (GRPO, configs/grpo.py) on the engine issue's 19M-parameter
model shape (preset bench-19m: hidden 512, 8 layers, 8 heads, 4 KV heads, MLP 1024,
vocab 512) with random weights and a tokenizer built from the embedded task: 64
prompts x 8 samples x 64 new tokens per step. A random policy rarely stops early, so
every step samples the full 64 tokens. The first step (compilation) is left out; the
table shows the median of the others.

Update FLOPs, counted on the padded [rows, T] batch the step actually runs:
    per token  6 * N + 12 * layers * heads * head_dim * T
with N the parameters used in matmuls (all but the embedding lookup; the LM head
counts even when tied): the usual forward + backward = 3 x forward estimate. With
remat (the default here; without it the batch needs ~34 GB) the layers' forward runs
twice, which is not counted, as is usual for model FLOP utilisation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import matmul_peak_flops  # noqa: E402
from configs import grpo  # noqa: E402
from rl_reason import models, train  # noqa: E402
from rl_reason.data import synthetic, templates, tokenizer_builder  # noqa: E402

PHASES = ("prepare", "sampling", "verify", "build_batch", "logprobs", "update")


def build_policy(path: str) -> models.ModelConfig:
    records = synthetic.train_records(2000, seed=0)
    corpus = [r.problem for r in records] + [templates.plain_prompt(r.problem)[0]["content"]
                                             for r in records[:200]]
    tok = tokenizer_builder.build_tokenizer(corpus, path, vocab_size=512)
    config = models.get_preset("bench-19m", vocab_size=len(tok),
                               eos_token_id=models.stop_token_ids(tok),
                               pad_token_id=tok.pad_token_id)
    models.save(models.init(config, seed=0), path)
    return config


def update_flops_per_token(config: models.ModelConfig, length: int) -> float:
    embed = config.vocab_size * config.hidden_size
    matmul_params = config.num_params() - embed + (embed if config.tie_embeddings else 0)
    attention = 12 * config.num_layers * config.num_heads * config.head_dim * length
    return 6 * matmul_params + attention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--no-remat", action="store_true",
                        help="keep every layer's activations for the backward pass (512 rows "
                             "x 128 tokens of this model need ~34 GB that way)")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be >= 2 (the first step compiles and is not timed)")

    root = tempfile.mkdtemp(prefix="bench_train_step_")
    policy = os.path.join(root, "policy")
    model_config = build_policy(policy)
    c = grpo.get_config()
    c.model.checkpoint = policy
    c.rollout.update(prompts_per_step=args.prompts, group_size=args.group,
                     max_new_tokens=args.new_tokens, max_prompt_len=128)
    c.train.update(num_steps=args.steps, checkpoint_every=10**6, export_hf=False)
    c.eval.enabled = False
    # Rematerialised layers: the update keeps one [rows, T, D] input per layer.
    c.model.remat = not args.no_remat
    c.optim.update(learning_rate=1e-6, warmup_steps=0)

    trainer = train.Trainer(c, os.path.join(root, "run"))
    shapes = []
    step_functions = trainer._step_functions

    def recording_step_functions(loss_config):
        fns = step_functions(loss_config)

        def recording_update(state, batch):
            shapes.append(batch["tokens"].shape)
            return fns.update(state, batch)
        return dataclasses.replace(fns, update=recording_update)

    trainer._step_functions = recording_step_functions
    try:
        trainer.train()
    finally:
        trainer.close()

    with open(os.path.join(root, "run", "metrics.jsonl")) as f:
        steps = [json.loads(line) for line in f]
    steps = [m for m in steps if "time/step" in m][1:]
    peak = matmul_peak_flops()
    median = {p: statistics.median(m.get(f"time/{p}", 0.0) for m in steps) for p in PHASES}
    median["step"] = statistics.median(m["time/step"] for m in steps)
    rows, length = shapes[-1]
    flops = rows * length * update_flops_per_token(model_config, length)
    update_flops_per_s = flops / median["update"]

    print(f"\nRL step on {jax.device_count()} x {jax.devices()[0].platform}, "
          f"{model_config.num_params() / 1e6:.1f}M parameters, {args.prompts} prompts x "
          f"{args.group} samples x {args.new_tokens} new tokens; median of {len(steps)} steps")
    print(f"{'phase':<12} {'seconds':>8} {'share':>6}")
    for p in PHASES + ("step",):
        print(f"{p:<12} {median[p]:8.2f} {median[p] / median['step']:6.0%}")
    print(f"update batch [{rows}, {length}], {flops / 1e12:.2f} TFLOP per update: "
          f"{update_flops_per_s / 1e9:.1f} GFLOP/s = {update_flops_per_s / peak:.0%} of the "
          f"measured float32 matmul peak ({peak / 1e9:.1f} GFLOP/s)")
    print(f"sampling: {statistics.median(m['tokens_per_s'] for m in steps):.0f} generated tokens/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(seconds=median, update_batch=[rows, length], update_flops=flops,
                           update_flops_per_s=update_flops_per_s, matmul_peak=peak,
                           update_fraction_of_peak=update_flops_per_s / peak,
                           args=vars(args)), f, indent=2)


if __name__ == "__main__":
    main()
