"""token_logprobs against the model's full logits, chunked against unchunked."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rl_reason.models import model as model_lib
from rl_reason.models import transformer
from rl_reason.models.config import ModelConfig
from rl_reason.rl.logprobs import token_logprobs

V = 64
CONFIG = ModelConfig(family="qwen3", vocab_size=V, hidden_size=16, intermediate_size=32,
                     num_layers=2, num_heads=2, num_kv_heads=1, head_dim=8)
# Rows: no padding, right padding (3 pads), left padding (2 pads).
VALID = np.array([[1] * 9, [1] * 6 + [0] * 3, [0] * 2 + [1] * 7], bool)


@pytest.fixture(scope="module")
def model():
    # Filled with numpy from the init's shapes: compiling jax.random's threefry takes
    # seconds per array on CPU. The head is scaled up so the distributions are peaked and
    # distinct (init's std 0.02 gives near-uniform logits), which the comparisons need.
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(functools.partial(transformer.init_params, CONFIG),
                            jax.random.PRNGKey(0))

    def fill(path, s):
        if "norm" in jax.tree_util.keystr(path):
            return jnp.ones(s.shape, s.dtype)
        return jnp.asarray(0.02 * rng.standard_normal(s.shape), s.dtype)

    params = jax.tree_util.tree_map_with_path(fill, shapes)
    params["lm_head"] = params["lm_head"] * 100.0
    return model_lib.Model(params, CONFIG)


@pytest.fixture(scope="module")
def tokens():
    return jnp.asarray(np.random.default_rng(1).integers(0, V, VALID.shape), jnp.int32)


def reference(model, tokens, temperature):
    """log p(token t | :t) from the full logits, 0 where there is no prediction."""
    logits = np.asarray(model_lib.logits(model, tokens, VALID), np.float64) / temperature
    top = logits.max(-1, keepdims=True)
    log_probs = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    tokens = np.asarray(tokens)
    logp = np.zeros(tokens.shape)
    entropy = np.zeros(tokens.shape)
    for b in range(tokens.shape[0]):
        for t in range(1, tokens.shape[1]):
            if VALID[b, t] and VALID[b, t - 1]:
                logp[b, t] = log_probs[b, t - 1, tokens[b, t]]
                entropy[b, t] = -(np.exp(log_probs[b, t - 1]) * log_probs[b, t - 1]).sum()
    return logp, entropy


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_matches_log_softmax_of_model_logits(model, tokens, temperature):
    logp, entropy = token_logprobs(model.params, CONFIG, tokens, VALID, temperature,
                                   with_entropy=True)
    want_logp, want_entropy = reference(model, tokens, temperature)
    assert logp.dtype == jnp.float32 and logp.shape == tokens.shape
    np.testing.assert_allclose(logp, want_logp, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(entropy, want_entropy, rtol=1e-4, atol=1e-4)
    # The comparison is not vacuous: the distributions are far from uniform.
    assert np.asarray(entropy)[0, 1:].max() < 0.8 * np.log(V)
    # No prediction at t=0, on padding, or for the first real token after left padding.
    no_prediction = ~(VALID & np.roll(VALID, 1, axis=1))
    no_prediction[:, 0] = True
    assert (np.asarray(logp)[no_prediction] == 0).all()
    assert no_prediction[2, 2] and not no_prediction[2, 3]


def test_chunked_equals_unchunked_values_and_gradients(model, tokens):
    # 8 predicted positions in chunks of 3: the last chunk is padded. The chunked run
    # also rematerialises the layers, which must change memory only, not values.
    weights = jnp.asarray(VALID, jnp.float32) * jnp.arange(1.0, 10.0)

    @functools.partial(jax.jit, static_argnums=(1, 2))
    def grads(params, chunk_size, remat):
        def objective(params):
            logp, entropy = token_logprobs(params, CONFIG, tokens, VALID, 1.0, chunk_size,
                                           with_entropy=True, remat=remat)
            return jnp.sum(weights * (logp + 0.1 * entropy)), (logp, entropy)
        return jax.grad(objective, has_aux=True)(params)

    grads_full, (logp_full, entropy_full) = grads(model.params, None, False)
    grads_chunk, (logp_chunk, entropy_chunk) = grads(model.params, 3, True)
    np.testing.assert_allclose(logp_chunk, logp_full, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(entropy_chunk, entropy_full, rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 grads_chunk, grads_full)
    assert np.abs(np.asarray(grads_full["lm_head"])).max() > 1e-3  # gradients are not trivial


def _largest_logits_array(jaxpr) -> int:
    """Largest intermediate of rank >= 3 whose last axis is the vocabulary, anywhere in
    the program (nested scans, checkpoints and jits included)."""
    largest = 0
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            shape = getattr(var.aval, "shape", ())
            if len(shape) >= 3 and shape[-1] == V:
                largest = max(largest, int(np.prod(shape)))
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    largest = max(largest, _largest_logits_array(inner))
    return largest


def test_chunked_gradient_never_holds_all_logits(model, tokens):
    # Forward and backward of the chunked pass: no [B, T, V] array (nor the chunks'
    # log-softmax stacked for the backward pass), only one [B, C, V] chunk at a time.
    B, C = VALID.shape[0], 2

    def objective(params):
        return jnp.sum(token_logprobs(params, CONFIG, tokens, VALID, 1.0, C, with_entropy=True)[1])

    jaxpr = jax.make_jaxpr(jax.grad(objective))(model.params).jaxpr
    assert _largest_logits_array(jaxpr) == B * C * V
    full = jax.make_jaxpr(jax.grad(lambda p: jnp.sum(
        token_logprobs(p, CONFIG, tokens, VALID, 1.0, None)))) (model.params).jaxpr
    assert _largest_logits_array(full) >= B * (VALID.shape[1] - 1) * V  # the check can see it
