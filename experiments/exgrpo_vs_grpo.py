"""Experiment: ExGRPO against on-policy GRPO at an equal generated-token budget.

    python experiments/exgrpo_vs_grpo.py [--seeds=0,1,2] [--budget=N] [--arms=...]
        [--start=HF_FOLDER] [--config.key=value ...]
    python experiments/exgrpo_vs_grpo.py --smoke      # two steps of each arm (CI)

Arms, each from the same start checkpoint (the embedded base policy by default) and
stopped at the same number of generated tokens (every sampler call counts; a replay
group samples G - 1 responses, so ExGRPO takes a few more steps for the same budget):

    grpo               configs/grpo.py (on ExGRPO's task levels, which are GRPO's)
    exgrpo             configs/exgrpo.py
    exgrpo_no_shaping  configs/exgrpo.py:no_shaping (replayed tokens weighted by the
                       raw ratio w instead of w / (w + 0.1))

The claim under test: at equal rollout budget ExGRPO ends with higher held-out
accuracy than on-policy GRPO, training is at least as stable, and dropping the shaping
hurts. Reported: held-out greedy accuracy, avg@k and pass@k (mean and standard error
over seeds), curves of training reward, entropy and the buffer against generated
tokens; results in experiments/results/exgrpo_vs_grpo/ (README, "Results").
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402

from configs import exgrpo  # noqa: E402

# GRPO on ExGRPO's task levels (the same as GRPO's own today; kept equal by this).
LEVELS = tuple(exgrpo.get_config().data.embedded_levels)
ARMS = [
    harness.Arm("grpo", "grpo", overrides=(("data.embedded_levels", LEVELS),)),
    harness.Arm("exgrpo", "exgrpo"),
    harness.Arm("exgrpo_no_shaping", "exgrpo", variant="no_shaping"),
]
REPORT = ("eval/greedy_accuracy", "eval/avg@4", "eval/pass@4")
CURVES = ("reward_mean", "entropy", "exgrpo/buffer_questions", "exgrpo/buffer_trajectories",
          "eval/greedy_accuracy", "grad_norm")
# About 40 steps of either default: the embedded ExGRPO default generated 124k tokens
# in its 40 steps (a replay group samples 7, not 8), GRPO about 3.3k a step.
DEFAULT_BUDGET = 130_000


def main(argv=None):
    return harness.main(ARMS, argv, name="exgrpo_vs_grpo", report=REPORT, curves=CURVES,
                        default_budget=DEFAULT_BUDGET)


if __name__ == "__main__":
    main()
