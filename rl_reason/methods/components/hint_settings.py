"""The settings of LTE's mechanism (methods/components/hints.py), free of JAX: the
LTE and LTE + ExGRPO settings build on them."""

from __future__ import annotations

import dataclasses

from rl_reason.errors import ConfigError

# The extra samples' tags: LTE's hinted retries, and the control's plain ones. Their
# group is the original group's, so they count in its advantage statistics, but the
# headline rollout metrics stay those of the fresh samples.
HINTED = "hinted"
EXTRA = "extra"

# Prompt kinds of the extra requests ("plain" only in the control).
HINT, CONCISE, CONCISE_HINT, PLAIN = "hint", "concise", "concise_hint", "plain"
HINTED_KINDS = (HINT, CONCISE, CONCISE_HINT)
EXTRA_PROMPTS = ("hinted", "plain")


@dataclasses.dataclass(frozen=True)
class HintSettings:
    """LTE's knobs (the `config.method` keys of an LTE run).

    extra_prompt: 'hinted' (LTE) or 'plain' (the grpo_extra_rollouts control: the
        extra samples are drawn on the plain prompt and trained on-policy).
    concise: the concise branches for groups with truncated responses; False sends
        every none-pass group the hint prompt (the no-concise ablation).
    cap_replacements: cap G' at G - 1, so a fully solved hinted group still leaves one
        failure to contrast with (False: the no-cap ablation, G' up to G).
    """

    extra_prompt: str = "hinted"
    concise: bool = True
    cap_replacements: bool = True

    def __post_init__(self):
        if self.extra_prompt not in EXTRA_PROMPTS:
            raise ConfigError(f"method.extra_prompt={self.extra_prompt!r}: one of {EXTRA_PROMPTS}")
        for name in ("concise", "cap_replacements"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"method.{name}={getattr(self, name)!r} must be True or False")

    @property
    def hinted(self) -> bool:
        return self.extra_prompt == "hinted"

    @property
    def tag(self) -> str:
        return HINTED if self.hinted else EXTRA

    @classmethod
    def from_method_block(cls, block, owner: str) -> "HintSettings":
        """The hint keys of a `config.method` block (other keys are left to `owner`)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: block[k] for k in block.keys() if k in names})
