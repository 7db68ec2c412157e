"""The shared-prefix layout (rl/batch.py collate_shared, transformer's
shared_prefix_hidden_states, logprobs.shared_prefix_logprobs) computes what the
unshared rows do: log-probs, entropies, the loss and its gradient, and the update on
8 simulated devices with and without micro-batches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl_reason import models, sharding
from rl_reason.protocol import Row
from rl_reason.rl import batch as batch_lib
from rl_reason.rl import logprobs as logprobs_lib
from rl_reason.rl import losses
from update_helpers import tiny_update

V = 64


def tiny_model(family="qwen2"):
    config = models.get_preset(f"tiny-{family}", vocab_size=V)
    params = models.transformer.init_params(config, jax.random.PRNGKey(0))
    return config, params


def make_rows(seed=0, groups=5, group_size=3):
    """Groups of rows sharing a prompt (prompts of different lengths), responses of
    different lengths, per-token advantages in one group, off-policy rows, a row whose
    context differs from its group's (a hinted context), a row that also shares a
    given, untrained start of its response, an untrained tail, and a row with no
    trained token."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(groups):
        prompt = list(rng.integers(1, V, rng.integers(3, 12)))
        given = list(rng.integers(1, V, 2)) if g == 1 else []
        for k in range(group_size):
            context = prompt if not (g == 2 and k == 0) else prompt + [7, 8, 9]
            response = list(rng.integers(1, V, rng.integers(2, 9)))
            tokens = context + given + response
            mask = np.zeros(len(tokens), np.float32)
            mask[len(context) + len(given):] = 1.0
            if g == 3 and k == 1:
                mask[-1] = 0.0                        # an untrained tail
            advantage = float(rng.normal())
            if g == 4:
                advantage = rng.normal(size=len(tokens)).astype(np.float32)
            off, behaviour = None, None
            if g == 0 and k == 2:
                off = mask > 0
                behaviour = np.where(off, -rng.random(len(tokens)) * 3, 0).astype(np.float32)
            rows.append(Row(tokens=tokens, loss_mask=mask, advantage=advantage,
                            off_policy=off, behaviour_logp=behaviour))
    rows.append(Row(tokens=list(rng.integers(1, V, 6)), loss_mask=np.zeros(6, np.float32),
                    advantage=1.0))
    return rows


def shared_rows_to_unshared(shared, blocks):
    """For each shared row: (its whole token list, its suffix's offset in it); None for
    padding rows."""
    P, N = shared["prefix_tokens"].shape[0], shared["tokens"].shape[0]
    p, n = P // blocks, N // blocks
    out = []
    for i in range(N):
        valid = shared["valid"][i]
        if not valid.any():
            out.append(None)
            continue
        j = (i // n) * p + shared["prefix_index"][i]
        prefix = list(shared["prefix_tokens"][j][shared["prefix_valid"][j]])
        out.append((prefix + list(shared["tokens"][i][valid]), len(prefix)))
    return out


def test_collate_shared_layout():
    rows = make_rows()
    shared = batch_lib.collate_shared(rows, blocks=2, seq_bucket=4, pad_id=0)
    N, Ts = shared["tokens"].shape
    P, Tp = shared["prefix_tokens"].shape
    assert N == 16 and N % 2 == 0 and P % 2 == 0 and Ts % 4 == 0 and Tp % 4 == 0
    # Every trained row is there once, whole up to its last trained token.
    wanted = sorted(tuple(r.tokens[:int(np.flatnonzero(r.loss_mask)[-1]) + 1])
                    for r in rows if r.loss_mask.any())
    got = sorted(tuple(int(t) for t in seq) for seq, _ in
                 filter(None, shared_rows_to_unshared(shared, 2)))
    assert got == wanted
    # Groups share: 5 prompts, one group split by a hinted context -> 6 prefixes, plus
    # at most one duplicated across the block boundary.
    used = {(i // (N // 2), shared["prefix_index"][i]) for i in range(N)
            if shared["valid"][i].any()}
    assert 6 <= len(used) <= 7
    assert shared["loss_mask"].sum() == sum(r.loss_mask.sum() for r in rows)


def test_collate_shared_rejects_a_trained_first_token():
    row = Row(tokens=[1, 2, 3], loss_mask=np.ones(3, np.float32), advantage=1.0)
    with pytest.raises(ValueError, match="first token"):
        batch_lib.collate_shared([row], blocks=1, seq_bucket=4, pad_id=0)


@pytest.mark.parametrize("family,chunk,blocks", [("qwen2", None, 1), ("qwen3", 3, 4)])
def test_shared_logprobs_and_entropy_equal_the_rows_run_whole(family, chunk, blocks):
    config, params = tiny_model(family)
    rows = make_rows()
    shared = batch_lib.collate_shared(rows, blocks=blocks, seq_bucket=4, pad_id=0,
                                      rng=np.random.default_rng(1))
    logp_s, ent_s = logprobs_lib.shared_prefix_logprobs(
        params, config, {k: jnp.asarray(v) for k, v in shared.items()}, temperature=0.7,
        chunk_size=chunk, with_entropy=True, blocks=blocks)
    logp_s, ent_s = np.asarray(logp_s), np.asarray(ent_s)
    whole = shared_rows_to_unshared(shared, blocks)
    seqs = [w[0] for w in whole if w is not None]
    padded = batch_lib.pad_sequences(seqs, row_multiple=1, seq_bucket=4, pad_id=0)
    logp_u, ent_u = logprobs_lib.token_logprobs(
        params, config, padded["tokens"], padded["valid"], temperature=0.7,
        chunk_size=chunk, with_entropy=True)
    k = 0
    for i, w in enumerate(whole):
        if w is None:
            assert not logp_s[i].any()
            continue
        seq, start = w
        length = len(seq) - start
        np.testing.assert_allclose(logp_s[i, :length], logp_u[k, start:len(seq)],
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ent_s[i, :length], ent_u[k, start:len(seq)],
                                   rtol=1e-5, atol=1e-5)
        assert not logp_s[i, length:].any()
        k += 1


LOSS_CONFIGS = [
    losses.LossConfig(entropy_coef=0.01, kl_coef=0.05),
    losses.LossConfig(aggregation="seq-mean-token-mean", off_policy_weight="ratio"),
    losses.LossConfig(aggregation="constant", constant_norm=8.0, loss_type="reinforce"),
]


@pytest.mark.parametrize("loss_config", LOSS_CONFIGS)
def test_shared_loss_and_gradient_equal_the_unshared(loss_config):
    config, params = tiny_model()
    rows = make_rows(seed=3)
    whole = batch_lib.collate(rows, row_multiple=1, seq_bucket=4, pad_id=0)
    shared = batch_lib.collate_shared(rows, blocks=1, seq_bucket=4, pad_id=0)
    rng = np.random.default_rng(0)

    def loss(params, batch, shared_layout):
        if shared_layout:
            logp, entropy = logprobs_lib.shared_prefix_logprobs(
                params, config, batch, temperature=1.0, with_entropy=True)
        else:
            logp, entropy = logprobs_lib.token_logprobs(
                params, config, batch["tokens"], batch["valid"], with_entropy=True)
        return losses.policy_loss(
            logp, batch["old_logp"], batch["advantages"], batch["loss_mask"], loss_config,
            off_policy_BT=batch["off_policy"], behaviour_logp_BT=batch["behaviour_logp"],
            ref_logp_BT=batch["ref_logp"], entropy_BT=entropy)

    # Old and reference log-probs: the current ones moved by a random offset per token,
    # the same offset for a token in both layouts.
    for batch, shared_layout in ((whole, False), (shared, True)):
        batch["old_logp"] = np.zeros(batch["tokens"].shape, np.float32)
        batch["ref_logp"] = np.zeros(batch["tokens"].shape, np.float32)
    noise = {}
    for i, r in enumerate(rows):
        noise[tuple(r.tokens)] = rng.normal(size=(2, len(r.tokens))).astype(np.float32) * 0.3
    for i, r in enumerate(rows):
        n = len(r.tokens)
        whole["old_logp"][i, :n] = noise[tuple(r.tokens)][0]
        whole["ref_logp"][i, :n] = noise[tuple(r.tokens)][1]
    for i, w in enumerate(shared_rows_to_unshared(shared, 1)):
        if w is None:
            continue
        seq, start = w
        full = next(k for k in noise if list(k[:len(seq)]) == seq)
        shared["old_logp"][i, :len(seq) - start] = noise[full][0][start:len(seq)]
        shared["ref_logp"][i, :len(seq) - start] = noise[full][1][start:len(seq)]
    # The reference log-probs as offsets from the current ones: exact in both layouts.
    for batch, shared_layout in ((whole, False), (shared, True)):
        batch = {k: jnp.asarray(v) for k, v in batch.items()}
        current = (logprobs_lib.shared_prefix_logprobs(params, config, batch)
                   if shared_layout else
                   logprobs_lib.token_logprobs(params, config, batch["tokens"], batch["valid"]))
        if shared_layout:
            shared["old_logp"] += np.asarray(current)
            shared["ref_logp"] += np.asarray(current)
        else:
            whole["old_logp"] += np.asarray(current)
            whole["ref_logp"] += np.asarray(current)

    grad = jax.value_and_grad(loss, has_aux=True)
    (loss_u, metrics_u), grads_u = grad(params, {k: jnp.asarray(v) for k, v in whole.items()},
                                        False)
    (loss_s, metrics_s), grads_s = grad(params, {k: jnp.asarray(v) for k, v in shared.items()},
                                        True)
    np.testing.assert_allclose(loss_s, loss_u, rtol=1e-5, atol=1e-6)
    for key in metrics_u:
        np.testing.assert_allclose(metrics_s[key], metrics_u[key], rtol=1e-4, atol=1e-6,
                                   err_msg=key)
    assert float(jnp.abs(loss_u)) > 1e-3
    norm = float(optimizer_norm(grads_u))
    assert norm > 1e-4
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=2e-5 * norm),
                 grads_s, grads_u)


def optimizer_norm(tree):
    return jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(tree)))


def one_update(batch, micro_batches):
    fns, state, mesh = tiny_update(losses.LossConfig(entropy_coef=0.01), micro_batches,
                                   vocab_size=V)
    rows_sh = sharding.batch_sharding(mesh)
    batch = {k: jax.device_put(v, rows_sh) for k, v in batch.items()}
    batch["old_logp"] = fns.logprobs(state.params, batch)
    state, metrics = fns.update(state, batch)
    return jax.device_get(state.opt_state), jax.device_get(metrics)


@pytest.mark.parametrize("micro_batches", [1, 2])
def test_sharded_update_with_shared_prefixes_equals_the_unshared(micro_batches):
    assert jax.device_count() == 8
    rows = make_rows(seed=5, groups=6, group_size=4)
    blocks = 8 * micro_batches
    whole = batch_lib.collate(rows, row_multiple=blocks, seq_bucket=8, pad_id=0)
    shared = batch_lib.collate_shared(rows, blocks=blocks, seq_bucket=4, pad_id=0,
                                      rng=np.random.default_rng(2))
    opt_u, metrics_u = one_update(whole, micro_batches)
    opt_s, metrics_s = one_update(shared, micro_batches)
    for key in ("loss", "pg_loss", "entropy", "grad_norm", "num_tokens", "clip_fraction",
                "off_policy_fraction"):
        np.testing.assert_allclose(metrics_s[key], metrics_u[key], rtol=2e-5, atol=1e-7,
                                   err_msg=key)
    # Adam's moments hold the gradient: (1 - b1) g and (1 - b2) g^2.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(
        a, b, rtol=2e-4, atol=1e-5 * np.abs(b).max()), opt_s, opt_u)


def test_minibatches_of_a_shared_batch_carry_their_own_prefixes():
    rows = make_rows(seed=7)
    blocks = 2 * 4   # 2 minibatches x 4 blocks (shards x micro-batches) each
    shared = batch_lib.collate_shared(rows, blocks=blocks, seq_bucket=4, pad_id=0,
                                      rng=np.random.default_rng(0))
    parts = batch_lib.split_blocks(shared, 2, blocks)
    whole = sorted(w[0] for w in shared_rows_to_unshared(shared, blocks) if w is not None)
    got = sorted(w[0] for part in parts for w in shared_rows_to_unshared(part, blocks // 2)
                 if w is not None)
    assert got == whole and len(whole) == sum(r.loss_mask.any() for r in rows)
    for part in parts:
        assert part["tokens"].shape[0] == shared["tokens"].shape[0] // 2
        assert part["prefix_tokens"].shape[0] == shared["prefix_tokens"].shape[0] // 2
    with pytest.raises(ValueError, match="do not split"):
        batch_lib.split_blocks(shared, 3, blocks)
