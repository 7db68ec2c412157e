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
from rl_reason.data import packing, tokenizer_builder, worlds
from rl_reason.errors import exit_on_user_error
from rl_reason.models import hf, transformer
from rl_reason.models.tokenizer import load_tokenizer
from rl_reason.models.tokenizer import pad_token_id, stop_token_ids
from rl_reason.models.config import ModelConfig
from rl_reason.models.model import Model, init

STATS_FILE = "base_policy_stats.json"
# Which world (and dial setting) a base policy was built for; start checkpoints carry
# it on (experiments/start_checkpoint.py), so a run can refuse a policy of another world.
WORLD_FILE = "world.json"
# Base policies shipped inside the package (rl_reason/base_policies/<folder>), so a
# first run needs no build: `python -m rl_reason.pretrain --world=traps --skill=S
# --out=rl_reason/base_policies/traps_v1_skill_S` writes one.
SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "base_policies")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything that decides the base policy (its cache name carries the world's
    version and the skill). The defaults are the arithmetic world's; `world_settings`
    gives each world's."""

    world: str = "arith"
    # The premise dial (worlds with one): the share of warm-start failures used.
    skill: float | None = None
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
    # The premise table's sizes (premises.PremiseSettings fields), for the worlds that
    # print one; empty: its defaults.
    premise_sizes: tuple = ()
    # Two stages (worlds with trunk conversations; others ignore it): first
    # `trunk_steps` on the world's skill-free answers at learning_rate (the trunk,
    # cached and shared by every dial setting), then `steps` on the whole mix at
    # finetune_learning_rate. 0: one stage of `steps` on the whole mix.
    trunk_steps: int = 0
    finetune_learning_rate: float = 1e-3


# Each world's base policy. The trap world's policy must execute its workings well
# enough that its failures are mostly the trap (whose answer it can recognise), so it
# trains longer; responses that check their answer against known wrong ones run to
# about twice a plain working, hence the longer generation budget.
WORLD_DEFAULTS = {
    "arith": Settings(),
    "traps": Settings(world="traps", trunk_steps=2500, steps=1500, level_weights=(4, 3, 3, 2, 2),
                      unboxed_share=0.0),
}
BUILD_MINUTES = {"arith": "about 5 minutes", "traps": "about 30 minutes"}


SIZES = {
    "small": {},
    # For tests: seconds, not minutes; the model learns little.
    "tiny": dict(hidden=64, layers=2, rows_per_batch=4, row_len=384, tokenizer_problems=300,
                 eval_train_problems=16, eval_held_out_problems=16, kind_problems=4,
                 kind_samples=2, vocab_size=320, trunk_steps=2,
                 premise_sizes=(("questions", 4), ("group_size", 2), ("r3l_episodes", 4),
                                ("fp_questions", 4), ("fp_mining_samples", 2),
                                ("probe_samples", 1), ("reflection_max_new_tokens", 16))),
}


def world_settings(world: str = worlds.DEFAULT, skill: float | None = None) -> Settings:
    """The build settings of `world`'s base policy at dial setting `skill` (None or
    negative: the world's default)."""
    w = worlds.get(world)
    return dataclasses.replace(WORLD_DEFAULTS[w.name], skill=w.resolve_skill(skill))


def folder_name(s: Settings) -> str:
    """'traps_v1_skill0.5', or the version alone for a world without a dial."""
    version = worlds.get(s.world).version
    return version if s.skill is None else f"{version}_skill{s.skill:g}"


def default_cache_dir(s: Settings | None = None) -> str:
    root = os.environ.get("RL_REASON_CACHE") or os.path.join("~", ".cache", "rl_reason")
    return os.path.join(os.path.expanduser(root), folder_name(s or Settings()))


def shipped_path(s: Settings) -> str:
    return os.path.join(SHIPPED_DIR, folder_name(s))


def is_complete(path: str) -> bool:
    """Whether `path` holds a whole base policy: config, weights, tokenizer and stats."""
    def has(name: str) -> bool:
        return os.path.isfile(os.path.join(path, name))

    return (all(has(f) for f in (hf.CONFIG_FILE, "tokenizer.json", STATS_FILE))
            and (has(hf.SINGLE_FILE) or has(hf.INDEX_FILE)))


def read_world(path: str) -> dict | None:
    """The world a policy folder was built for ({"world", "version", "skill"}), or None."""
    try:
        with open(os.path.join(path, WORLD_FILE)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def ensure_base_policy(world: str = worlds.DEFAULT, skill: float | None = None, *,
                       cache_dir: str | None = None) -> str:
    """The world's base policy folder: the one shipped with the package when there is
    one, else the cached build, built (minutes) if missing."""
    s = world_settings(world, skill)
    if cache_dir is None and is_complete(shipped_path(s)):
        return shipped_path(s)
    path = os.path.abspath(cache_dir or default_cache_dir(s))
    if is_complete(path):
        return path
    print(f"Building the embedded base policy in {path} (once; {BUILD_MINUTES[s.world]} on CPU).",
          flush=True)
    build_base_policy(path, s)
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

def tokenizer_corpus(num_problems: int, seed: int, world: str = "arith") -> list[str]:
    """Texts to learn merges from: every message of warm-start conversations of all
    kinds (special tokens are added separately, so the chat markup is left out).
    Unboxed endings are left out: their words are in the feedback texts anyway, and
    the tokenizer learnt with them gave a weaker base policy (level-1 pass rate 0.58,
    not 0.90, at 660 steps: the warm-start ends near where the model learns to copy
    operands, so small changes move it)."""
    texts = ["system", "user", "assistant"]
    conversations = worlds.get(world).conversations(
        num_problems, seed=seed, level_weights=None,
        skill=worlds.get(world).default_skill, unboxed_share=0.0)
    for conversation in conversations:
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


def train(config: ModelConfig, batches: packing.WarmStartBatches, *, steps: int,
          learning_rate: float, params=None, seed: int = 0) -> tuple[Model, float]:
    """`steps` AdamW steps over `batches` (warm-up and cosine decay to a tenth of
    `learning_rate`), from `params` or, without them, a fresh init from `seed`."""
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, warmup_steps=max(1, steps // 20), decay_steps=steps,
        end_value=learning_rate * 0.1)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0),
                            optax.adamw(schedule, b1=0.9, b2=0.98, weight_decay=0.01))
    params = init(config, seed).params if params is None else params
    opt_state = optimizer.init(params)
    train_step = make_train_step(config, optimizer)
    start, loss_ema, loss = time.time(), None, 0.0
    print_every = max(1, steps // 20)
    rows, row_len = batches.rows_per_batch, batches.short[0].shape[-1]
    for i in range(steps):
        batch = tuple(jnp.asarray(a) for a in batches.batch(i))
        params, opt_state, loss = train_step(params, opt_state, batch)
        if (i + 1) % print_every == 0 or i + 1 == steps:
            loss = float(loss)
            loss_ema = loss if loss_ema is None else 0.7 * loss_ema + 0.3 * loss
            elapsed = time.time() - start
            rate = (i + 1) / elapsed
            print(f"  step {i + 1:5d}/{steps}  loss {loss:.4f} (ema {loss_ema:.4f})  "
                  f"{rate:.2f} steps/s  {rate * rows * row_len / 1000:.1f}k tok/s  "
                  f"ETA {(steps - i - 1) / rate:.0f}s", flush=True)
    return Model(params, config), float(loss)


# ---------------------------------------------------------------------------- trunk

TRUNK_FILE = "trunk.json"


def trunk_key(s: Settings) -> dict:
    """What decides the trunk: every setting but those of the dial stage."""
    keys = ("world", "seed", "trunk_steps", "hidden", "layers", "head_dim", "rows_per_batch",
            "row_len", "learning_rate", "vocab_size", "tokenizer_problems", "level_weights")
    return json.loads(json.dumps({k: getattr(s, k) for k in keys}
                                 | {"version": worlds.get(s.world).version}))


def trunk_dir(s: Settings) -> str:
    root = os.environ.get("RL_REASON_CACHE") or os.path.join("~", ".cache", "rl_reason")
    return os.path.join(os.path.expanduser(root), f"{worlds.get(s.world).version}_trunk")


def ensure_trunk(s: Settings) -> tuple[Model, dict, str]:
    """The world's trunk (stage 1: `trunk_steps` on the skill-free answers, the task and
    its misconception), shared by every dial setting: (model, record, folder), loaded
    from the cache when it was built with the same settings, else trained and cached.
    The folder holds the trunk's tokenizer, which the dial stage must use."""
    path = trunk_dir(s)
    try:
        with open(os.path.join(path, TRUNK_FILE)) as f:
            record = json.load(f)
        if record["key"] == trunk_key(s):
            print(f"Trunk: {path} (cached).", flush=True)
            return hf.load(path), record, path
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        pass
    world = worlds.get(s.world)
    started = time.time()
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".trunk.partial-", dir=parent)
    try:
        tokenizer = tokenizer_builder.build_tokenizer(
            tokenizer_corpus(s.tokenizer_problems, seed=s.seed, world=s.world), staging,
            vocab_size=s.vocab_size)
        config = model_config(s, len(tokenizer), tokenizer)
        batches = packing.build_batches(
            tokenizer, s.trunk_steps, s.rows_per_batch, s.row_len, seed=s.seed,
            conversations=lambda num, *, seed: world.trunk_conversations(
                num, seed=seed, level_weights=s.level_weights))
        print(f"Trunk: {config.num_params() / 1e6:.2f}M parameters, vocab {len(tokenizer)}, "
              f"{s.trunk_steps} steps of {s.rows_per_batch} x {s.row_len} tokens on the "
              f"world's plain answers ({batches.num_conversations} conversations).", flush=True)
        model, loss = train(config, batches, steps=s.trunk_steps, learning_rate=s.learning_rate,
                            seed=s.seed)
        record = {"key": trunk_key(s), "final_loss": round(loss, 4),
                  "seconds": round(time.time() - started, 1)}
        hf.save(model, staging)
        with open(os.path.join(staging, TRUNK_FILE), "w") as f:
            json.dump(record, f, indent=2)
        _publish(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model, record, path


# ---------------------------------------------------------------------------- build

def build_base_policy(out: str, s: Settings) -> dict:
    """Builds the tokenizer, trains, evaluates and writes the checkpoint to `out`."""
    out = os.path.abspath(out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.partial-", dir=parent)
    try:
        started = time.time()
        world = worlds.get(s.world)
        if s.trunk_steps > 0 and world.trunk_conversations is not None:
            trunk, trunk_record, trunk_path = ensure_trunk(s)
            for name in os.listdir(trunk_path):     # the trunk's tokenizer files
                if name.startswith(("tokenizer", "special_tokens", "chat_template")):
                    shutil.copy(os.path.join(trunk_path, name), staging)
            tokenizer, config = load_tokenizer(staging), trunk.config
        else:
            trunk, trunk_record = None, None
            tokenizer = tokenizer_builder.build_tokenizer(
                tokenizer_corpus(s.tokenizer_problems, seed=s.seed, world=s.world), staging,
                vocab_size=s.vocab_size)
            config = model_config(s, len(tokenizer), tokenizer)

        def conversations(num, *, seed):
            return world.conversations(num, seed=seed, level_weights=s.level_weights,
                                       skill=s.skill, unboxed_share=s.unboxed_share)

        batches = packing.build_batches(tokenizer, s.steps, s.rows_per_batch, s.row_len,
                                        seed=s.seed, conversations=conversations)
        print(f"Warm-start{' after the trunk' if trunk else ''}: "
              f"{config.num_params() / 1e6:.2f}M parameters, vocab {len(tokenizer)}, "
              f"{s.steps} steps of {s.rows_per_batch} x {s.row_len} tokens, "
              f"{len(batches.long_steps)} of them {s.rows_per_batch // 2} x {2 * s.row_len} "
              f"({batches.num_conversations} conversations, "
              f"{batches.trained_share():.0%} trained tokens).", flush=True)
        model, final_loss = train(
            config, batches, steps=s.steps,
            learning_rate=s.finetune_learning_rate if trunk else s.learning_rate,
            params=trunk.params if trunk else None, seed=s.seed)
        train_seconds = time.time() - started
        stats = pretrain_eval.evaluate(model, tokenizer, s)
        # Through JSON so the returned stats equal the file (tuples become lists).
        stats.update(world=s.world, version=world.version, skill=s.skill,
                     settings=json.loads(json.dumps(dataclasses.asdict(s))),
                     num_params=config.num_params(), final_loss=round(final_loss, 4),
                     train_seconds=round(train_seconds, 1),
                     total_seconds=round(time.time() - started, 1),
                     stop_token_ids=list(stop_token_ids(tokenizer)),
                     max_new_tokens=s.max_new_tokens, warm_start=batches.census,
                     trunk=trunk_record)
        pretrain_eval.print_stats(stats)
        hf.save(model, staging)
        with open(os.path.join(staging, STATS_FILE), "w") as f:
            json.dump(stats, f, indent=2)
        with open(os.path.join(staging, WORLD_FILE), "w") as f:
            json.dump({"world": s.world, "version": world.version, "skill": s.skill}, f)
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
    parser.add_argument("--world", default=worlds.DEFAULT, choices=sorted(worlds.WORLDS))
    parser.add_argument("--skill", type=float, default=None,
                        help="the premise dial: share of warm-start failures the policy "
                             "learns to use (default: the world's)")
    parser.add_argument("--out", default=None,
                        help="default: RL_REASON_CACHE (~/.cache/rl_reason)/<world version>[_skill<S>]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None,
                        help="optimizer steps (of the dial stage, in a two-stage build)")
    parser.add_argument("--trunk-steps", type=int, default=None,
                        help="optimizer steps of a two-stage build's trunk")
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--unboxed-share", type=float, default=None,
                        help="share of multi-step responses, in every prompt kind, without the box")
    args = parser.parse_args(argv)
    s = dataclasses.replace(world_settings(args.world, args.skill), seed=args.seed,
                            **SIZES[args.size])
    if args.unboxed_share is not None:
        if not 0.0 <= args.unboxed_share <= 1.0:
            parser.error(f"--unboxed-share must be in [0, 1], got {args.unboxed_share}")
        s = dataclasses.replace(s, unboxed_share=args.unboxed_share)
    if args.steps is not None:
        if args.steps < 1:
            parser.error(f"--steps must be >= 1, got {args.steps}")
        s = dataclasses.replace(s, steps=args.steps)
    if args.trunk_steps is not None:
        if args.trunk_steps < 0:
            parser.error(f"--trunk-steps must be >= 0, got {args.trunk_steps}")
        s = dataclasses.replace(s, trunk_steps=args.trunk_steps)
    build_base_policy(args.out or default_cache_dir(s), s)


if __name__ == "__main__":
    main()
