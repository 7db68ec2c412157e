"""The embedded base policy: a short supervised warm-start on the synthetic task.

    python -m rl_reason.pretrain [--out=DIR] [--seed=0] [--steps=N] [--size=small]

builds the tokenizer from the task's texts, trains a few-million-parameter Qwen3-family
model on conversations in every prompt format the methods use (rl_reason/data/
warm_start.py: plain, LTE hint / concise, multi-attempt with wrong attempts and
feedback, R3L episodes, reflection reports and guided retries, continuation from a
correct prefix and repair after a failure prefix), and writes a Hugging Face
checkpoint (config.json, model.safetensors, tokenizer files) plus
base_policy_stats.json. About 5 minutes on 2 CPU cores. Half of the multi-step
answers, in every prompt kind, end "The result is 32." instead of the box
(`Settings.unboxed_share`), so the base policy, like real base models, often states
a worked-out answer in a form the verifier does not accept, equally whatever prompt
a method sends.

The run ends by measuring what RL needs from a base policy (rl_reason/pretrain_eval.py):
per-problem pass rates on a slice of the training split, which must contain problems
never solved, always solved and in between; greedy accuracy on the RL held-out split,
which RL should then raise; and accuracy and boxed share by prompt kind, which must
not favour a method's prompts. It also prints what the warm-start data held (boxed
share by kind, the spread of retry_from_step). Training is deliberately short: the
middle of the difficulty range is left under-trained so RL has room to learn.

`ensure_base_policy()` returns the cached checkpoint, building it on first use; the
folder is written under a temporary name and renamed when complete, so a killed
build never leaves a folder that looks finished.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tempfile
import time

import jax
import jax.numpy as jnp
import optax

from rl_reason import pretrain_eval
from rl_reason.data import packing, tokenizer_builder, warm_start
from rl_reason.errors import exit_on_user_error
from rl_reason.models import hf, transformer
from rl_reason.models.tokenizer import pad_token_id, stop_token_ids
from rl_reason.models.config import ModelConfig
from rl_reason.models.model import Model, init

VERSION = "base_policy_v6"
STATS_FILE = "base_policy_stats.json"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything that decides the base policy (its cache name carries VERSION)."""

    seed: int = 0
    # 2 layers learn to copy operands sooner than 4 in the same time (docs/measurements.md, "Base policy history").
    # 900 steps: the data spreads over ten prompt kinds, and fewer steps left the plain
    # prompt's working too weak for RL to find rewards at levels 2-3.
    steps: int = 900
    hidden: int = 128
    layers: int = 2
    # 4 heads of 32, not 2 of 64: most wrong answers were operands mis-copied from the
    # question, and more heads copy better (docs/measurements.md, "Base policy history").
    head_dim: int = 32
    # Steps of 8 rows of 256 tokens; conversations longer than a row (reflections on
    # 3-attempt episodes) go to steps of 4 rows of 512 (data/packing.py).
    rows_per_batch: int = 8
    row_len: int = 256
    learning_rate: float = 3e-3
    vocab_size: int = 512
    tokenizer_problems: int = 3000
    eval_train_problems: int = 192
    # The RL runs' levels and held-out split (configs/base.py embedded_cpu_settings:
    # data.embedded_levels, data.embedded_eval_size; a test keeps them equal).
    rl_levels: tuple = (2, 3)
    eval_held_out_problems: int = 512
    # Accuracy and format by prompt kind: these many training problems at rl_levels,
    # these many samples each.
    kind_problems: int = 64
    kind_samples: int = 4
    max_new_tokens: int = 64
    # Warm-start problems by level (1..8): mostly easy ones, so that in minutes the model
    # masters the easy end; the hard end stays unsolved and RL works in between (flatter
    # weights left the easy end unlearnt, docs/measurements.md).
    level_weights: tuple = (20, 10, 5, 3, 2, 1, 1, 1)
    # Share of multi-step responses in every prompt kind that end without the boxed
    # answer (data/warm_start.py): the base policy must learn the format from reward.
    unboxed_share: float = 0.5


SIZES = {
    "small": {},
    # For tests: seconds, not minutes; the model learns little.
    "tiny": dict(hidden=64, layers=2, rows_per_batch=4, row_len=384, tokenizer_problems=300,
                 eval_train_problems=16, eval_held_out_problems=16, kind_problems=4,
                 kind_samples=2, vocab_size=320),
}


def default_cache_dir() -> str:
    root = os.environ.get("RL_REASON_CACHE") or os.path.join("~", ".cache", "rl_reason")
    return os.path.join(os.path.expanduser(root), VERSION)


def is_complete(path: str) -> bool:
    """Whether `path` holds a whole base policy: config, weights, tokenizer and stats."""
    def has(name: str) -> bool:
        return os.path.isfile(os.path.join(path, name))

    return (all(has(f) for f in (hf.CONFIG_FILE, "tokenizer.json", STATS_FILE))
            and (has(hf.SINGLE_FILE) or has(hf.INDEX_FILE)))


def ensure_base_policy(cache_dir: str | None = None) -> str:
    """The embedded base policy's checkpoint folder, built (minutes) if not cached."""
    path = os.path.abspath(cache_dir or default_cache_dir())
    if is_complete(path):
        return path
    print(f"Building the embedded base policy in {path} (once; about 5 minutes on CPU).",
          flush=True)
    build_base_policy(path, Settings())
    return path


def model_config(s: Settings, vocab_size: int, tokenizer) -> ModelConfig:
    heads = max(1, s.hidden // s.head_dim)
    return ModelConfig(
        family="qwen3", vocab_size=vocab_size, hidden_size=s.hidden,
        intermediate_size=3 * s.hidden, num_layers=s.layers, num_heads=heads,
        num_kv_heads=heads, head_dim=s.hidden // heads, rope_theta=10000.0,
        max_position_embeddings=2048, tie_embeddings=False,
        eos_token_id=stop_token_ids(tokenizer),
        pad_token_id=pad_token_id(tokenizer))


# ------------------------------------------------------------------------------ data

def tokenizer_corpus(num_problems: int, seed: int) -> list[str]:
    """Texts to learn merges from: every message of warm-start conversations of all
    kinds (special tokens are added separately, so the chat markup is left out).
    Unboxed endings are left out: their words are in the feedback texts anyway, and
    the tokenizer learnt with them gave a weaker base policy (level-1 pass rate 0.58,
    not 0.90, at 660 steps: the warm-start ends near where the model learns to copy
    operands, so small changes move it)."""
    texts = ["system", "user", "assistant"]
    for conversation in warm_start.warm_start_conversations(num_problems, seed=seed):
        texts += [part for m in conversation.messages for part in (m["role"], m["content"])]
    return texts


# ------------------------------------------------------------------------- training

def _loss(params, config: ModelConfig, tokens_RT, loss_mask_RT, segments_RT, positions_RT):
    """Mean next-token cross-entropy over response tokens of packed rows.

    Rows pack several conversations; `segments` numbers them (0 = padding) and the
    mask keeps attention inside each one, so packing changes nothing but speed.
    """
    T = tokens_RT.shape[1]
    same_RTT = segments_RT[:, :, None] == segments_RT[:, None, :]
    mask_RTT = same_RTT & jnp.tril(jnp.ones((T, T), bool))[None]
    logits_RTV, _ = transformer.forward(params, config, tokens_RT, positions_RT, mask_RTT)
    logp_RTV = jax.nn.log_softmax(logits_RTV[:, :-1], axis=-1)
    nll_RT = -jnp.take_along_axis(logp_RTV, tokens_RT[:, 1:, None], axis=-1)[..., 0]
    weight_RT = loss_mask_RT[:, 1:]
    return jnp.sum(nll_RT * weight_RT) / jnp.maximum(jnp.sum(weight_RT), 1.0)


def make_train_step(config: ModelConfig, optimizer):
    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(_loss)(params, config, *batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss
    return jax.jit(step, donate_argnums=(0, 1))


def train(s: Settings, config: ModelConfig, batches: packing.WarmStartBatches
          ) -> tuple[Model, float]:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, s.learning_rate, warmup_steps=max(1, s.steps // 20), decay_steps=s.steps,
        end_value=s.learning_rate * 0.1)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0),
                            optax.adamw(schedule, b1=0.9, b2=0.98, weight_decay=0.01))
    params = init(config, s.seed).params
    opt_state = optimizer.init(params)
    train_step = make_train_step(config, optimizer)
    start, loss_ema, loss = time.time(), None, 0.0
    print_every = max(1, s.steps // 20)
    for i in range(s.steps):
        batch = tuple(jnp.asarray(a) for a in batches.batch(i))
        params, opt_state, loss = train_step(params, opt_state, batch)
        if (i + 1) % print_every == 0 or i + 1 == s.steps:
            loss = float(loss)
            loss_ema = loss if loss_ema is None else 0.7 * loss_ema + 0.3 * loss
            elapsed = time.time() - start
            rate = (i + 1) / elapsed
            print(f"  step {i + 1:5d}/{s.steps}  loss {loss:.4f} (ema {loss_ema:.4f})  "
                  f"{rate:.2f} steps/s  {rate * s.rows_per_batch * s.row_len / 1000:.1f}k tok/s  "
                  f"ETA {(s.steps - i - 1) / rate:.0f}s", flush=True)
    return Model(params, config), float(loss)


# ---------------------------------------------------------------------------- build

def build_base_policy(out: str, s: Settings) -> dict:
    """Builds the tokenizer, trains, evaluates and writes the checkpoint to `out`."""
    out = os.path.abspath(out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.partial-", dir=parent)
    try:
        started = time.time()
        tokenizer = tokenizer_builder.build_tokenizer(
            tokenizer_corpus(s.tokenizer_problems, seed=s.seed), staging,
            vocab_size=s.vocab_size)
        config = model_config(s, len(tokenizer), tokenizer)
        batches = packing.build_batches(tokenizer, s.steps, s.rows_per_batch, s.row_len,
                                        seed=s.seed, level_weights=s.level_weights,
                                        unboxed_share=s.unboxed_share)
        print(f"Warm-start: {config.num_params() / 1e6:.2f}M parameters, vocab {len(tokenizer)}, "
              f"{s.steps} steps of {s.rows_per_batch} x {s.row_len} tokens, "
              f"{len(batches.long_steps)} of them {s.rows_per_batch // 2} x {2 * s.row_len} "
              f"({batches.num_conversations} conversations, "
              f"{batches.trained_share():.0%} trained tokens).", flush=True)
        model, final_loss = train(s, config, batches)
        train_seconds = time.time() - started
        stats = pretrain_eval.evaluate(model, tokenizer, s)
        # Through JSON so the returned stats equal the file (tuples become lists).
        stats.update(version=VERSION, settings=json.loads(json.dumps(dataclasses.asdict(s))),
                     num_params=config.num_params(), final_loss=round(final_loss, 4),
                     train_seconds=round(train_seconds, 1),
                     total_seconds=round(time.time() - started, 1),
                     stop_token_ids=list(stop_token_ids(tokenizer)),
                     max_new_tokens=s.max_new_tokens, warm_start=batches.census)
        pretrain_eval.print_stats(stats)
        hf.save(model, staging)
        with open(os.path.join(staging, STATS_FILE), "w") as f:
            json.dump(stats, f, indent=2)
        _publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"Saved the base policy to {out} ({stats['total_seconds']:.0f}s).", flush=True)
    return stats


def _publish(staging: str, out: str) -> None:
    """Atomic rename into place; an older folder at `out` is moved aside first."""
    os.chmod(staging, 0o755)   # mkdtemp makes it 0700; a shared cache must be readable
    if os.path.exists(out):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=os.path.dirname(out))
        os.rename(out, os.path.join(old, "previous"))
        os.rename(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staging, out)


@exit_on_user_error
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help=f"default: {default_cache_dir()}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps")
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--unboxed-share", type=float, default=None,
                        help="share of multi-step responses, in every prompt kind, without the box")
    args = parser.parse_args(argv)
    s = Settings(seed=args.seed, **SIZES[args.size])
    if args.unboxed_share is not None:
        if not 0.0 <= args.unboxed_share <= 1.0:
            parser.error(f"--unboxed-share must be in [0, 1], got {args.unboxed_share}")
        s = dataclasses.replace(s, unboxed_share=args.unboxed_share)
    if args.steps is not None:
        if args.steps < 1:
            parser.error(f"--steps must be >= 1, got {args.steps}")
        s = dataclasses.replace(s, steps=args.steps)
    build_base_policy(args.out or default_cache_dir(), s)


if __name__ == "__main__":
    main()
