"""The trainer as users run it, in separate processes: killed with SIGKILL and resumed,
and two processes joined with jax.distributed on 127.0.0.1."""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from rl_reason import models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow


def command(policy, workdir, steps, *extra):
    return [sys.executable, "-m", "rl_reason.main", "--config=configs/grpo.py:tiny",
            f"--workdir={workdir}", f"--config.model.checkpoint={policy}",
            f"--config.train.num_steps={steps}", "--config.train.eval_every=0",
            "--config.loss.entropy_coef=0.01", "--config.optim.learning_rate=0.001",
            "--config.optim.warmup_steps=0", "--config.verifier.num_workers=1", *extra]


def environment(devices):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return env


def losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    return [(line["step"], line["loss"], line["reward_mean"]) for line in lines if "loss" in line]


def assert_same_params(a_dir, b_dir, exact=True):
    a = models.load(os.path.join(a_dir, "hf")).params
    b = models.load(os.path.join(b_dir, "hf")).params
    check = (np.testing.assert_array_equal if exact else
             lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6))
    jax.tree.map(lambda x, y: check(np.asarray(x), np.asarray(y)), a, b)


def test_sigkill_then_resume_matches_uninterrupted(tiny_policy, tmp_path):
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    subprocess.run(command(tiny_policy, straight, 4), cwd=ROOT, env=environment(1),
                   check=True, timeout=600)

    proc = subprocess.Popen(command(tiny_policy, killed, 4), cwd=ROOT, env=environment(1),
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    target = os.path.join(killed, "checkpoints", "2")
    deadline = time.time() + 600
    while not os.path.isdir(target) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)   # the trainer and its verifier workers
    proc.wait()
    subprocess.run(command(tiny_policy, killed, 4), cwd=ROOT, env=environment(1),
                   check=True, timeout=600)

    assert losses(straight) == losses(killed)
    assert_same_params(straight, killed)


def test_a_loss_switch_mid_run_survives_sigkill(tiny_policy, tmp_path):
    """The method's loss settings change after step 2 (its state decides); a run
    killed after the switch and resumed matches an uninterrupted one exactly."""
    script = [sys.executable, os.path.join(ROOT, "tests", "switching_method_run.py"), tiny_policy]
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    subprocess.run(script + [straight, "5"], cwd=ROOT, env=environment(1), check=True,
                   timeout=600)
    proc = subprocess.Popen(script + [killed, "5"], cwd=ROOT, env=environment(1),
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    target = os.path.join(killed, "checkpoints", "3")
    deadline = time.time() + 600
    while not os.path.isdir(target) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run(script + [killed, "5"], cwd=ROOT, env=environment(1), check=True,
                   timeout=600)

    assert losses(straight) == losses(killed)
    with open(os.path.join(straight, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f if '"loss"' in line]
    # The switch happened: entropy bonus in steps 1-2, the k2 KL term in steps 3-5.
    for m in lines[:2]:
        assert m["loss"] == pytest.approx(m["pg_loss"] - 0.01 * m["entropy"], abs=1e-6)
    for m in lines[2:]:
        assert m["kl"] > 0 and m["loss"] == pytest.approx(m["pg_loss"] + 0.05 * m["kl"],
                                                          abs=1e-6)
    assert_same_params(straight, killed)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_together_like_one(tiny_policy, tmp_path):
    """2 processes x 2 CPU devices (fsdp over both hosts) == 1 process x 4 devices; with
    W&B logging on (offline), only process 0 starts a W&B run."""
    mesh = ("--config.mesh.data=2", "--config.mesh.fsdp=2")
    single = str(tmp_path / "single")
    subprocess.run(command(tiny_policy, single, 2, *mesh), cwd=ROOT, env=environment(4),
                   check=True, timeout=600)

    joint = str(tmp_path / "joint")
    port = free_port()
    wandb_dir = tmp_path / "wandb_files"
    wandb_dir.mkdir()
    with_wandb = importlib.util.find_spec("wandb") is not None
    env = dict(environment(2), WANDB_MODE="offline", WANDB_DIR=str(wandb_dir),
               WANDB_SILENT="true")
    procs = [subprocess.Popen(
        command(tiny_policy, joint, 2, *mesh, f"--coordinator=127.0.0.1:{port}",
                "--num_processes=2", f"--process_id={i}",
                *(["--config.logging.wandb=True"] if with_wandb else [])),
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True) for i in range(2)]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]

    single_losses, joint_losses = losses(single), losses(joint)
    assert [s for s, *_ in joint_losses] == [1, 2]
    np.testing.assert_allclose([l for _, l, _ in single_losses], [l for _, l, _ in joint_losses],
                               rtol=1e-4, atol=1e-6)
    assert_same_params(single, joint, exact=False)
    if with_wandb:
        assert len(list((wandb_dir / "wandb").glob("offline-run-*"))) == 1
