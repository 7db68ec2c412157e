"""benchmarks/decode_ceiling.py times the same work in XLA and torch: check it is."""

import numpy as np
import pytest

from rl_reason import models


@pytest.mark.parity
def test_xla_and_torch_loops_compute_the_same_decode_matmuls(load_benchmark):
    bench = load_benchmark("decode_ceiling")
    config = models.get_preset("tiny-qwen3")
    weights = bench.random_weights(config, seed=1)
    layer_shapes, unembed = bench.weight_shapes(config)
    assert len(weights) == 7 * config.num_layers + 1 and weights[-1].shape == unembed
    xla = np.asarray(bench.xla_runner(config, weights, batch=3, steps=4)())
    torch_out = bench.torch_runner(config, weights, batch=3, steps=4)().numpy()
    assert xla.shape == (3, config.hidden_size)
    np.testing.assert_allclose(xla, torch_out, rtol=1e-4, atol=1e-5)
    # More steps is more work: the loop really runs `steps` times.
    assert not np.allclose(xla, np.asarray(bench.xla_runner(config, weights, batch=3, steps=1)()))
    assert bench.step_flops(config, 2) == 2 * bench.step_flops(config, 1)
