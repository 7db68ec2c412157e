"""Rows (one sequence each, ragged) -> padded training arrays of bucketed shape.

Shapes are bucketed (rows to row_multiple * 2^k, length to a multiple of seq_bucket)
so the jitted update compiles a handful of times per run, not once per step.
Padding rows carry no loss (loss_mask 0) and no valid tokens.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def bucket_rows(n: int, row_multiple: int) -> int:
    units = max(1, math.ceil(n / row_multiple))
    return row_multiple * (1 << math.ceil(math.log2(units)))


def collate(rows: Sequence, *, row_multiple: int, seq_bucket: int, pad_id: int) -> dict:
    """Padded arrays: tokens, valid, loss_mask, advantages, off_policy, behaviour_logp.

    All [N, T]; advantages are per token (a row's scalar advantage is broadcast).
    """
    if not rows:
        raise ValueError("collate: no rows to train on")
    out = pad_sequences([r.tokens for r in rows], row_multiple=row_multiple,
                        seq_bucket=seq_bucket, pad_id=pad_id)
    shape = out["tokens"].shape
    out.update(
        loss_mask=np.zeros(shape, np.float32),
        advantages=np.zeros(shape, np.float32),
        off_policy=np.zeros(shape, bool),
        behaviour_logp=np.zeros(shape, np.float32),
    )
    for i, r in enumerate(rows):
        n = len(r.tokens)
        if len(r.loss_mask) != n:
            raise ValueError(f"row {i}: loss_mask has {len(r.loss_mask)} entries for {n} tokens")
        out["loss_mask"][i, :n] = r.loss_mask
        out["advantages"][i, :n] = r.advantage
        if r.off_policy is not None:
            out["off_policy"][i, :n] = r.off_policy
            out["behaviour_logp"][i, :n] = r.behaviour_logp
    return out


def pad_sequences(sequences: Sequence[Sequence[int]], *, row_multiple: int, seq_bucket: int,
                  pad_id: int) -> dict:
    """tokens and valid [N, T] for token sequences, bucketed as `collate` does."""
    if not sequences:
        raise ValueError("pad_sequences: no sequences")
    N = bucket_rows(len(sequences), row_multiple)
    T = seq_bucket * max(1, math.ceil(max(len(s) for s in sequences) / seq_bucket))
    tokens = np.full((N, T), pad_id, np.int32)
    valid = np.zeros((N, T), bool)
    for i, s in enumerate(sequences):
        tokens[i, :len(s)] = s
        valid[i, :len(s)] = True
    return dict(tokens=tokens, valid=valid)


def split_minibatches(batch: dict, num_minibatches: int, rng: np.random.Generator) -> list[dict]:
    """Shuffle rows (padding rows included) and cut into equal minibatches."""
    N = batch["tokens"].shape[0]
    order = rng.permutation(N)
    size = N // num_minibatches
    return [{k: v[order[i * size:(i + 1) * size]] for k, v in batch.items()}
            for i in range(num_minibatches)]
