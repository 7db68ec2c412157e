"""What a sampler call returns (rl_reason/sampling/__init__.py has the contract)."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class SampleOutput:
    tokens: np.ndarray           # [N, X] int32
    lengths: np.ndarray          # [N] int32
    logprobs: np.ndarray         # [N, X] float32, of the sampling distribution
    policy_logprobs: np.ndarray  # [N, X] float32, of the unfiltered policy
    truncated: np.ndarray        # [N] bool

    def response_tokens(self) -> list[list[int]]:
        """Each row's generated tokens, up to and including its stop token."""
        return [row[:n].tolist() for row, n in zip(self.tokens, self.lengths)]

    def decode(self, tokenizer, skip_stop_tokens: Sequence[int] = ()) -> list[str]:
        """Each row's text via tokenizer.decode(list[int]), dropping skip_stop_tokens
        at the end of a row (e.g. the EOS token)."""
        skip = set(skip_stop_tokens)
        texts = []
        for ids in self.response_tokens():
            if ids and ids[-1] in skip:
                ids = ids[:-1]
            texts.append(tokenizer.decode(ids))
        return texts
