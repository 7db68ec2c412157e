"""Hugging Face checkpoint folders <-> `Model`.

    model = load("/ckpt/Qwen3-4B-Base", param_dtype="float32", shardings=rule)
    save(model, "/out/step_1000")      # transformers.AutoModelForCausalLM loads it

A folder holds config.json and either model.safetensors or shards listed by
model.safetensors.index.json. Loading goes one parameter leaf at a time: the L
per-layer tensors of a leaf are read from disk, transposed/reshaped into the stacked
layout of transformer.py, cast, and placed on devices before the next leaf is read,
so host memory holds one leaf, not the checkpoint. Saving mirrors it: each leaf is
gathered to the host (across processes when it is not fully addressable), split back
into per-layer HF tensors, and written in shards of at most `max_shard_bytes`, in the
leaf's own dtype (bf16 stays bf16). Only process 0 writes.

HF linear weights are [out, in]; ours are [in, ...out] with heads split out, e.g.
q_proj.weight [H*E, D] <-> q [D, H, E] and o_proj.weight [D, H*E] <-> o [H, E, D].
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy so safetensors can read BF16)
import numpy as np
import safetensors
import safetensors.numpy
from jax.experimental import multihost_utils

from rl_reason.errors import CheckpointFolderError
from rl_reason.models import hf_config
from rl_reason.models.config import ModelConfig
from rl_reason.models.model import Model

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5_000_000_000  # transformers' default shard size ("5GB")

ShardingRule = Callable[[tuple[str, ...], tuple[int, ...]], jax.sharding.Sharding]


@dataclasses.dataclass(frozen=True)
class _Leaf:
    """One leaf of our tree and the HF tensor(s) it is made of.

    `name` has '{}' for the layer index when the leaf is stacked over layers.
    `transposed`: the HF tensor is a [out, in] linear weight; ours is its transpose
    reshaped. Otherwise it is a plain reshape (biases are [H*E] <-> [H, E]).
    """

    path: tuple[str, ...]
    name: str
    hf_shape: tuple[int, ...]
    shape: tuple[int, ...]  # ours, per layer for stacked leaves
    transposed: bool

    @property
    def stacked(self) -> bool:
        return "{}" in self.name

    def to_ours(self, hf_array: np.ndarray) -> np.ndarray:
        return (hf_array.T if self.transposed else hf_array).reshape(self.shape)

    def to_hf(self, array: np.ndarray) -> np.ndarray:
        if self.transposed:
            return np.ascontiguousarray(array.reshape(self.hf_shape[::-1]).T)
        return np.ascontiguousarray(array.reshape(self.hf_shape))


def _leaves(c: ModelConfig) -> list[_Leaf]:
    D, F, H, K, E, V = (c.hidden_size, c.intermediate_size, c.num_heads, c.num_kv_heads,
                        c.head_dim, c.vocab_size)
    attn, mlp = "model.layers.{}.self_attn.", "model.layers.{}.mlp."
    layer = [
        ("attn_norm", "model.layers.{}.input_layernorm.weight", (D,), (D,), False),
        ("mlp_norm", "model.layers.{}.post_attention_layernorm.weight", (D,), (D,), False),
        ("q", attn + "q_proj.weight", (H * E, D), (D, H, E), True),
        ("k", attn + "k_proj.weight", (K * E, D), (D, K, E), True),
        ("v", attn + "v_proj.weight", (K * E, D), (D, K, E), True),
        ("o", attn + "o_proj.weight", (D, H * E), (H, E, D), True),
        ("gate", mlp + "gate_proj.weight", (F, D), (D, F), True),
        ("up", mlp + "up_proj.weight", (F, D), (D, F), True),
        ("down", mlp + "down_proj.weight", (D, F), (F, D), True),
    ]
    if c.qkv_bias:
        layer += [("q_bias", attn + "q_proj.bias", (H * E,), (H, E), False),
                  ("k_bias", attn + "k_proj.bias", (K * E,), (K, E), False),
                  ("v_bias", attn + "v_proj.bias", (K * E,), (K, E), False)]
    if c.qk_norm:
        layer += [("q_norm", attn + "q_norm.weight", (E,), (E,), False),
                  ("k_norm", attn + "k_norm.weight", (E,), (E,), False)]
    leaves = [_Leaf(("embed",), "model.embed_tokens.weight", (V, D), (V, D), False)]
    leaves += [_Leaf(("layers", key), *rest) for key, *rest in layer]
    leaves.append(_Leaf(("final_norm",), "model.norm.weight", (D,), (D,), False))
    if not c.tie_embeddings:
        leaves.append(_Leaf(("lm_head",), "lm_head.weight", (V, D), (D, V), True))
    return leaves


def _hf_names(leaf: _Leaf, num_layers: int) -> list[str]:
    return [leaf.name.format(i) for i in range(num_layers)] if leaf.stacked else [leaf.name]


# ----------------------------------------------------------------------------- load


def read_config(path: str) -> ModelConfig:
    """The ModelConfig of a checkpoint folder, as `load` would build it (same dtypes)."""
    config, raw = _read_config_json(path)
    param_dtype = hf_config.checkpoint_dtype(raw) or "float32"
    return config.replace(param_dtype=param_dtype, dtype=param_dtype)


def _read_config_json(path: str) -> tuple[ModelConfig, dict]:
    file = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(file):
        raise CheckpointFolderError(f"{file}: missing; a Hugging Face checkpoint folder needs "
                                    "a config.json")
    try:
        with open(file) as f:
            raw = json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointFolderError(f"{file}: not valid JSON ({e})") from e
    try:
        return hf_config.from_hf_config(raw, source=file), raw
    except ValueError as e:  # every such error is about this file's content
        raise CheckpointFolderError(str(e)) from None


def _weight_map(path: str) -> dict[str, str]:
    """HF tensor name -> safetensors file (absolute) for a checkpoint folder."""
    index = os.path.join(path, INDEX_FILE)
    if os.path.isfile(index):
        try:
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointFolderError(f"{index}: not a valid safetensors index (needs "
                                        f"'weight_map'): {e}") from e
        return {name: os.path.join(path, file) for name, file in weight_map.items()}
    single = os.path.join(path, SINGLE_FILE)
    files = [single] if os.path.isfile(single) else sorted(
        os.path.join(path, f) for f in os.listdir(path) if f.endswith(".safetensors"))
    if not files:
        raise CheckpointFolderError(f"{path}: no {SINGLE_FILE}, {INDEX_FILE} or other "
                                    "*.safetensors file")
    weight_map = {}
    for file in files:
        with _open_safetensors(file) as f:
            weight_map.update({name: file for name in f.keys()})
    return weight_map


@contextlib.contextmanager
def _open_safetensors(file: str):
    if not os.path.isfile(file):
        raise CheckpointFolderError(f"{file}: missing safetensors file")
    try:
        handle = safetensors.safe_open(file, framework="numpy")
    except Exception as e:  # the Rust binding raises its own SafetensorError and others
        raise CheckpointFolderError(f"{file}: corrupt or unreadable safetensors file "
                                    f"({e})") from e
    with handle as f:
        yield f


def _sharding_for(shardings, path: tuple[str, ...], shape) -> jax.sharding.Sharding | None:
    if shardings is None:
        return None
    if callable(shardings):
        return shardings(path, shape)
    node = shardings
    for key in path:
        if not isinstance(node, dict) or key not in node:
            raise ValueError(f"hf.load: `shardings` has no entry for parameter "
                             f"{'/'.join(path)}; it must mirror the parameter tree")
        node = node[key]
    if not isinstance(node, jax.sharding.Sharding):
        raise ValueError(f"hf.load: `shardings` entry for {'/'.join(path)} is "
                         f"{type(node).__name__}, not a jax.sharding.Sharding")
    return node


def _place(host: np.ndarray, sharding: jax.sharding.Sharding | None) -> jax.Array:
    if sharding is None:
        return jnp.asarray(host)
    # Each device (on every host) copies only its own slice of the host array, which is
    # also what multi-host placement needs.
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def load(path: str, *, dtype: str | None = None, param_dtype: str | None = None,
         shardings: Any | ShardingRule | None = None) -> Model:
    """A Model from a Hugging Face checkpoint folder (Llama, Qwen2 or Qwen3 causal LM).

    param_dtype: parameter storage dtype; default: the dtype config.json declares
      (float32 if none). dtype: compute dtype; default: param_dtype.
    shardings: None (default device), a pytree of jax.sharding.Sharding mirroring the
      parameter tree, or a callable (path_tuple, shape) -> Sharding, where path_tuple
      is e.g. ('layers', 'q') and shape the full stacked shape.
    Raises errors.CheckpointFolderError (a ValueError) naming the file and tensor for a
    missing file or tensor, a corrupt safetensors file, a shape mismatch or an
    unsupported config.
    """
    if not os.path.isdir(path):
        raise CheckpointFolderError(f"hf.load: checkpoint folder {path!r} does not exist")
    config = read_config(path)
    param_dtype = param_dtype or config.param_dtype
    config = config.replace(param_dtype=param_dtype, dtype=dtype or param_dtype)
    weight_map = _weight_map(path)
    leaves = _leaves(config)
    expected = {n for leaf in leaves for n in _hf_names(leaf, config.num_layers)}
    # Tied checkpoints sometimes still carry lm_head; older ones carry RoPE buffers.
    ignorable = {"lm_head.weight"} if config.tie_embeddings else set()
    unexpected = sorted(n for n in weight_map
                        if n not in expected and n not in ignorable
                        and not n.endswith("rotary_emb.inv_freq"))
    if unexpected:
        raise CheckpointFolderError(f"{path}: unexpected tensor(s) {unexpected[:5]} for a "
                                    f"{config.family} model as described by {CONFIG_FILE}")

    target = np.dtype(jnp.dtype(config.param_dtype))
    params: dict[str, Any] = {"layers": {}}
    with contextlib.ExitStack() as stack:
        handles: dict[str, Any] = {}
        for leaf in leaves:
            names = _hf_names(leaf, config.num_layers)
            full_shape = ((config.num_layers,) if leaf.stacked else ()) + leaf.shape
            host = np.empty(full_shape, target)
            for i, name in enumerate(names):
                if name not in weight_map:
                    raise CheckpointFolderError(
                        f"{path}: tensor {name!r} is missing from the checkpoint "
                        f"(needed for parameter {'/'.join(leaf.path)})")
                file = weight_map[name]
                if file not in handles:
                    handles[file] = stack.enter_context(_open_safetensors(file))
                tensor = _read_tensor(handles[file], file, name, leaf.hf_shape)
                ours = leaf.to_ours(tensor).astype(target)
                if leaf.stacked:
                    host[i] = ours
                else:
                    host[...] = ours
            array = _place(host, _sharding_for(shardings, leaf.path, full_shape))
            del host
            if leaf.path[0] == "layers":
                params["layers"][leaf.path[1]] = array
            else:
                params[leaf.path[0]] = array
    return Model(params, config)


def _read_tensor(handle, file: str, name: str, hf_shape: tuple[int, ...]) -> np.ndarray:
    try:
        shape = tuple(handle.get_slice(name).get_shape())
    except Exception as e:
        raise CheckpointFolderError(f"{file}: tensor {name!r} is not in this file "
                                    f"({e})") from e
    if shape != hf_shape:
        raise CheckpointFolderError(f"{file}: tensor {name!r} has shape {shape}, expected "
                                    f"{hf_shape} from {CONFIG_FILE}")
    try:
        return handle.get_tensor(name)
    except Exception as e:
        raise CheckpointFolderError(f"{file}: cannot read tensor {name!r} ({e})") from e


# ----------------------------------------------------------------------------- save


def _to_host(x) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        # A collective: every process must reach this call, in the same leaf order.
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def _get(params: dict, path: tuple[str, ...]):
    node = params
    for key in path:
        if not isinstance(node, dict) or key not in node:
            raise ValueError(f"hf.save: the model has no parameter {'/'.join(path)}, which the "
                             f"transformer.py layout needs for its config")
        node = node[key]
    return node


def _plan_shards(tensors: list[tuple[str, int]], max_shard_bytes: int) -> list[list[str]]:
    """Greedy packing of (name, nbytes) in order; a tensor larger than the limit gets
    a shard of its own, as transformers does."""
    shards: list[list[str]] = [[]]
    size = 0
    for name, nbytes in tensors:
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def save(model: Model, path: str, *, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> None:
    """Writes config.json and the weights as a Hugging Face checkpoint folder.

    One model.safetensors when everything fits in max_shard_bytes, otherwise
    model-0000i-of-0000n.safetensors plus model.safetensors.index.json. The config and
    weight files of an earlier save in `path` are removed first so the two cannot mix
    (other files, e.g. the tokenizer's, are left alone).
    Every process must call this (arrays are gathered collectively); only process 0
    writes.
    """
    if max_shard_bytes <= 0:
        raise ValueError(f"hf.save: max_shard_bytes must be positive, got {max_shard_bytes}")
    config = model.config
    leaves = _leaves(config)
    arrays = {leaf.path: _get(model.params, leaf.path) for leaf in leaves}
    for leaf in leaves:
        want = ((config.num_layers,) if leaf.stacked else ()) + leaf.shape
        if tuple(arrays[leaf.path].shape) != want:
            raise ValueError(f"hf.save: parameter {'/'.join(leaf.path)} has shape "
                             f"{tuple(arrays[leaf.path].shape)}, config implies {want}")
    tensors = [(name, math.prod(leaf.hf_shape) * jnp.dtype(arrays[leaf.path].dtype).itemsize)
               for leaf in leaves for name in _hf_names(leaf, config.num_layers)]
    shards = _plan_shards(tensors, max_shard_bytes)
    files = ([SINGLE_FILE] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    writer = jax.process_index() == 0
    if writer:
        os.makedirs(path, exist_ok=True)
        _remove_old_checkpoint(path)

    # Shards are filled in leaf order, so only the current leaf is ever held on the host.
    source = {name: (leaf, i) for leaf in leaves
              for i, name in enumerate(_hf_names(leaf, config.num_layers))}
    current_path, current_host = None, None
    for file, names in zip(files, shards):
        shard = {}
        for name in names:
            leaf, i = source[name]
            if leaf.path != current_path:
                current_path, current_host = leaf.path, _to_host(arrays[leaf.path])
            if writer:
                shard[name] = leaf.to_hf(current_host[i] if leaf.stacked else current_host)
        if writer:
            safetensors.numpy.save_file(shard, os.path.join(path, file),
                                        metadata={"format": "pt"})
    if writer:
        _write_index_and_config(path, config, files, shards, tensors,
                                str(jnp.dtype(model.params["embed"].dtype)))
    if jax.process_count() > 1:
        # Nobody returns (and, say, reads the folder) before process 0 has finished.
        multihost_utils.sync_global_devices("rl_reason.models.hf.save")


def _write_index_and_config(path, config, files, shards, tensors, stored_dtype) -> None:
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(n for _, n in tensors)},
                 "weight_map": {name: file for file, names in zip(files, shards)
                                for name in names}}
        with open(os.path.join(path, INDEX_FILE), "w") as f:
            json.dump(index, f, indent=2)
    # Written last: a save cut short leaves a folder that fails to load, loudly.
    with open(os.path.join(path, CONFIG_FILE), "w") as f:
        json.dump(hf_config.to_hf_config(config, dtype=stored_dtype), f, indent=2)


def _remove_old_checkpoint(path: str) -> None:
    for file in os.listdir(path):
        if file in (CONFIG_FILE, SINGLE_FILE, INDEX_FILE) or (
                file.startswith("model-") and file.endswith(".safetensors")):
            os.remove(os.path.join(path, file))
