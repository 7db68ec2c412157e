"""Test helper: the trainer's jitted step functions and a fresh train state for a tiny
random qwen2 model on the default mesh, for tests that compare updates."""

import jax
import ml_collections

from rl_reason import models, sharding, update
from rl_reason.rl import losses


def tiny_update(loss_config: losses.LossConfig, micro_batches: int, vocab_size: int):
    """(step functions, initial state, mesh); AdamW at lr 1e-2 without decay or clipping,
    so that one update moves every parameter visibly."""
    config = models.get_preset("tiny-qwen2", vocab_size=vocab_size)
    params = models.transformer.init_params(config, jax.random.PRNGKey(0))
    mesh = sharding.make_mesh()
    optim = ml_collections.ConfigDict(dict(learning_rate=1e-2, warmup_steps=0, weight_decay=0.0,
                                           b1=0.9, b2=0.999, grad_clip=0.0))
    optimizer = update.make_optimizer(optim)
    state_sh = update.state_shardings(sharding.param_shardings(config, mesh), optimizer,
                                          jax.eval_shape(lambda p: p, params), mesh)
    state = update.init_state(params, optimizer, state_sh)
    fns = update.build_step_functions(
        config, loss_config, optimizer, state_sh, mesh, temperature=1.0, logprob_chunk=0,
        remat=False, skip_grad_norm_above=0.0, micro_batches=micro_batches)
    return fns, state, mesh
