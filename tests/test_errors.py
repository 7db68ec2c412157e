"""User errors end a command with one line `error: ...` and exit status 2; bugs keep
their traceback."""

import json
import os
import subprocess
import sys

import pytest

from rl_reason import errors, plan
from rl_reason.checkpoint import CheckpointError
from rl_reason.config_check import ConfigError
from rl_reason.data.sources import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_user_error_becomes_one_line_and_exit_status_2(capsys):
    @errors.exit_on_user_error
    def main(path):
        raise errors.MissingPathError(f"{path}: no such file\n  (checked twice)")

    with pytest.raises(SystemExit) as exit_info:
        main("train.jsonl")
    assert exit_info.value.code == errors.EXIT_USER_ERROR == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", "error: train.jsonl: no such file (checked twice)\n")


def test_other_errors_propagate_and_results_pass_through():
    @errors.exit_on_user_error
    def main(fail):
        if fail:
            raise ValueError("a bug, not the user's input")
        return "done"

    assert main(False) == "done"
    with pytest.raises(ValueError, match="a bug"):
        main(True)


@pytest.mark.parametrize("error, builtin", [
    (ConfigError, ValueError), (DataError, ValueError), (CheckpointError, RuntimeError),
    (errors.MissingPathError, FileNotFoundError), (errors.UnwritablePathError, OSError),
    (errors.CheckpointFolderError, ValueError)])
def test_user_errors_are_still_the_builtin_types_callers_catch(error, builtin):
    assert issubclass(error, errors.UserError) and issubclass(error, builtin)


def run_command(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def assert_one_error_line(result, message):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]], lines
    assert message in lines[-1], lines[-1]


def train(workdir, *overrides):
    return run_command("rl_reason.main", "--config=configs/grpo.py:tiny",
                       f"--workdir={workdir}", "--config.verifier.num_workers=1", *overrides)


def test_train_command_reports_a_bad_config_value(tmp_path):
    result = train(tmp_path / "run", "--config.rollout.group_size=0")
    assert_one_error_line(result, "error: rollout.group_size must be >= 1")


@pytest.mark.parametrize("config, override, message", [
    ("configs/grpo.py:tiny", "--config.rollout.group_sise=4",
     "error: --config.rollout.group_sise: configs/grpo.py has no key rollout.group_sise; "
     "did you mean rollout.group_size?"),
    ("configs/exgrpo.py", "--config.method.rho=0.25",
     "error: --config.method.rho: configs/exgrpo.py has no key method.rho; did you mean "
     "method.replay_ratio (the paper's rho)?"),
    ("configs/lte.py:nonexistent", "--config.seed=1",
     "error: --config=configs/lte.py:nonexistent: configs/lte.py has no variant 'nonexistent'; "
     "its variants (combined with commas): lte_entropy, grpo_extra_rollouts, no_shaping, "
     "no_concise, no_cap, tiny, qwen25_math_1p5b, qwen3_4b"),
    ("configs/grpo.py", "--config.rollout.group_size=four",
     "error: flag --config.rollout.group_size=four: invalid literal for int()"),
    ("configs/grpo.py", "--config.loss.estimator=rloo",
     "error: loss.estimator moved to advantage.estimator"),
    ("configs/grpo.py:dapo", "--config.loss.dynamic_sampling=True",
     "error: loss.dynamic_sampling moved to rollout.dynamic_sampling"),
])
def test_train_command_reports_a_mistyped_key_or_variant_in_one_line(tmp_path, config,
                                                                     override, message):
    result = run_command("rl_reason.main", f"--config={config}", override,
                         f"--workdir={tmp_path / 'run'}")
    assert_one_error_line(result, message)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "run").exists()       # nothing ran


def test_train_command_reports_a_missing_or_wrong_checkpoint_folder(tmp_path):
    result = train(tmp_path / "run", "--config.model.checkpoint=/no/such/dir")
    assert_one_error_line(result, "error: model.checkpoint='/no/such/dir' is not a directory")
    empty = tmp_path / "not_a_checkpoint"
    empty.mkdir()
    result = train(tmp_path / "run", f"--config.model.checkpoint={empty}")
    assert_one_error_line(result, f"{empty}/config.json: missing")


@pytest.fixture
def bad_data(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"problem": "What is 2+2?", "answer": "4"}) + "\n"
                    + json.dumps({"problem": "What is 3+3?"}) + "\n")
    return path


def test_train_command_reports_a_bad_data_row(tiny_policy, bad_data, tmp_path):
    result = train(tmp_path / "run", f"--config.model.checkpoint={tiny_policy}",
                   f"--config.data.train={bad_data}")
    assert_one_error_line(result, f"error: {bad_data}: line 2: missing answer (field 'answer')")


def test_evaluate_command_reports_a_bad_data_row(tiny_policy, bad_data, tmp_path):
    result = run_command("rl_reason.evaluate", f"--checkpoint={tiny_policy}",
                         f"--data={bad_data}", f"--out={tmp_path / 'eval'}")
    assert_one_error_line(result, f"error: {bad_data}: line 2: missing answer")


def test_plan_command_reports_a_mesh_that_does_not_fit(capsys):
    with pytest.raises(SystemExit) as exit_info:
        plan.main(["--config=configs/grpo.py:qwen3_4b", "--preset=qwen3-4b-base",
                   "--devices=6"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "error: mesh data=1, fsdp=-1, tensor=4 does not fit 6 devices\n")
