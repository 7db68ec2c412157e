"""The TPU pod scripts, dry-run: they build the gcloud commands a user would run."""

import importlib
import os
import subprocess

import pytest

from rl_reason import plan

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


METHOD_CONFIGS = ("grpo", "exgrpo", "lte", "lte_exgrpo", "multi_attempt", "r3l",
                  "failure_prefix")


@pytest.mark.parametrize("name", METHOD_CONFIGS)
def test_launch_starts_each_method_on_the_default_slice(name):
    config = f"configs/{name}.py:qwen3_4b"
    result = dry_run("launch.sh", f"--config={config}",
                     "--config.model.checkpoint=/mnt/ckpt/Qwen3-4B-Base", f"--workdir=/mnt/runs/{name}")
    assert result.returncode == 0, result.stderr
    assert "--worker=all" in result.stdout and "rl_reason.main" in result.stdout
    assert config in result.stdout and f"/mnt/runs/{name}" in result.stdout
    # The variant's mesh covers the default slice (v5litepod-64: 64 chips).
    variant = importlib.import_module(f"configs.{name}").get_config("qwen3_4b")
    assert dict(plan.abstract_mesh(variant, 64).shape) == {"data": 1, "fsdp": 16, "tensor": 4}


def test_launch_refuses_a_config_the_checkout_lacks():
    result = dry_run("launch.sh", "--config=configs/nope.py:qwen3_4b")
    assert result.returncode == 2 and "no config file" in result.stderr
    assert "configs/nope.py" in result.stderr
    assert "gcloud" not in result.stdout


def test_launch_without_arguments_prints_usage():
    result = dry_run("launch.sh")
    assert result.returncode == 2 and "usage" in result.stderr


@pytest.mark.parametrize("script", ["create_pod.sh", "install.sh", "launch.sh", "stop.sh"])
def test_scripts_parse(script):
    assert subprocess.run(["bash", "-n", os.path.join(ROOT, "tpu_setup", script)]).returncode == 0
