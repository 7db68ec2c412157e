"""Multi-attempt RL (docs/methods.md section 2): several attempts per question in one
episode, feedback after each wrong one, the GRPO estimator over G episodes per question.

Run (embedded task on CPU: base-policy warm-start on first use, then RL):
    python -m rl_reason.main --config=configs/multi_attempt.py
Expect: held-out greedy accuracy and attempts@1..7 (greedy, "incorrect, k attempts
left" feedback, one token budget per episode: the paper's k = 1..7, two more attempts
than training's N <= 5) printed before and after training;
per-step `multi_attempt/*` metrics (attempts per episode, accuracy by attempt index,
episodes by reward outcome, answer-repeat rate). Measured figures: docs/measurements.md, "Multi-attempt default".

rollout.max_new_tokens is the budget of generated tokens for a whole episode, shared
by its attempts (feedback turns are not charged); eval.max_new_tokens (0: the same)
is the evaluation's episode budget.

Method keys and their defaults: MultiAttemptSettings
(rl_reason/methods/multi_attempt/settings.py).

Variants (`--config=configs/multi_attempt.py:<variant>`, combined with commas):
    tiny              a few steps, for tests and smoke runs
    per_episode       N drawn per episode, as the released code
    last_attempt      the last attempt decides between -0.5 and -1
    binary_reward     rewards 1 / 0 / 0 (the plain verifier reward on episodes)
    single_attempt    N = 1 always: single-turn training with the episode rewards
    authors_kl        the authors' k3 KL 0.01 to the starting policy
    qwen25_math_1p5b  Qwen2.5-Math-1.5B on one GPU; an episode of 3072 tokens (the
                      authors' budget is 3000)
    qwen3_4b          Qwen3-4B-Base on a TPU v5e/v6e pod slice
"""

from configs import base, grpo
from rl_reason.config_blocks import config_block
from rl_reason.errors import UnknownVariantError
from rl_reason.methods.multi_attempt.settings import MultiAttemptSettings

# One switch each off the default (experiments/ablate.py runs them).
ABLATIONS = ("single_attempt", "binary_reward", "last_attempt")
# attempts@1..7 at evaluation, as the paper reports (training draws N from 1..5).
EVAL_ATTEMPTS = 7
METHOD_VARIANTS = ("per_episode", "last_attempt", "binary_reward", "single_attempt",
                   "authors_kl")


def get_config(arg: str = ""):
    c = base.get_base_config()
    c.name = "multi_attempt"
    c.method_name = "multi_attempt"
    base.embedded_cpu_settings(c)
    c.method = config_block(MultiAttemptSettings())
    # A whole episode's tokens: the embedded answers take about 20-60 tokens, so three
    # to five attempts fit in 128. An episode costs up to five sampler calls and rows
    # twice as long as GRPO's, and evaluating up to 7 attempts costs up to seven greedy
    # passes (only over the episodes still unsolved with budget left): half GRPO's
    # batch, fewer steps and 100 held-out problems keep the embedded run within minutes
    # (measured: docs/measurements.md). experiments/multi_attempt_vs_grpo.py evaluates
    # all of them.
    c.rollout.update(prompts_per_step=8, group_size=8, max_new_tokens=128)
    c.train.update(num_steps=24, eval_every=0)
    # The paper's evaluation: k = 1..7 attempts with feedback, greedy, one budget.
    c.eval.update(attempts=EVAL_ATTEMPTS, attempt_feedback="multi_attempt",
                  attempt_temperature=0.0, num_samples=2, ks=(1, 2), max_problems=100)
    apply_variant(c, arg)
    c.lock()
    return c


def apply_variant(c, arg: str) -> None:
    parts = list(filter(None, arg.split(",")))
    for part in parts:
        if part == "per_episode":
            c.method.budget_per = "episode"
        elif part == "last_attempt":
            c.method.reward_rule = "last_attempt"
        elif part == "binary_reward":
            c.method.update(reward_correct=1.0, reward_wrong=0.0, reward_no_answer=0.0)
        elif part == "single_attempt":
            c.method.update(min_attempts=1, max_attempts=1)
        elif part == "authors_kl":
            c.loss.update(kl_coef=0.01, kl_estimator="k3")
    rest = ",".join(p for p in parts if p not in METHOD_VARIANTS)
    try:
        grpo.apply_variant(c, rest)
    except UnknownVariantError as e:
        raise UnknownVariantError(e.variant, e.known + METHOD_VARIANTS) from None
    if "tiny" in parts:
        c.rollout.max_new_tokens = 48
