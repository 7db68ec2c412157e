"""The embedded base policy: a short supervised warm-start on the synthetic task.

    python -m rl_reason.pretrain [--out=DIR] [--seed=0] [--steps=N] [--size=small]

builds the tokenizer from the task's texts, trains a few-million-parameter Qwen3-family
model on worked solutions in every prompt format the methods use (rl_reason/data/
templates.py: plain, LTE hint / concise, multi-attempt with wrong attempts and
feedback, R3L episodes, reflection reports and guided retries, continuation from a
prefix), and writes a Hugging Face checkpoint (config.json, model.safetensors,
tokenizer files) plus base_policy_stats.json. About 4 minutes on 2 CPU cores.
Half of the plain multi-step solutions end "The result is 32." instead of the box
(`Settings.unboxed_share`), so the base policy, like real base models, often states
a worked-out answer in a form the verifier does not accept.

The run ends by measuring what RL needs from a base policy: per-problem pass rates
(8 samples at temperature 1) on a slice of the training split, which must contain
problems never solved, always solved and in between, and greedy accuracy on the
held-out split, which RL should then raise. Training is deliberately short: the
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
import numpy as np
import optax

from rl_reason import sampling
from rl_reason.data import synthetic, templates, tokenizer_builder
from rl_reason.errors import exit_on_user_error
from rl_reason.models import hf, transformer
from rl_reason.models.tokenizer import apply_chat, pad_token_id, stop_token_ids
from rl_reason.models.config import ModelConfig
from rl_reason.models.model import Model, init
from rl_reason.verifiers.exact_int import ExactIntVerifier

VERSION = "base_policy_v5"
STATS_FILE = "base_policy_stats.json"
PASS_SAMPLES = 8


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything that decides the base policy (its cache name carries VERSION)."""

    seed: int = 0
    # Measured: 2 layers reach the copy-then-compute stage of the task in ~150 steps
    # where 4 layers of the same width need ~300; more depth did not pay in 5 minutes.
    steps: int = 660
    hidden: int = 128
    layers: int = 2
    # 4 heads of 32, not 2 of 64: most wrong answers were operands mis-copied from the
    # question, and more heads copy better. Measured at 900 steps: level-1 pass rate
    # 0.97 (was 0.51), held-out greedy 0.231 (was 0.105), 15% slower per step; hence
    # 660 steps, to stay within 5 minutes (600 steps: 240 s alone, level-1 pass 0.77).
    head_dim: int = 32
    rows_per_batch: int = 8
    row_len: int = 256
    learning_rate: float = 3e-3
    vocab_size: int = 512
    tokenizer_problems: int = 3000
    eval_train_problems: int = 192
    eval_held_out_problems: int = 256
    max_new_tokens: int = 64
    # Warm-start problems by level (1..8): mostly easy ones, so that in minutes the model
    # masters the easy end; the hard end stays unsolved and RL works in between.
    # Measured with 2 heads of 64 and 900 steps: (8, 6, 4, 3, 2, 1, 1, 1) gave level-1
    # pass rate 0.35, held-out greedy 0.070; these weights 0.51 and 0.105.
    level_weights: tuple = (20, 10, 5, 3, 2, 1, 1, 1)
    # Share of plain warm-start solutions that end without the boxed answer (synthetic.
    # warm_start_conversations): the base policy must learn the format from reward.
    unboxed_share: float = 0.5


SIZES = {
    "small": {},
    # For tests: seconds, not minutes; the model learns little.
    "tiny": dict(hidden=64, layers=2, rows_per_batch=4, row_len=384, tokenizer_problems=300,
                 eval_train_problems=16, eval_held_out_problems=16, vocab_size=320),
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
    print(f"Building the embedded base policy in {path} (once; about 4 minutes on CPU).",
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
        pad_token_id=tokenizer.pad_token_id)


# ------------------------------------------------------------------------------ data

@dataclasses.dataclass(frozen=True)
class PackedRows:
    """Conversations packed into rows of equal length [N, T]: token ids, loss mask
    (1 on trained tokens), segment number (0 = padding) and position in the segment."""

    tokens: np.ndarray
    loss_mask: np.ndarray
    segments: np.ndarray
    positions: np.ndarray
    num_conversations: int


def tokenizer_corpus(num_problems: int, seed: int) -> list[str]:
    """Texts to learn merges from: every message of warm-start conversations of all
    kinds (special tokens are added separately, so the chat markup is left out).
    Unboxed endings are left out: their words are in the feedback texts anyway, and
    the tokenizer learnt with them gave a weaker base policy (level-1 pass rate 0.58,
    not 0.90, at 660 steps: the warm-start ends near where the model learns to copy
    operands, so small changes move it)."""
    texts = ["system", "user", "assistant"]
    for conversation in synthetic.warm_start_conversations(num_problems, seed=seed):
        texts += [part for m in conversation.messages for part in (m["role"], m["content"])]
    return texts


def conversation_segments(tokenizer, conversation: synthetic.Conversation) -> list[tuple[str, bool]]:
    """(text, trained) pieces whose concatenation is the rendered chat.

    Each assistant turn is cut out of the rendering exactly where generation starts
    (after the generation prompt) and stops: the response, then the end-of-turn token,
    trained with it because it is how the policy stops. One render per conversation
    (rendering dominates the data time).
    """
    text = apply_chat(tokenizer, list(conversation.messages), add_generation_prompt=False)
    generation_prompt = tokenizer_builder.IM_START + "assistant\n"
    segments, cursor = [], 0
    last = len(conversation.messages) - 1
    for i, (message, trained) in enumerate(zip(conversation.messages, conversation.trained)):
        if message["role"] != "assistant":
            continue
        response = message["content"] + tokenizer_builder.IM_END
        start = text.find(generation_prompt + response, cursor)
        if start < 0:
            raise ValueError("pretrain: the chat template does not render assistant turns as "
                             "ChatML; cannot mark the trained tokens")
        start += len(generation_prompt)
        cut = conversation.prefix_chars if i == last else 0
        # A given prefix is encoded on its own, as templates.encode_prompt does.
        segments += [(text[cursor:start], False), (message["content"][:cut], False),
                     (message["content"][cut:], trained), (tokenizer_builder.IM_END, trained)]
        cursor = start + len(response)
    segments.append((text[cursor:], False))
    return [(piece, trained) for piece, trained in segments if piece]


def build_rows(tokenizer, num_rows: int, row_len: int, *, seed: int,
               level_weights=None, unboxed_share: float = 0.0) -> PackedRows:
    """`num_rows` packed rows of fresh warm-start conversations (each used once)."""
    shape = (num_rows, row_len)
    tokens, loss_mask = np.zeros(shape, np.int32), np.zeros(shape, np.float32)
    segments, positions = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
    backend = tokenizer.backend_tokenizer
    row, fill, count, chunk = 0, 0, 0, 0
    while row < num_rows:
        # About 6 conversations fill a row; a small margin avoids a mostly wasted chunk.
        wanted = min(4000, 7 * (num_rows - row) + 16)
        conversations = synthetic.warm_start_conversations(
            wanted, seed=seed * 7919 + chunk + 1, level_weights=level_weights,
            unboxed_share=unboxed_share)
        chunk += 1
        pieces = [conversation_segments(tokenizer, c) for c in conversations]
        flat = [text for p in pieces for text, _ in p]
        ids = iter(e.ids for e in backend.encode_batch(flat, add_special_tokens=False))
        for p in pieces:
            seq, mask = [], []
            for _, trained in p:
                piece = next(ids)
                seq += piece
                mask += [float(trained)] * len(piece)
            if len(seq) > row_len:
                continue  # longer than a row: never the case with the default lengths
            if fill + len(seq) > row_len:
                row, fill = row + 1, 0
                if row == num_rows:
                    break
            count += 1
            sl = slice(fill, fill + len(seq))
            tokens[row, sl], loss_mask[row, sl] = seq, mask
            segments[row, sl], positions[row, sl] = count, np.arange(len(seq))
            fill += len(seq)
    return PackedRows(tokens, loss_mask, segments, positions, count)


def encode_plain_prompt(tokenizer, problem: str) -> list[int]:
    return templates.encode_prompt(tokenizer, templates.plain_prompt(problem))


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


def train(s: Settings, config: ModelConfig, rows: PackedRows) -> tuple[Model, float]:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, s.learning_rate, warmup_steps=max(1, s.steps // 20), decay_steps=s.steps,
        end_value=s.learning_rate * 0.1)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0),
                            optax.adamw(schedule, b1=0.9, b2=0.98, weight_decay=0.01))
    params = init(config, s.seed).params
    opt_state = optimizer.init(params)
    train_step = make_train_step(config, optimizer)
    R = s.rows_per_batch
    start, loss_ema, loss = time.time(), None, 0.0
    print_every = max(1, s.steps // 20)
    for i in range(s.steps):
        batch = tuple(jnp.asarray(a[i * R:(i + 1) * R]) for a in
                      (rows.tokens, rows.loss_mask, rows.segments, rows.positions))
        params, opt_state, loss = train_step(params, opt_state, batch)
        if (i + 1) % print_every == 0 or i + 1 == s.steps:
            loss = float(loss)
            loss_ema = loss if loss_ema is None else 0.7 * loss_ema + 0.3 * loss
            elapsed = time.time() - start
            rate = (i + 1) / elapsed
            print(f"  step {i + 1:5d}/{s.steps}  loss {loss:.4f} (ema {loss_ema:.4f})  "
                  f"{rate:.2f} steps/s  {rate * R * s.row_len / 1000:.1f}k tok/s  "
                  f"ETA {(s.steps - i - 1) / rate:.0f}s", flush=True)
    return Model(params, config), float(loss)


# ----------------------------------------------------------------------- evaluation

def _pass_rates(model, tokenizer, records, *, samples: int, greedy: bool, seed: int,
                max_new_tokens: int, chunk: int = 512) -> tuple[np.ndarray, float]:
    """Fraction of `samples` responses per record that the exact-int verifier accepts,
    and the share of all responses that give no final answer (no box)."""
    prompts = [encode_plain_prompt(tokenizer, r.problem) for r in records]
    flat_prompts = [p for p in prompts for _ in range(samples)]
    answers = [r.answer for r in records for _ in range(samples)]
    stop_ids = stop_token_ids(tokenizer)
    texts = []
    for c in range(0, len(flat_prompts), chunk):
        out = sampling.generate(model, flat_prompts[c:c + chunk], max_new_tokens=max_new_tokens,
                                rng=jax.random.PRNGKey(seed + c), temperature=1.0,
                                greedy=greedy, stop_token_ids=stop_ids,
                                pad_id=pad_token_id(tokenizer))
        texts += out.decode(tokenizer, skip_stop_tokens=stop_ids)
    results = ExactIntVerifier().verify_batch(texts, answers)
    rewards = [r.reward for r in results]
    no_answer = float(np.mean([r.status == "no_answer" for r in results])) if results else 0.0
    return np.asarray(rewards, np.float64).reshape(len(records), samples).mean(axis=1), no_answer


def evaluate(model, tokenizer, s: Settings) -> dict:
    """Pass-rate histogram on a training slice and greedy held-out accuracy, by level."""
    train_slice = synthetic.train_records(s.eval_train_problems, seed=s.seed)
    held_out = synthetic.held_out_records(s.eval_held_out_problems, seed=s.seed)
    rates, sampled_no_answer = _pass_rates(
        model, tokenizer, train_slice, samples=PASS_SAMPLES, greedy=False, seed=s.seed,
        max_new_tokens=s.max_new_tokens)
    greedy, greedy_no_answer = _pass_rates(
        model, tokenizer, held_out, samples=1, greedy=True, seed=s.seed,
        max_new_tokens=s.max_new_tokens)
    counts = np.bincount(np.rint(rates * PASS_SAMPLES).astype(int), minlength=PASS_SAMPLES + 1)

    def by_level(records, values):
        levels = np.array([r.meta["level"] for r in records])
        return {str(level): round(float(values[levels == level].mean()), 4)
                for level in sorted(set(levels.tolist()))}

    return {
        "pass_rate_histogram": {f"{k}/{PASS_SAMPLES}": int(n) for k, n in enumerate(counts)},
        "train_slice_problems": len(train_slice),
        "train_slice_mean_pass_rate": round(float(rates.mean()), 4),
        "train_slice_pass_rate_by_level": by_level(train_slice, rates),
        "none_pass_fraction": round(float(np.mean(rates == 0)), 4),
        "all_pass_fraction": round(float(np.mean(rates == 1)), 4),
        "mixed_fraction": round(float(np.mean((rates > 0) & (rates < 1))), 4),
        "train_slice_no_answer_share": round(sampled_no_answer, 4),
        "held_out_problems": len(held_out),
        "held_out_greedy_accuracy": round(float(greedy.mean()), 4),
        "held_out_greedy_accuracy_by_level": by_level(held_out, greedy),
        "held_out_greedy_no_answer_share": round(greedy_no_answer, 4),
    }


def print_stats(stats: dict) -> None:
    hist = stats["pass_rate_histogram"]
    total = max(1, sum(hist.values()))
    print(f"Per-problem pass rate ({PASS_SAMPLES} samples, temperature 1) on "
          f"{stats['train_slice_problems']} training problems:")
    for label, n in hist.items():
        print(f"  {label:>4} {n:4d} {'#' * round(60 * n / total)}")
    print(f"  none-pass {stats['none_pass_fraction']:.2f}  mixed {stats['mixed_fraction']:.2f}  "
          f"all-pass {stats['all_pass_fraction']:.2f}")
    print(f"  mean pass rate by level: {stats['train_slice_pass_rate_by_level']}; "
          f"{stats['train_slice_no_answer_share']:.0%} of the samples give no boxed answer")
    print(f"Held-out greedy accuracy: {stats['held_out_greedy_accuracy']:.3f} on "
          f"{stats['held_out_problems']} problems; by level: "
          f"{stats['held_out_greedy_accuracy_by_level']}; "
          f"{stats['held_out_greedy_no_answer_share']:.0%} give no boxed answer", flush=True)


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
        rows = build_rows(tokenizer, s.steps * s.rows_per_batch, s.row_len,
                          seed=s.seed, level_weights=s.level_weights,
                          unboxed_share=s.unboxed_share)
        print(f"Warm-start: {config.num_params() / 1e6:.2f}M parameters, vocab {len(tokenizer)}, "
              f"{s.steps} steps of {s.rows_per_batch} x {s.row_len} tokens "
              f"({rows.num_conversations} conversations, "
              f"{rows.loss_mask.sum() / rows.loss_mask.size:.0%} trained tokens).", flush=True)
        model, final_loss = train(s, config, rows)
        train_seconds = time.time() - started
        stats = evaluate(model, tokenizer, s)
        # Through JSON so the returned stats equal the file (tuples become lists).
        stats.update(version=VERSION, settings=json.loads(json.dumps(dataclasses.asdict(s))),
                     num_params=config.num_params(), final_loss=round(final_loss, 4),
                     train_seconds=round(train_seconds, 1),
                     total_seconds=round(time.time() - started, 1),
                     stop_token_ids=list(stop_token_ids(tokenizer)),
                     max_new_tokens=s.max_new_tokens)
        print_stats(stats)
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
                        help="share of plain warm-start solutions without the boxed answer")
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
