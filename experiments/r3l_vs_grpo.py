"""Experiment: R3L against GRPO, GRPO on the same feedback episodes, and R3L's three
ablations, at an equal generated-token budget (docs/methods.md, "R3L").

    python experiments/r3l_vs_grpo.py [--seeds=0,1,2] [--budget=TOKENS] [--arms=...]
        [--start=HF_FOLDER] [--config.key=value ...]
    python experiments/r3l_vs_grpo.py --smoke        # CI: two tiny steps per arm

Arms, each from the same start checkpoint (the embedded base policy by default) and
stopped at the same number of generated tokens (every sampler call counts: base
attempts, reflections, retries, tokens cut after a box):

    grpo                  configs/grpo.py: single responses on the plain prompt
    grpo_feedback         configs/r3l.py:grpo_feedback: GRPO (its advantages and clipped
                          loss) on groups of 8 episodes of up to 3 attempts with the
                          verifier's feedback, so the format is not the difference
    r3l                   configs/r3l.py
    r3l_no_reflect_retry  configs/r3l.py:no_reflect_retry (8 base episodes a question)
    r3l_no_pivotal_credit configs/r3l.py:no_pivotal_credit
    r3l_no_amplification  configs/r3l.py:no_amplification

Every arm is evaluated alike under the shared protocol (experiments/protocol.py), at
the start and the end: success within 3 attempts with "Incorrect. Your answer X does
not match." feedback at temperature 0.4 (attempts@1 is the single-attempt accuracy at
0.4), greedy accuracy and avg@8 / pass@8 on the plain prompt; never any guidance. The
ablation arms are for a claim that reproduces: run `--arms=grpo,grpo_feedback,r3l`
first.

The claim under test: R3L solves more training problems per step than GRPO and ends
with higher success within 3 attempts; each ablation costs something. Reported, mean
+- standard error over seeds: the final held-out metrics, then the training problems
solved: per step the share of the step's questions that some trained trajectory
solved (R3L: a base episode or a retry, `r3l/problems_solved`; GRPO: a sample,
1 - none_pass_fraction), averaged over the run, and problems solved per 10k generated
tokens. Writes experiments/results/WORLD/r3l_vs_grpo/{results.md, results.json,
curves.png}; the workdirs go to runs/WORLD/r3l_vs_grpo (resumable).
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import protocol  # noqa: E402

NAME = "r3l_vs_grpo"
ARMS = [
    protocol.arm("grpo", "grpo"),
    protocol.arm("grpo_feedback", "r3l", variant="grpo_feedback"),
    protocol.arm("r3l", "r3l"),
    protocol.arm("r3l_no_reflect_retry", "r3l", variant="no_reflect_retry"),
    protocol.arm("r3l_no_pivotal_credit", "r3l", variant="no_pivotal_credit"),
    protocol.arm("r3l_no_amplification", "r3l", variant="no_amplification"),
]
REPORT = ("eval/attempts@1", "eval/attempts@2", "eval/attempts@3", "eval/greedy_accuracy",
          "eval/avg@8", "eval/pass@8", "eval/attempts_answer_repeat_rate")
CURVES = ("reward_mean", "r3l/problems_solved", "none_pass_fraction", "r3l/retry_success",
          "r3l/reports/valid", "eval/attempts@3")
DEFAULT_BUDGET = protocol.DEFAULT_BUDGET


def solved_share(line: dict) -> float | None:
    """The share of a step's questions some trained trajectory solved."""
    if "r3l/problems_solved" in line:
        return float(line["r3l/problems_solved"])
    if "none_pass_fraction" in line and "loss" in line:
        return 1.0 - float(line["none_pass_fraction"])
    return None


def training_solved(workdir: str) -> tuple[float, float]:
    """(mean share of a step's questions solved, questions solved per 10k generated
    tokens) over a run."""
    config = json.load(open(os.path.join(workdir, "config.json")))
    per_step = config["rollout"]["prompts_per_step"]
    shares, tokens = [], 0.0
    for line in harness.read_lines(workdir):
        share = solved_share(line)
        if share is not None:
            shares.append(share)
            tokens = float(line.get(harness.TOKENS, tokens))
    if not shares or not tokens:
        return float("nan"), float("nan")
    return sum(shares) / len(shares), 1e4 * per_step * sum(shares) / tokens


def solved_table(workdirs: dict[str, list[str]]) -> str:
    lines = ["| arm | seeds | share of a step's questions solved | questions solved per 10k "
             "generated tokens |", "|---|---|---|---|"]
    for arm, dirs in workdirs.items():
        values = [training_solved(d) for d in dirs]
        cells = []
        for i in range(2):
            mean, se = harness.mean_se([v[i] for v in values])
            cells.append(f"{mean:.3f} ± {se:.3f}")
        lines.append(f"| {arm} | {len(dirs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    results = harness.main(ARMS, argv, name=NAME, report=REPORT, curves=CURVES,
                           default_budget=DEFAULT_BUDGET)
    args, _ = harness.parse_args(argv, NAME, DEFAULT_BUDGET, "0,1,2")
    workdirs = harness.run_dirs(args.runs, results)
    table = ("\n## Training problems solved\n\nMean ± standard error over seeds; a question "
             "counts as solved when a trained trajectory of it (a sample, a base episode or "
             "a retry) was correct.\n\n" + solved_table(workdirs) + "\n")
    harness.add_section(args.out, table, "training_solved",
                        {arm: [training_solved(d) for d in dirs]
                         for arm, dirs in workdirs.items()})
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
