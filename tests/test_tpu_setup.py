"""The TPU pod scripts, dry-run: they build the gcloud commands a user would run."""

import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dry_run(script, *args, **env):
    result = subprocess.run(
        ["bash", os.path.join(ROOT, "tpu_setup", script), *args], capture_output=True,
        text=True, env=dict(os.environ, DRY_RUN="1", **env), timeout=60)
    return result


def test_create_pod_uses_the_requested_slice():
    out = dry_run("create_pod.sh", TPU_NAME="pod1", ACCELERATOR="v6e-64", SPOT="1").stdout
    assert "tpu-vm create pod1" in out
    assert "--accelerator-type=v6e-64" in out and "--spot" in out


def test_install_pins_the_projects_jax_on_every_worker():
    out = dry_run("install.sh").stdout
    assert "--worker=all" in out
    assert "jax\\[tpu\\]==0.10.2" in out or "jax[tpu]==0.10.2" in out


def test_launch_passes_the_training_flags_to_every_worker():
    out = dry_run("launch.sh", "--config=configs/grpo.py:qwen3_4b", "--workdir=/mnt/runs/a").stdout
    assert "--worker=all" in out and "rl_reason.main" in out
    assert "configs/grpo.py:qwen3_4b" in out and "/mnt/runs/a" in out


def test_launch_without_arguments_prints_usage():
    result = dry_run("launch.sh")
    assert result.returncode == 2 and "usage" in result.stderr


@pytest.mark.parametrize("script", ["create_pod.sh", "install.sh", "launch.sh", "stop.sh"])
def test_scripts_parse(script):
    assert subprocess.run(["bash", "-n", os.path.join(ROOT, "tpu_setup", script)]).returncode == 0
