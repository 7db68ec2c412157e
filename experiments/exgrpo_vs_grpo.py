"""Experiment: ExGRPO against on-policy GRPO at an equal generated-token budget.

    python experiments/exgrpo_vs_grpo.py [--seeds=0,1,2] [--budget=N] [--arms=...]
        [--start=HF_FOLDER] [--config.key=value ...]
    python experiments/exgrpo_vs_grpo.py --smoke      # two steps of each arm (CI)

Arms, each from the same start checkpoint (the embedded base policy by default),
under the shared protocol (experiments/protocol.py) and stopped at the same number of
generated tokens (every sampler call counts; a replay group samples G - 1 responses,
so ExGRPO takes a few more steps for the same budget):

    grpo               configs/grpo.py
    exgrpo             configs/exgrpo.py
    exgrpo_no_shaping  configs/exgrpo.py:no_shaping (replayed tokens weighted by the
                       raw ratio w instead of w / (w + 0.1))

The claim under test: at equal rollout budget ExGRPO ends with higher held-out
accuracy than on-policy GRPO, training is at least as stable, and dropping the shaping
hurts. Reported: the protocol's held-out metrics (mean and standard error over seeds),
curves of training reward, entropy and the buffer against generated tokens; results
in experiments/results/WORLD/exgrpo_vs_grpo/.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import protocol  # noqa: E402

ARMS = [
    protocol.arm("grpo", "grpo"),
    protocol.arm("exgrpo", "exgrpo"),
    protocol.arm("exgrpo_no_shaping", "exgrpo", variant="no_shaping"),
]
REPORT = protocol.REPORT
CURVES = ("reward_mean", "entropy", "exgrpo/buffer_questions", "exgrpo/buffer_trajectories",
          "eval/greedy_accuracy", "grad_norm")
DEFAULT_BUDGET = protocol.DEFAULT_BUDGET


def main(argv=None):
    return harness.main(ARMS, argv, name="exgrpo_vs_grpo", report=REPORT, curves=CURVES,
                        default_budget=DEFAULT_BUDGET)


if __name__ == "__main__":
    main()
