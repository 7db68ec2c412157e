"""One starting checkpoint shared by every arm of an experiment.

    python experiments/start_checkpoint.py --config=grpo --steps=20 --seed=0 \\
        --out=experiments/results/start/grpo_20 [--config.key=value ...]

or, from an experiment script (experiments/ is on sys.path when a script there runs):

    from start_checkpoint import start_checkpoint
    path = start_checkpoint("grpo", steps=20, seed=0, out="experiments/results/start/grpo_20")
    for method in ...:   # every arm starts from the same weights
        config.model.checkpoint = path

trains `configs/<config>.py` (a variant after a colon: "grpo:tiny") for `steps`
steps in OUT/run, a normal run (resumable: re-running continues it), then publishes
its exported policy as OUT/checkpoint: a Hugging Face folder with config.json, the
weights and the tokenizer files (chat template included), all the embedded task needs
(the base policy's base_policy_stats.json is only read by the warm-start cache, so it
stays with the base policy). OUT/start_checkpoint.json records what was trained and
the run's held-out report. A complete OUT/checkpoint is returned at once and never
recomputed; asking for it with other settings is an error, not a silent reuse.

steps=0 returns the policy the config starts from (the embedded base policy, built
if not cached, or model.checkpoint) without training.

The arms then differ only in the method: same weights, same tokenizer, and, with the
embedded task, the same training and held-out problems. An arm's optimizer starts
fresh (the optimizer state of the starting run is not carried over).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import shutil
import sys
import tempfile
from typing import Any, Mapping

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

RECORD_FILE = "start_checkpoint.json"


def load_config(config: str, seed: int, overrides: Mapping[str, Any] = ()):
    """configs/<name>.py[:variant] with the seed and dotted-key overrides applied."""
    name, _, variant = config.partition(":")
    module = importlib.import_module(f"configs.{name}")
    c = module.get_config(variant)
    c.unlock()
    c.seed = seed
    for key, value in dict(overrides).items():
        *sections, field = key.split(".")
        node = c
        for section in sections:
            node = node[section]
        node[field] = value
    return c


def _record(config: str, steps: int, seed: int, overrides: Mapping[str, Any]) -> dict:
    return {"config": config, "steps": steps, "seed": seed,
            "overrides": {k: v for k, v in sorted(dict(overrides).items())}}


def start_checkpoint(config: str, steps: int, seed: int, out: str,
                     overrides: Mapping[str, Any] | None = None) -> str:
    """The folder of `config` trained for `steps` steps with `seed` (see module doc)."""
    from rl_reason import models, plot, run_setup, train

    if steps < 0:
        raise ValueError(f"start_checkpoint: steps must be >= 0, got {steps}")
    overrides = dict(overrides or {})
    c = load_config(config, seed, overrides)
    if steps == 0:
        return os.path.abspath(run_setup.policy_path(c))
    out = os.path.abspath(out)
    final = os.path.join(out, "checkpoint")
    wanted = _record(config, steps, seed, overrides)
    # Through JSON, as the file holds it (tuples become lists).
    wanted = json.loads(json.dumps(wanted))
    record_path = os.path.join(out, RECORD_FILE)
    if os.path.isfile(os.path.join(final, "config.json")) and os.path.isfile(record_path):
        with open(record_path) as f:
            recorded = json.load(f)
        given = {k: recorded.get(k) for k in wanted}
        if given != wanted:
            raise ValueError(f"start_checkpoint: {final} was made with {given}, not {wanted}; "
                             "use another --out")
        return final
    c.train.update(num_steps=steps, export_hf=True)
    c.lock()
    workdir = os.path.join(out, "run")
    train.run(c, workdir)
    staging = tempfile.mkdtemp(prefix=".checkpoint.partial-", dir=out)
    try:
        folder = os.path.join(staging, "checkpoint")
        shutil.copytree(os.path.join(workdir, "hf"), folder)
        models.load_tokenizer(folder)   # fails here, not in every arm, if something is missing
        try:
            report = plot.held_out_report(workdir)
        except FileNotFoundError:
            report = None
        with open(os.path.join(out, RECORD_FILE), "w") as f:
            json.dump(wanted | {"source_run": workdir, "held_out_report": report}, f, indent=2)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.rename(folder, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"Start checkpoint: {final}", flush=True)
    return final


def _value(raw: str):
    """A command-line value: a Python literal (3, 0.5, (2, 3), 'x'), true / false, or
    the text itself."""
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="grpo", help="configs/<name>.py[:variant]")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args, rest = parser.parse_known_args(argv)
    overrides = {}
    for flag in rest:
        if not flag.startswith("--config.") or "=" not in flag:
            parser.error(f"unknown argument {flag!r} (only --config.key=value is passed on)")
        key, raw = flag[len("--config."):].split("=", 1)
        overrides[key] = _value(raw)
    print(start_checkpoint(args.config, args.steps, args.seed, args.out, overrides))


if __name__ == "__main__":
    main()
