"""Checkpoint folder I/O: sharded files, bf16, device shardings, and bad input."""

import json
import os

import jax
import numpy as np
import pytest
import safetensors
import safetensors.numpy
import transformers
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from model_builders import max_diff_on_valid, padded_batch, random_model, torch_logits
from rl_reason import models
from rl_reason.models import hf


def assert_same_params(a, b):
    assert jax.tree.structure(a.params) == jax.tree.structure(b.params)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_sharded_save_writes_index_and_round_trips(tmp_path):
    model = random_model(models.get_preset("tiny-qwen3"), seed=2)
    max_bytes = 20_000
    models.save(model, str(tmp_path), max_shard_bytes=max_bytes)
    assert not (tmp_path / hf.SINGLE_FILE).exists()
    index = json.loads((tmp_path / hf.INDEX_FILE).read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 2
    assert files == sorted(f for f in os.listdir(tmp_path) if f.endswith(".safetensors"))
    for file in files:
        with safetensors.safe_open(str(tmp_path / file), "numpy") as f:
            names = list(f.keys())
            sizes = [f.get_tensor(n).nbytes for n in names]
        # Over the limit only when a single tensor is itself larger than it.
        assert sum(sizes) <= max_bytes or len(names) == 1
    assert_same_params(models.load(str(tmp_path)), model)


@pytest.mark.parity
def test_a_sharded_save_loads_in_transformers_with_the_same_logits(tmp_path):
    model = random_model(models.get_preset("tiny-qwen3"), seed=2)
    models.save(model, str(tmp_path), max_shard_bytes=20_000)
    reference = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    tokens, valid = padded_batch()
    assert max_diff_on_valid(models.logits(model, tokens, valid),
                             torch_logits(reference, tokens, valid), valid) <= 1e-4


def test_saving_again_replaces_the_earlier_weight_files(tmp_path):
    model = random_model(models.get_preset("tiny-qwen3"), seed=3)
    models.save(model, str(tmp_path), max_shard_bytes=20_000)
    models.save(model, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["config.json", hf.SINGLE_FILE]
    assert_same_params(models.load(str(tmp_path)), model)


def test_bf16_is_saved_as_bf16_and_loads_back_unchanged(tmp_path):
    config = models.get_preset("tiny-qwen2", dtype="bfloat16", param_dtype="bfloat16")
    model = random_model(config, seed=4)
    models.save(model, str(tmp_path))
    with safetensors.safe_open(str(tmp_path / hf.SINGLE_FILE), "numpy") as f:
        assert {f.get_slice(n).get_dtype() for n in f.keys()} == {"BF16"}
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"

    loaded = models.load(str(tmp_path))
    assert loaded.config.param_dtype == "bfloat16" and loaded.config.dtype == "bfloat16"
    assert_same_params(loaded, model)

    upcast = models.load(str(tmp_path), param_dtype="float32", dtype="float32")
    for x, y in zip(jax.tree.leaves(upcast.params), jax.tree.leaves(model.params)):
        assert x.dtype == np.float32
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y).astype(np.float32))


@pytest.mark.parity
def test_a_bf16_save_loads_in_transformers_as_bf16(tmp_path):
    config = models.get_preset("tiny-qwen2", dtype="bfloat16", param_dtype="bfloat16")
    model = random_model(config, seed=4)
    models.save(model, str(tmp_path))
    reference = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path))
    assert str(reference.dtype) == "torch.bfloat16"
    np.testing.assert_array_equal(
        reference.model.embed_tokens.weight.float().detach().numpy(),
        np.asarray(model.params["embed"]).astype(np.float32))


@pytest.mark.parity
def test_transformers_bf16_checkpoint_loads_exactly(hf_checkpoint):
    import torch

    path, reference = hf_checkpoint("qwen3", tie=True, dtype=torch.bfloat16)
    loaded = models.load(path)
    assert loaded.config.param_dtype == "bfloat16"
    state = {k: v.float().numpy() for k, v in reference.state_dict().items()}
    np.testing.assert_array_equal(np.asarray(loaded.params["embed"]).astype(np.float32),
                                  state["model.embed_tokens.weight"])
    q_hf = state["model.layers.1.self_attn.q_proj.weight"]  # [H*E, D]
    q_ours = np.asarray(loaded.params["layers"]["q"][1]).astype(np.float32)  # [D, H, E]
    np.testing.assert_array_equal(q_ours.reshape(q_hf.shape[1], -1).T, q_hf)


def _mesh():
    return Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))


def _rule(mesh):
    def rule(path, shape):
        # Last axis over 'model' when it divides; stacked layer axis never split.
        spec = [None] * len(shape)
        if shape[-1] % mesh.shape["model"] == 0:
            spec[-1] = "model"
        return NamedSharding(mesh, P(*spec))
    return rule


def test_load_onto_an_8_device_mesh_gives_the_same_logits(tmp_path):
    assert len(jax.devices()) == 8, "tests/conftest.py should simulate 8 CPU devices"
    model = random_model(models.get_preset("tiny-llama"), seed=5)
    models.save(model, str(tmp_path / "ckpt"))
    mesh = _mesh()
    rule = _rule(mesh)

    by_rule = models.load(str(tmp_path / "ckpt"), shardings=rule)
    shapes = jax.eval_shape(lambda: model.params)
    tree = jax.tree_util.tree_map_with_path(
        lambda p, s: rule(tuple(k.key for k in p), s.shape), shapes)
    by_tree = models.load(str(tmp_path / "ckpt"), shardings=tree)
    for loaded in (by_rule, by_tree):
        for got, want in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(tree)):
            assert got.sharding.is_equivalent_to(want, got.ndim)
        assert len(loaded.params["layers"]["q"].sharding.device_set) == 8
        assert_same_params(loaded, model)

    tokens, valid = padded_batch()
    np.testing.assert_allclose(np.asarray(models.logits(by_rule, tokens, valid))[valid],
                               np.asarray(models.logits(model, tokens, valid))[valid],
                               atol=1e-4)

    # Saving gathers the shards back to the host.
    models.save(by_rule, str(tmp_path / "resaved"))
    assert_same_params(models.load(str(tmp_path / "resaved")), model)


def test_shardings_tree_missing_an_entry_is_refused(tmp_path):
    model = random_model(models.get_preset("tiny-qwen3"), seed=6)
    models.save(model, str(tmp_path))
    sharding = NamedSharding(_mesh(), P())
    tree = jax.tree.map(lambda _: sharding, model.params)
    del tree["layers"]["q_norm"]
    with pytest.raises(ValueError, match="layers/q_norm"):
        models.load(str(tmp_path), shardings=tree)


# ----------------------------------------------------------------------------- bad input


@pytest.fixture
def saved(tmp_path):
    """A valid tiny-llama checkpoint folder (untied, so it has lm_head)."""
    path = tmp_path / "ckpt"
    models.save(random_model(models.get_preset("tiny-llama"), seed=7), str(path))
    return path


def _edit_config(path, **changes):
    raw = json.loads((path / "config.json").read_text())
    raw.update(changes)
    (path / "config.json").write_text(json.dumps(raw))


def _rewrite_weights(path, edit):
    file = str(path / hf.SINGLE_FILE)
    with safetensors.safe_open(file, "numpy") as f:
        tensors = {n: f.get_tensor(n) for n in f.keys()}
    edit(tensors)
    safetensors.numpy.save_file(tensors, file, metadata={"format": "pt"})


def test_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        models.load(str(tmp_path / "nowhere"))


def test_missing_config(saved):
    (saved / "config.json").unlink()
    with pytest.raises(ValueError, match="config.json: missing"):
        models.load(str(saved))


def test_config_not_json(saved):
    (saved / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        models.load(str(saved))


def test_unsupported_architecture_names_file_and_field(saved):
    _edit_config(saved, architectures=["MistralForCausalLM"])
    with pytest.raises(ValueError, match=r"config.json: field 'architectures'.*Mistral"):
        models.load(str(saved))


def test_unsupported_option_names_the_field(saved):
    _edit_config(saved, attention_bias=True)
    with pytest.raises(ValueError, match="config.json: field 'attention_bias'"):
        models.load(str(saved))


def test_missing_weights_file(saved):
    (saved / hf.SINGLE_FILE).unlink()
    with pytest.raises(ValueError, match="no model.safetensors"):
        models.load(str(saved))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_safetensors_names_the_file(saved, damage):
    file = saved / hf.SINGLE_FILE
    data = file.read_bytes()
    file.write_bytes(b"\x00\x01garbage" * 10 if damage == "garbage" else data[:len(data) // 2])
    with pytest.raises(ValueError, match=r"model.safetensors: corrupt"):
        models.load(str(saved))


def test_missing_tensor_is_named(saved):
    _rewrite_weights(saved, lambda t: t.pop("model.layers.1.self_attn.k_proj.weight"))
    with pytest.raises(ValueError, match=r"'model.layers.1.self_attn.k_proj.weight' is missing"):
        models.load(str(saved))


def test_unexpected_tensor_is_named(saved):
    _rewrite_weights(saved, lambda t: t.update(
        {"model.layers.0.mlp.down_proj.bias": np.zeros(64, np.float32)}))
    with pytest.raises(ValueError, match="unexpected tensor.*down_proj.bias"):
        models.load(str(saved))


def test_shape_mismatch_names_file_and_tensor(saved):
    _edit_config(saved, intermediate_size=96)
    with pytest.raises(ValueError,
                       match=r"model.safetensors: tensor 'model.layers.0.mlp.gate_proj.weight' "
                             r"has shape \(128, 64\), expected \(96, 64\)"):
        models.load(str(saved))


def test_index_naming_a_missing_shard(tmp_path):
    models.save(random_model(models.get_preset("tiny-qwen3"), seed=8), str(tmp_path),
                max_shard_bytes=20_000)
    index = json.loads((tmp_path / hf.INDEX_FILE).read_text())
    victim = sorted(set(index["weight_map"].values()))[-1]
    (tmp_path / victim).unlink()
    with pytest.raises(ValueError, match=f"{victim}: missing safetensors file"):
        models.load(str(tmp_path))


def test_sequence_longer_than_max_positions_is_refused():
    model = random_model(models.get_preset("tiny-qwen3", max_position_embeddings=16))
    tokens = np.zeros((1, 17), np.int32)
    with pytest.raises(ValueError, match="17 exceeds .*max_position_embeddings=16"):
        models.logits(model, tokens)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        jax.jit(models.logits)(model, tokens)
    with pytest.raises(ValueError, match=r"\[batch, length\]"):
        models.logits(model, tokens[0])
