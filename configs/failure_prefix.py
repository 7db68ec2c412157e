"""Failure-prefix conditioning (docs/methods.md, "Failure-prefix conditioning"): GRPO
on problems the policy already solves, continued from the start of its own rare
failures.

Run (embedded task on CPU: base-policy warm-start on first use, then RL):
    python -m rl_reason.main --config=configs/failure_prefix.py
Trains on level 1 of the embedded task, which the base policy solves about 93% of
the time (its groups are mostly all-correct, so GRPO gets little signal there).
Step 0 mines: 48 training problems, 8 samples each for the pass rate, 24 more per
saturated one, up to 2 of its wrong responses cut at 20, 40, 60 and 80% of their
tokens and each cut continued 4 times; the cut nearest 50% continuation accuracy is
kept per problem. Step 20 mines again with the trained policy. Held-out evaluation covers levels 1 and 2, plain and continued from a
misleading prefix of the policy's own wrong response to a held-out problem.
Expect: failure_prefix/* metrics at the mining steps (saturated problems, failures,
chosen cuts and their accuracies), rollout/{pass_rate,mining,probe}/* next to the
headline (prefix-conditioned) rollout metrics, and eval/misleading_prefix_accuracy
next to eval/misleading_prefix_plain_accuracy before and after (measured: docs/measurements.md, "Failure-prefix default").

Variants (`--config=configs/failure_prefix.py:<variant>`, combined with commas):
    tiny              a few steps for tests; every pool problem counts as saturated
                      (a random tiny policy solves nothing), a refresh at step 2
    tau025, tau075    keep the cut whose continuation accuracy is nearest 0.25 / 0.75
    plateau           also refresh when held-out greedy accuracy plateaus (evaluates
                      every 10 steps)
    no_refresh        mine once, at the first step
    grpo              plain GRPO with the same data, evaluation and optimizer (the
                      baseline of experiments/failure_prefix_vs_grpo.py)
    qwen25_math_1p5b  Qwen2.5-Math-1.5B on one GPU, the authors' GRPO settings, refresh
                      on plateau (give --config.model.checkpoint and data files)
    qwen3_4b          Qwen3-4B-Base on a TPU pod slice, likewise
"""

from configs import base, grpo
from rl_reason.config_blocks import config_block
from rl_reason.errors import UnknownVariantError
from rl_reason.methods.failure_prefix.settings import FailurePrefixSettings

# One switch each off the default (experiments/ablate.py runs them).
ABLATIONS = ("no_refresh", "tau025", "tau075")
OWN_VARIANTS = ("tiny", "tau025", "tau075", "plateau", "no_refresh", "grpo",
                "qwen25_math_1p5b", "qwen3_4b")


def get_config(arg: str = ""):
    c = base.get_base_config()
    c.name = "failure_prefix"
    c.method_name = "failure_prefix"
    base.embedded_cpu_settings(c)
    # Level 1 is the one the base policy saturates; held-out also covers level 2, to
    # see whether what is learnt on the easy level carries over.
    # Level 1 holds 173 distinct training problems.
    c.data.update(embedded_levels=(1,), embedded_eval_levels=(1, 2), embedded_train_size=160)
    c.eval.misleading_prefix = True
    c.train.update(num_steps=40, eval_every=0, checkpoint_every=10)
    # Method keys and their defaults: FailurePrefixSettings
    # (rl_reason/methods/failure_prefix/settings.py); the embedded run mines a smaller
    # pool, cuts at four fractions and mines again at step 20 (docstring above).
    c.method = config_block(FailurePrefixSettings(
        pool_size=48, mining_samples=24, cut_fractions=(0.2, 0.4, 0.6, 0.8), refresh_every=20))
    for part in filter(None, arg.split(",")):
        apply_variant(c, part)
    c.lock()
    return c


def apply_variant(c, part: str) -> None:
    m = c.method
    if part == "tiny":
        grpo.apply_variant(c, "tiny")
        c.data.embedded_train_size = 160
        m.update(pool_size=4, pass_samples=2, saturation_threshold=0.0, mining_samples=2,
                 max_failures=1, cut_fractions=(0.25, 0.75), probe_samples=2,
                 refresh_every=2)
    elif part == "tau025":
        m.tau = 0.25
    elif part == "tau075":
        m.tau = 0.75
    elif part == "plateau":
        m.update(refresh_on_plateau=True, plateau_patience=2, plateau_delta=0.0)
        c.train.eval_every = 10
    elif part == "no_refresh":
        m.update(refresh_every=0, refresh_on_plateau=False)
    elif part == "grpo":
        c.name, c.method_name = "failure_prefix_grpo", "grpo"
    elif part in ("qwen25_math_1p5b", "qwen3_4b"):
        grpo.apply_variant(c, part)
        authors_grpo(c)
        # Real-scale mining: 16 samples for the pass rate (saturated: >= 15 of 16),
        # 64 to find the rare failures, 8 continuations per cut; a new round whenever
        # held-out greedy accuracy has not improved over two evaluations.
        m.update(pool_size=4 * c.rollout.prompts_per_step, pass_samples=16,
                 saturation_threshold=0.9375, mining_samples=64, max_failures=2,
                 probe_samples=8, refresh_every=0, refresh_on_plateau=True,
                 plateau_patience=2, plateau_delta=0.0)
    else:
        raise UnknownVariantError(part, OWN_VARIANTS)


def authors_grpo(c) -> None:
    """The authors' GRPO (docs/methods.md, "Failure-prefix conditioning"): 16 samples
    per prompt, std-normalised advantages, token-mean, clip 0.2 / 0.4, no KL, lr 1e-6,
    AdamW weight decay 0.1, grad-norm clip 0.1, 2 optimizer steps per rollout batch
    (two minibatches; qwen3_4b keeps the 4 its GRPO variant needs for memory)."""
    c.rollout.group_size = 16
    c.advantage.update(estimator="grpo", norm_by_std=True)
    c.loss.update(aggregation="token-mean", clip_low=0.2, clip_high=0.4, kl_coef=0.0)
    c.optim.update(learning_rate=1e-6, weight_decay=0.1, grad_clip=0.1,
                   num_minibatches=max(2, c.optim.num_minibatches))
