"""Warm-start conversations packed into the token rows of the base policy's training
steps (rl_reason/pretrain.py).

Rows pack several conversations; each row carries its token ids, a loss mask (1 on
trained tokens), segment numbers (0 = padding; attention stays inside a segment) and
positions within the segment. Most conversations fit rows of `row_len` tokens; the
long ones (a reflection on a 3-attempt episode) go to rows twice as long, half as
many per step, so a step always holds the same number of token slots and the short
rows keep their cheaper attention. Those long steps are spread evenly over training.
Conversations longer than a long row are left out (the census counts what is packed).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rl_reason.data import tokenizer_builder, warm_start
from rl_reason.models.tokenizer import apply_chat

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def conversation_segments(tokenizer, conversation: warm_start.Conversation) -> list[tuple[str, bool]]:
    """(text, trained) pieces whose concatenation is the rendered chat.

    Each assistant turn is cut out of the rendering exactly where generation starts
    (after the generation prompt) and stops: the response, then the end-of-turn token,
    trained with it because it is how the policy stops. One render per conversation
    (rendering dominates the data time).
    """
    text = apply_chat(tokenizer, list(conversation.messages), add_generation_prompt=False)
    generation_prompt = tokenizer_builder.IM_START + "assistant\n"
    segments, cursor = [], 0
    last = len(conversation.messages) - 1
    for i, (message, trained) in enumerate(zip(conversation.messages, conversation.trained)):
        if message["role"] != "assistant":
            continue
        response = message["content"] + tokenizer_builder.IM_END
        start = text.find(generation_prompt + response, cursor)
        if start < 0:
            raise ValueError("packing: the chat template does not render assistant turns as "
                             "ChatML; cannot mark the trained tokens")
        start += len(generation_prompt)
        cut = conversation.prefix_chars if i == last else 0
        # A given prefix is encoded on its own, as templates.encode_prompt does.
        segments += [(text[cursor:start], False), (message["content"][:cut], False),
                     (message["content"][cut:], trained), (tokenizer_builder.IM_END, trained)]
        cursor = start + len(response)
    segments.append((text[cursor:], False))
    return [(piece, trained) for piece, trained in segments if piece]


class _Rows:
    """Rows of one length being filled, one conversation after another."""

    def __init__(self, row_len: int):
        self.row_len = row_len
        self.rows: list[Arrays] = []
        self.members: list[list] = []   # the conversations of each closed row
        self._open: list[tuple[list[int], list[float], object]] = []

    def add(self, ids: list[int], mask: list[float], conversation) -> None:
        if sum(len(i) for i, _, _ in self._open) + len(ids) > self.row_len:
            self._close()
        self._open.append((ids, mask, conversation))

    def _close(self) -> None:
        shape = (self.row_len,)
        tokens, loss_mask = np.zeros(shape, np.int32), np.zeros(shape, np.float32)
        segments, positions = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
        fill = 0
        for number, (ids, mask, _) in enumerate(self._open, start=1):
            sl = slice(fill, fill + len(ids))
            tokens[sl], loss_mask[sl] = ids, mask
            segments[sl], positions[sl] = number, np.arange(len(ids))
            fill += len(ids)
        self.rows.append((tokens, loss_mask, segments, positions))
        self.members.append([c for _, _, c in self._open])
        self._open = []

    def stacked(self, count: int) -> Arrays:
        rows = self.rows[:count]
        if not rows:
            return tuple(np.zeros((0, self.row_len), a.dtype) for a in _empty_row(self.row_len))
        return tuple(np.stack(parts) for parts in zip(*rows))


def _empty_row(row_len: int) -> Arrays:
    return (np.zeros(row_len, np.int32), np.zeros(row_len, np.float32),
            np.zeros(row_len, np.int32), np.zeros(row_len, np.int32))


@dataclasses.dataclass(frozen=True)
class WarmStartBatches:
    """The training steps' batches: `short` rows [N, T] and `long` rows [M, 2T] (token
    ids, loss mask, segments, positions); the steps in `long_steps` take
    rows_per_batch / 2 long rows, the others rows_per_batch short ones."""

    short: Arrays
    long: Arrays
    long_steps: frozenset[int]
    rows_per_batch: int
    num_conversations: int
    census: dict

    @property
    def num_steps(self) -> int:
        return len(self.short[0]) // self.rows_per_batch + len(self.long_steps)

    def batch(self, step: int) -> Arrays:
        long_before = sum(1 for s in self.long_steps if s < step)
        if step in self.long_steps:
            half = self.rows_per_batch // 2
            return tuple(a[long_before * half:(long_before + 1) * half] for a in self.long)
        R, i = self.rows_per_batch, step - long_before
        return tuple(a[i * R:(i + 1) * R] for a in self.short)

    def trained_share(self) -> float:
        """Share of token slots (padding included) that are trained."""
        masks = [self.short[1], self.long[1]]
        return float(sum(m.sum() for m in masks) / max(1, sum(m.size for m in masks)))


def build_batches(tokenizer, steps: int, rows_per_batch: int, row_len: int, *, seed: int,
                  conversations=None) -> WarmStartBatches:
    """`steps` batches of fresh warm-start conversations (each used once), drawn by
    `conversations(num, seed=...)` (default: the arithmetic world's, formats only)."""
    if conversations is None:
        conversations = warm_start.warm_start_conversations
    if rows_per_batch < 2 or rows_per_batch % 2:
        raise ValueError(f"packing: rows_per_batch must be even and >= 2, got {rows_per_batch}")
    half = rows_per_batch // 2
    short, long = _Rows(row_len), _Rows(2 * row_len)
    backend = tokenizer.backend_tokenizer
    # Conversations are packed in the order drawn until the rows hold the token slots
    # of `steps` steps; then short ones alone complete the last short step.
    num_long = None
    chunk = 0
    while num_long is None or len(short.rows) < (steps - num_long) * rows_per_batch:
        slots = len(short.rows) + 2 * len(long.rows)
        # About 6 conversations fill a short row; a small margin avoids a mostly wasted chunk.
        wanted = min(4000, 7 * max(rows_per_batch, steps * rows_per_batch - slots) + 16)
        drawn = conversations(wanted, seed=seed * 7919 + chunk + 1)
        chunk += 1
        pieces = [conversation_segments(tokenizer, c) for c in drawn]
        flat = [text for p in pieces for text, _ in p]
        ids = iter(e.ids for e in backend.encode_batch(flat, add_special_tokens=False))
        for conversation, p in zip(drawn, pieces):
            seq, mask = [], []
            for _, trained in p:
                piece = next(ids)
                seq += piece
                mask += [float(trained)] * len(piece)
            if num_long is None:
                if len(seq) <= row_len:
                    short.add(seq, mask, conversation)
                elif len(seq) <= long.row_len:
                    long.add(seq, mask, conversation)
                if len(short.rows) + 2 * len(long.rows) >= steps * rows_per_batch:
                    num_long = min(steps, len(long.rows) // half)
            elif len(seq) <= row_len:
                short.add(seq, mask, conversation)
            if num_long is not None and len(short.rows) >= (steps - num_long) * rows_per_batch:
                break
    num_short = (steps - num_long) * rows_per_batch
    packed = [c for members in short.members[:num_short] + long.members[:num_long * half]
              for c in members]
    # Long steps at evenly spaced positions.
    long_steps = frozenset(int((j + 0.5) * steps / num_long) for j in range(num_long))
    return WarmStartBatches(short.stacked(num_short), long.stacked(num_long * half), long_steps,
                            rows_per_batch, len(packed), warm_start.census(packed))
