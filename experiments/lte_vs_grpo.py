"""LTE against GRPO and against GRPO with the same extra rollouts but no hint.

    python experiments/lte_vs_grpo.py [--seeds=0,1,2] [--budget=300000] [--arms=...]
        [--start=HF_FOLDER] [--config.key=value ...]
    python experiments/lte_vs_grpo.py --smoke     # two tiny steps per arm (CI)

Arms, all from one start checkpoint (the embedded base policy unless --start) and
stopped at one generated-token budget, every hinted or extra sample counted:
    grpo                  configs/grpo.py
    lte                   configs/lte.py
    grpo_extra_rollouts   configs/lte.py:grpo_extra_rollouts (G more plain samples for
                          each none-pass group, same replacement rule, no hint)

The shared protocol (experiments/protocol.py) trains on a small set (256 problems of
the embedded task, 16 steps an epoch at B = 16), so prompts recur and a prompt that
was none-pass can become solvable: the mechanism the paper claims is that the
none-pass share of the fresh groups falls faster under LTE. Held-out: the protocol's
metrics, mean +- standard error over seeds.

Writes (see experiments/harness.py) results.md, results.json and curves.png under
experiments/results/WORLD/lte_vs_grpo, plus a table of the mean none-pass share of the
fresh groups in each quarter of the budget (none_pass.md, also appended to
results.md).
"""

from __future__ import annotations

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import protocol  # noqa: E402

NAME = "lte_vs_grpo"
ARMS = [
    protocol.arm("grpo", "grpo"),
    protocol.arm("lte", "lte"),
    protocol.arm("grpo_extra_rollouts", "lte", variant="grpo_extra_rollouts"),
]
REPORT = protocol.REPORT
CURVES = ("none_pass_fraction", "reward_mean", "eval/greedy_accuracy", "eval/pass@1",
          "eval/pass@8", "lte/extra_success_rate")
NONE_PASS = "none_pass_fraction"
QUARTERS = 4
BUDGET, SEEDS = protocol.DEFAULT_BUDGET, "0,1,2"


def none_pass_by_quarter(workdir: str, budget: float) -> list[float]:
    """Mean none-pass share of the fresh groups over the steps in each quarter of the
    budget (by generated tokens at the end of the step); NaN for an empty quarter."""
    bins: list[list[float]] = [[] for _ in range(QUARTERS)]
    for line in harness.read_lines(workdir):
        if NONE_PASS in line and harness.TOKENS in line:
            q = min(QUARTERS - 1, int(QUARTERS * float(line[harness.TOKENS]) / budget))
            bins[q].append(float(line[NONE_PASS]))
    return [sum(b) / len(b) if b else math.nan for b in bins]


def none_pass_table(runs: str, arms: dict, budget: float) -> str:
    lines = ["| arm | " + " | ".join(f"quarter {q + 1}" for q in range(QUARTERS)) + " |",
             "|---|" + "---|" * QUARTERS]
    for arm, seeds in arms.items():
        per_seed = [none_pass_by_quarter(os.path.join(runs, arm, f"seed{s}"), budget)
                    for s in seeds]
        cells = []
        for q in range(QUARTERS):
            mean, se = harness.mean_se([v[q] for v in per_seed if not math.isnan(v[q])])
            cells.append("n/a" if math.isnan(mean) else f"{mean:.3f} ± {se:.3f}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    results = harness.main(ARMS, argv, name=NAME, report=REPORT, curves=CURVES,
                           default_budget=BUDGET, default_seeds=SEEDS)
    args, _ = harness.parse_args(argv, NAME, BUDGET, SEEDS)
    # A smoke run has no budget: its two steps fill the quarters by their own tokens.
    budget = args.budget
    if args.smoke:
        budget = max(float(line.get(harness.TOKENS, 0))
                     for arm, seeds in results.items() for s in seeds
                     for line in harness.read_lines(os.path.join(args.runs, arm, f"seed{s}")))
    text = ("\n## None-pass share of the fresh groups, by quarter of the budget\n\n"
            "Mean ± standard error over seeds of each run's mean over the steps in the "
            "quarter.\n\n" + none_pass_table(args.runs, results, budget) + "\n")
    with open(os.path.join(args.out, "none_pass.md"), "w") as f:
        f.write(text)
    harness.add_section(args.out, text)
    return results


if __name__ == "__main__":
    main()
