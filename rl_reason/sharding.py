"""Meshes, partition rules and multi-host start-up: the project's sharding vocabulary.

Every array is sharded over one 3-axis mesh:

    data    pure data parallelism (parameters replicated across it)
    fsdp    data parallelism whose parameters are also split across it (ZeRO-3 style)
    tensor  Megatron-style model parallelism over heads, MLP units and vocabulary

Arrays do not name mesh axes directly. Each dimension gets a *logical* axis, and one
small table maps logical axes to mesh axes:

    batch     -> ('data', 'fsdp')   activations, tokens, KV cache rows
    embed     -> 'fsdp'             the model dimension D of weight matrices
    vocab     -> 'tensor'
    heads     -> 'tensor'           query heads H
    kv_heads  -> 'tensor'           key/value heads K
    mlp       -> 'tensor'           MLP units F
    layers    -> replicated         the stacked-layer axis L (scanned over)
    None      -> replicated         norms, head_dim, sequence

A dimension whose size is not a multiple of its mesh axes' total size is replicated
instead (e.g. 2 KV heads on tensor=4), so any model shards on any mesh without errors;
the cost is memory, never correctness.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from rl_reason.models import transformer
from rl_reason.models.config import ModelConfig

MESH_AXES = ("data", "fsdp", "tensor")

LOGICAL_TO_MESH: dict[str | None, str | tuple[str, ...] | None] = {
    "batch": ("data", "fsdp"),
    "embed": "fsdp",
    "vocab": "tensor",
    "heads": "tensor",
    "kv_heads": "tensor",
    "mlp": "tensor",
    "layers": None,
    None: None,
}

# Logical axes of every parameter, keyed by its path in transformer.init_params.
_LAYER_AXES: dict[str, tuple[str | None, ...]] = {
    "attn_norm": ("layers", None),
    "mlp_norm": ("layers", None),
    "q": ("layers", "embed", "heads", None),
    "k": ("layers", "embed", "kv_heads", None),
    "v": ("layers", "embed", "kv_heads", None),
    "o": ("layers", "heads", None, "embed"),
    "q_bias": ("layers", "heads", None),
    "k_bias": ("layers", "kv_heads", None),
    "v_bias": ("layers", "kv_heads", None),
    "q_norm": ("layers", None),
    "k_norm": ("layers", None),
    "gate": ("layers", "embed", "mlp"),
    "up": ("layers", "embed", "mlp"),
    "down": ("layers", "mlp", "embed"),
}
_TOP_AXES: dict[str, tuple[str | None, ...]] = {
    "embed": ("vocab", "embed"),
    "final_norm": (None,),
    "lm_head": ("embed", "vocab"),
}

# Each layer's KV cache arrays (transformer.init_cache): keys [B, K, E, S] and values
# [B, K, S, E]. Only the first two are split, so one rule serves both.
CACHE_AXES = ("batch", "kv_heads", None, None)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ('data', 'fsdp', 'tensor') mesh over `devices` (default: all devices).

    At most one axis may be -1, meaning "whatever is left": make_mesh() is pure data
    parallelism, make_mesh(data=1, fsdp=-1) is pure FSDP.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = [data, fsdp, tensor]
    for name, size in zip(MESH_AXES, sizes):
        if size == 0 or size < -1:
            raise ValueError(f"make_mesh: {name}={size}; use a positive size or -1 (fill)")
    if sizes.count(-1) > 1:
        raise ValueError(f"make_mesh: at most one axis may be -1, got data={data}, "
                         f"fsdp={fsdp}, tensor={tensor}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"make_mesh: {len(devices)} devices cannot be split into "
                             f"data={data}, fsdp={fsdp}, tensor={tensor}")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(f"make_mesh: data*fsdp*tensor = {'*'.join(map(str, sizes))} = "
                         f"{math.prod(sizes)} but there are {len(devices)} devices")
    # Auto axes: shardings are propagated by the compiler from the inputs and the few
    # constraints we set (jax.make_mesh would default to Explicit sharding types).
    axis_types = (AxisType.Auto,) * len(MESH_AXES)
    # jax.make_mesh orders devices so that the last (tensor) axis gets the fastest
    # interconnect; fall back to a plain reshape for explicit device subsets.
    if devices == list(jax.devices()):
        return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types, devices=devices)
    return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES, axis_types=axis_types)


def _axis_size(mesh, mesh_axes) -> int:
    if mesh_axes is None:
        return 1
    names = (mesh_axes,) if isinstance(mesh_axes, str) else mesh_axes
    return math.prod(mesh.shape[n] for n in names)


def logical_spec(shape: Sequence[int], logical_axes: Sequence[str | None],
                 mesh) -> PartitionSpec:
    """PartitionSpec for an array of `shape` whose dims have these logical axes.

    Dims that do not divide evenly by their mesh axes are replicated.
    """
    if len(shape) != len(logical_axes):
        raise ValueError(f"shape {tuple(shape)} has {len(shape)} dims but logical axes "
                         f"{tuple(logical_axes)} name {len(logical_axes)}")
    spec = []
    for size, name in zip(shape, logical_axes):
        if name not in LOGICAL_TO_MESH:
            raise ValueError(f"unknown logical axis {name!r}; known: {list(LOGICAL_TO_MESH)}")
        mesh_axes = LOGICAL_TO_MESH[name]
        spec.append(mesh_axes if size % _axis_size(mesh, mesh_axes) == 0 else None)
    return PartitionSpec(*spec)


def logical_sharding(shape: Sequence[int], logical_axes: Sequence[str | None],
                     mesh) -> NamedSharding:
    return NamedSharding(mesh, logical_spec(shape, logical_axes, mesh))


def param_shapes(config: ModelConfig):
    # Shapes only: no parameter memory is allocated, even for a 70B config.
    return jax.eval_shape(functools.partial(transformer.init_params, config),
                          jax.random.key(0))


def param_logical_axes(config: ModelConfig) -> dict[str, Any]:
    """Logical axes of every parameter, with exactly init_params(config)'s structure."""
    shapes = param_shapes(config)
    axes = {name: _TOP_AXES[name] for name in shapes if name != "layers"}
    axes["layers"] = {}
    for name in shapes["layers"]:
        if name not in _LAYER_AXES:
            raise ValueError(f"no sharding rule for parameter layers/{name}; add it to "
                             "sharding._LAYER_AXES")
        axes["layers"][name] = _LAYER_AXES[name]
    return axes


def param_shardings(config: ModelConfig, mesh) -> dict[str, Any]:
    """NamedSharding per parameter, matching transformer.init_params(config) exactly.

    Works with a concrete Mesh and with a jax.sharding.AbstractMesh (planning a
    pod layout without its devices). Built once per (config, mesh): the sampler asks at
    every call, and building them traces init_params.
    """
    return _param_shardings(config, mesh)


@functools.lru_cache(maxsize=32)
def _param_shardings(config: ModelConfig, mesh) -> dict[str, Any]:
    shapes = param_shapes(config)
    axes = param_logical_axes(config)
    return jax.tree.map(lambda s, a: logical_sharding(s.shape, a, mesh), shapes, axes,
                        is_leaf=lambda x: isinstance(x, tuple))


def shard_params(params, config: ModelConfig, mesh: Mesh):
    """Places (or re-places) a parameter tree on `mesh` by the partition rules; a tree
    already placed so (the trainer's parameters, at every sampler call) is returned
    as it is."""
    target = param_shardings(config, mesh)
    placed = jax.tree.map(lambda x, s: isinstance(x, jax.Array) and x.sharding == s,
                          params, target)
    if all(jax.tree.leaves(placed)):
        return params
    return jax.device_put(params, target)


def cache_sharding(config: ModelConfig, batch: int, length: int, mesh) -> NamedSharding:
    """Sharding of each per-layer cache array, keys and values alike (B and K split)."""
    shape = (batch, config.num_kv_heads, config.head_dim, length)
    return logical_sharding(shape, CACHE_AXES, mesh)


def batch_sharding(mesh) -> NamedSharding:
    """Leading (batch) dim split over ('data', 'fsdp'); the other dims replicated.

    The batch must be a multiple of data_parallel_size(mesh).
    """
    return NamedSharding(mesh, PartitionSpec(LOGICAL_TO_MESH["batch"]))


def data_parallel_size(mesh) -> int:
    return _axis_size(mesh, LOGICAL_TO_MESH["batch"])


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def _cluster_detected() -> bool:
    # The environments jax.distributed.initialize() can configure itself from (Cloud
    # TPU VMs and GKE TPU slices via the metadata server / TPU_* variables, SLURM,
    # Open MPI, Kubernetes). This is jax's own detection list (private; jax is pinned).
    from jax._src import clusters
    return any(not env.opt_in_only_method and env.is_env_present()
               for env in clusters.ClusterEnv._cluster_types)


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
    """Connects the processes of a multi-host job; call first, before any JAX work.

    - TPU pods (Cloud TPU VMs, GKE TPU slices), SLURM and Open MPI jobs: call with no
      arguments on every host; jax.distributed.initialize discovers the coordinator,
      process count and process id itself (on TPU VMs from the GCE metadata server).
    - Anywhere else (e.g. several GPU hosts): pass all three arguments, or set
      JAX_COORDINATOR_ADDRESS and pass the other two.
    - A single process with nothing configured: returns False and does nothing, so
      the same entry point runs on a laptop.

    Returns True when this process is part of an initialised distributed job.
    """
    if jax.distributed.is_initialized():
        return True
    configured = (coordinator_address is not None or num_processes is not None
                  or process_id is not None)
    configured = configured or os.environ.get("JAX_COORDINATOR_ADDRESS") is not None
    if not configured and not _cluster_detected():
        return False
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
    return True


def to_device(batch: dict, row_sharding) -> dict:
    """Host arrays (identical on every process) -> global arrays split by rows."""
    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, row_sharding, lambda idx: x[idx])
    return {k: put(v) for k, v in batch.items()}
