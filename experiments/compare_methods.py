"""Experiment: every method of the project side by side, under one protocol.

    python experiments/compare_methods.py [--seeds=0,1,2] [--budget=TOKENS] [--arms=...]
        [--start=HF_FOLDER] [--config.key=value ...]
    python experiments/compare_methods.py --smoke    # CI: two tiny steps per arm, one seed

Arms, each the method's own default config (its recipe: group sizes, episode budgets,
failure-prefix's saturated level-1 training problems) from the same start checkpoint
(the embedded base policy by default) and stopped at the same number of generated
tokens (every sampler call counts: rollouts, hints, reflections, retries, mining,
replay groups' fresh samples):

    grpo            configs/grpo.py
    exgrpo          configs/exgrpo.py
    lte             configs/lte.py
    lte_exgrpo      configs/lte_exgrpo.py (the two composed)
    multi_attempt   configs/multi_attempt.py
    r3l             configs/r3l.py
    failure_prefix  configs/failure_prefix.py

Every arm is trained and evaluated under the shared protocol (experiments/protocol.py:
the same small training set, held-out problems of levels 2-3, greedy, avg@k, pass@k
and attempts@1..3, never with hints, guidance or prefixes). Reported: mean +- standard
error over seeds of each final metric, and its change from the shared start
(results.md); curves of training reward and of the evaluations against generated
tokens (curves.png). Writes experiments/results/WORLD/compare_methods/; workdirs go to
runs/WORLD/compare_methods, linked to the world's shared runs (resumable: re-running
the command continues a stopped sweep).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import protocol  # noqa: E402

NAME = "compare_methods"
METHODS = ("grpo", "exgrpo", "lte", "lte_exgrpo", "multi_attempt", "r3l", "failure_prefix")
ARMS = [protocol.arm(m, m) for m in METHODS]
REPORT = protocol.REPORT
CURVES = ("reward_mean", "entropy", "response_length_mean", "eval/greedy_accuracy",
          "eval/pass@8", "eval/attempts@3")
DEFAULT_BUDGET = protocol.DEFAULT_BUDGET


def initial_metrics(workdir: str, keys) -> dict[str, float]:
    """The first logged value of each key: the shared step-0 evaluation."""
    found: dict[str, float] = {}
    for line in harness.read_lines(workdir):
        for key in keys:
            if key not in found and line.get(key) is not None:
                found[key] = float(line[key])
    return found


def change_table(workdirs: dict[str, list[str]], keys) -> str:
    """Per arm, mean +- SE over seeds of (final - initial) of each key: the paired
    change each method made from the shared start."""
    short = [k.removeprefix("eval/") for k in keys]
    lines = ["| arm | seeds | " + " | ".join(f"Δ {s}" for s in short) + " |",
             "|---|---|" + "---|" * len(keys)]
    for arm, dirs in workdirs.items():
        cells = []
        for key in keys:
            deltas = []
            for d in dirs:
                first, last = initial_metrics(d, [key]), harness.final_metrics(d, [key])
                if key in first and key in last:
                    deltas.append(last[key] - first[key])
            mean, se = harness.mean_se(deltas)
            cells.append("n/a" if not deltas else f"{mean:+.3f} ± {se:.3f}")
        lines.append(f"| {arm} | {len(dirs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    results = harness.main(ARMS, argv, name=NAME, report=REPORT, curves=CURVES,
                           default_budget=DEFAULT_BUDGET)
    args, _ = harness.parse_args(argv, NAME, DEFAULT_BUDGET, "0,1,2")
    workdirs = harness.run_dirs(args.runs, results)
    table = ("\n## Change from the start\n\nFinal minus step-0 evaluation of each run, "
             "mean ± standard error over seeds.\n\n" + change_table(workdirs, REPORT) + "\n")
    initial = {arm: {str(s): initial_metrics(d, REPORT) for s, d in zip(results[arm], dirs)}
               for arm, dirs in workdirs.items()}
    harness.add_section(args.out, table, "initial", initial)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
