"""The largest sampler call a method makes, in bounds rl_reason.plan sizes the KV cache by.

One sampler call (rl_reason/rollout.py, sampling.generate) decodes up to
`rollout.max_sample_batch` rows at a time (its slots; all of a round's rows when 0)
with a cache of bucket(longest context) + bucket(largest budget) positions per slot:
a short-context row with a full budget and a long-context row with little left still
cost the sum. A method's
`Method.sampler_shape(config)` states the three numbers for its own requests
(prompts with hints or system turns, earlier attempts and feedback turns, failure
prefixes, reflection requests), unbucketed; the plan buckets them as the sampler does.

No tokenizer is needed: every tokenizer this project loads is byte-level BPE, where a
token covers at least one byte, so a fixed text costs at most its UTF-8 length in
tokens (`tokens_at_most`). Two allowances are assumptions, and each shape says so:
CHAT_TURN_TOKENS for the chat template's own tokens around one turn, ANSWER_TOKENS for
one quoted final answer (a wrong answer in a hint or in R3L's feedback).
"""

from __future__ import annotations

import dataclasses

# The chat template's tokens around one turn: ChatML closes the previous turn and
# opens this one and the next (<|im_end|>, <|im_start|>, the role, newlines: about 10
# tokens for an assistant-close / user / assistant-header block); Qwen3's template may
# add an empty think block (<think>\n\n</think>\n\n, about 6 more).
CHAT_TURN_TOKENS = 16
# One quoted final answer: the boxed answers of the math sets are a few tokens (an
# expression, a number, an interval); 64 leaves room for long ones. Not enforced: a
# policy that boxes a paragraph makes a longer context than the plan assumes.
ANSWER_TOKENS = 64


@dataclasses.dataclass(frozen=True)
class SamplerShape:
    """The largest sampler call: rows, the longest context (prompt plus whatever the
    method puts before the sampled tokens) and the largest budget of new tokens that
    can meet in one call, with the assumption behind them in words."""

    rows: int
    context: int
    new_tokens: int
    assumption: str


def tokens_at_most(text: str) -> int:
    """An upper bound on the tokens of `text` under a byte-level BPE tokenizer."""
    return len(text.encode("utf-8"))


def rows_per_call(config, most: int) -> int:
    """Rows of the largest call when a round has at most `most` requests' samples."""
    cap = config.rollout.max_sample_batch
    return min(cap, most) if cap else most


def default_shape(config) -> SamplerShape:
    """Plain prompts of at most rollout.max_prompt_len tokens, the full budget each."""
    r = config.rollout
    return SamplerShape(rows_per_call(config, r.prompts_per_step * r.group_size),
                        r.max_prompt_len, r.max_new_tokens,
                        f"plain prompts <= rollout.max_prompt_len={r.max_prompt_len}, "
                        f"rollout.max_new_tokens={r.max_new_tokens} new")
