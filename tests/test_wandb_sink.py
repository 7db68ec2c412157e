"""Weights & Biases as a metrics sink (rl_reason/wandb_sink.py), offline: a run's W&B
records, read back from its files, hold what metrics.jsonl holds and the run config; a
resumed run continues the same W&B run; off, or without the package, nothing changes."""

import glob
import json
import math
import os
import struct
import subprocess
import sys

import pytest

from configs import grpo
from rl_reason import config_check, train, wandb_sink

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def offline_records(path):
    """The records of an offline run file (run-<id>.wandb): W&B's header, then the
    LevelDB log format (32 KiB blocks of chunks, each with crc32, length and type:
    1 full, 2 first, 3 middle, 4 last), each record a wandb_internal_pb2.Record."""
    from wandb.proto import wandb_internal_pb2

    block, head = 32768, 7
    with open(path, "rb") as f:
        data = f.read()
    assert data[:head] == b":W&B\xe1\xbe\x00", f"{path}: not a W&B run file"
    position, payload = head, b""
    while position + head <= len(data):
        left = block - position % block
        if left < head:                              # a block's tail too short for a chunk
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + head])
        if kind == 0:                                # zero padding to the block's end
            position += left
            continue
        payload += data[position + head:position + head + length]
        position += head + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            payload = b""
            yield record


def read_offline_runs(wandb_dir):
    """{run id: (config, {step: {metric: value}})} over every offline run under
    wandb_dir; runs sharing an id (a run and its resumptions) are merged."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(wandb_dir, "wandb", "offline-run-*", "*.wandb"))):
        run_id = os.path.basename(path)[len("run-"):-len(".wandb")]
        config, history = runs.setdefault(run_id, ({}, {}))
        for record in offline_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                config.update({u.key: json.loads(u.value_json) for u in record.run.config.update})
            elif kind == "history":
                row = history.setdefault(record.history.step.num, {})
                for item in record.history.item:
                    name = "/".join(item.nested_key) or item.key
                    if not name.startswith("_"):     # W&B's own _step, _runtime, _timestamp
                        row[name] = json.loads(item.value_json)
    return runs


def jsonl_by_step(workdir):
    rows = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            step = row.pop("step")
            row.pop("wall_time")
            rows.setdefault(step, {}).update(row)
    return rows


def same_value(jsonl, logged):
    if jsonl is None:                  # metrics.jsonl writes a non-finite number as null
        return isinstance(logged, float) and not math.isfinite(logged)
    return jsonl == logged or (isinstance(jsonl, float) and math.isclose(jsonl, logged))


def run_config(policy, **overrides):
    c = grpo.get_config("tiny")
    c.unlock()
    c.model.checkpoint = policy
    c.train.export_hf = False
    c.verifier.num_workers = 1
    for key, value in overrides.items():
        section, name = key.split(".")
        c[section][name] = value
    return c


@pytest.fixture
def offline(tmp_path, monkeypatch):
    wandb_dir = tmp_path / "wandb_files"
    wandb_dir.mkdir()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(wandb_dir))
    monkeypatch.setenv("WANDB_SILENT", "true")
    return str(wandb_dir)


def test_an_offline_run_holds_the_metrics_and_config_and_resumes_the_same_run(
        tiny_policy, tmp_path, offline):
    pytest.importorskip("wandb", reason="the W&B sink needs wandb: pip install -e '.[wandb]'")
    workdir = str(tmp_path / "run")
    train.run(run_config(tiny_policy, **{"logging.wandb": True, "train.num_steps": 2}), workdir)
    with open(os.path.join(workdir, wandb_sink.RUN_FILE)) as f:
        run_id = json.load(f)["id"]
    # The same command with one more step resumes the run, and the same W&B run.
    train.run(run_config(tiny_policy, **{"logging.wandb": True, "train.num_steps": 3}), workdir)

    runs = read_offline_runs(offline)
    assert list(runs) == [run_id]
    assert len(glob.glob(os.path.join(offline, "wandb", "offline-run-*"))) == 2   # 2 sessions
    config, history = runs[run_id]
    expected = jsonl_by_step(workdir)
    assert sorted(history) == sorted(expected) == [0, 1, 2, 3]
    for step, row in expected.items():
        assert set(history[step]) == set(row), step
        different = [k for k, v in row.items() if not same_value(v, history[step][k])]
        assert not different, (step, different)
    assert "eval/greedy_accuracy" in history[0] and "loss" in history[3]
    with open(os.path.join(workdir, "config.json")) as f:
        recorded = json.load(f)
    assert {k: config[k] for k in recorded} == recorded
    assert config["logging"]["wandb"] is True and config["rollout"]["group_size"] == 4


class FakeRun:
    id = "fake"

    def __init__(self):
        self.logged, self.exit_code = [], None

    def log(self, row, step):
        self.logged.append((step, row))

    def finish(self, exit_code):
        self.exit_code = exit_code


def test_steps_a_crashed_run_logged_are_not_logged_again(tmp_path):
    """The W&B run holds steps up to 5; the run resumed from a step-3 checkpoint redoes
    4 and 5, which W&B cannot take back: they are skipped, and 6 is logged."""
    run_file = str(tmp_path / wandb_sink.RUN_FILE)
    run = FakeRun()
    sink = wandb_sink.WandbSink(run, run_file, logged_through=5)
    for step in (4, 5, 6, 6):
        sink.log(step, {"loss": float(step)})
    assert run.logged == [(6, {"loss": 6.0}), (6, {"loss": 6.0})]
    with open(run_file) as f:
        assert json.load(f) == {"id": "fake", "logged_through_step": 6}
    sink.close()
    assert run.exit_code == 0


def test_a_run_closed_by_an_exception_is_marked_failed(tmp_path):
    run = FakeRun()
    sink = wandb_sink.WandbSink(run, str(tmp_path / wandb_sink.RUN_FILE), logged_through=-1)
    with pytest.raises(RuntimeError):
        try:
            raise RuntimeError("the step crashed")
        finally:                      # as the trainer closes its outputs
            sink.close()
    assert run.exit_code == 1


def test_off_needs_no_wandb_and_writes_nothing_for_it(tiny_policy, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)     # `import wandb` fails
    workdir = str(tmp_path / "run")
    train.run(run_config(tiny_policy, **{"train.num_steps": 1}), workdir)
    assert os.path.exists(os.path.join(workdir, "metrics.jsonl"))
    assert not os.path.exists(os.path.join(workdir, wandb_sink.RUN_FILE))
    assert not os.path.exists(os.path.join(workdir, "wandb"))


def test_on_without_the_package_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    c = run_config("", **{"logging.wandb": True})
    with pytest.raises(wandb_sink.WandbError, match=r"logging.wandb=True needs the wandb "
                                                    r"package \(pip install -e '.\[wandb\]'\)"):
        config_check.check(c, num_devices=1)


def test_the_train_command_says_so_in_one_line(tmp_path):
    """Through the command line, with an installed wandb that cannot be imported."""
    blocker = tmp_path / "site" / "wandb"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('wandb is broken here')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, "-m", "rl_reason.main", "--config=configs/grpo.py:tiny",
         "--config.logging.wandb=True", f"--workdir={tmp_path / 'run'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: logging.wandb=True needs the wandb package (pip install -e '.[wandb]'): "
        "wandb is broken here")
    assert "Traceback" not in result.stderr
