"""Building the parts of a run from its config: workdir, policy, tokenizer, data,
verifier and export. Kept apart from train.py so the loop reads as a loop; the
held-out evaluation itself is rl_reason/evaluate.py's (which imports this module, never
the other way round).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import jax

from rl_reason import models, sharding
from rl_reason.data import prompt_filter, sources, worlds
from rl_reason.data.stream import PromptStream, StreamExhausted
from rl_reason import verifiers
from rl_reason.errors import ConfigError, MissingPathError, UnwritablePathError, UserError

DataExhausted = StreamExhausted


def prepare_workdir(workdir: str, config) -> str:
    """Create the workdir, prove it is writable, and record the config in it.

    Fails before any compute if the directory cannot be written, or if it holds a run
    of another method (`check_same_run`); when resuming with an otherwise changed
    config, says which keys differ (the run continues with the new values).
    """
    workdir = os.path.abspath(os.path.expanduser(workdir))
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write_test_"):
            pass
    except OSError as e:
        raise UnwritablePathError(f"workdir {workdir} is not writable: {e}") from e
    path = os.path.join(workdir, "config.json")
    new = json.loads(config.to_json_best_effort())
    old = None
    if os.path.exists(path):
        with open(path) as f:
            try:
                old = json.load(f)
            except json.JSONDecodeError:
                old = {}
        # On every process that sees the file, so none of them goes on alone.
        if old:
            check_same_run(old, new, path)
    if jax.process_index() != 0:
        return workdir
    if old is not None:
        changed = sorted(_diff(old, new))
        if changed:
            print(f"Note: the config differs from the one recorded in {path} at: "
                  f"{', '.join(changed)}", flush=True)
    with open(path + ".tmp", "w") as f:
        json.dump(new, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)
    return workdir


class WorkdirMismatchError(UserError, ValueError):
    """The workdir holds a run whose method state cannot continue under this config."""


def identity_keys(config_json: dict) -> tuple[str, ...]:
    """method_name, and the keys its method names in `Method.identity_keys`."""
    from rl_reason.methods.registry import METHODS  # late: methods import heavy modules
    method = METHODS.get(config_json.get("method_name"))
    return ("method_name",) + (method.identity_keys if method else ())


def check_same_run(old: dict, new: dict, path: str) -> None:
    """Raise WorkdirMismatchError when an identity key of the run recorded at `path`
    differs: its checkpoint's method state (a GRPO run's empty one resumed as ExGRPO,
    a buffer bucketed by another group size) would be read as something it is not."""
    def get(tree, dotted):
        for part in dotted.split("."):
            tree = tree.get(part) if isinstance(tree, dict) else None
        return tree

    keys = dict.fromkeys(identity_keys(old) + identity_keys(new))
    differ = [f"{k}: {get(old, k)!r} there, {get(new, k)!r} now" for k in keys
              if get(old, k) != get(new, k)]
    if differ:
        raise WorkdirMismatchError(
            f"the workdir {os.path.dirname(path)} holds a different run ({'; '.join(differ)}), "
            "which cannot be resumed with this config; give another --workdir, or delete "
            "that one to start over")


def _diff(old, new, prefix="") -> set[str]:
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return set() if old == new else {prefix.rstrip(".") or "<root>"}
    out = set()
    for k in set(old) | set(new):
        out |= _diff(old.get(k), new.get(k), f"{prefix}{k}.")
    return out


def policy_path(config) -> str:
    """The checkpoint to start from; the embedded world's base policy when none is
    given. A policy of an embedded world (its world.json) must be trained in that world
    when the run trains on the embedded task."""
    from rl_reason import pretrain
    if not config.model.checkpoint:
        return pretrain.ensure_base_policy(config.world.name, config.world.skill)
    path = os.path.expanduser(config.model.checkpoint)
    if not os.path.isdir(path):
        raise MissingPathError(f"model.checkpoint={config.model.checkpoint!r} is not a "
                               "directory (expected a Hugging Face checkpoint folder)")
    built_for = pretrain.read_world(path)
    if built_for and not config.data.train and built_for["world"] != config.world.name:
        raise ConfigError(f"model.checkpoint={config.model.checkpoint!r} is a policy of the "
                          f"{built_for['world']!r} world, but world.name={config.world.name!r}; "
                          f"set --config.world.name={built_for['world']}")
    return path


def load_policy(path: str, config, mesh) -> models.Model:
    base = models.read_config(path)
    model_config = base.replace(dtype=config.model.dtype, param_dtype=config.model.param_dtype)
    return models.load(path, dtype=config.model.dtype, param_dtype=config.model.param_dtype,
                       shardings=sharding.param_shardings(model_config, mesh))


def load_tokenizer_for(path: str):
    return models.load_tokenizer(path)


def _load_records(data_config, spec: str) -> list:
    d = data_config
    tfds_dir = d.tfds_data_dir if str(spec).startswith("tfds:") and d.tfds_data_dir else None
    return sources.load_records(spec, data_dir=tfds_dir, problem_key=d.problem_key or None,
                                answer_key=d.answer_key or None)


def held_out_records(config) -> list:
    """A run's held-out records: its data.eval files, else (training on the embedded
    task) the embedded held-out split at data.embedded_eval_levels (default: the
    training levels) and embedded_eval_size, else none; the first eval.max_problems of
    them. The trainer and
    `rl_reason.evaluate --config` both call this, so they score the same problems."""
    d = config.data
    if d.eval:
        held_out = [r for spec in d.eval for r in _load_records(d, spec)]
    elif not d.train:
        held_out = worlds.get(config.world.name).task.held_out_records(
            d.embedded_eval_size, levels=tuple(d.embedded_eval_levels or d.embedded_levels))
    else:
        held_out = []
    if config.eval.max_problems:
        held_out = held_out[:config.eval.max_problems]
    return held_out


def make_data(config, tokenizer) -> tuple[PromptStream, list]:
    """Training stream and held-out records (the embedded task when none are given).
    Training prompts longer than rollout.max_prompt_len tokens are dropped, with a
    warning (data/prompt_filter.py)."""
    d = config.data
    if d.train:
        train = _load_records(d, d.train)
    else:
        train = worlds.get(config.world.name).task.train_records(
            d.embedded_train_size, levels=tuple(d.embedded_levels))
    train, _ = prompt_filter.drop_long_prompts(train, tokenizer, config.rollout.max_prompt_len)
    stream = PromptStream(train, config.rollout.prompts_per_step, config.seed,
                          shuffle=d.shuffle, num_epochs=d.num_epochs or None)
    return stream, held_out_records(config)


def make_verifier(verifier_config):
    return verifiers.make_verifier(verifier_config.name, num_workers=verifier_config.num_workers,
                                   timeout_s=verifier_config.timeout_s)


def world_label(world: dict) -> str:
    """'traps_v1 (skill 0.5)' for a world record, the version alone without a dial."""
    skill = world.get("skill")
    return world["version"] if skill is None else f"{world['version']} (skill {skill:g})"


def record_world(workdir: str, model_path: str) -> dict | None:
    """Copies the start policy's world record (pretrain.WORLD_FILE) into the workdir,
    so that every run says which world and dial setting it started in; None for a
    policy of no embedded world (a real checkpoint)."""
    from rl_reason import pretrain
    world = pretrain.read_world(model_path)
    if world is not None and jax.process_index() == 0:
        with open(os.path.join(workdir, pretrain.WORLD_FILE), "w") as f:
            json.dump(world, f)
    return world


def export_hf(model: models.Model, tokenizer, path: str, source: str | None = None) -> None:
    """Writes the policy in Hugging Face format; the world record of `source` (the
    policy the run started from) goes with it."""
    from rl_reason import pretrain
    models.save(model, path)
    if jax.process_index() == 0:
        tokenizer.save_pretrained(path)
        if source and pretrain.read_world(source) is not None:
            shutil.copy(os.path.join(source, pretrain.WORLD_FILE), path)
