"""The embedded base policy: a tiny real build, the cache, crash safety and the command line.

One real build (tiny size, a few steps: compile-bound, about 30 s on 2 cores); the
cache and crash tests replace the expensive parts.
"""

import dataclasses
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from rl_reason import models, pretrain, pretrain_eval
from rl_reason.data import probes, tokenizer_builder, warm_start, worlds

TINY = pretrain.Settings(**pretrain.SIZES["tiny"], steps=2, max_new_tokens=16)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("cache") / "base")
    stats = pretrain.build_base_policy(out, TINY)
    return out, stats


def _leftovers(parent):
    return [p for p in os.listdir(parent) if p.startswith(".")]


def test_build_writes_a_complete_loadable_checkpoint(built):
    out, stats = built
    assert pretrain.is_complete(out)
    assert not _leftovers(os.path.dirname(out))  # staging folder renamed, nothing left behind
    model, tok = models.load(out), models.load_tokenizer(out)
    assert model.config.vocab_size == len(tok) == TINY.vocab_size
    assert model.config.hidden_size == TINY.hidden and model.config.num_layers == TINY.layers
    assert tuple(model.config.eos_token_id) == models.stop_token_ids(tok) == (1, 3)
    assert model.config.pad_token_id == tok.pad_token_id == 0
    assert tok.chat_template == tokenizer_builder.CHAT_TEMPLATE
    logits = models.logits(model, np.array([tok.encode("What is 2+3?")]))
    assert logits.shape[-1] == len(tok) and np.isfinite(np.asarray(logits)).all()


def test_stats_file_has_the_histogram_kinds_census_and_settings(built):
    out, stats = built
    with open(os.path.join(out, pretrain.STATS_FILE)) as f:
        written = json.load(f)
    assert written == stats
    samples = pretrain_eval.PASS_SAMPLES
    histogram = written["pass_rate_histogram"]
    assert list(histogram) == [f"{k}/{samples}" for k in range(samples + 1)]
    assert sum(histogram.values()) == written["train_slice_problems"] == TINY.eval_train_problems
    fractions = written["none_pass_fraction"] + written["mixed_fraction"] + written["all_pass_fraction"]
    assert fractions == pytest.approx(1.0, abs=1e-3)
    for key in ("train_slice_mean_pass_rate", "train_slice_pass_rate_by_level",
                "held_out_greedy_accuracy", "held_out_greedy_accuracy_by_level", "final_loss",
                "num_params", "train_seconds", "total_seconds"):
        assert key in written, key
    for key in ("train_slice_no_answer_share", "held_out_greedy_no_answer_share"):
        assert 0.0 <= written[key] <= 1.0, key
    # The held-out split is the RL runs' one: distinct problems, equal shares per level.
    assert written["held_out_problems"] == written["held_out_distinct_problems"] == 16
    assert written["held_out_problems_by_level"] == {"2": 8, "3": 8}
    # Accuracy and boxed share for every probe kind, on the same problems.
    assert list(written["by_prompt_kind"]) == list(probes.KINDS)
    for kind, row in written["by_prompt_kind"].items():
        assert row["n"] == TINY.kind_problems * TINY.kind_samples, kind
        assert 0.0 <= row["accuracy"] <= row["boxed_share"] <= 1.0, kind
    census = written["warm_start"]
    assert census["conversations"] > 0 and set(census["by_kind"]) <= set(warm_start.WARM_START_KINDS)
    assert written["version"] == worlds.get("arith").version == "base_policy_v6"
    assert pretrain.read_world(out) == {"world": "arith", "version": "base_policy_v6",
                                        "skill": None}
    assert written["settings"] == json.loads(json.dumps(dataclasses.asdict(TINY)))
    assert written["stop_token_ids"] == [1, 3]  # <|endoftext|>, <|im_end|>


def test_the_base_policy_measures_the_split_the_embedded_runs_use():
    from configs import grpo
    config = grpo.get_config()
    settings = pretrain.world_settings(config.world.name)
    assert tuple(config.data.embedded_levels) == settings.rl_levels
    assert config.data.embedded_eval_size == settings.eval_held_out_problems
    assert config.rollout.max_new_tokens == settings.max_new_tokens


def test_ensure_returns_the_cache_without_rebuilding(built, monkeypatch):
    out, _ = built
    monkeypatch.setattr(pretrain, "build_base_policy",
                        lambda *a, **k: pytest.fail("rebuilt a complete cached base policy"))
    assert pretrain.ensure_base_policy("arith", cache_dir=out) == out
    # The default location honours RL_REASON_CACHE and carries the version (and skill).
    monkeypatch.setenv("RL_REASON_CACHE", os.path.dirname(out))
    assert pretrain.default_cache_dir(pretrain.Settings()) == os.path.join(
        os.path.dirname(out), "base_policy_v6")
    traps = pretrain.world_settings("traps", 0.25)
    assert pretrain.default_cache_dir(traps) == os.path.join(
        os.path.dirname(out), f"{worlds.get('traps').version}_skill0.25")


def _train_counting(calls):
    real = pretrain.train

    def train(config, batches, **kwargs):
        calls.append("dial stage" if kwargs.get("params") is not None else "trunk")
        return real(config, batches, **kwargs)
    return train


def _fake_build(calls):
    def build(out, settings):
        calls.append((out, settings))
        os.makedirs(out)
        for name in (models.hf.CONFIG_FILE, models.hf.SINGLE_FILE, "tokenizer.json", pretrain.STATS_FILE):
            open(os.path.join(out, name), "w").close()
        return {}
    return build


def test_ensure_builds_when_missing_or_incomplete(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(pretrain, "build_base_policy", _fake_build(calls))
    out = str(tmp_path / "missing")
    assert pretrain.ensure_base_policy("arith", cache_dir=out) == out
    assert calls == [(out, pretrain.Settings())] and pretrain.is_complete(out)
    assert pretrain.ensure_base_policy("arith", cache_dir=out) == out and len(calls) == 1

    # Each required file missing makes the folder incomplete.
    for name in (models.hf.CONFIG_FILE, models.hf.SINGLE_FILE, "tokenizer.json", pretrain.STATS_FILE):
        folder = tmp_path / f"without_{name}"
        _fake_build([])(str(folder), None)
        os.remove(folder / name)
        assert not pretrain.is_complete(str(folder)), name


def test_exception_mid_build_leaves_nothing_that_looks_finished(tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash during training")

    monkeypatch.setattr(pretrain, "train", crash)
    out = str(tmp_path / "base")
    with pytest.raises(RuntimeError, match="simulated crash"):
        pretrain.build_base_policy(out, dataclasses.replace(TINY, tokenizer_problems=20))
    assert not os.path.exists(out) and not pretrain.is_complete(out)
    assert not _leftovers(tmp_path)  # the staging folder is removed on the way out


def test_killed_build_never_leaves_a_complete_folder(tmp_path):
    """SIGKILL skips every cleanup: the staging folder stays, but under another name."""
    out = tmp_path / "base"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    process = subprocess.Popen([sys.executable, "-m", "rl_reason.pretrain", "--size=tiny",
                                f"--out={out}"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        # Kill once the staging folder holds the tokenizer: mid-build, files on disk.
        deadline = time.monotonic() + 120
        while not glob.glob(str(tmp_path / ".base.partial-*" / "tokenizer.json")):
            assert process.poll() is None, "the build exited before it could be killed"
            assert time.monotonic() < deadline, "no staging folder appeared"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not out.exists() and not pretrain.is_complete(str(out))
    [staging] = glob.glob(str(tmp_path / ".base.partial-*"))
    assert not pretrain.is_complete(staging)


def test_publish_replaces_an_older_folder_atomically(tmp_path):
    out, staging = tmp_path / "base", tmp_path / ".base.partial-x"
    out.mkdir()
    (out / "old.txt").write_text("old")
    staging.mkdir()
    (staging / "new.txt").write_text("new")
    pretrain._publish(str(staging), str(out))
    assert os.listdir(out) == ["new.txt"]
    assert not _leftovers(tmp_path)  # neither the staging nor the moved-aside folder remains


def test_main_parses_settings_and_rejects_bad_steps(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(pretrain, "build_base_policy", lambda out, s: calls.append((out, s)))
    pretrain.main(["--size=tiny", "--steps=5", "--seed=3", f"--out={tmp_path}"])
    assert calls == [(str(tmp_path), dataclasses.replace(
        pretrain.world_settings(worlds.DEFAULT), seed=3, **{**pretrain.SIZES["tiny"], "steps": 5}))]
    for bad in ("0", "-2"):
        with pytest.raises(SystemExit) as exit_info:
            pretrain.main([f"--steps={bad}", f"--out={tmp_path}"])
        assert exit_info.value.code == 2
        assert f"--steps must be >= 1, got {bad}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pretrain.main(["--size=huge"])
    pretrain.main(["--world=arith", "--unboxed-share=0", f"--out={tmp_path}"])
    assert calls[-1][1] == pretrain.Settings(unboxed_share=0.0)
    with pytest.raises(SystemExit) as exit_info:
        pretrain.main(["--unboxed-share=1.5", f"--out={tmp_path}"])
    assert "--unboxed-share must be in [0, 1], got 1.5" in capsys.readouterr().err
    pretrain.main(["--world=traps", "--skill=0.25", f"--out={tmp_path}"])
    assert calls[-1][1] == pretrain.world_settings("traps", 0.25) and calls[-1][1].skill == 0.25
    assert len(calls) == 3
    # The dial is checked: a world without one, and a share outside [0, 1].
    for bad, message in ((["--world=arith", "--skill=0.5"], "has no premise dial"),
                         (["--skill=1.5"], "must be in [0, 1]")):
        with pytest.raises(SystemExit) as exit_info:
            pretrain.main(bad + [f"--out={tmp_path}"])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert len(calls) == 3


def test_a_trap_world_build_records_its_world_dial_and_premises(tmp_path, monkeypatch):
    monkeypatch.setenv("RL_REASON_CACHE", str(tmp_path / "cache"))
    s = dataclasses.replace(pretrain.world_settings("traps", 0.5),
                            **{**pretrain.SIZES["tiny"], "steps": 2, "max_new_tokens": 16})
    out = str(tmp_path / "traps")
    stats = pretrain.build_base_policy(out, s)
    # The trunk (stage 1) is cached apart and reused by another dial setting.
    assert stats["trunk"]["key"] == pretrain.trunk_key(s)
    assert os.path.isfile(os.path.join(pretrain.trunk_dir(s), pretrain.TRUNK_FILE))
    monkeypatch.setattr(pretrain, "train", _train_counting(calls := []))
    pretrain.build_base_policy(str(tmp_path / "traps0"), dataclasses.replace(s, skill=0.0))
    assert calls == ["dial stage"]     # the trunk was loaded, not trained again
    assert (stats["world"], stats["version"], stats["skill"]) == ("traps", "traps_v1", 0.5)
    assert pretrain.read_world(out) == {"world": "traps", "version": "traps_v1", "skill": 0.5}
    premises = stats["premises"]
    assert set(premises) >= {"lte", "multi_attempt", "r3l", "failure_prefix", "exgrpo"}
    assert premises["settings"]["questions"] == 4 and "by_prompt_kind" not in stats
    assert stats["held_out_problems_by_level"] == {"2": 8, "3": 8}
