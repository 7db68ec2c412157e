"""R3L, reflect then retry (docs/methods.md, "R3L"): base episodes of up to 3 attempts
with verifier feedback, a reflection the policy writes on each, a retry from the step
it names with its lessons as guidance, trained without the guidance; pivotal credit,
positive amplification, REINFORCE with a k2 KL.

Run (embedded task on CPU: base-policy warm-start on first use, then RL):
    python -m rl_reason.main --config=configs/r3l.py
Expect: held-out greedy accuracy, avg@k / pass@k and attempts@1..3 (up to 3 attempts
with "Incorrect. Your answer X does not match." feedback at temperature 0.4, one token
budget per episode, never any guidance) printed before and after training; per-step
`r3l/*` metrics (reports valid / invalid / success-skipped, retry success, retry beats
base, the retry_from_step spread, the share of attempt tokens pivotal credit masks).
Measured figures: README, "Methods".

rollout.max_new_tokens is the budget of generated tokens for a whole episode, shared
by its attempts (feedback turns are not charged); a retry has what its base episode
had left after the replayed attempts.

Method keys and their defaults: R3LSettings (rl_reason/methods/r3l/settings.py).

Variants (`--config=configs/r3l.py:<variant>`, combined with commas):
    tiny               a few steps, for tests and smoke runs
    no_reflect_retry   ablation: no reflection or retry (G base episodes a question)
    no_pivotal_credit  ablation: every attempt of the base and distilled rows trained
    no_amplification   ablation: A = r - b
    restart            the released code's retry from the question (first k masked)
    grpo_feedback      GRPO (its advantages and clipped loss, no KL) on groups of G
                       3-attempt verifier-feedback episodes: the format without R3L
    qwen25_math_1p5b   Qwen2.5-Math-1.5B on one GPU (lr 1e-6; 1024-token reports,
                       as its 4096-token context allows)
    qwen3_4b           Qwen3-4B-Base on a TPU v5e/v6e pod slice (4096-token reports;
                       128 rows a sampler call, half GRPO's: see apply_variant)
"""

from configs import base, grpo
from rl_reason.config_blocks import config_block
from rl_reason.errors import UnknownVariantError
from rl_reason.methods.r3l.settings import R3LSettings

# The paper's ablations, one switch each (experiments/ablate.py runs them).
ABLATIONS = ("no_reflect_retry", "no_pivotal_credit", "no_amplification")
METHOD_VARIANTS = ("no_reflect_retry", "no_pivotal_credit", "no_amplification", "restart",
                   "grpo_feedback")


def get_config(arg: str = ""):
    c = base.get_base_config()
    c.name = "r3l"
    c.method_name = "r3l"
    base.embedded_cpu_settings(c)
    c.method = config_block(R3LSettings())
    c.loss.update(kl_coef=0.001, kl_estimator="k2")
    # A whole episode's tokens: the embedded answers take about 20-60 tokens, so three
    # attempts fit in 128; a report is about 70 tokens on a 300-450-token request. A
    # step costs up to seven rollout rounds (three attempts, a reflection, three retry
    # attempts), so half GRPO's questions keep the embedded run within minutes.
    c.rollout.update(prompts_per_step=8, group_size=8, max_new_tokens=128)
    c.train.update(num_steps=14, eval_every=0)
    c.eval.update(attempts=3, attempt_feedback="verifier", attempt_temperature=0.4,
                  num_samples=2, ks=(1, 2), max_problems=128)
    apply_variant(c, arg)
    c.lock()
    return c


def apply_variant(c, arg: str) -> None:
    parts = list(filter(None, arg.split(",")))
    m = c.method
    for part in parts:
        if part == "no_reflect_retry":
            m.reflect_retry = False
        elif part == "no_pivotal_credit":
            m.pivotal_credit = False
        elif part == "no_amplification":
            m.amplification = False
        elif part == "restart":
            m.retry_mode = "restart"
        elif part == "grpo_feedback":
            c.name = "r3l_grpo_feedback"
            m.update(reflect_retry=False, objective="grpo", amplification=False)
            c.loss.update(kl_coef=0.0, kl_estimator="k3")
    rest = ",".join(p for p in parts if p not in METHOD_VARIANTS)
    try:
        grpo.apply_variant(c, rest)
    except UnknownVariantError as e:
        raise UnknownVariantError(e.variant, e.known + METHOD_VARIANTS) from None
    if "tiny" in parts:
        # The test policy has 512 positions: a request over 480 tokens is skipped.
        c.rollout.max_new_tokens = 48
        m.update(reflection_max_new_tokens=24, max_reflection_prompt_len=480)
    if "qwen25_math_1p5b" in parts:
        m.update(reflection_max_new_tokens=1024, max_reflection_prompt_len=3072)
        c.eval.max_problems = 0
    if "qwen3_4b" in parts:
        m.update(reflection_max_new_tokens=4096, max_reflection_prompt_len=16384)
        c.eval.max_problems = 0
        # A round's call can hold a 16384-token reflection request next to an 8192-token
        # budget: 24576 cache slots a row, 2.7 times GRPO's. 128 rows a call keep the
        # cache at 6.75 GiB a v5e chip (256 would take 13.5 of its 16 GiB and leave
        # 1.3 for the update); `python -m rl_reason.plan` prints the sum.
        c.rollout.max_sample_batch = 128
