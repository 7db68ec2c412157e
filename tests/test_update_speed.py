"""The update's speed changes keep its result: micro-batches give the update of one
batch, and a trainer's step compiles nothing new after the first step."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl_reason import sampling
from rl_reason.rl import losses
from update_helpers import tiny_update


def random_batch(rows: int, length: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(length // 2, length + 1, rows)
    valid = np.arange(length)[None, :] < lengths[:, None]
    loss_mask = valid & (np.arange(length)[None, :] >= 5)
    loss_mask[-1] = False   # a padding-like row: no trained token
    off_policy = loss_mask & (rng.random((rows, length)) < 0.2)
    return dict(
        tokens=rng.integers(0, 64, (rows, length)).astype(np.int32),
        valid=valid,
        loss_mask=loss_mask.astype(np.float32),
        advantages=np.repeat(rng.normal(size=(rows, 1)), length, 1).astype(np.float32),
        off_policy=off_policy,
        behaviour_logp=np.where(off_policy, -rng.random((rows, length)) * 3, 0).astype(np.float32),
        old_logp=np.where(valid, -rng.random((rows, length)) * 4, 0).astype(np.float32),
    )


def one_update(micro_batches: int, loss_config: losses.LossConfig, batch: dict):
    fns, state, _ = tiny_update(loss_config, micro_batches, vocab_size=64)
    state, metrics = fns.update(state, {k: jnp.asarray(v) for k, v in batch.items()})
    return jax.device_get(state.params), jax.device_get(state.opt_state), jax.device_get(metrics)


@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean", "constant"])
def test_micro_batches_give_the_update_of_one_batch(aggregation):
    loss_config = losses.LossConfig(
        aggregation=aggregation, constant_norm=16.0 if aggregation == "constant" else None,
        entropy_coef=0.01)
    batch = random_batch(rows=8, length=16)
    params_1, opt_1, metrics_1 = one_update(1, loss_config, batch)
    params_4, opt_4, metrics_4 = one_update(4, loss_config, batch)
    # Adam's moments hold the gradient ((1 - b1) g and (1 - b2) g^2): compared tightly.
    # Its first step is about lr * sign(g) whatever the gradient's size, so parameters
    # agree to a fraction of lr (less where |g| is near Adam's epsilon).
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-9),
                 opt_1, opt_4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-4),
                 params_1, params_4)
    for key in ("loss", "pg_loss", "entropy", "grad_norm"):
        np.testing.assert_allclose(metrics_4[key], metrics_1[key], rtol=2e-5, atol=1e-7)
    assert metrics_4["num_tokens"] == metrics_1["num_tokens"]


def test_micro_batches_must_divide_the_rows():
    batch = random_batch(rows=6, length=8)
    with pytest.raises(ValueError, match="micro_batches=4"):
        one_update(4, losses.LossConfig(), batch)


def test_a_training_run_compiles_its_step_once(tiny_policy, tmp_path):
    # With the default train.share_prefixes: the shared-prefix update.
    """After the first step, neither the sampler nor the update compiles again (the
    prompts all have one length, so every step has the same shapes; the sampler's slot
    counts and windows also follow where rows stop, which here repeats the first
    step's: with seeds fixed the test is deterministic)."""
    from configs import grpo
    from rl_reason import train

    data = tmp_path / "train.jsonl"
    with open(data, "w") as f:
        for i in range(16):
            f.write(json.dumps({"problem": f"{10 + i}+{20 + i}=", "answer": str(30 + 2 * i)})
                    + "\n")
    c = grpo.get_config("tiny")
    c.unlock()
    c.model.checkpoint = tiny_policy
    c.data.train = str(data)
    c.train.update(export_hf=False, checkpoint_every=100)
    c.eval.enabled = False
    c.verifier.num_workers = 1
    trainer = train.Trainer(c, str(tmp_path / "run"))
    try:
        trainer.train_step()
        trainer.step += 1
        traces = dict(sampling.TRACE_COUNT)
        (fns,) = trainer._update_fns.values()
        compiled = fns.update._cache_size()
        for _ in range(2):
            trainer.train_step()
            trainer.step += 1
        assert dict(sampling.TRACE_COUNT) == traces
        assert fns.update._cache_size() == compiled == 1
    finally:
        trainer.close()
