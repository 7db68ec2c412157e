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


# ---------------------------------------------------------------- shared prefixes

# The keys of a shared-prefix batch indexed by prefix row (the others are per row).
PREFIX_KEYS = ("prefix_tokens", "prefix_valid")


def is_shared(batch: dict) -> bool:
    return "prefix_tokens" in batch


def _bucket(n: int, multiple: int) -> int:
    return multiple * max(1, math.ceil(n / multiple))


def collate_shared(rows: Sequence, *, blocks: int, seq_bucket: int, pad_id: int,
                   rng: np.random.Generator | None = None) -> dict:
    """Rows -> a shared-prefix batch: each distinct prompt once (what
    transformer.shared_prefix_hidden_states runs).

    A row's prefix is its tokens before its first trained token (loss_mask > 0); its
    suffix runs from there to its last trained token. Nothing outside the suffix is
    trained, and causal attention makes the suffix's log-probs those of the whole row,
    so the loss and its gradient are those of `collate`'s batch. Rows with identical
    prefixes (a GRPO group; hinted rows trained under the plain prompt; the attempts
    of an episode that share its context) use one prefix row. Rows without a trained
    token carry no loss and are left out (replaced by padding rows).

    Arrays: per row [N, Ts] tokens, valid, loss_mask, advantages, off_policy,
    behaviour_logp (suffix-aligned, as `collate`'s are row-aligned) and prefix_index
    [N]; per prefix row [P, Tp] prefix_tokens, prefix_valid. The rows are cut into
    `blocks` equal blocks (the shards of the data axes times minibatches times
    micro-batches, `split_shared`), each holding its own prefix rows; prefix_index
    counts within the block, and a group cut by a block boundary has its prefix in
    both. Rows stay together by prefix; with `rng` the order of the prefixes is
    shuffled (which rows share a minibatch). N is bucketed as in `collate` (blocks *
    2^k), P to blocks * 2^k, Tp and Ts to multiples of seq_bucket.
    """
    if not rows:
        raise ValueError("collate_shared: no rows to train on")
    groups: dict[tuple, list] = {}
    for i, r in enumerate(rows):
        n = len(r.tokens)
        mask = np.asarray(r.loss_mask)
        if len(mask) != n:
            raise ValueError(f"row {i}: loss_mask has {len(mask)} entries for {n} tokens")
        trained = np.flatnonzero(mask > 0)
        if not len(trained):
            continue
        start, end = int(trained[0]), int(trained[-1]) + 1
        if start == 0:
            raise ValueError(f"row {i} trains its first token, which nothing predicts")
        groups.setdefault(tuple(int(t) for t in r.tokens[:start]), []).append((r, start, end))
    order = list(groups)
    if rng is not None:
        order = [order[i] for i in rng.permutation(len(order))]
    placed = [(prefix, item) for prefix in order for item in groups[prefix]]

    N = bucket_rows(max(len(placed), 1), blocks)
    n = N // blocks
    block_prefixes = []
    for b in range(blocks):
        distinct = dict.fromkeys(prefix for prefix, _ in placed[b * n:(b + 1) * n])
        block_prefixes.append({prefix: j for j, prefix in enumerate(distinct)})
    p = 1 << math.ceil(math.log2(max(1, max(len(d) for d in block_prefixes))))
    Tp = _bucket(max((len(prefix) for prefix in groups), default=1), seq_bucket)
    Ts = _bucket(max((end - start for _, (_, start, end) in placed), default=1), seq_bucket)

    out = dict(
        tokens=np.full((N, Ts), pad_id, np.int32), valid=np.zeros((N, Ts), bool),
        loss_mask=np.zeros((N, Ts), np.float32), advantages=np.zeros((N, Ts), np.float32),
        off_policy=np.zeros((N, Ts), bool), behaviour_logp=np.zeros((N, Ts), np.float32),
        prefix_index=np.zeros((N,), np.int32),
        prefix_tokens=np.full((blocks * p, Tp), pad_id, np.int32),
        prefix_valid=np.zeros((blocks * p, Tp), bool))
    for b, local in enumerate(block_prefixes):
        for prefix, j in local.items():
            out["prefix_tokens"][b * p + j, :len(prefix)] = prefix
            out["prefix_valid"][b * p + j, :len(prefix)] = True
    for i, (prefix, (r, start, end)) in enumerate(placed):
        k = end - start
        out["tokens"][i, :k] = r.tokens[start:end]
        out["valid"][i, :k] = True
        out["loss_mask"][i, :k] = np.asarray(r.loss_mask)[start:end]
        advantage = np.broadcast_to(np.asarray(r.advantage, np.float32), (len(r.tokens),))
        out["advantages"][i, :k] = advantage[start:end]
        if r.off_policy is not None:
            out["off_policy"][i, :k] = np.asarray(r.off_policy)[start:end]
            out["behaviour_logp"][i, :k] = np.asarray(r.behaviour_logp)[start:end]
        out["prefix_index"][i] = block_prefixes[i // n][prefix]
    return out


def split_blocks(batch: dict, parts: int, blocks: int) -> list[dict]:
    """A shared-prefix batch of `blocks` blocks -> `parts` batches of blocks / parts
    consecutive blocks each (minibatches: the batch's blocks are minibatch-major)."""
    if blocks % parts:
        raise ValueError(f"{blocks} blocks do not split into {parts} parts")
    out = [{} for _ in range(parts)]
    for key, x in batch.items():
        for i, part in enumerate(np.split(x, parts)):
            out[i][key] = part
    return out
