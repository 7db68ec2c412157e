"""Ablation: GRPO and its DAPO / Dr.GRPO switches on one task, several seeds.

    python experiments/grpo_variants.py [--variants=base,dapo,drgrpo] [--seeds=0,1]
        [--base_variant=qwen25_math_1p5b] [--out=experiments/results/grpo_variants]
        [--config.key=value ...]

Each (variant, seed) is a normal run of configs/grpo.py in its own workdir under
--out, so an interrupted sweep resumes where it stopped when re-run (finished runs
are skipped by the trainer). Extra `--config.*` flags apply to every run, e.g. a real
checkpoint and data files. Writes results.md (held-out accuracy before/after per
run, and mean per variant) and curves.png (one line per run), and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import grpo  # noqa: E402
from rl_reason import plot, train  # noqa: E402

EVAL_KEY = "eval/greedy_accuracy"


def set_override(config, dotted: str, raw: str) -> None:
    *sections, name = dotted.split(".")
    node = config
    for s in sections:
        node = node[s]
    current = node[name]
    if isinstance(current, bool):
        value = raw.lower() in ("1", "true", "yes")
    elif isinstance(current, (int, float, str)):
        value = type(current)(raw)
    else:
        value = json.loads(raw)
    node[name] = value


def held_out(workdir: str) -> tuple[float | None, float | None]:
    """Held-out accuracy at the first and the last evaluation of a run."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        values = [m[EVAL_KEY] for m in map(json.loads, f) if EVAL_KEY in m]
    return (values[0], values[-1]) if values else (None, None)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="base,dapo,drgrpo")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--base_variant", default="",
                        help="config variant under every run, e.g. qwen25_math_1p5b or tiny")
    parser.add_argument("--out", default=os.path.join("experiments", "results", "grpo_variants"))
    args, rest = parser.parse_known_args(argv)
    overrides = []
    for flag in rest:
        if not flag.startswith("--config.") or "=" not in flag:
            parser.error(f"unknown argument {flag!r} (only --config.key=value is passed on)")
        key, raw = flag[len("--config."):].split("=", 1)
        overrides.append((key, raw))

    rows, workdirs = [], []
    for variant in args.variants.split(","):
        for seed in map(int, args.seeds.split(",")):
            parts = [args.base_variant, "" if variant == "base" else variant]
            config = grpo.get_config(",".join(filter(None, parts)))
            config.unlock()
            config.seed = seed
            for key, raw in overrides:
                set_override(config, key, raw)
            workdir = os.path.join(args.out, f"{variant}_seed{seed}")
            print(f"=== {variant}, seed {seed} -> {workdir}", flush=True)
            train.run(config, workdir)
            before, after = held_out(workdir)
            rows.append((variant, seed, before, after))
            workdirs.append(workdir)

    lines = ["| variant | seed | held-out before | held-out after |", "|---|---|---|---|"]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
    for variant, seed, before, after in rows:
        lines.append(f"| {variant} | {seed} | {fmt(before)} | {fmt(after)} |")
    lines += ["", "| variant | mean held-out after |", "|---|---|"]
    for variant in dict.fromkeys(r[0] for r in rows):
        afters = [r[3] for r in rows if r[0] == variant and r[3] is not None]
        lines.append(f"| {variant} | {fmt(statistics.mean(afters) if afters else None)} |")
    text = "\n".join(lines)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(text + "\n")
    runs = {label: plot.read_metrics(w) for label, w in zip(plot.run_labels(workdirs), workdirs)}
    plot.plot(runs, plot.default_metrics(runs), os.path.join(args.out, "curves.png"))
    print(text)
    print(f"Wrote {args.out}/results.md and curves.png")


if __name__ == "__main__":
    main()
