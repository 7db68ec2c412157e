"""The ablation script runs its sweep and writes a table and curves."""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))

import grpo_variants  # noqa: E402
import pytest  # noqa: E402


@pytest.mark.slow
def test_grpo_variants_sweep_writes_results(tiny_policy, tmp_path, capsys):
    out = str(tmp_path / "sweep")
    grpo_variants.main([
        "--variants=base,drgrpo", "--seeds=0", "--base_variant=tiny", f"--out={out}",
        f"--config.model.checkpoint={tiny_policy}", "--config.train.export_hf=false",
        "--config.train.num_steps=1", "--config.verifier.num_workers=1"])
    with open(os.path.join(out, "results.md")) as f:
        text = f.read()
    assert "| base | 0 |" in text and "| drgrpo | 0 |" in text
    assert os.path.getsize(os.path.join(out, "curves.png")) > 0
    assert os.path.exists(os.path.join(out, "drgrpo_seed0", "metrics.jsonl"))


def test_unknown_flag_is_rejected(capsys):
    with pytest.raises(SystemExit):
        grpo_variants.main(["--learning_rate=3"])


import harness  # noqa: E402


def test_mean_and_standard_error():
    mean, se = harness.mean_se([0.2, 0.4, 0.6])
    assert mean == pytest.approx(0.4) and se == pytest.approx(0.2 / 3 ** 0.5)
    assert harness.mean_se([0.5]) == (0.5, 0.0)


def test_results_table_lists_arms_then_runs():
    table = harness.results_table({"a": {0: {"eval/x": 0.5}, 1: {"eval/x": 0.7}},
                                   "b": {0: {}}}, ["eval/x"])
    assert "| a | 2 | 0.600 ± 0.100 |" in table
    assert "| b | 1 | n/a |" in table and "| a seed 1 | 0.700 |" in table


def test_cli_overrides_keep_the_config_types():
    from configs import grpo
    c = grpo.get_config("")
    c.unlock()
    harness.set_key(c, "rollout.group_size", "4", parse=True)
    harness.set_key(c, "loss.norm_by_std", "false", parse=True)
    harness.set_key(c, "eval.ks", "[1, 2]", parse=True)
    assert (c.rollout.group_size, c.loss.norm_by_std, tuple(c.eval.ks)) == (4, False, (1, 2))
    with pytest.raises(KeyError, match="rollout.group_sise"):
        harness.set_key(c, "rollout.group_sise", 3)


@pytest.mark.slow
def test_harness_smoke_sweep_writes_results_and_resumes(tiny_policy, tmp_path, capsys):
    arms = [harness.Arm("grpo", "grpo"),
            harness.Arm("drgrpo", "grpo", variant="drgrpo",
                        overrides=(("loss.entropy_coef", 0.01),))]
    argv = ["--smoke", f"--start={tiny_policy}", f"--out={tmp_path / 'out'}",
            f"--runs={tmp_path / 'runs'}", "--config.eval.max_problems=4"]
    kwargs = dict(name="smoke", report=("eval/greedy_accuracy", "reward_mean"),
                  curves=("reward_mean", "eval/greedy_accuracy"), default_budget=1000)
    results = harness.main(arms, argv, **kwargs)
    assert set(results) == {"grpo", "drgrpo"} and set(results["grpo"]) == {0}
    text = (tmp_path / "out" / "results.md").read_text()
    assert "| grpo | 1 |" in text and "| drgrpo seed 0 |" in text
    assert (tmp_path / "out" / "curves.png").stat().st_size > 0
    # Re-running continues (here: finds every run finished) and gives the same results.
    assert harness.main(arms, argv, **kwargs) == results
    assert "Nothing to do" in capsys.readouterr().out


import multi_attempt_vs_grpo  # noqa: E402


def test_multi_attempt_gain_table_by_hand():
    runs = {"grpo": {0: {"eval/attempts@1": 0.4, "eval/attempts@2": 0.42, "eval/attempts@5": 0.45},
                     1: {"eval/attempts@1": 0.5, "eval/attempts@2": 0.54, "eval/attempts@5": 0.55}},
            "multi_attempt": {0: {"eval/attempts@1": 0.4, "eval/attempts@2": 0.5,
                                  "eval/attempts@5": 0.6}}}
    table = multi_attempt_vs_grpo.gain_table(runs)
    # grpo gains 0.02 and 0.04: mean 0.03, SE 0.01; multi_attempt one run, SE 0.
    assert "| grpo | 2 | +0.030 ± 0.010 | +0.050 ± 0.000 |" in table
    assert "| multi_attempt | 1 | +0.100 ± 0.000 | +0.200 ± 0.000 |" in table
    assert "multi_attempt minus grpo: +0.070 ± 0.010" in table


@pytest.mark.slow
def test_multi_attempt_vs_grpo_smoke(tiny_policy, tmp_path):
    out = tmp_path / "out"
    results = multi_attempt_vs_grpo.main([
        "--smoke", f"--start={tiny_policy}", f"--out={out}", f"--runs={tmp_path / 'runs'}",
        "--config.eval.max_problems=4"])
    assert set(results) == {"grpo", "multi_attempt"}
    assert all("eval/attempts@5" in m for runs in results.values() for m in runs.values())
    text = (out / "results.md").read_text()
    assert "| grpo | 1 |" in text and "| multi_attempt seed 0 |" in text
    assert "attempts@2 - attempts@1" in text and "multi_attempt minus grpo" in text
    assert (out / "curves.png").stat().st_size > 0
@pytest.mark.slow
def test_failure_prefix_vs_grpo_smoke(tiny_policy, tmp_path):
    import failure_prefix_vs_grpo

    out, runs = tmp_path / "out", tmp_path / "runs"
    results = failure_prefix_vs_grpo.main([
        "--smoke", f"--start={tiny_policy}", f"--out={out}", f"--runs={runs}",
        "--config.eval.max_problems=4"])
    assert set(results) == {"grpo", "failure_prefix", "failure_prefix_refresh"}
    text = (out / "results.md").read_text()
    assert "| grpo | 1 |" in text and "| failure_prefix_refresh seed 0 | 2 |" in text
    assert (out / "curves.png").stat().st_size > 0
    # The refresh arm mined twice, the others as their arm says.
    lines = {arm: harness.read_lines(str(runs / arm / "seed0")) for arm in results}
    mining = {arm: [m.get("failure_prefix/mining") for m in rows if "loss" in m]
              for arm, rows in lines.items()}
    assert mining == {"grpo": [None, None], "failure_prefix": [1, 0],
                      "failure_prefix_refresh": [1, 1]}


import lte_vs_grpo  # noqa: E402


@pytest.mark.slow
def test_lte_vs_grpo_smoke_writes_results_and_none_pass_table(tiny_policy, tmp_path):
    out, runs = tmp_path / "out", tmp_path / "runs"
    results = lte_vs_grpo.main(["--smoke", f"--start={tiny_policy}", f"--out={out}",
                                f"--runs={runs}", "--config.eval.max_problems=4"])
    assert set(results) == {"grpo", "lte", "grpo_extra_rollouts"}
    text = (out / "results.md").read_text()
    for arm in results:
        assert f"| {arm} | 1 |" in text
    assert "None-pass share of the fresh groups" in text
    assert (out / "none_pass.md").read_text() in text
    assert (out / "curves.png").stat().st_size > 0
    # The control really is the LTE method without the hint.
    config = json.loads((runs / "grpo_extra_rollouts" / "seed0" / "config.json").read_text())
    assert config["method_name"] == "lte" and config["method"]["extra_prompt"] == "plain"


@pytest.mark.slow
def test_exgrpo_vs_grpo_smoke_runs_every_arm(tiny_policy, tmp_path):
    import exgrpo_vs_grpo
    assert [a.name for a in exgrpo_vs_grpo.ARMS] == ["grpo", "exgrpo", "exgrpo_no_shaping"]
    results = exgrpo_vs_grpo.main([
        "--smoke", f"--start={tiny_policy}", f"--out={tmp_path / 'out'}",
        f"--runs={tmp_path / 'runs'}", "--config.eval.max_problems=4"])
    assert set(results) == {"grpo", "exgrpo", "exgrpo_no_shaping"}
    text = (tmp_path / "out" / "results.md").read_text()
    assert "| exgrpo_no_shaping seed 0 |" in text and "greedy_accuracy" in text
    with open(tmp_path / "runs" / "exgrpo_no_shaping" / "seed0" / "config.json") as f:
        config = json.load(f)
    assert config["method_name"] == "exgrpo" and config["loss"]["off_policy_weight"] == "ratio"
    with open(tmp_path / "runs" / "grpo" / "seed0" / "config.json") as f:
        assert json.load(f)["data"]["embedded_levels"] == config["data"]["embedded_levels"]


@pytest.mark.slow
def test_r3l_vs_grpo_smoke_runs_every_arm(tiny_policy, tmp_path):
    import r3l_vs_grpo
    out, runs = tmp_path / "out", tmp_path / "runs"
    results = r3l_vs_grpo.main(["--smoke", f"--start={tiny_policy}", f"--out={out}",
                                f"--runs={runs}", "--config.eval.max_problems=2"])
    arms = ["grpo", "grpo_feedback", "r3l", "r3l_no_reflect_retry", "r3l_no_pivotal_credit",
            "r3l_no_amplification"]
    assert list(results) == arms
    text = (out / "results.md").read_text()
    assert "| r3l_no_amplification seed 0 |" in text and "attempts@3" in text
    assert "Training problems solved" in text and "| grpo_feedback | 1 |" in text
    # Every arm is evaluated alike: 3 attempts with verifier feedback at 0.4.
    for arm in arms:
        with open(runs / arm / "seed0" / "config.json") as f:
            config = json.load(f)
        assert (config["eval"]["attempts"], config["eval"]["attempt_feedback"],
                config["eval"]["attempt_temperature"]) == (3, "verifier", 0.4)
    with open(runs / "grpo_feedback" / "seed0" / "config.json") as f:
        config = json.load(f)
    assert config["method_name"] == "r3l" and config["method"]["objective"] == "grpo"
    assert not config["method"]["reflect_retry"]
    summary = json.loads((out / "results.json").read_text())
    assert set(summary["training_solved"]) == set(arms)
