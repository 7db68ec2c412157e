"""python -m rl_reason.plot: PNG, default metric choice, table, errors."""

import json
import math

import numpy as np
import pytest
from matplotlib import image as mpimg

from rl_reason import plot
from rl_reason.metrics import MetricsWriter


def _fake_run(workdir, *, slope, with_kl=True, steps=30):
    """A run as the trainer logs it: per-step metrics, eval every 10 steps."""
    rng = np.random.default_rng(int(slope * 100))
    with MetricsWriter(workdir, tensorboard=False) as writer:
        for step in range(steps + 1):
            m = {"reward_mean": -0.5 + slope * step / steps + 0.05 * rng.normal(),
                 "accuracy": min(1.0, 0.2 + slope * step / steps),
                 "response_length_mean": 120 - step + 5 * rng.normal(),
                 "entropy": 1.0 / (1 + step), "grad_norm": 2.0 * rng.random(),
                 "none_pass_fraction": max(0.0, 0.6 - slope * step / steps)}
            if with_kl:
                m["kl"] = 0.001 * step
            if step % 10 == 0:
                m.update({"eval/accuracy": 0.2 + slope * step / (2 * steps),
                          "eval/num_problems": 50})
            writer.write(step, m)
    return workdir


@pytest.fixture
def two_runs(tmp_path):
    return (_fake_run(tmp_path / "runs" / "grpo", slope=0.5),
            _fake_run(tmp_path / "runs" / "lte", slope=0.8, with_kl=False))


def test_plot_writes_a_png_with_one_panel_per_metric(two_runs, tmp_path):
    out = tmp_path / "compare.png"
    assert plot.main([*map(str, two_runs), f"--out={out}", "--smooth=3"]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    pixels = mpimg.imread(out)
    assert pixels.ndim == 3 and pixels.shape[0] > 300 and pixels.std() > 0.05   # not blank


def test_default_metrics_are_the_preferred_ones_every_run_logged(two_runs):
    runs = {w.name: plot.read_metrics(w) for w in two_runs}
    # kl is missing from one run; eval/num_problems is not an accuracy-like eval key.
    assert plot.default_metrics(runs) == [
        "reward_mean", "accuracy", "eval/accuracy", "response_length_mean", "entropy",
        "grad_norm", "none_pass_fraction"]


def test_table_prints_last_and_best_per_run_and_metric(two_runs, tmp_path, capsys,
                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    plot.main([*map(str, two_runs), "--table", "--metrics=eval/accuracy,kl"])
    out = capsys.readouterr().out
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in out.splitlines()[2:-1]}
    assert rows[("eval/accuracy", "grpo")] == ["0.45", "30", "0.45", "30"]
    assert rows[("eval/accuracy", "lte")] == ["0.6", "30", "0.6", "30"]
    assert rows[("kl", "grpo")] == ["0.03", "30", "0", "0"]    # lower KL is better
    assert rows[("kl", "lte")] == ["-", "-"]
    assert not (tmp_path / "metrics.png").exists()   # --table alone draws nothing


def test_read_metrics_keeps_the_last_value_of_a_repeated_step_and_skips_junk(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 0, "wall_time": 1.0, "loss": 1.0, "phase": "warmup"}\n'
        '{"step": 1, "loss": null}\n'
        '{"step": 1, "loss": 0.5}\n'
        '{"step": 2, "loss": 0.25}\n'
        '{"step": 3, "lo\n')
    series = plot.read_metrics(tmp_path)
    assert set(series) == {"loss"}
    steps, values = series["loss"]
    assert steps.tolist() == [0, 1, 2] and values.tolist() == [1.0, 0.5, 0.25]


def test_smooth_is_a_trailing_mean_that_ignores_nan():
    got = plot.smooth(np.array([1.0, 2.0, 3.0, math.nan, 5.0]), 2)
    np.testing.assert_allclose(got, [1.0, 1.5, 2.5, 3.0, 5.0])


def test_workdir_without_metrics_is_a_clear_error(two_runs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        plot.main([str(two_runs[0]), str(tmp_path / "not_a_run")])
    assert exit_info.value.code == 2
    assert "not_a_run: no metrics.jsonl" in capsys.readouterr().err


def test_unknown_metric_lists_what_is_available(two_runs, capsys):
    with pytest.raises(SystemExit):
        plot.main([str(two_runs[0]), "--metrics=reward"])
    err = capsys.readouterr().err
    assert "no run logged reward; available:" in err and "reward_mean" in err


def test_runs_with_the_same_name_get_distinct_labels(tmp_path):
    a = _fake_run(tmp_path / "a" / "seed1", slope=0.5, steps=3)
    b = _fake_run(tmp_path / "b" / "seed1", slope=0.5, steps=3)
    assert plot.run_labels([str(a), str(b)]) == ["a/seed1", "b/seed1"]


def test_held_out_report_compares_the_first_and_last_evaluations(tmp_path):
    with MetricsWriter(tmp_path, tensorboard=False) as writer:
        writer.write(0, {"eval/greedy_accuracy": 0.2, "eval/avg@4": 0.18, "eval/pass@4": 0.42,
                         "eval/avg@1": 0.2, "eval/attempts@1": 0.2, "eval/attempts@2": 0.25,
                         "eval/seconds": 30.0, "eval/verifier_wrong": 367})
        assert plot.held_out_report(tmp_path) is None  # one evaluation: nothing to compare
        writer.write(1, {"reward_mean": 0.1, "accuracy": 0.1})
        writer.write(20, {"reward_mean": 0.3, "eval/greedy_accuracy": 0.41, "eval/avg@4": 0.39,
                          "eval/pass@4": 0.5})
        writer.write(40, {"eval/greedy_accuracy": 0.43, "eval/avg@4": 0.419, "eval/pass@4": 0.495,
                          "eval/avg@1": 0.4, "eval/attempts@1": 0.4, "eval/attempts@2": 0.5})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 41, "eval/greedy')  # a line cut short by a crash is skipped
    report = plot.held_out_report(tmp_path)
    assert report.splitlines() == [
        "Held-out accuracy, step 0 -> step 40:",
        "  greedy_accuracy  0.200 -> 0.430  (+0.230)",
        "  avg@4            0.180 -> 0.419  (+0.239)",
        "  pass@4           0.420 -> 0.495  (+0.075)",
        # attempts@1 is an episode's first attempt, not a sampled @1 estimate: kept.
        "  attempts@1       0.200 -> 0.400  (+0.200)",
        "  attempts@2       0.250 -> 0.500  (+0.250)",
    ]


def _write_eval(workdir, step, greedy, samples):
    """eval/step_<step>.jsonl as the trainer writes it (rl_reason.evaluate rows)."""
    folder = workdir / plot.EVAL_DIR
    folder.mkdir(exist_ok=True)
    rows = [{"mode": "greedy", "problem": p, "sample": 0, "status": "correct" if ok else "wrong",
             "extracted": "1"} for p, ok in enumerate(greedy)]
    rows += [{"mode": "sample", "problem": p, "sample": j, "status": "correct" if ok else "wrong",
              "extracted": "1" if ok else "2"}
             for p, flags in enumerate(samples) for j, ok in enumerate(flags)]
    (folder / f"step_{step}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_held_out_report_gives_standard_errors_and_the_paired_change(tmp_path):
    before_greedy, after_greedy = [0, 1, 0, 0], [1, 1, 1, 0]
    before_samples, after_samples = [[0, 0], [1, 0], [0, 0], [0, 0]], [[1, 1], [1, 0], [1, 0], [0, 0]]
    with MetricsWriter(tmp_path, tensorboard=False) as writer:
        writer.write(0, {"eval/greedy_accuracy": 0.25, "eval/avg@2": 0.125, "eval/pass@2": 0.25})
        writer.write(40, {"eval/greedy_accuracy": 0.75, "eval/avg@2": 0.5, "eval/pass@2": 0.75})
    _write_eval(tmp_path, 0, before_greedy, before_samples)
    _write_eval(tmp_path, 40, after_greedy, after_samples)
    lines = plot.held_out_report(tmp_path).splitlines()
    assert lines[0] == ("Held-out accuracy, step 0 -> step 40 (4 problems; ± standard error "
                        "over problems, paired for the change):")
    # greedy: sd of [0, 1, 0, 0] and of [1, 1, 1, 0] is 0.5, so each SE is 0.25; the
    # differences [1, 0, 1, 0] have sd sqrt(1/3), SE 0.289.
    assert lines[1] == "  greedy_accuracy  0.250 ± 0.250 -> 0.750 ± 0.250  (+0.500 ± 0.289)"
    # avg@2 per problem: [0, .5, 0, 0] -> [1, .5, .5, 0]; differences [1, 0, .5, 0].
    assert lines[2] == "  avg@2            0.125 ± 0.125 -> 0.500 ± 0.204  (+0.375 ± 0.239)"
    assert lines[3].startswith("  pass@2           0.250 ± 0.250 -> 0.750 ± 0.250  (+0.500 ± ")


def test_held_out_report_gives_attempts_at_k_with_standard_errors(tmp_path):
    with MetricsWriter(tmp_path, tensorboard=False) as writer:
        writer.write(0, {"eval/greedy_accuracy": 0.5, "eval/attempts@1": 0.0, "eval/attempts@2": 0.5})
        writer.write(9, {"eval/greedy_accuracy": 0.5, "eval/attempts@1": 0.5, "eval/attempts@2": 1.0})
    rows = {0: [(0, 1, "wrong"), (1, 1, "wrong"), (0, 2, "correct"), (1, 2, "wrong")],
            9: [(0, 1, "correct"), (1, 1, "wrong"), (1, 2, "correct")]}
    for step, attempts in rows.items():
        folder = tmp_path / plot.EVAL_DIR
        folder.mkdir(exist_ok=True)
        lines = [dict(mode="greedy", problem=p, sample=0, status=s, extracted=None)
                 for p, s in ((0, "correct"), (1, "wrong"))]
        lines += [dict(mode="attempts", problem=p, attempt=a, status=s) for p, a, s in attempts]
        (folder / f"step_{step}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    report = plot.held_out_report(tmp_path).splitlines()
    # attempts@1 per problem [0, 0] -> [1, 0]; attempts@2 [1, 0] -> [1, 1]: SE 0.5 each
    # side when the two problems differ, paired SE 0.5.
    assert report[2] == "  attempts@1       0.000 ± 0.000 -> 0.500 ± 0.500  (+0.500 ± 0.500)"
    assert report[3] == "  attempts@2       0.500 ± 0.500 -> 1.000 ± 0.000  (+0.500 ± 0.500)"


def test_held_out_report_without_generation_files_or_with_other_problems(tmp_path):
    with MetricsWriter(tmp_path, tensorboard=False) as writer:
        writer.write(0, {"eval/greedy_accuracy": 0.25})
        writer.write(40, {"eval/greedy_accuracy": 0.75})
    assert plot.held_out_report(tmp_path).splitlines()[1] == "  greedy_accuracy  0.250 -> 0.750  (+0.500)"
    # The last evaluation covered other problems: SEs, but no paired one.
    _write_eval(tmp_path, 0, [0, 1, 0, 0], [[0], [1], [0], [0]])
    _write_eval(tmp_path, 40, [1, 1, 1], [[1], [1], [1]])
    assert plot.held_out_report(tmp_path).splitlines()[1] == (
        "  greedy_accuracy  0.250 ± 0.250 -> 1.000 ± 0.000  (+0.500)")
