"""Experiment: does multi-attempt training make a second attempt worth more than GRPO
training does? (docs/methods.md section 2)

    python experiments/multi_attempt_vs_grpo.py [--seeds=0,1,2] [--budget=TOKENS]
        [--start=HF_FOLDER] [--config.key=value ...]
    python experiments/multi_attempt_vs_grpo.py --smoke        # CI: two tiny steps per arm

Two arms from the same start checkpoint (the embedded base policy by default), each
stopped at the same number of generated tokens (every attempt of every episode
counts, tokens cut after a box included): GRPO (configs/grpo.py) and multi-attempt
RL (configs/multi_attempt.py). Both are evaluated identically, at the start and the
end: greedy, up to 7 attempts (the paper's k = 1..7, configs/multi_attempt.py) with
"incorrect, k attempts left" feedback in one episode whose attempts share one budget
of EPISODE_TOKENS, plus plain greedy accuracy.

The claim under test: the gain from attempt 1 to attempt 2 (attempts@2 - attempts@1)
is clearly larger for the multi-attempt policy. Reported, mean +- standard error over
seeds: attempts@1..7, the answer-repeat rate (later attempts repeating an answer
already rejected in the episode), the single-attempt accuracy of both (greedy on the
plain prompt, and attempts@1 under the multi-attempt prompt), then the per-run gain
attempts@2 - attempts@1 and the difference between the arms.

Writes experiments/results/multi_attempt_vs_grpo/{results.md, results.json,
curves.png}; the workdirs go to runs/multi_attempt_vs_grpo (resumable).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402  (puts the repository root on sys.path too)
from configs import multi_attempt as multi_attempt_config  # noqa: E402

NAME = "multi_attempt_vs_grpo"
ATTEMPTS = multi_attempt_config.EVAL_ATTEMPTS
# The multi-attempt config's episode budget (configs/multi_attempt.py), given to both
# arms' evaluations so they are measured alike.
EPISODE_TOKENS = 128
EVAL = (("eval.attempts", ATTEMPTS), ("eval.attempt_feedback", "multi_attempt"),
        ("eval.attempt_temperature", 0.0), ("eval.max_new_tokens", EPISODE_TOKENS),
        ("eval.max_problems", 0), ("eval.num_samples", 2), ("eval.ks", (1, 2)))
ARMS = [harness.Arm("grpo", "grpo", overrides=EVAL),
        harness.Arm("multi_attempt", "multi_attempt", overrides=EVAL)]
REPORT = (tuple(f"eval/attempts@{k}" for k in range(1, ATTEMPTS + 1))
          + ("eval/attempts_answer_repeat_rate", "eval/greedy_accuracy"))
CURVES = ("eval/attempts@1", "eval/attempts@2", f"eval/attempts@{ATTEMPTS}",
          "eval/attempts_answer_repeat_rate", "eval/greedy_accuracy", "reward_mean")
# About 80 steps of the multi-attempt default (8 questions x 8 episodes, about 4.5k
# generated tokens a step); GRPO's default step generates about 3-4k.
DEFAULT_BUDGET = 360_000


def gain_table(results: dict[str, dict[int, dict[str, float]]]) -> str:
    """Per arm, mean +- SE over seeds of attempts@2 - attempts@1 and attempts@K -
    attempts@1 (K = ATTEMPTS); then the difference of the arms' mean gains with its SE
    (independent arms: the SEs add in quadrature)."""
    lines = [f"| arm | seeds | attempts@2 - attempts@1 | attempts@{ATTEMPTS} - attempts@1 |",
             "|---|---|---|---|"]
    gains = {}
    for arm, runs in results.items():
        cells = []
        for k in (2, ATTEMPTS):
            values = [m[f"eval/attempts@{k}"] - m["eval/attempts@1"] for m in runs.values()
                      if f"eval/attempts@{k}" in m and "eval/attempts@1" in m]
            mean, se = harness.mean_se(values)
            gains.setdefault(arm, {})[k] = (mean, se)
            cells.append(f"{mean:+.3f} ± {se:.3f}")
        lines.append(f"| {arm} | {len(runs)} | " + " | ".join(cells) + " |")
    if {"grpo", "multi_attempt"} <= set(gains):
        (a, sa), (b, sb) = gains["multi_attempt"][2], gains["grpo"][2]
        lines += ["", f"Gain from attempt 1 to 2, multi_attempt minus grpo: {a - b:+.3f} ± "
                  f"{(sa ** 2 + sb ** 2) ** 0.5:.3f}."]
    return "\n".join(lines)


def main(argv=None) -> dict:
    results = harness.main(ARMS, argv, name=NAME, report=REPORT, curves=CURVES,
                           default_budget=DEFAULT_BUDGET)
    args, _ = harness.parse_args(argv, NAME, DEFAULT_BUDGET, "0,1,2")
    table = "\n## Gain from later attempts\n\n" + gain_table(results) + "\n"
    harness.add_section(args.out, table, "gain_table", table)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
