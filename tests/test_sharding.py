"""Mesh construction, the logical-axis partition rules and parameter placement.

Runs on the 8 simulated CPU devices set up by conftest.py. Nothing here compiles:
shardings come from eval_shape and placement is device_put.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractMesh, PartitionSpec as P

from rl_reason import models, sharding
from rl_reason.models import transformer


def test_there_are_eight_devices():
    assert jax.device_count() == 8, "conftest.py's XLA_FLAGS were not applied"


@pytest.mark.parametrize("args, expected", [
    ((), (8, 1, 1)),                       # pure data parallelism
    ((1, -1), (1, 8, 1)),                  # pure FSDP
    ((2, 2, 2), (2, 2, 2)),
    ((2, -1, 2), (2, 2, 2)),
    ((-1, 1, 4), (2, 1, 4)),
    ((1, 1, 8), (1, 1, 8)),
])
def test_make_mesh_shapes(args, expected):
    mesh = sharding.make_mesh(*args)
    assert mesh.axis_names == sharding.MESH_AXES
    assert tuple(mesh.shape.values()) == expected
    assert sorted(d.id for d in mesh.devices.flat) == list(range(8))


def test_make_mesh_on_a_device_subset():
    devices = jax.devices()[4:]
    mesh = sharding.make_mesh(1, 2, 2, devices=devices)
    assert tuple(mesh.shape.values()) == (1, 2, 2)
    assert list(mesh.devices.flat) == devices


@pytest.mark.parametrize("args, message", [
    ((3, 1, 1), "3\\*1\\*1 = 3 but there are 8 devices"),
    ((2, 2, 4), "= 16 but there are 8 devices"),
    ((-1, 3, 1), "8 devices cannot be split into data=-1, fsdp=3"),
    ((-1, -1, 2), "at most one axis may be -1"),
    ((0, 1, 1), "data=0"),
    ((1, -2, 1), "fsdp=-2"),
])
def test_make_mesh_rejects_sizes_that_do_not_fit(args, message):
    with pytest.raises(ValueError, match=message):
        sharding.make_mesh(*args)


def _specs(config, mesh):
    return jax.tree.map(lambda s: s.spec, sharding.param_shardings(config, mesh))


def test_param_shardings_qwen3():
    config = models.get_preset("tiny-qwen3")  # D 64, H 4, K 2, E 16, F 128, V 128, tied
    specs = _specs(config, sharding.make_mesh(2, 2, 2))
    shapes = jax.eval_shape(lambda: transformer.init_params(config, jax.random.PRNGKey(0)))
    assert jax.tree.structure(specs) == jax.tree.structure(shapes)
    assert "lm_head" not in specs
    layers = specs["layers"]
    assert specs["embed"] == P("tensor", "fsdp")
    assert specs["final_norm"] == P(None)
    assert layers["q"] == P(None, "fsdp", "tensor", None)
    assert layers["k"] == layers["v"] == P(None, "fsdp", "tensor", None)
    assert layers["o"] == P(None, "tensor", None, "fsdp")
    assert layers["gate"] == layers["up"] == P(None, "fsdp", "tensor")
    assert layers["down"] == P(None, "tensor", "fsdp")
    assert layers["q_norm"] == layers["k_norm"] == layers["attn_norm"] == P(None, None)


def test_param_shardings_llama_and_qwen2_extras():
    llama = models.get_preset("tiny-llama")  # untied head
    specs = _specs(llama, sharding.make_mesh(1, 2, 4))
    assert specs["lm_head"] == P("fsdp", "tensor")
    assert "q_norm" not in specs["layers"] and "q_bias" not in specs["layers"]
    qwen2 = _specs(models.get_preset("tiny-qwen2"), sharding.make_mesh(1, 4, 2))
    assert qwen2["layers"]["q_bias"] == P(None, "tensor", None)
    assert qwen2["layers"]["k_bias"] == qwen2["layers"]["v_bias"] == P(None, "tensor", None)


def test_dims_that_do_not_divide_are_replicated():
    # tensor=8 over H=4 and K=2 heads: those dims fall back to replication, while F=128
    # and V=128 still split. (fsdp has size 1 here, which divides everything.)
    specs = _specs(models.get_preset("tiny-qwen3"), sharding.make_mesh(1, 1, 8))
    assert specs["layers"]["q"] == P(None, "fsdp", None, None)
    assert specs["layers"]["k"] == P(None, "fsdp", None, None)
    assert specs["layers"]["gate"] == P(None, "fsdp", "tensor")
    assert specs["embed"] == P("tensor", "fsdp")
    assert sharding.logical_spec((6, 64), ("batch", "embed"), sharding.make_mesh(2, 2, 2)) == \
        P(None, "fsdp")


def test_param_shardings_on_an_abstract_mesh_of_a_large_model():
    # Planning a pod layout: no devices, no parameter memory.
    mesh = AbstractMesh((4, 16, 4), sharding.MESH_AXES)
    specs = _specs(models.get_preset("qwen3-8b-base"), mesh)
    assert specs["layers"]["q"] == P(None, "fsdp", "tensor", None)
    assert specs["lm_head"] == P("fsdp", "tensor")


def test_logical_spec_errors():
    mesh = sharding.make_mesh()
    with pytest.raises(ValueError, match="has 2 dims but logical axes"):
        sharding.logical_spec((4, 4), ("batch",), mesh)
    with pytest.raises(ValueError, match="unknown logical axis 'time'"):
        sharding.logical_spec((4,), ("time",), mesh)


@pytest.mark.parametrize("axes", [(2, 2, 2), (1, 8, 1)])
def test_shard_params_round_trip_keeps_values(axes):
    config = models.get_preset("tiny-qwen3")
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(lambda: transformer.init_params(config, jax.random.PRNGKey(0)))
    host = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes)
    mesh = sharding.make_mesh(*axes)
    placed = sharding.shard_params(jax.tree.map(jnp.asarray, host), config, mesh)
    expected = sharding.param_shardings(config, mesh)
    for array, want, values in zip(jax.tree.leaves(placed), jax.tree.leaves(expected),
                                   jax.tree.leaves(host)):
        assert array.sharding == want
        np.testing.assert_array_equal(np.asarray(array), values)
    # Really split: each device holds a quarter (fsdp x tensor) or an eighth of q.
    q = placed["layers"]["q"]
    fsdp, tensor = mesh.shape["fsdp"], mesh.shape["tensor"]
    assert q.addressable_shards[0].data.shape == (2, 64 // fsdp, 4 // tensor, 16)
    # Re-placing on another mesh keeps the values too.
    again = sharding.shard_params(placed, config, sharding.make_mesh(8, 1, 1))
    np.testing.assert_array_equal(np.asarray(again["layers"]["q"]), host["layers"]["q"])


@pytest.mark.parametrize("axes, data_parallel", [((8, 1, 1), 8), ((2, 2, 2), 4),
                                                 ((1, 8, 1), 8), ((1, 1, 8), 1)])
def test_batch_sharding_and_data_parallel_size(axes, data_parallel):
    mesh = sharding.make_mesh(*axes)
    assert sharding.data_parallel_size(mesh) == data_parallel
    batch = sharding.batch_sharding(mesh)
    assert batch.spec == P(("data", "fsdp"))
    tokens = jax.device_put(np.arange(16 * 5).reshape(16, 5), batch)
    assert {s.data.shape for s in tokens.addressable_shards} == {(16 // data_parallel, 5)}
    np.testing.assert_array_equal(np.asarray(tokens), np.arange(16 * 5).reshape(16, 5))
    assert sharding.replicated(mesh).spec == P()


def test_cache_sharding_splits_batch_and_kv_heads():
    config = models.get_preset("tiny-qwen3")
    cache = sharding.cache_sharding(config, batch=8, length=40, mesh=sharding.make_mesh(2, 2, 2))
    assert cache.spec == P(("data", "fsdp"), "tensor", None, None)
