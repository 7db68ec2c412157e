"""One GRPO step, side by side: rl_reason, tunix (GRPOLearner) and TRL (GRPOTrainer).

    python benchmarks/grpo_step.py [--steps 3] [--texts plain,frame] [--peers tunix,trl]
                                   [--envs DIR] [--json PATH]

What it does:
1. Builds (or reuses) one virtual environment per peer under --envs (default
   $RL_REASON_PEER_ENVS, else ~/.cache/rl_reason/peer_envs), outside the repository: tunix = google-tunix 0.1.7 with jax 0.10.2; trl = torch 2.13.0 (the
   CPU wheel, installed first so pip does not pull CUDA packages), then trl 1.16.0.
2. Saves one random Qwen2 checkpoint in Hugging Face format (hidden 512, 8 layers, 8
   heads, 4 KV heads, MLP 1024, vocab 512, tied embeddings: 19.2M parameters) with a
   character-level tokenizer (one token per byte; no chat template).
3. For each prompt text, starts one worker per framework, each in its own environment
   (rl_reason: this one), loading that checkpoint with the framework's own loader.
   Every worker runs the same GRPO step: the same 8 prompts x 8 samples, 32 new tokens
   at temperature 1 (top-p 1, no top-k; each stops at the tokenizer's EOS, as a
   trainer does), one update per batch, no KL, AdamW at lr 1e-5 after clipping at
   global norm 1, PPO clip 0.2, token-mean loss. Warm-up steps (compilation) are not
   timed. Then the timed steps are interleaved: one step of each framework in turn
   (the order rotates every round) while the others wait, so a change in the machine's
   load hits every framework alike. Medians over --steps rounds.
4. Prints, per prompt text and framework, seconds per step and per phase, the padded
   update shape, real (non-padding) tokens per row, and rl_reason's step time as a
   fraction of each peer's; plus the machine, its load average and the float32 matmul
   peak measured in the same run (benchmarks/timing.py).

Prompt texts (the problems are "12+34=" and 7 others of the same length):
    plain   rl_reason's plain RL prompt: the chat frame with the reasoning instruction
            ("User: 12+34=\\nPlease reason step by step, ... \\boxed{}.\\n\\nAssistant:",
            95 tokens)
    frame   the chat frame alone ("User: 12+34=\\n\\nAssistant:", 24 tokens)

rl_reason's step is the trainer's own (train.Trainer.train_step with configs/grpo.py:
rollout engine, verifier stage, GRPO batch, update); for `frame` its prompt template is
replaced by the bare question, the only change. How each peer is driven, and what its
phases mean: benchmarks/peers/*.py. The lock-step protocol: benchmarks/peers/protocol.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.peers import protocol  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEERS_DIR = os.path.join(HERE, "peers")

PROBLEMS = [("12+34=", 46), ("23+45=", 68), ("31+27=", 58), ("44+15=", 59),
            ("52+36=", 88), ("61+23=", 84), ("70+19=", 89), ("18+71=", 89)]

# name -> (packages installed in this order, the import whose version is checked)
PEER_ENVS = {
    "tunix": ([["google-tunix==0.1.7", "jax==0.10.2", "jaxlib==0.10.2"]],
              "import tunix, jax; print(jax.__version__)", "0.10.2"),
    "trl": ([["torch==2.13.0"], ["trl==1.16.0"]],
            "import trl, torch; print(trl.__version__)", "1.16.0"),
}
PEER_WORKERS = {"tunix": "tunix_grpo.py", "trl": "trl_grpo.py"}
LABELS = {"rl_reason": "rl_reason", "rl_reason_unshared": "rl_reason, share_prefixes=False",
          "tunix": "tunix 0.1.7 GRPOLearner",
          "trl": "TRL 1.16.0 GRPOTrainer"}

JOB_DEFAULTS = dict(group=8, new_tokens=32, temperature=1.0, learning_rate=1e-5,
                    grad_clip=1.0, clip=0.2, warmup_steps=2)


# ---------------------------------------------------------------- environments

def ensure_env(name: str, envs_dir: str, log=print) -> str:
    """The Python of the peer's virtual environment, built on first use."""
    groups, check, version = PEER_ENVS[name]
    path = os.path.join(envs_dir, name)
    python = os.path.join(path, "bin", "python")
    if os.path.exists(python):
        found = subprocess.run([python, "-c", check], capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip() == version:
            return python
    log(f"building the {name} environment in {path} (minutes) ...")
    subprocess.run([sys.executable, "-m", "venv", path], check=True)
    for packages in groups:
        subprocess.run([python, "-m", "pip", "install", "-q", *packages], check=True)
    return python


# ---------------------------------------------------------------- checkpoint and prompts

def build_char_tokenizer(path: str, vocab_size: int = 512):
    """A character-level tokenizer (one token per byte, byte-level like Qwen's) in Hugging
    Face format, covering ids [0, vocab_size): <|pad|> 0, <|endoftext|> 1 (EOS), the
    256 byte symbols, then unused ids. No chat template."""
    import tokenizers
    import transformers
    from tokenizers import decoders, models as tok_models, pre_tokenizers

    specials = ["<|pad|>", "<|endoftext|>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    # Ids nothing encodes to, so that the tokenizer covers the model's whole vocabulary
    # and every sampled id decodes.
    fillers = [f"<|unused{i}|>" for i in range(vocab_size - len(specials) - len(alphabet))]
    vocab = {t: i for i, t in enumerate(specials + alphabet + fillers)}
    raw = tokenizers.Tokenizer(tok_models.BPE(vocab=vocab, merges=[]))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    raw.decoder = decoders.ByteLevel()
    raw.add_special_tokens(specials)
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=raw, pad_token=specials[0],
                                               eos_token=specials[1])
    tok.save_pretrained(path)
    return tok


def build_checkpoint(path: str, seed: int = 0):
    """A random Qwen2 checkpoint of the issue's shape and a character-level tokenizer."""
    import jax

    from rl_reason import models
    from rl_reason.models import transformer

    tok = build_char_tokenizer(path)
    config = models.ModelConfig(
        family="qwen2", vocab_size=len(tok), hidden_size=512, intermediate_size=1024,
        num_layers=8, num_heads=8, num_kv_heads=4, head_dim=64, rope_theta=10000.0,
        rms_norm_eps=1e-6, tie_embeddings=True, max_position_embeddings=4096,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    init = jax.jit(transformer.init_params, static_argnums=0)
    models.save(models.Model(init(config, jax.random.PRNGKey(seed)), config), path)
    return config, tok


def prompt_texts(text: str, tokenizer) -> list[str]:
    from rl_reason.models.tokenizer import apply_chat
    return [apply_chat(tokenizer, message_template(text)(problem))
            for problem, _ in PROBLEMS]


def message_template(text: str):
    from rl_reason.data import templates
    if text == "plain":
        return templates.plain_prompt
    if text == "frame":
        return lambda question: [{"role": "user", "content": question}]
    raise ValueError(f"unknown prompt text {text!r}; known: plain, frame")


# ---------------------------------------------------------------- the rl_reason worker

def rl_reason_worker(checkpoint: str, job_path: str, share_prefixes: bool = True) -> None:
    """rl_reason's trainer as a lock-step worker (see benchmarks/peers/protocol.py)."""
    import numpy as np

    from configs import grpo
    from rl_reason import train
    from rl_reason.data import templates

    with open(job_path) as f:
        job = json.load(f)
    # The prompt text is the only change to the trainer's path.
    templates.plain_prompt = message_template(job["text"])
    root = tempfile.mkdtemp(prefix="grpo_step_rl_reason_")
    data = os.path.join(root, "train.jsonl")
    with open(data, "w") as f:
        for problem, answer in PROBLEMS:
            f.write(json.dumps({"problem": problem, "answer": str(answer)}) + "\n")
    c = grpo.get_config()
    c.model.checkpoint = checkpoint
    c.data.update(train=data, shuffle=False)
    c.rollout.update(prompts_per_step=len(PROBLEMS), group_size=job["group"],
                     max_new_tokens=job["new_tokens"], temperature=job["temperature"],
                     max_prompt_len=256)
    c.loss.update(clip_low=job["clip"], clip_high=job["clip"], kl_coef=0.0,
                  aggregation="token-mean")
    c.optim.update(learning_rate=job["learning_rate"], warmup_steps=0, weight_decay=0.0,
                   grad_clip=job["grad_clip"], ppo_epochs=1, num_minibatches=1)
    c.train.update(num_steps=10**6, checkpoint_every=10**6, export_hf=False,
                   share_prefixes=share_prefixes)
    c.eval.enabled = False

    trainer = train.Trainer(c, os.path.join(root, "run"))
    seen = {}
    step_functions = trainer._step_functions

    def recording_step_functions(loss_config):
        fns = step_functions(loss_config)

        def update(state, batch):
            # Shared prefixes: the prefix rows' shape, then the rows'; real tokens per
            # row count each prefix once.
            valid = np.asarray(batch["valid"])
            real = float(valid.sum())
            shape = [list(valid.shape)]
            if "prefix_valid" in batch:
                prefix_valid = np.asarray(batch["prefix_valid"])
                real += float(prefix_valid.sum())
                shape.insert(0, list(prefix_valid.shape))
            seen.update(update_shape=shape, real_tokens_per_row=real / valid.shape[0])
            return fns.update(state, batch)
        return dataclasses.replace(fns, update=update)

    trainer._step_functions = recording_step_functions

    def step() -> dict:
        m = trainer.train_step()
        trainer.step += 1
        phases = {p: m.get(f"time/{p}", 0.0)
                  for p in ("prepare", "sampling", "verify", "build_batch", "logprobs",
                            "update")}
        phases["other"] = max(m["time/step"] - sum(phases.values()), 0.0)
        return dict(seconds=m["time/step"], phases=phases, **seen)

    try:
        warmups = [step()["seconds"] for _ in range(job["warmup_steps"])]
        protocol.emit("ready", {"warmup_seconds": warmups})
        while protocol.wait_for_step():
            protocol.emit("step", step())
    finally:
        trainer.close()


# ---------------------------------------------------------------- orchestration

class Worker:
    def __init__(self, name: str, command: list[str], log_path: str):
        self.name = name
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, bufsize=1, cwd=ROOT)

    def read(self, kind: str) -> dict:
        for line in self.proc.stdout:
            parsed = protocol.parse(line)
            if parsed is None:
                self.log.write(line)
                continue
            if parsed[0] == kind:
                return parsed[1]
        self.log.flush()
        raise RuntimeError(f"{self.name} worker exited (status {self.proc.wait()}) before "
                           f"'{kind}'; its log: {self.log.name}")

    def step(self) -> dict:
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        return self.read("step")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=120)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def run_text(text: str, frameworks: dict[str, list[str]], checkpoint: str, tokenizer,
             steps: int, workdir: str, log=print) -> dict[str, list[dict]]:
    """Interleaved timed steps of every framework on one prompt text."""
    job = dict(JOB_DEFAULTS, text=text, prompts=prompt_texts(text, tokenizer),
               answers=[str(a) for _, a in PROBLEMS])
    job_path = os.path.join(workdir, f"job_{text}.json")
    with open(job_path, "w") as f:
        json.dump(job, f)
    workers = []
    try:
        # Started one at a time: compilations do not overlap each other's warm-up.
        for name, command in frameworks.items():
            worker = Worker(name, command + ["--checkpoint", checkpoint, "--job", job_path],
                            os.path.join(workdir, f"{name}_{text}.log"))
            workers.append(worker)
            ready = worker.read("ready")
            log(f"  {name} ready (warm-up steps {', '.join(f'{s:.1f}' for s in ready['warmup_seconds'])} s)")
        results: dict[str, list[dict]] = {w.name: [] for w in workers}
        for r in range(steps):
            order = workers[r % len(workers):] + workers[:r % len(workers)]
            for worker in order:
                results[worker.name].append(worker.step())
                log(f"  round {r + 1}: {worker.name} {results[worker.name][-1]['seconds']:.2f} s")
        return results
    finally:
        for worker in workers:
            worker.close()


def summarize(results: dict[str, list[dict]]) -> dict[str, dict]:
    """Median seconds per step and per phase of each framework, the update shape and
    real tokens per row (of the last step), and rl_reason's step time over each
    framework's (rl_reason itself: 1)."""
    summary = {}
    for name, steps in results.items():
        phases = sorted({p for s in steps for p in s["phases"]})
        summary[name] = dict(
            seconds=statistics.median(s["seconds"] for s in steps),
            phases={p: statistics.median(s["phases"].get(p, 0.0) for s in steps)
                    for p in phases},
            update_shape=steps[-1].get("update_shape"),
            real_tokens_per_row=steps[-1].get("real_tokens_per_row"),
            steps=len(steps))
    ours = summary.get("rl_reason", {}).get("seconds")
    for row in summary.values():
        row["rl_reason_over_this"] = ours / row["seconds"] if ours is not None else None
    return summary


def format_table(text: str, summary: dict[str, dict]) -> str:
    """A Markdown table of summarize()'s result."""
    lines = [f"prompt text: {text}",
             "| framework | s/step | sampling | update | other | update shape | "
             "real tokens/row | rl_reason / this |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in summary.items():
        phases = dict(row["phases"])
        sampling, update = phases.pop("sampling", 0.0), phases.pop("update", 0.0)
        shapes = row["update_shape"] or [["-"]]
        if not isinstance(shapes[0], list):
            shapes = [shapes]
        shape = "] + [".join(", ".join(map(str, x)) for x in shapes)
        real = row["real_tokens_per_row"]
        ratio = row["rl_reason_over_this"]
        lines.append(f"| {LABELS.get(name, name)} | {row['seconds']:.2f} | {sampling:.2f} | "
                     f"{update:.2f} | {sum(phases.values()):.2f} | [{shape}] | "
                     f"{'-' if real is None else f'{real:.1f}'} | "
                     f"{'-' if ratio is None else f'{ratio:.2f}'} |")
    return "\n".join(lines)


def machine_line() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{len(os.sched_getaffinity(0))} usable cores ({os.cpu_count()} online), {model}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed rounds per prompt text")
    parser.add_argument("--texts", default="plain,frame")
    parser.add_argument("--peers", default="tunix,trl", help="comma-separated; '' for none")
    parser.add_argument("--envs", default=os.environ.get(
                            "RL_REASON_PEER_ENVS",
                            os.path.expanduser("~/.cache/rl_reason/peer_envs")),
                        help="where the peers' virtual environments are built or reused, "
                             "outside the repository (default $RL_REASON_PEER_ENVS or "
                             "~/.cache/rl_reason/peer_envs)")
    parser.add_argument("--warmup-steps", type=int, default=JOB_DEFAULTS["warmup_steps"])
    parser.add_argument("--json", default="")
    parser.add_argument("--unshared", action="store_true",
                        help="also run rl_reason with train.share_prefixes=False")
    # Internal: run one framework's worker in this process.
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", default="", help=argparse.SUPPRESS)
    parser.add_argument("--job", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker in ("rl_reason", "rl_reason_unshared"):
        rl_reason_worker(args.checkpoint, args.job,
                         share_prefixes=args.worker == "rl_reason")
        return
    JOB_DEFAULTS["warmup_steps"] = args.warmup_steps
    texts = [t for t in args.texts.split(",") if t]
    peers = [p for p in args.peers.split(",") if p]
    for p in peers:
        if p not in PEER_WORKERS:
            parser.error(f"unknown peer {p!r}; known: {', '.join(PEER_WORKERS)}")

    started = time.time()
    frameworks = {"rl_reason": [sys.executable, os.path.abspath(__file__), "--worker",
                                "rl_reason"]}
    if args.unshared:
        frameworks["rl_reason_unshared"] = [sys.executable, os.path.abspath(__file__),
                                            "--worker", "rl_reason_unshared"]
    for p in peers:
        frameworks[p] = [ensure_env(p, args.envs), os.path.join(PEERS_DIR, PEER_WORKERS[p])]
    workdir = tempfile.mkdtemp(prefix="grpo_step_")
    checkpoint = os.path.join(workdir, "qwen2_19m")
    config, tokenizer = build_checkpoint(checkpoint)
    print(f"GRPO step side by side: {machine_line()}; checkpoint {checkpoint} "
          f"({config.num_params() / 1e6:.1f}M parameters); logs in {workdir}", flush=True)

    tables, report = [], dict(machine=machine_line(), texts={})
    for text in texts:
        tokens = len(tokenizer.encode(prompt_texts(text, tokenizer)[0],
                                      add_special_tokens=False))
        print(f"\n[{text}] {tokens}-token prompts; {args.steps} interleaved rounds", flush=True)
        load_before = os.getloadavg()[0]
        results = run_text(text, frameworks, checkpoint, tokenizer, args.steps, workdir)
        summary = summarize(results)
        report["texts"][text] = dict(prompt_tokens=tokens, load_average_before=load_before,
                                     load_average_after=os.getloadavg()[0],
                                     summary=summary, steps=results)
        tables.append(format_table(f"{text} ({tokens} prompt tokens; load average "
                                   f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} "
                                   f"after)", summary))

    from benchmarks.timing import matmul_peak_flops
    peak = matmul_peak_flops()
    report.update(matmul_peak_flops=peak, load_average=os.getloadavg()[0],
                  minutes=(time.time() - started) / 60)
    print(f"\n{machine_line()}; float32 matmul peak {peak / 1e9:.1f} GFLOP/s (measured "
          f"now); load average {os.getloadavg()[0]:.2f}; "
          f"{(time.time() - started) / 60:.0f} min in all\n")
    print("\n\n".join(tables))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
