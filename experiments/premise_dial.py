"""Experiment: a method's effect as a function of the strength of its premise.

    python experiments/premise_dial.py [--skills=0,0.5,0.9] [--seeds=0,1] [--budget=TOKENS]
        [--arms=grpo,lte,...] [--config.key=value ...]
    python experiments/premise_dial.py --smoke     # CI: two tiny steps per arm and setting

The trap world's base policy is built at several settings of its premise dial
(`world.skill`: the share of its warm-start failures it learned to use; 0 = none,
rl_reason/data/trap_warm_start.py). At each setting, LTE, multi-attempt RL and R3L
run against GRPO under the shared protocol (experiments/protocol.py: same held-out
problems, same evaluation, one generated-token budget), every arm from that setting's
base policy; the default setting's runs are the comparison's (the same configs). If a method works through its premise, its lead over
GRPO should grow with the dial and vanish at 0.

Writes experiments/results/traps/premise_dial/: results.md (per setting and metric,
method minus GRPO, mean ± standard error of the difference of the seed means), the
same in results.json, dial.png (the differences against the dial), and each setting's
own sweep results in skill<S>/. Workdirs: runs/traps/premise_dial/skill<S>/.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import compare_methods  # noqa: E402
import harness  # noqa: E402
import protocol  # noqa: E402

NAME = "premise_dial"
METHODS = ("grpo", "lte", "multi_attempt", "r3l")
ARMS = [protocol.arm(m, m) for m in METHODS]
REPORT = protocol.REPORT
CURVES = compare_methods.CURVES
SKILLS, SEEDS = "0,0.5,0.9", "0,1"
DEFAULT_BUDGET = protocol.DEFAULT_BUDGET
BASELINE = "grpo"


def parse_args(argv):
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--skills", default=SKILLS)
    args, rest = parser.parse_known_args(argv)
    try:
        skills = [float(s) for s in args.skills.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--skills must be comma-separated numbers, got {args.skills!r}")
    if not skills or any(not 0 <= s <= 1 for s in skills):
        raise SystemExit(f"--skills must be numbers in [0, 1], got {args.skills!r}")
    if any(flag.startswith("--config.world.") for flag in rest):
        raise SystemExit("premise_dial sets world.name and world.skill itself")
    return skills, rest


def differences(results: dict, metric: str) -> dict[str, tuple[float, float]]:
    """{method: (mean difference to the baseline, its standard error)} over seeds."""
    base = [m[metric] for m in results.get(BASELINE, {}).values() if metric in m]
    b_mean, b_se = harness.mean_se(base)
    out = {}
    for arm, seeds in results.items():
        if arm == BASELINE:
            continue
        values = [m[metric] for m in seeds.values() if metric in m]
        if values and base:
            mean, se = harness.mean_se(values)
            out[arm] = (mean - b_mean, math.sqrt(se ** 2 + b_se ** 2))
    return out


def table(by_skill: dict[float, dict], metrics) -> str:
    lines = ["| skill | method | " + " | ".join(f"Δ {m.removeprefix('eval/')}" for m in metrics)
             + " |", "|---|---|" + "---|" * len(metrics)]
    for skill, results in by_skill.items():
        diffs = {m: differences(results, m) for m in metrics}
        for arm in [a for a in results if a != BASELINE]:
            cells = [f"{diffs[m][arm][0]:+.3f} ± {diffs[m][arm][1]:.3f}" if arm in diffs[m]
                     else "n/a" for m in metrics]
            lines.append(f"| {skill:g} | {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(by_skill: dict[float, dict], metrics, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.4), squeeze=False)
    methods = [a for a in METHODS if a != BASELINE]
    for ax, metric in zip(axes[0], metrics):
        for method in methods:
            xs, ys, es = [], [], []
            for skill, results in by_skill.items():
                d = differences(results, metric).get(method)
                if d is not None:
                    xs.append(skill), ys.append(d[0]), es.append(d[1])
            if xs:
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=method)
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xlabel("premise dial (world.skill)")
        ax.set_title(f"Δ {metric.removeprefix('eval/')} vs GRPO", fontsize=9)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    skills, rest = parse_args(argv)
    args, _ = harness.parse_args(rest, NAME, DEFAULT_BUDGET, SEEDS)
    by_skill = {}
    for skill in skills:
        sub = [f"--runs={os.path.join(args.runs, f'skill{skill:g}')}",
               f"--out={os.path.join(args.out, f'skill{skill:g}')}",
               f"--config.world.skill={skill}"]
        print(f"=== {NAME}: skill {skill:g}", flush=True)
        by_skill[skill] = harness.main(ARMS, rest + sub, name=f"{NAME}_skill{skill:g}",
                                       report=REPORT, curves=CURVES,
                                       default_budget=DEFAULT_BUDGET, default_seeds=SEEDS)
    text = (f"# {NAME}\n\nEach method minus GRPO at each setting of the trap world's premise "
            f"dial, mean ± standard error over seeds {args.seeds} (budget {args.budget} "
            f"generated tokens a run{', smoke' if args.smoke else ''}; every arm from that "
            "setting's base policy; per-setting results in skill<S>/).\n\n"
            + table(by_skill, REPORT) + "\n")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"name": NAME, "skills": skills, "seeds": args.seeds, "budget": args.budget,
                   "smoke": args.smoke,
                   "differences": {f"{s:g}": {m: differences(r, m) for m in REPORT}
                                   for s, r in by_skill.items()},
                   "results": {f"{s:g}": r for s, r in by_skill.items()}}, f, indent=2)
    plot(by_skill, REPORT, os.path.join(args.out, "dial.png"))
    print(text, flush=True)
    return by_skill


if __name__ == "__main__":
    main()
