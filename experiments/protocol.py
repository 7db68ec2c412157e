"""The protocol the claim experiments share, so that their common arms run once.

Every arm built with `arm()` trains on the same small training set and is evaluated
alike, before and after training, on the same held-out problems: greedy accuracy,
avg@k and pass@k from 8 samples at the evaluation temperature, and k-attempt accuracy
(attempts@1..3: up to 3 attempts with R3L's "Incorrect. Your answer X does not
match." feedback at temperature 0.4, one EVAL_TOKENS budget per episode), never with
hints, guidance or prefixes. With one generated-token budget (DEFAULT_BUDGET) and the
same start, GRPO seed 0 of ExGRPO's, LTE's and R3L's experiments, of the comparison
and of the premise dial's default setting is one run (harness.shared_run).

The multi-attempt and failure-prefix experiments keep protocols of their own (the
multi-attempt paper's greedy k = 1..7 evaluation with its own feedback; training on
saturated problems from a GRPO-trained start).
"""

from __future__ import annotations

import harness

# The longest episode budget among the methods' defaults (multi-attempt's and R3L's),
# given to every evaluation so that all arms answer under the same limit.
EVAL_TOKENS = 128
HELD_OUT_LEVELS = (2, 3)
# A small training set (16 steps an epoch at 16 prompts a step), so that prompts recur
# within a run: LTE's claim is about none-pass prompts becoming solvable, ExGRPO
# replays the questions it has seen.
TRAIN_SIZE = 256
PROTOCOL = (
    ("data.embedded_train_size", TRAIN_SIZE),
    ("data.embedded_eval_levels", HELD_OUT_LEVELS), ("data.embedded_eval_size", 512),
    ("eval.max_problems", 256), ("eval.max_new_tokens", EVAL_TOKENS),
    ("eval.num_samples", 8), ("eval.ks", (1, 4, 8)),
    ("eval.attempts", 3), ("eval.attempt_feedback", "verifier"),
    ("eval.attempt_temperature", 0.4), ("eval.misleading_prefix", False),
    ("train.eval_every", 0),
)
REPORT = ("eval/greedy_accuracy", "eval/avg@8", "eval/pass@8", "eval/attempts@1",
          "eval/attempts@3")
DEFAULT_BUDGET = 120_000


def arm(name: str, config: str, variant: str = "", extra=()) -> harness.Arm:
    """An arm of `configs/<config>.py[:variant]` under the shared protocol (`extra`:
    further overrides, which make it a run of its own)."""
    return harness.Arm(name, config, variant=variant, overrides=PROTOCOL + tuple(extra))
