"""Enforce `rollout.max_prompt_len` on the training records before any sampling.

A prompt longer than the limit is dropped once, when the records are loaded, with a
warning that says how many went (verl's `filter_overlong_prompts` does the same):
the sampler's cache and the plan's memory estimate are sized for prompts of at most
that length, and a few overlong problems are not worth a larger cache for every row.
The length counted is that of the plain prompt (templates.plain_prompt, encoded as the
sampler sees it); a method that adds hints or turns makes longer contexts from it.
"""

from __future__ import annotations

from typing import Sequence

from rl_reason.data import templates
from rl_reason.data.record import Record
from rl_reason.data.sources import DataError


def drop_long_prompts(records: Sequence[Record], tokenizer,
                      max_len: int) -> tuple[list[Record], int]:
    """(records whose plain prompt has at most `max_len` tokens, how many were dropped).

    Prints a warning when some are dropped; raises DataError when none remain.
    """
    lengths = [len(templates.encode_prompt(tokenizer, templates.plain_prompt(r.problem)))
               for r in records]
    kept = [r for r, n in zip(records, lengths) if n <= max_len]
    dropped = len(records) - len(kept)
    if records and not kept:
        raise DataError(f"all {len(records)} training prompts are longer than "
                        f"rollout.max_prompt_len={max_len} tokens (the shortest has "
                        f"{min(lengths)}); raise rollout.max_prompt_len")
    if dropped:
        print(f"Warning: dropped {dropped} of {len(records)} training prompts longer than "
              f"rollout.max_prompt_len={max_len} tokens (the longest has {max(lengths)}).",
              flush=True)
    return kept, dropped
