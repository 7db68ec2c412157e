"""A tiny run whose method switches its loss settings after step 2, for the SIGKILL
test in test_train_processes.py (a subprocess cannot see a method a test registers).

    python tests/switching_method_run.py POLICY WORKDIR STEPS
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import grpo  # noqa: E402
from rl_reason import train  # noqa: E402
from rl_reason.methods.registry import METHODS  # noqa: E402
from rl_reason.methods.base import loss_config_from  # noqa: E402
from rl_reason.methods.grpo.method import GRPO  # noqa: E402


class SwitchesLoss(GRPO):
    """Drops the on-policy clip and the entropy bonus, and adds a KL term, once two
    steps are done; the step count is method state, so a resume must restore it
    before the loss settings are asked for."""

    name = "switches_loss_test"

    def __init__(self, config, tokenizer):
        super().__init__(config, tokenizer)
        self.steps_done = 0

    def loss_config(self):
        if self.steps_done < 2:
            return loss_config_from(self.config)
        return loss_config_from(self.config, clip_on_policy=False, entropy_coef=0.0,
                                kl_coef=0.05, kl_estimator="k2")

    def needs_reference(self):
        return True

    def after_step(self, samples, ctx):
        self.steps_done += 1

    def state(self):
        return {"steps_done": self.steps_done}

    def restore(self, state):
        self.steps_done = int(state["steps_done"])


def main(policy: str, workdir: str, steps: int) -> None:
    METHODS[SwitchesLoss.name] = SwitchesLoss
    c = grpo.get_config("tiny")
    c.unlock()
    c.method_name = SwitchesLoss.name
    c.model.checkpoint = policy
    c.loss.entropy_coef = 0.01
    c.optim.update(learning_rate=1e-3, warmup_steps=0, ppo_epochs=2)
    c.verifier.num_workers = 1
    c.train.update(num_steps=steps, eval_every=0)
    train.run(c, workdir)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
