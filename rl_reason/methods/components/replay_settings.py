"""The settings of ExGRPO's replay (methods/components/replay.py), free of JAX."""

from __future__ import annotations

import dataclasses

from rl_reason.errors import ConfigError

QUESTION_SELECTIONS = ("bucketed", "uniform")
TRAJECTORY_SELECTIONS = ("lowest_entropy", "highest_entropy", "random")


@dataclasses.dataclass(frozen=True)
class ReplaySettings:
    """config.method of an ExGRPO run; checked when built (before any compute).

    mixing_threshold: mixing starts (for good) after a step whose fresh accuracy
        exceeds this.
    replay_ratio: rho; n_exp = min(floor(rho * B), eligible questions).
    question_selection: 'bucketed' (Gaussian weights over k) or 'uniform'.
    bucket_sd: sd of the bucket weights N(k; G/2, sd).
    trajectory_selection: 'lowest_entropy', 'highest_entropy' or 'random'.
    drop_clip_when_mixing: no PPO clip on on-policy tokens once mixing is on.
    store_before_mixing: store successes from step 1, not only once mixing is on.
    retire_solved: retire questions whose own samples (all a step drew on the plain
        prompt for the group) are all correct.
    """

    mixing_threshold: float = 0.35
    replay_ratio: float = 0.5
    question_selection: str = "bucketed"
    bucket_sd: float = 1.0
    trajectory_selection: str = "lowest_entropy"
    drop_clip_when_mixing: bool = True
    store_before_mixing: bool = False
    retire_solved: bool = True

    def __post_init__(self):
        def require(ok, message):
            if not ok:
                raise ConfigError(f"method.{message}")

        require(0.0 <= self.mixing_threshold <= 1.0,
                f"mixing_threshold={self.mixing_threshold} must be in [0, 1]")
        require(0.0 <= self.replay_ratio <= 1.0,
                f"replay_ratio={self.replay_ratio} must be in [0, 1]")
        require(self.question_selection in QUESTION_SELECTIONS,
                f"question_selection={self.question_selection!r}: one of {QUESTION_SELECTIONS}")
        require(self.bucket_sd > 0, f"bucket_sd={self.bucket_sd} must be > 0")
        require(self.trajectory_selection in TRAJECTORY_SELECTIONS,
                f"trajectory_selection={self.trajectory_selection!r}: one of "
                f"{TRAJECTORY_SELECTIONS}")

    @classmethod
    def from_config(cls, config, other_keys=()) -> "ReplaySettings":
        """ExGRPO's keys of `config.method`; `other_keys` belong to a method composed
        with it (lte_exgrpo) and are left to that method."""
        names = [f.name for f in dataclasses.fields(cls)]
        given = set(config.method.keys()) - set(other_keys)
        if given != set(names):
            raise ConfigError(f"method: an ExGRPO run needs exactly the keys {sorted(names)}; "
                              f"missing {sorted(set(names) - given)}, unknown "
                              f"{sorted(given - set(names))}")
        if config.rollout.dynamic_sampling:
            raise ConfigError("rollout.dynamic_sampling=True: ExGRPO composes its own batch "
                              "(replay groups + fresh prompts); DAPO's refill does not apply")
        return cls(**{n: config.method[n] for n in names})
