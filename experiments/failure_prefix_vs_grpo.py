"""Failure-prefix conditioning against GRPO on a problem set the policy already
solves (docs/methods.md, "Failure-prefix conditioning").

    python experiments/failure_prefix_vs_grpo.py [--seeds=0,1,2] [--budget=120000]
        [--start=HF_FOLDER | --start_steps=40] [--arms=grpo,failure_prefix,...]
    python experiments/failure_prefix_vs_grpo.py --smoke      # CI: 2 steps per arm

The claim under test: GRPO on a saturated set learns almost nothing (most of its
groups are all-correct: zero advantage), while failure-prefix training on the same
set improves held-out accuracy and the accuracy of continuing a misleading prefix
(a prefix of the policy's own wrong response to a held-out problem), and a refresh
of the mined prefixes adds more.

Arms (configs/failure_prefix.py: train on level 1 of the embedded task, held-out
levels 1 and 2, evaluation every 10 steps), all from one start checkpoint and
stopped at one generated-token budget (mining and probing samples count):
    grpo                    plain GRPO on the same set (variant `grpo`)
    failure_prefix          prefixes mined once, at the first step
    failure_prefix_refresh  mined again once, when held-out greedy accuracy has not
                            improved over two evaluations or after 40 steps,
                            whichever comes first

Start: without --start, the script first trains GRPO on level 1 for --start_steps
steps (seed 0; RUNS/start, resumable) and starts every arm from its export, so the
start policy saturates the set more than the base policy does. The same start by
hand:
    python -m rl_reason.main --config=configs/failure_prefix.py:grpo \\
        --config.train.num_steps=40 --workdir=runs/failure_prefix_vs_grpo/start
    python experiments/failure_prefix_vs_grpo.py \\
        --start=runs/failure_prefix_vs_grpo/start/hf

Outputs (experiments/results/failure_prefix_vs_grpo/): results.md (final held-out
metrics, mean ± standard error over seeds, then a table of the training signal:
zero-advantage share of the training groups, steps, refreshes), results.json and
curves.png. Not part of CI beyond --smoke; the results go in the README.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402

NAME = "failure_prefix_vs_grpo"
REPORT = ("eval/greedy_accuracy", "eval/avg@4", "eval/pass@4",
          "eval/misleading_prefix_plain_accuracy", "eval/misleading_prefix_accuracy")
CURVES = ("eval/greedy_accuracy", "eval/misleading_prefix_accuracy", "mixed_fraction",
          "accuracy", "failure_prefix/mined_set", "failure_prefix/refreshes")
EVAL_EVERY = 10


def arms(smoke: bool) -> list[harness.Arm]:
    """The three arms. A smoke run has no evaluations during training, so its refresh
    arm refreshes on schedule after one step instead of on a plateau."""
    every = (("train.eval_every", EVAL_EVERY),)
    once = every + (("method.refresh_every", 0), ("method.refresh_on_plateau", False))
    if smoke:
        refresh = (("method.refresh_every", 1), ("method.max_refreshes", 1))
    else:
        refresh = every + (("method.refresh_every", 40), ("method.refresh_on_plateau", True),
                           ("method.plateau_patience", 2), ("method.max_refreshes", 1))
    return [harness.Arm("grpo", "failure_prefix", variant="grpo", overrides=every),
            harness.Arm("failure_prefix", "failure_prefix", overrides=once),
            harness.Arm("failure_prefix_refresh", "failure_prefix", overrides=refresh)]


def build_start(runs: str, steps: int, overrides) -> str:
    """GRPO on the arms' training set for `steps` steps (seed 0), exported; resumable."""
    from configs import failure_prefix
    from rl_reason import train

    config = failure_prefix.get_config("grpo")
    config.unlock()
    config.train.num_steps = steps
    for key, raw in overrides:
        if key.startswith(("model.", "data.", "verifier.")):
            harness.set_key(config, key, raw, parse=True)
    config.lock()
    workdir = os.path.join(runs, "start")
    print(f"=== {NAME}: start checkpoint, GRPO for {steps} steps -> {workdir}", flush=True)
    train.run(config, workdir)
    return os.path.join(workdir, "hf")


def training_signal(runs: str, results: dict) -> str:
    """Markdown: per run, the mean zero-advantage share of the training groups (all
    correct or all wrong) over its steps, its steps and its refreshes."""
    lines = ["| run | steps | zero-advantage share | refreshes | mined problems |",
             "|---|---|---|---|---|"]
    for arm, seeds in results.items():
        for seed in seeds:
            rows = [m for m in harness.read_lines(os.path.join(runs, arm, f"seed{seed}"))
                    if "mixed_fraction" in m]
            if not rows:
                continue
            zero = sum(1.0 - m["mixed_fraction"] for m in rows) / len(rows)
            refreshes = max((m.get("failure_prefix/refreshes", 0) for m in rows), default=0)
            mined = [m["failure_prefix/mined_problems"] for m in rows
                     if "failure_prefix/mined_problems" in m]
            lines.append(f"| {arm} seed {seed} | {len(rows)} | {zero:.3f} | {refreshes} | "
                         f"{', '.join(map(str, mined)) or '-'} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    start_steps = 40
    for flag in [a for a in argv if a.startswith("--start_steps=")]:
        start_steps = int(flag.split("=", 1)[1])
        argv.remove(flag)
    args, overrides = harness.parse_args(argv, NAME, default_budget=120_000,
                                         default_seeds="0,1,2")
    if not args.start and not args.smoke:
        argv.append(f"--start={build_start(args.runs, start_steps, overrides)}")
    results = harness.main(arms(args.smoke), argv, name=NAME, report=REPORT, curves=CURVES,
                           default_budget=120_000)
    signal = training_signal(args.runs, results)
    with open(os.path.join(args.out, "results.md"), "a") as f:
        f.write("\nTraining signal (zero-advantage share: mean over steps of the share of "
                "training groups whose rewards are all equal):\n\n" + signal + "\n")
    print(signal)
    with open(os.path.join(args.out, "results.json")) as f:
        saved = json.load(f)
    saved["training_signal"] = signal
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(saved, f, indent=2)
    return results


if __name__ == "__main__":
    main()
