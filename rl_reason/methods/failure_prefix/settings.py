"""Failure-prefix conditioning's settings (the `config.method` block of a run), free
of JAX."""

from __future__ import annotations

import dataclasses

from rl_reason.config_blocks import parse_block
from rl_reason.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class FailurePrefixSettings:
    """config.method of a failure-prefix run (defaults: the embedded task)."""

    # Saturated set: pool_size records drawn from the training stream at each mining
    # round, pass_samples plain samples each; saturated when the pass rate is at least
    # saturation_threshold.
    pool_size: int = 64
    pass_samples: int = 8
    saturation_threshold: float = 0.875
    # Mining: mining_samples more plain samples per saturated problem; its wrong
    # responses (and those of the pass-rate samples) are the failures, the first
    # max_failures of them per problem are cut.
    mining_samples: int = 32
    max_failures: int = 2
    # Prefixes: each failure cut at these fractions of its tokens; probe_samples
    # continuations of each cut measure its accuracy; the cut nearest tau is kept.
    cut_fractions: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    probe_samples: int = 4
    tau: float = 0.5
    # Refresh: mine again every refresh_every steps (0 = never), and/or when
    # plateau_metric has not improved by more than plateau_delta over the last
    # plateau_patience evaluations since the last mining; at most max_refreshes
    # times (0 = no limit).
    refresh_every: int = 0
    refresh_on_plateau: bool = False
    plateau_metric: str = "eval/greedy_accuracy"
    plateau_delta: float = 0.0
    plateau_patience: int = 2
    max_refreshes: int = 0

    def __post_init__(self):
        def require(ok, message):
            if not ok:
                raise ConfigError(f"method.{message}")

        for name in ("pool_size", "pass_samples", "mining_samples", "max_failures",
                     "probe_samples", "plateau_patience"):
            require(getattr(self, name) >= 1, f"{name}={getattr(self, name)} must be >= 1")
        for name in ("refresh_every", "max_refreshes"):
            require(getattr(self, name) >= 0, f"{name}={getattr(self, name)} must be >= 0")
        require(0.0 <= self.saturation_threshold <= 1.0,
                f"saturation_threshold={self.saturation_threshold} must be in [0, 1]")
        require(0.0 <= self.tau <= 1.0, f"tau={self.tau} must be in [0, 1]")
        require(self.plateau_delta >= 0, f"plateau_delta={self.plateau_delta} must be >= 0")
        fractions = self.cut_fractions
        require(len(fractions) >= 1 and all(0 < f < 1 for f in fractions)
                and list(fractions) == sorted(set(fractions)),
                f"cut_fractions={fractions} must be increasing, distinct, each in (0, 1)")
        require(self.plateau_metric.startswith("eval/"),
                f"plateau_metric={self.plateau_metric!r} must be a held-out metric ('eval/...')")

    @classmethod
    def from_config(cls, config) -> "FailurePrefixSettings":
        """The settings of config.method, checked against the rest of the run config."""
        block = dict(config.method)
        if "cut_fractions" in block:
            block["cut_fractions"] = tuple(float(f) for f in block["cut_fractions"])
        settings = parse_block(cls, block, "method", owner="failure_prefix", partial=True)
        if config.rollout.max_new_tokens < 2:
            raise ConfigError("failure_prefix: rollout.max_new_tokens must be >= 2 (a prefix "
                              "leaves at least one token of the response to sample)")
        if settings.refresh_on_plateau and not (config.eval.enabled and config.train.eval_every):
            raise ConfigError("method.refresh_on_plateau needs held-out evaluations during the "
                              "run: eval.enabled=True and train.eval_every > 0")
        return settings
