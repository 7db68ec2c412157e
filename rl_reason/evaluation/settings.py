"""What an evaluation runs (EvalSettings) and what it returns (EvalResults).

Imports nothing heavy, so config_check can share its constants.
"""

from __future__ import annotations

import dataclasses

DEFAULT_KS = (1, 4, 8)
# Feedback after a wrong attempt (data/templates.py): multi-attempt RL's "incorrect,
# you have k attempts left" under a system prompt announcing K attempts, or R3L's
# verifier feedback naming the rejected answer under the plain prompt.
ATTEMPT_FEEDBACKS = ("multi_attempt", "verifier")


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    num_samples: int = 8          # samples per problem (0: greedy only)
    ks: tuple[int, ...] = DEFAULT_KS
    temperature: float = 0.6      # sampled metrics and the mining of misleading prefixes
    top_p: float = 1.0
    max_new_tokens: int = 1024    # per response; per k-attempt episode (all its attempts
                                  # together); prefix + continuation
    greedy: bool = True           # also report greedy accuracy
    attempts: int = 0             # K > 0: accuracy within 1..K attempts with feedback
    attempt_feedback: str = "multi_attempt"   # one of ATTEMPT_FEEDBACKS
    attempt_temperature: float = 0.0          # 0: greedy attempts (R3L evaluates at 0.4)
    misleading_prefix: bool = False           # continuation from a wrong response's prefix
    prefix_fraction: float = 0.5              # where the wrong response is cut
    prefix_samples: int = 8                   # samples per problem to find a wrong one in
    batch_size: int = 256         # rows decoded at once (the sampler's slots, max_slots)
    cache_dtype: str = ""         # the sampler's KV cache dtype ('': the model's)
    seed: int = 0

    def __post_init__(self):
        if self.num_samples < 0 or self.attempts < 0:
            raise ValueError("num_samples and attempts must be >= 0")
        if not (self.num_samples or self.greedy or self.attempts or self.misleading_prefix):
            raise ValueError("nothing to evaluate: num_samples=0, greedy=False, attempts=0, "
                             "misleading_prefix=False")
        bad = [k for k in self.ks if not 1 <= k <= self.num_samples]
        if self.num_samples and bad:
            raise ValueError(f"every k must be in 1..num_samples={self.num_samples}, got {bad}")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be >= 1")
        if self.temperature <= 0 and (self.num_samples or self.misleading_prefix):
            raise ValueError("sampled metrics and prefix mining need temperature > 0 "
                             "(greedy accuracy is separate)")
        if self.attempt_feedback not in ATTEMPT_FEEDBACKS:
            raise ValueError(f"attempt_feedback={self.attempt_feedback!r}: one of "
                             f"{ATTEMPT_FEEDBACKS}")
        if self.attempt_temperature < 0:
            raise ValueError("attempt_temperature must be >= 0 (0 = greedy)")
        if not 0 < self.prefix_fraction < 1:
            raise ValueError(f"prefix_fraction={self.prefix_fraction} must be in (0, 1)")
        if self.prefix_samples < 1:
            raise ValueError("prefix_samples must be >= 1")

    @classmethod
    def from_config(cls, config, **overrides) -> "EvalSettings":
        """From a run config's `eval` block (max_new_tokens 0: the rollout's)."""
        e = config.eval
        fields = dict(num_samples=e.num_samples, ks=tuple(e.ks), temperature=e.temperature,
                      top_p=e.top_p, max_new_tokens=e.max_new_tokens or config.rollout.max_new_tokens,
                      attempts=e.attempts, attempt_feedback=e.attempt_feedback,
                      attempt_temperature=e.attempt_temperature,
                      misleading_prefix=e.misleading_prefix, prefix_fraction=e.prefix_fraction,
                      prefix_samples=e.prefix_samples, seed=config.seed,
                      cache_dtype=config.rollout.cache_dtype)
        return cls(**(fields | overrides))


@dataclasses.dataclass(frozen=True)
class EvalResults:
    metrics: dict[str, float]    # flat, JSON-able: "greedy_accuracy", "pass@4", ...
    generations: list[dict]      # one row per response (mode, problem index, text, status)
