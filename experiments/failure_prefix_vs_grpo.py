"""Failure-prefix conditioning against GRPO on a problem set the policy already
solves (docs/methods.md, "Failure-prefix conditioning").

    python experiments/failure_prefix_vs_grpo.py [--seeds=0,1,2] [--budget=120000]
        [--start=HF_FOLDER] [--arms=grpo,failure_prefix,...]
    python experiments/failure_prefix_vs_grpo.py --smoke      # CI: 2 steps per arm

The claim under test: GRPO on a saturated set learns almost nothing (most of its
groups are all-correct: zero advantage), while failure-prefix training on the same
set improves held-out accuracy and the accuracy of continuing a misleading prefix
(a prefix of the policy's own wrong response to a held-out problem), and a refresh
of the mined prefixes adds more.

Arms (configs/failure_prefix.py: train on level 1 of the embedded task, held-out
levels 1 and 2 before and after training), all from one start checkpoint and stopped
at one generated-token budget (mining and probing samples count):
    grpo                    plain GRPO on the same set (variant `grpo`)
    failure_prefix          prefixes mined once, at the first step
    failure_prefix_refresh  mined again once, after 20 steps

Start: without --start, the script first trains GRPO on level 1 for 40 steps (seed 0;
experiments/start_checkpoint.py into RUNS/start, once) and starts every arm from it,
so the start policy saturates the set more than the base policy does.

Outputs (experiments/results/failure_prefix_vs_grpo/): results.md (final held-out
metrics, mean ± standard error over seeds, then a table of the training signal:
zero-advantage share of the training groups, steps, refreshes), results.json and
curves.png. Not part of CI beyond --smoke; the README's "Results" shows them.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402

NAME = "failure_prefix_vs_grpo"
REPORT = ("eval/greedy_accuracy", "eval/avg@4", "eval/pass@4",
          "eval/misleading_prefix_plain_accuracy", "eval/misleading_prefix_accuracy")
CURVES = ("mixed_fraction", "all_pass_fraction",
          "accuracy", "failure_prefix/mined_set", "failure_prefix/refreshes")
# GRPO on the arms' training set (level 1) first, so the start saturates it.
START = harness.Start("failure_prefix:grpo", steps=40)
# A refresh halfway: mining again after REFRESH_AT steps, once (on schedule rather
# than on a plateau, so no held-out evaluation is needed during training: each one
# costs as much as twenty training steps here).
REFRESH_AT = 20


def arms(smoke: bool) -> list[harness.Arm]:
    """The three arms (a smoke run refreshes after one step)."""
    once = (("method.refresh_every", 0), ("method.refresh_on_plateau", False))
    refresh = (("method.refresh_every", 1 if smoke else REFRESH_AT),
               ("method.refresh_on_plateau", False), ("method.max_refreshes", 1))
    return [harness.Arm("grpo", "failure_prefix", variant="grpo"),
            harness.Arm("failure_prefix", "failure_prefix", overrides=once),
            harness.Arm("failure_prefix_refresh", "failure_prefix", overrides=refresh)]


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
    args, _ = harness.parse_args(argv, NAME, default_budget=120_000, default_seeds="0,1,2")
    results = harness.main(arms(args.smoke), argv, name=NAME, report=REPORT, curves=CURVES,
                           default_budget=120_000, start=START)
    signal = training_signal(args.runs, results)
    harness.add_section(args.out, "\nTraining signal (zero-advantage share: mean over steps "
                        "of the share of training groups whose rewards are all equal):\n\n"
                        + signal + "\n", "training_signal", signal)
    return results


if __name__ == "__main__":
    main()
