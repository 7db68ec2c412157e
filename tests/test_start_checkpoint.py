"""experiments/start_checkpoint.py: trains once, reuses, refuses other settings, and
a run started from its folder works end to end on the embedded task."""

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))

import start_checkpoint as sc  # noqa: E402
from rl_reason import models, train  # noqa: E402

TINY = {"train.export_hf": True, "verifier.num_workers": 1}


def fake_run(calls):
    """train.run stand-in: records the config and exports a loadable folder."""
    def run(config, workdir):
        calls.append(config)
        os.makedirs(os.path.join(workdir, "hf"), exist_ok=True)
        for name in ("config.json", "model.safetensors"):
            open(os.path.join(workdir, "hf", name), "w").close()
        return {}
    return run


def test_trains_once_then_reuses_and_refuses_other_settings(tmp_path, monkeypatch, tiny_policy):
    calls = []
    monkeypatch.setattr(train, "run", fake_run(calls))
    monkeypatch.setattr(models, "load_tokenizer", lambda path: None)
    overrides = {"model.checkpoint": tiny_policy, **TINY}
    out = str(tmp_path / "start")
    path = sc.start_checkpoint("grpo:tiny", steps=2, seed=3, out=out, overrides=overrides)
    assert path == os.path.join(out, "checkpoint") and os.path.isfile(os.path.join(path, "config.json"))
    [config] = calls
    assert config.train.num_steps == 2 and config.seed == 3 and config.train.export_hf
    with open(os.path.join(out, sc.RECORD_FILE)) as f:
        record = json.load(f)
    assert record["steps"] == 2 and record["seed"] == 3 and record["config"] == "grpo:tiny"
    assert sc.start_checkpoint("grpo:tiny", steps=2, seed=3, out=out, overrides=overrides) == path
    assert len(calls) == 1   # never recomputed
    with pytest.raises(ValueError, match="use another --out"):
        sc.start_checkpoint("grpo:tiny", steps=3, seed=3, out=out, overrides=overrides)


def test_zero_steps_is_the_policy_the_config_starts_from(tiny_policy, tmp_path):
    assert sc.start_checkpoint("grpo:tiny", steps=0, seed=0, out=str(tmp_path),
                               overrides={"model.checkpoint": tiny_policy}) == tiny_policy
    with pytest.raises(ValueError, match="steps must be >= 0"):
        sc.start_checkpoint("grpo", steps=-1, seed=0, out=str(tmp_path))


def test_command_line_values():
    assert sc._value("3") == 3 and sc._value("0.5") == 0.5 and sc._value("(2, 3)") == (2, 3)
    assert sc._value("true") is True and sc._value("False") is False
    assert sc._value("/ckpt/qwen") == "/ckpt/qwen"


@pytest.mark.slow
def test_an_arm_starts_from_the_checkpoint_end_to_end(tiny_policy, tmp_path):
    """GRPO for one step, published; then a run of another seed starts from it with the
    embedded data and its held-out evaluation."""
    out = str(tmp_path / "start")
    path = sc.start_checkpoint("grpo:tiny", steps=1, seed=0, out=out,
                               overrides={"model.checkpoint": tiny_policy, **TINY})
    assert set(os.listdir(path)) >= {"config.json", "model.safetensors", "tokenizer.json",
                                     "tokenizer_config.json"}
    assert models.load_tokenizer(path).chat_template == models.load_tokenizer(tiny_policy).chat_template
    arm = sc.load_config("grpo:tiny", seed=1, overrides={"model.checkpoint": path, **TINY})
    arm.train.num_steps = 1
    train.run(arm, str(tmp_path / "arm"))
    with open(tmp_path / "arm" / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert any("eval/greedy_accuracy" in row for row in rows)
    assert os.path.isfile(tmp_path / "arm" / "hf" / "config.json")
