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
    harness.set_key(c, "advantage.norm_by_std", "false", parse=True)
    harness.set_key(c, "eval.ks", "[1, 2]", parse=True)
    assert (c.rollout.group_size, c.advantage.norm_by_std, tuple(c.eval.ks)) == (4, False, (1, 2))
    with pytest.raises(KeyError, match="rollout.group_sise"):
        harness.set_key(c, "rollout.group_sise", 3)
    with pytest.raises(KeyError, match="loss.norm_by_std moved to advantage.norm_by_std"):
        harness.set_key(c, "loss.norm_by_std", False)


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
    # Re-running continues (here: finds every run finished, so trains nothing: no
    # evaluation, no step, the metrics untouched) and gives the same results.
    metrics = (tmp_path / "runs" / "grpo" / "seed0" / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert harness.main(arms, argv, **kwargs) == results
    again = capsys.readouterr().out
    assert "=== smoke: grpo, seed 0" in again and "Before training" not in again
    assert (tmp_path / "runs" / "grpo" / "seed0" / "metrics.jsonl").read_text() == metrics
    # --report_only judges the real runs finished from the limits their config.json holds.
    assert harness.main(arms, argv + ["--report_only"], **kwargs) == results


import multi_attempt_vs_grpo  # noqa: E402


def test_multi_attempt_gain_table_by_hand():
    runs = {"grpo": {0: {"eval/attempts@1": 0.4, "eval/attempts@2": 0.42, "eval/attempts@7": 0.45},
                     1: {"eval/attempts@1": 0.5, "eval/attempts@2": 0.54, "eval/attempts@7": 0.55}},
            "multi_attempt": {0: {"eval/attempts@1": 0.4, "eval/attempts@2": 0.5,
                                  "eval/attempts@7": 0.6}}}
    table = multi_attempt_vs_grpo.gain_table(runs)
    assert "| attempts@2 - attempts@1 | attempts@7 - attempts@1 |" in table
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
    # Both arms evaluated with the paper's k = 1..7.
    assert all(f"eval/attempts@{k}" in m for runs in results.values() for m in runs.values()
               for k in range(1, 8))
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


def test_smoke_defaults_never_touch_a_sweeps_workdirs_or_results():
    args, _ = harness.parse_args(["--smoke"], "demo", 1000, "0,1,2")
    assert args.runs.endswith(os.path.join("runs", "traps", "demo_smoke")) and args.seeds == [0]
    assert args.out == os.path.join(args.runs, "results")
    args, _ = harness.parse_args([], "demo", 1000, "0,1,2")
    assert args.runs.endswith(os.path.join("runs", "traps", "demo"))
    assert args.out.endswith(os.path.join("experiments", "results", "traps", "demo"))
    # Another world's sweeps and results go apart.
    args, _ = harness.parse_args(["--config.world.name=arith"], "demo", 1000, "0,1,2")
    assert args.runs.endswith(os.path.join("runs", "arith", "demo"))
    assert args.out.endswith(os.path.join("experiments", "results", "arith", "demo"))


def test_smoke_keeps_the_arms_protocol_at_a_small_size(tiny_policy):
    arm = harness.Arm("r3l", "r3l", overrides=(("eval.max_problems", 256),
                                               ("eval.num_samples", 8), ("eval.ks", (1, 4, 8)),
                                               ("eval.attempts", 3)))
    c = harness.build_config(arm, seed=0, start=tiny_policy, budget=10, max_steps=5,
                             smoke=True, overrides=())
    assert (c.eval.max_problems, c.eval.num_samples, tuple(c.eval.ks), c.eval.attempts) == \
        (16, 2, (1,), 3)


def test_run_minutes_leaves_out_pauses(tmp_path):
    lines = [{"step": 0, "wall_time": 0.0}, {"step": 1, "wall_time": 60.0},
             {"step": 2, "wall_time": 5000.0}, {"step": 3, "wall_time": 5120.0}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(l) for l in lines))
    assert harness.run_minutes(str(tmp_path)) == pytest.approx(3.0)


def test_run_minutes_counts_a_long_final_evaluation(tmp_path):
    # The step-0 evaluation (100 s, shared by runs that start alike) is not counted; the
    # final one takes 900 s, longer than a pause, but its line accounts for it.
    lines = [{"step": 0, "wall_time": 100.0, "eval/seconds": 100.0},
             {"step": 1, "wall_time": 160.0, "time/step": 50.0},
             {"step": 2, "wall_time": 1080.0, "time/step": 20.0, "eval/seconds": 900.0},
             {"step": 3, "wall_time": 9000.0, "time/step": 30.0}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(l) for l in lines))
    assert harness.run_minutes(str(tmp_path)) == pytest.approx((60 + 920 + 30) / 60)


def test_plot_curves_names_the_metrics_no_run_logged(tmp_path):
    dirs = {}
    for arm in ("a", "b"):
        workdir = tmp_path / arm
        workdir.mkdir()
        lines = [{"step": 0, "eval/greedy_accuracy": 0.1},
                 {"step": 1, "budget/generated_tokens": 100, "reward_mean": 0.2},
                 {"step": 2, "budget/generated_tokens": 200, "reward_mean": 0.3,
                  "eval/greedy_accuracy": 0.4}]
        (workdir / "metrics.jsonl").write_text("\n".join(json.dumps(l) for l in lines))
        dirs[arm] = [str(workdir)]
    out = tmp_path / "curves.png"
    unlogged = harness.plot_curves(dirs, ("reward_mean", "response_length",
                                          "eval/greedy_accuracy"), str(out))
    assert unlogged == ["response_length"] and out.stat().st_size > 0


import ablate  # noqa: E402
import compare_methods  # noqa: E402


def test_ablate_arms_from_named_ablations_variants_and_switches():
    assert ablate.named_ablations("r3l") == ("no_reflect_retry", "no_pivotal_credit",
                                             "no_amplification")
    assert "no_shaping" in ablate.named_ablations("exgrpo")
    arms = ablate.arms_for("lte", ["no_cap"], ["lr:optim.learning_rate=3e-5,rollout.group_size=4"],
                           "grpo")
    assert [a.name for a in arms] == ["lte", "lte_no_cap", "lte_lr", "grpo"]
    # Switch values take the type of the key they replace.
    assert arms[2].overrides == (("optim.learning_rate", 3e-5), ("rollout.group_size", 4))
    assert arms[1].variant == "no_cap" and arms[3].config == "grpo"


@pytest.mark.parametrize("switch, message", [
    ("nocolon", "expected NAME:key=value"),
    ("x:optim.learning_rat=1", "unknown config key"),
    ("x:rollout.group_size=four", "rollout.group_size"),
    ("x:loss.clip_low", "is not key=value"),
])
def test_ablate_rejects_a_bad_switch_before_running(switch, message):
    with pytest.raises(SystemExit, match=message):
        ablate.arms_for("grpo", [], [switch], "")


def test_ablate_rejects_an_unknown_variant_or_config():
    with pytest.raises(SystemExit, match="no_such"):
        ablate.main(["--config=r3l", "--variants=no_such", "--smoke"])
    with pytest.raises(SystemExit, match="no configs/nope.py"):
        ablate.main(["--config=nope"])
    with pytest.raises(SystemExit, match="names no ABLATIONS"):
        ablate.main(["--config=grpo", "--smoke"])
    with pytest.raises(SystemExit, match="--report"):
        ablate.main(["--config=r3l", "--report=,", "--smoke"])


def test_compare_methods_evaluates_every_arm_alike(tiny_policy):
    configs = [harness.build_config(arm, seed=0, start=tiny_policy, budget=1000,
                                    max_steps=5, smoke=False, overrides=())
               for arm in compare_methods.ARMS]
    assert [c.method_name for c in configs] == list(compare_methods.METHODS)
    protocol = {(c.eval.attempts, c.eval.attempt_feedback, c.eval.attempt_temperature,
                 c.eval.num_samples, tuple(c.eval.ks), c.eval.max_new_tokens,
                 c.eval.max_problems, c.eval.misleading_prefix,
                 tuple(c.data.embedded_eval_levels), c.data.embedded_eval_size,
                 c.train.max_generated_tokens) for c in configs}
    assert protocol == {(3, "verifier", 0.4, 4, (1, 4), 128, 128, False, (2, 3), 512, 1000)}


def test_compare_methods_change_table_by_hand(tmp_path):
    for seed, (first, last) in enumerate([(0.2, 0.3), (0.2, 0.4)]):
        d = tmp_path / f"seed{seed}"
        d.mkdir()
        (d / "metrics.jsonl").write_text(
            json.dumps({"step": 0, "eval/greedy_accuracy": first}) + "\n"
            + json.dumps({"step": 5, "reward_mean": 0.5}) + "\n"
            + json.dumps({"step": 9, "eval/greedy_accuracy": last}) + "\n")
    table = compare_methods.change_table(
        {"grpo": [str(tmp_path / "seed0"), str(tmp_path / "seed1")]},
        ("eval/greedy_accuracy", "eval/pass@8"))
    # Changes +0.1 and +0.2: mean +0.15, SE 0.05.
    assert "| grpo | 2 | +0.150 ± 0.050 | n/a |" in table


@pytest.mark.slow
def test_compare_methods_smoke_runs_every_method(tiny_policy, tmp_path):
    out, runs = tmp_path / "out", tmp_path / "runs"
    results = compare_methods.main(["--smoke", f"--start={tiny_policy}", f"--out={out}",
                                    f"--runs={runs}"])
    assert list(results) == list(compare_methods.METHODS)
    text = (out / "results.md").read_text()
    assert "Change from the start" in text and "| lte_exgrpo seed 0 |" in text
    assert "attempts@3" in text and "wall_minutes" in text and "Machine:" in text
    summary = json.loads((out / "results.json").read_text())
    assert set(summary["initial"]) == set(compare_methods.METHODS)
    assert (out / "curves.png").stat().st_size > 0
    # Every training curve is a metric some method logs (the smoke's evaluation draws
    # fewer samples, so it has no pass@8 to check).
    dirs = harness.run_dirs(str(runs), results)
    for key in compare_methods.CURVES:
        if not key.startswith("eval/"):
            assert any(len(harness.curve(d, key)[0]) for ds in dirs.values() for d in ds), key


@pytest.mark.slow
def test_ablate_smoke_runs_the_full_config_a_variant_and_a_switch(tiny_policy, tmp_path):
    out, runs = tmp_path / "out", tmp_path / "runs"
    results = ablate.main(["--config=r3l", "--variants=no_pivotal_credit",
                           "--switch=alpha1:method.alpha=1.0", "--smoke",
                           "--report=eval/attempts@3,eval/greedy_accuracy",
                           f"--start={tiny_policy}", f"--out={out}", f"--runs={runs}"])
    assert list(results) == ["r3l", "r3l_no_pivotal_credit", "r3l_alpha1"]
    with open(runs / "r3l_alpha1" / "seed0" / "config.json") as f:
        assert json.load(f)["method"]["alpha"] == 1.0
    with open(runs / "r3l_no_pivotal_credit" / "seed0" / "config.json") as f:
        assert json.load(f)["method"]["pivotal_credit"] is False
    text = (out / "results.md").read_text()
    assert "| r3l_alpha1 seed 0 |" in text
    assert "| arm | seeds | attempts@3 | greedy_accuracy | wall_minutes |" in text


def _logged_run(workdir, *, tokens, accuracy, final_eval=True, budget=100, num_steps=1000):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump({"model": {"checkpoint": "/the/start"},
                   "train": {"max_generated_tokens": budget, "num_steps": num_steps}}, f)
    lines = [{"step": 0, "wall_time": 0.0, "eval/greedy_accuracy": 0.1},
             {"step": 1, "wall_time": 30.0, harness.TOKENS: tokens / 2, "loss": 0.5},
             {"step": 2, "wall_time": 60.0, harness.TOKENS: tokens, "loss": 0.4}]
    if final_eval:
        lines[-1]["eval/greedy_accuracy"] = accuracy
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        f.write("".join(json.dumps(line) + "\n" for line in lines))


def test_report_only_reads_finished_runs_and_starts_none(tmp_path, monkeypatch):
    from rl_reason import train

    def no_run(config, workdir):
        raise AssertionError("--report_only started a run")

    monkeypatch.setattr(train, "run", no_run)
    runs = tmp_path / "runs"
    _logged_run(runs / "a" / "seed0", tokens=120, accuracy=0.3)
    _logged_run(runs / "a" / "seed1", tokens=60, accuracy=0.9)      # still running
    _logged_run(runs / "b" / "seed1", tokens=130, accuracy=0.5)
    _logged_run(runs / "b" / "seed0", tokens=125, accuracy=0.7, final_eval=False)
    # Finished by its step limit (no budget), with no --budget repeated on the command.
    _logged_run(runs / "c" / "seed0", tokens=20, accuracy=0.2, budget=0, num_steps=2)
    arms = [harness.Arm("a", "grpo"), harness.Arm("b", "grpo"), harness.Arm("c", "grpo")]
    argv = ["--seeds=0,1", "--report_only", f"--out={tmp_path / 'out'}", f"--runs={runs}"]
    results = harness.main(arms, argv, name="demo", report=("eval/greedy_accuracy",),
                           curves=("eval/greedy_accuracy",), default_budget=100)
    assert {arm: sorted(seeds) for arm, seeds in results.items()} == \
        {"a": [0], "b": [1], "c": [0]}
    text = (tmp_path / "out" / "results.md").read_text()
    assert "Start: `/the/start`" in text and "Partial: 3 of 6 runs finished." in text
    assert "| a | 1 | 0.300 ± 0.000 |" in text and "| b | 1 | 0.500 ± 0.000 |" in text
    with pytest.raises(SystemExit, match="no finished run"):
        harness.main(arms, argv[:2] + [f"--runs={tmp_path / 'empty'}"], name="demo",
                     report=("eval/greedy_accuracy",), curves=(), default_budget=100)


def test_a_stopped_sweep_leaves_partial_results_seed_major(tmp_path, monkeypatch):
    from rl_reason import train
    calls = []

    def fake_run(config, workdir):
        if len(calls) == 3:
            raise KeyboardInterrupt       # the sweep is stopped during its fourth run
        arm = next(a for a in "ab" if os.path.realpath(tmp_path / "runs" / a / f"seed{config.seed}")
                   == os.path.realpath(workdir))
        calls.append((arm, config.seed))
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
            f.write(json.dumps({"step": 0, "wall_time": 0.0, "eval/greedy_accuracy": 0.1})
                    + "\n" + json.dumps({"step": 2, "wall_time": 60.0,
                                         "eval/greedy_accuracy": 0.2 + config.seed}) + "\n")

    monkeypatch.setattr(train, "run", fake_run)
    arms = [harness.Arm("a", "grpo"), harness.Arm("b", "grpo", variant="drgrpo")]
    argv = ["--seeds=0,1", "--start=/nowhere", f"--out={tmp_path / 'out'}",
            f"--runs={tmp_path / 'runs'}"]
    with pytest.raises(KeyboardInterrupt):
        harness.main(arms, argv, name="demo", report=("eval/greedy_accuracy",),
                     curves=("eval/greedy_accuracy",), default_budget=100)
    # Seed-major: both arms' seed 0 ran before any seed 1.
    assert calls == [("a", 0), ("b", 0), ("a", 1)]
    text = (tmp_path / "out" / "results.md").read_text()
    assert "Partial: 3 of 4 runs finished." in text
    assert "| a | 2 | 0.700 ± 0.500 |" in text and "| b | 1 | 0.200 ± 0.000 |" in text
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    assert (summary["finished_runs"], summary["planned_runs"]) == (3, 4)


def _fake_training(calls):
    """A stand-in for train.run that records its workdir and writes what a finished
    run leaves: config.json and a final metrics line with an evaluation."""
    def run(config, workdir):
        calls.append(os.path.realpath(workdir))
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort())
        with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
            f.write(json.dumps({"step": 1, harness.TOKENS: 10 ** 6,
                                "eval/greedy_accuracy": 0.5, "time/step": 1.0}) + "\n")
    return run


def test_identical_arms_of_two_sweeps_train_once(tiny_policy, tmp_path, monkeypatch):
    from rl_reason import train
    calls = []
    monkeypatch.setattr(train, "run", _fake_training(calls))

    def sweep(name, arms):
        return harness.main(arms, [f"--start={tiny_policy}", "--seeds=0", "--budget=100",
                                   f"--runs={tmp_path / 'runs' / 'traps' / name}",
                                   f"--out={tmp_path / name / 'out'}"],
                            name=name, report=("eval/greedy_accuracy",), curves=("reward_mean",),
                            default_budget=100)

    first = sweep("a", [harness.Arm("grpo", "grpo"), harness.Arm("lte", "lte")])
    second = sweep("b", [harness.Arm("grpo", "grpo")])
    assert len(calls) == 2 and first["grpo"] == second["grpo"]
    runs = tmp_path / "runs" / "traps"
    assert os.path.realpath(runs / "a" / "grpo" / "seed0") == \
        os.path.realpath(runs / "b" / "grpo" / "seed0") == calls[0]
    assert calls[0].startswith(str(tmp_path / "runs" / "traps" / "shared"))
    # Another protocol is another run.
    sweep("c", [harness.Arm("grpo", "grpo", overrides=(("eval.num_samples", 2),))])
    assert len(calls) == 3 and calls[2] not in calls[:2]
    # A run whose lock another process holds is skipped, not trained twice.
    import fcntl
    arm = harness.Arm("grpo", "grpo", overrides=(("eval.num_samples", 3),))
    config = harness.build_config(arm, seed=0, start=tiny_policy, budget=100, max_steps=1000,
                                  smoke=False, overrides=())
    shared = tmp_path / "runs" / "traps" / "shared" / harness.config_key(config)
    shared.mkdir(parents=True)
    with open(shared / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = sweep("d", [arm])
    assert len(calls) == 3 and results == {}
    assert sweep("d", [arm])["grpo"][0]["eval/greedy_accuracy"] == 0.5 and len(calls) == 4


import premise_dial  # noqa: E402


def test_premise_dial_refuses_bad_settings_and_world_overrides():
    for bad, message in ((["--skills=0,1.5"], "in \\[0, 1\\]"), (["--skills=a"], "comma-separated"),
                         (["--config.world.skill=0.5"], "sets world.name and world.skill")):
        with pytest.raises(SystemExit, match=message):
            premise_dial.main(bad + ["--smoke"])


@pytest.mark.slow
@pytest.mark.timeout(1800)     # four runs of the real base policy, not the tiny one
def test_premise_dial_smoke_runs_each_setting_from_its_own_base_policy(tmp_path):
    """Two tiny steps per arm at two dial settings, each from that setting's shipped
    base policy; the table has method minus GRPO at each setting."""
    out, runs = tmp_path / "out", tmp_path / "runs"
    premise_dial.main(["--smoke", "--skills=0,1", "--arms=grpo,lte", f"--out={out}",
                       f"--runs={runs}"])
    text = (out / "results.md").read_text()
    for skill in ("0", "1"):
        assert f"| {skill} | lte |" in text
        world = json.loads((runs / f"skill{skill}" / "grpo" / "seed0" / "world.json").read_text())
        assert (world["version"], world["skill"]) == ("traps_v1", float(skill))
    summary = json.loads((out / "results.json").read_text())
    assert set(summary["differences"]) == {"0", "1"}
    assert (out / "dial.png").stat().st_size > 0
