"""Building the parts of a run from its config: workdir, policy, tokenizer, data,
verifier, evaluation and export. Kept apart from train.py so the loop reads as a loop.
"""

from __future__ import annotations

import json
import os
import tempfile

import jax
import numpy as np

from rl_reason import models, sharding
from rl_reason.data import sources, synthetic
from rl_reason.data.stream import PromptStream, StreamExhausted
from rl_reason import verifiers

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
        raise OSError(f"workdir {workdir} is not writable: {e}") from e
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


class WorkdirMismatchError(ValueError):
    """The workdir holds a run whose method state cannot continue under this config."""


def identity_keys(config_json: dict) -> tuple[str, ...]:
    """method_name, and the keys its method names in `Method.identity_keys`."""
    from rl_reason.methods import METHODS  # late: methods import heavy modules
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
    """The checkpoint to start from; the embedded base policy when none is given."""
    if config.model.checkpoint:
        path = os.path.expanduser(config.model.checkpoint)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"model.checkpoint={config.model.checkpoint!r} is not a "
                                    "directory (expected a Hugging Face checkpoint folder)")
        return path
    from rl_reason import pretrain
    return pretrain.ensure_base_policy()


def load_policy(path: str, config, mesh) -> models.Model:
    base = models.read_config(path)
    model_config = base.replace(dtype=config.model.dtype, param_dtype=config.model.param_dtype)
    return models.load(path, dtype=config.model.dtype, param_dtype=config.model.param_dtype,
                       shardings=sharding.param_shardings(model_config, mesh))


def load_tokenizer_for(path: str):
    return models.load_tokenizer(path)


def stop_token_ids(tokenizer, model_config) -> tuple[int, ...]:
    """EOS ids of the model config and tokenizer, plus the chat end-of-turn token."""
    ids = set(model_config.eos_token_ids)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    for token in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id >= 0:
            ids.add(token_id)
    if not ids:
        raise ValueError("neither the model config nor the tokenizer names an EOS token; "
                         "generation would never stop")
    return tuple(sorted(ids))


def pad_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def make_data(config) -> tuple[PromptStream, list]:
    """Training stream and held-out records (the embedded task when none are given)."""
    d = config.data
    keys = dict(problem_key=d.problem_key or None, answer_key=d.answer_key or None)

    def load(spec):
        tfds_dir = d.tfds_data_dir if str(spec).startswith("tfds:") and d.tfds_data_dir else None
        return sources.load_records(spec, data_dir=tfds_dir, **keys)

    if d.train:
        train = load(d.train)
    else:
        train = synthetic.train_records(d.embedded_train_size, levels=tuple(d.embedded_levels))
    if d.eval:
        held_out = [r for spec in d.eval for r in load(spec)]
    elif not d.train:
        held_out = synthetic.held_out_records(d.embedded_eval_size,
                                               levels=tuple(d.embedded_levels))
    else:
        held_out = []
    if config.eval.max_problems:
        held_out = held_out[:config.eval.max_problems]
    stream = PromptStream(train, config.rollout.prompts_per_step, config.seed,
                          shuffle=d.shuffle, num_epochs=d.num_epochs or None)
    return stream, held_out


def make_verifier(verifier_config):
    return verifiers.make_verifier(verifier_config.name, num_workers=verifier_config.num_workers,
                                   timeout_s=verifier_config.timeout_s)


def to_device(batch: dict, row_sharding) -> dict:
    """Host arrays (identical on every process) -> global arrays split by rows."""
    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, row_sharding, lambda idx: x[idx])
    return {k: put(v) for k, v in batch.items()}


def export_hf(model: models.Model, tokenizer, path: str) -> None:
    models.save(model, path)
    if jax.process_index() == 0:
        tokenizer.save_pretrained(path)


def evaluate(model, tokenizer, records, config, *, rng, mesh, verifier, stop_ids, pad,
             out_path: str | None = None) -> dict:
    """Held-out metrics under 'eval/' (greedy accuracy, avg@k, pass@k, maj@k); the
    generations go to `out_path` (JSONL) so a run's answers can be read afterwards."""
    from rl_reason import evaluate as evaluate_lib

    settings = evaluate_lib.EvalSettings.from_config(config)
    results = evaluate_lib.evaluate_model(model, tokenizer, records, settings,
                                          verifier=verifier, stop_token_ids=stop_ids,
                                          pad_id=pad, rng=rng, mesh=mesh)
    if out_path and jax.process_index() == 0:
        os.makedirs(os.path.dirname(out_path), exist_ok=True)
        with open(out_path, "w") as f:
            for row in results.generations:
                f.write(json.dumps(row) + "\n")
    return {f"eval/{k}": v for k, v in results.metrics.items()
            if isinstance(v, (int, float))}
