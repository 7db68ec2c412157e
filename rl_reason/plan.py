"""Plan a run's sharding on a pod without its devices: abstract shapes only.

    python -m rl_reason.plan --config=configs/grpo.py:qwen3_4b --preset=qwen3-4b-base \
        --devices=64 --chip=v5e [--hbm_gib=16] [--config.mesh.tensor=8 ...]

Builds the config's mesh as a jax.sharding.AbstractMesh over `devices` chips, places
the abstract parameters and AdamW state with the project's partition rules, and
prints what each chip holds: parameters, gradients, optimizer moments, the frozen
reference (when the method's own loss settings have a KL term: `needs_reference`)
and the sampler's KV cache for the method's largest sampler call
(`Method.sampler_shape`: its slots, the rows decoded at once, up to
`rollout.max_sample_batch`, and the contexts its requests carry, e.g. earlier attempts
and feedback turns, hints, failure prefixes, reflection requests; bucketed as the
sampler buckets them). With --chip, it also estimates the sampling time of a step's
rollout round in the continuous batch and in a static one (rl_reason/plan_sampling.py,
which states its assumptions; the line printed names them). Each of the
method's extras is printed with the assumption behind it. Activations of the update
are not counted (they depend on remat and the minibatch size); the headroom left for
them is printed. Host memory that a method's state may reach (ExGRPO's replay
buffer) is printed apart, with the assumption behind its estimate. Nothing is allocated, so a 70B plan
runs on a laptop. Exit status: 0 when the plan fits, 1 when it does not, 2 for a user
error such as a mesh that does not match the device count (one line `error: ...`,
rl_reason/errors.py).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.sharding import AbstractMesh, AxisType

from rl_reason import plan_sampling, sharding, update
from rl_reason.errors import ConfigError
from rl_reason.errors import exit_on_user_error
from rl_reason.models.config import ModelConfig
from rl_reason.sampling import shapes

GIB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Plan:
    mesh_shape: dict[str, int]
    bytes_per_device: dict[str, float]   # parameters, gradients, optimizer, reference, kv_cache
    replicated_params: list[str]         # parameters no mesh axis could split
    hbm_bytes: float
    # Why an entry of bytes_per_device has its size, where the method decides it.
    assumptions: dict[str, str] = dataclasses.field(default_factory=dict)
    # The KV cache's shape: rows decoded at once (the sampler's slots) and cache
    # positions per row of the method's largest sampler call.
    sampler_rows: int = 0
    sampler_slots: int = 0
    # With a chip: the estimated sampling time of a step's rollout round.
    sampling: plan_sampling.SamplingEstimate | None = None
    # Host memory per process of the method's state (not on the chips), with the
    # assumption behind each estimate.
    host_bytes: dict[str, float] = dataclasses.field(default_factory=dict)
    host_assumptions: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.bytes_per_device.values())

    @property
    def fits(self) -> bool:
        return self.total <= self.hbm_bytes

    def table(self) -> str:
        lines = [f"mesh {self.mesh_shape} ({math.prod(self.mesh_shape.values())} chips)"]
        for name, b in self.bytes_per_device.items():
            why = f" ({self.assumptions[name]})" if name in self.assumptions else ""
            lines.append(f"  {name:<12} {b / GIB:8.2f} GiB per chip{why}")
        lines.append(f"  {'total':<12} {self.total / GIB:8.2f} GiB of {self.hbm_bytes / GIB:.0f} "
                     f"GiB ({'fits' if self.fits else 'DOES NOT FIT'}; "
                     f"{(self.hbm_bytes - self.total) / GIB:.2f} GiB left for activations)")
        for name, b in self.host_bytes.items():
            lines.append(f"  {name:<12} {b / GIB:8.2f} GiB host memory per process "
                         f"({self.host_assumptions[name]})")
        if self.sampling is not None:
            e = self.sampling
            lines.append(f"  sampling     {e.continuous_s:8.1f} s a round in the continuous batch, "
                         f"{e.static_s:.1f} s in a static one ({e.speedup:.1f}x; estimate: "
                         f"{e.assumption})")
        if self.replicated_params:
            lines.append("  replicated (no axis divides them): "
                         + ", ".join(self.replicated_params))
        return "\n".join(lines)


def abstract_mesh(config, num_devices: int) -> AbstractMesh:
    sizes = [config.mesh.data, config.mesh.fsdp, config.mesh.tensor]
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ConfigError(f"mesh data={config.mesh.data}, fsdp={config.mesh.fsdp}, "
                          f"tensor={config.mesh.tensor} does not fit {num_devices} devices")
    return AbstractMesh(tuple(sizes), sharding.MESH_AXES, axis_types=(AxisType.Auto,) * 3)


def _per_device_bytes(abstract_tree, shardings_tree) -> float:
    def one(x, s):
        shard = s.shard_shape(x.shape)
        return math.prod(shard) * jnp.dtype(x.dtype).itemsize
    return float(sum(jax.tree.leaves(jax.tree.map(one, abstract_tree, shardings_tree))))


def plan(config, model_config: ModelConfig, num_devices: int, hbm_gib: float,
         chip: str | None = None) -> Plan:
    mesh = abstract_mesh(config, num_devices)
    model_config = dataclasses.replace(model_config, dtype=config.model.dtype,
                                       param_dtype=config.model.param_dtype)
    params_sh = sharding.param_shardings(model_config, mesh)
    abstract = sharding.param_shapes(model_config)
    optimizer = update.make_optimizer(config.optim)
    opt_abstract = jax.eval_shape(optimizer.init, abstract)
    state_sh = update.state_shardings(params_sh, optimizer, abstract, mesh)

    from rl_reason.methods.registry import make_method

    # Built without a tokenizer: only its settings are read.
    method = make_method(config.method_name, config, None)
    params = _per_device_bytes(abstract, params_sh)
    sizes = {"parameters": params, "gradients": params,
             "optimizer": _per_device_bytes(opt_abstract, state_sh.opt_state)}
    assumptions = {}
    if method.needs_reference():
        sizes["reference"] = params
        assumptions["reference"] = (f"{config.method_name}'s loss has kl_coef="
                                    f"{method.loss_config().kl_coef:g}")
    call = method.sampler_shape(config)
    # As the sampler pads them: its slots to a bucket of the rows (at most
    # max_sample_batch) and the data-parallel size, the longest context and the
    # largest budget each to a bucket (rl_reason/sampling/shapes.py).
    dp = sharding.data_parallel_size(mesh)
    rows = shapes.slot_count(call.rows, config.rollout.max_sample_batch, dp)
    slots = shapes.bucket(call.context, minimum=16) + shapes.bucket(call.new_tokens)
    assumptions["kv_cache"] = (f"{rows} slots (rows decoded at once) x {slots} positions: "
                               f"{call.assumption}")
    cache_sh = sharding.cache_sharding(model_config, rows, slots, mesh)
    cache = jax.ShapeDtypeStruct(
        (rows, model_config.num_kv_heads, model_config.head_dim, slots),
        jnp.dtype(config.model.dtype))
    # Keys and values, one array per layer.
    sizes["kv_cache"] = 2 * model_config.num_layers * _per_device_bytes(cache, cache_sh)

    # Dimensions whose logical axis maps to mesh axes that do not divide them.
    replicated = []
    axes = sharding.param_logical_axes(model_config)
    for (path, sh), (_, logical), (_, shape) in zip(
            jax.tree_util.tree_leaves_with_path(params_sh),
            jax.tree_util.tree_leaves_with_path(axes, is_leaf=lambda x: isinstance(x, tuple)),
            jax.tree_util.tree_leaves_with_path(abstract)):
        for dim, (name, spec) in enumerate(zip(logical, sh.spec)):
            if sharding.LOGICAL_TO_MESH[name] is not None and spec is None:
                key = "/".join(str(getattr(k, "key", k)) for k in path)
                replicated.append(f"{key}[{dim}]={shape.shape[dim]} ({name})")
    host = method.host_memory(config)
    estimate = None
    if chip is not None:
        r = config.rollout
        estimate = plan_sampling.estimate(
            model_config, plan_sampling.CHIPS[chip], chips=num_devices,
            rows=r.prompts_per_step * r.group_size, slots=rows, context=r.max_prompt_len,
            budget=r.max_new_tokens, dtype_bytes=jnp.dtype(config.model.dtype).itemsize)
    return Plan(dict(mesh.shape), sizes, replicated, hbm_gib * GIB, assumptions,
                sampler_rows=rows, sampler_slots=slots, sampling=estimate,
                host_bytes={k: float(b) for k, (b, _) in host.items()},
                host_assumptions={k: why for k, (_, why) in host.items()})


@exit_on_user_error
def main(argv=None) -> None:
    import os
    import sys

    from absl import flags
    from ml_collections import config_flags
    from rl_reason.config_flag import parse_flags
    from rl_reason.models import get_preset

    # Config files import `configs.base`; make the repository root importable.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    # The trainer's config files with their --config.key=value overrides, so a layout
    # is tried without editing the config (--config.mesh.tensor=8). A FlagValues of its
    # own: calling main twice in one process does not redefine absl's global flags.
    args = [sys.argv[0]] + list(sys.argv[1:] if argv is None else argv)
    fv = flags.FlagValues()
    config_flag = config_flags.DEFINE_config_file(
        "config", None, "configs/<method>.py[:variant]", flag_values=fv, sys_argv=args)
    preset = flags.DEFINE_string("preset", None, "model preset, e.g. qwen3-4b-base",
                                 flag_values=fv)
    devices = flags.DEFINE_integer("devices", None, "chips in the slice", lower_bound=1,
                                   flag_values=fv)
    chip = flags.DEFINE_enum("chip", None, list(plan_sampling.CHIPS),
                             "the chip: its memory, and an estimate of the sampling time",
                             flag_values=fv)
    hbm_gib = flags.DEFINE_float("hbm_gib", None, "memory per chip (v5e 16, v6e 32, v5p 95, "
                                 "H100 80; default: --chip's, else 16)", flag_values=fv)
    flags.mark_flags_as_required(["config", "preset", "devices"], flag_values=fv)
    try:
        parse_flags(args, fv)   # a mistake in --config: one line and status 2 from here
    except flags.Error as e:
        usage = __doc__.split("\n\n")[0]
        sys.exit(f"rl_reason.plan: {e}\n{usage}")
    memory = hbm_gib.value or (plan_sampling.CHIPS[chip.value].hbm_gib if chip.value else 16.0)
    result = plan(config_flag.value, get_preset(preset.value), devices.value, memory,
                  chip=chip.value)
    config_name = config_flags.get_config_filename(fv["config"])
    print(f"{preset.value} with {config_name} on {devices.value} chips:")
    print(result.table())
    if not result.fits:
        sys.exit(1)


if __name__ == "__main__":
    main()
