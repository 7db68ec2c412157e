"""ExGRPO end to end, slow: a run killed with SIGKILL while mixing, with a non-empty
buffer, resumes exactly; two steps of every ablation variant replay and train."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from exgrpo_helpers import ROOT, HalfCorrectVerifier, tiny_config
from rl_reason import checkpoint, models, run_setup, train
from configs import exgrpo as exgrpo_config

pytestmark = pytest.mark.slow
SCRIPT = os.path.join(ROOT, "tests", "methods", "exgrpo_helpers.py")


def environment():
    return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
                XLA_FLAGS="--xla_force_host_platform_device_count=1")


def metric_lines(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    # Timings differ between runs; everything else must not.
    return [{k: v for k, v in m.items() if not (k.startswith("time/") or k in (
        "tokens_per_s", "eval/seconds", "wall_time"))} for m in lines if "loss" in m]


def method_state(workdir, step):
    folder = os.path.join(workdir, "checkpoints", str(step), "method_state")
    with open(os.path.join(folder, "structure.json")) as f:
        skeleton = f.read()
    with np.load(os.path.join(folder, "arrays.npz")) as npz:
        arrays = [npz[f"arr_{i}"] for i in range(len(npz.files))]
    return checkpoint.decode_method_state(skeleton, arrays)


def test_sigkill_while_mixing_then_resume_matches_uninterrupted(tiny_policy, tmp_path):
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    subprocess.run([sys.executable, SCRIPT, straight, tiny_policy, "5"], cwd=ROOT,
                   env=environment(), check=True, timeout=900)

    proc = subprocess.Popen([sys.executable, SCRIPT, killed, tiny_policy, "5"], cwd=ROOT,
                            env=environment(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = os.path.join(killed, "checkpoints", "3")
    deadline = time.time() + 900
    while not os.path.isdir(target) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # Before the kill: mixing on and the buffer non-empty, in the checkpoint resumed from.
    state = method_state(killed, 3)
    assert state["mixing"] is True and len(state["buffer"]["records"]) > 0
    subprocess.run([sys.executable, SCRIPT, killed, tiny_policy, "5"], cwd=ROOT,
                   env=environment(), check=True, timeout=900)

    a, b = metric_lines(straight), metric_lines(killed)
    assert [m["step"] for m in a] == [1, 2, 3, 4, 5]
    assert a == b
    assert sum(m["exgrpo/replay_groups"] for m in a[2:]) > 0   # it did replay
    end_a, end_b = method_state(straight, 5), method_state(killed, 5)
    assert json.dumps(end_a["buffer"]["keys"]) == json.dumps(end_b["buffer"]["keys"])
    np.testing.assert_array_equal(end_a["buffer"]["logprobs"], end_b["buffer"]["logprobs"])
    pa = models.load(os.path.join(straight, "hf")).params
    pb = models.load(os.path.join(killed, "hf")).params
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), pa, pb)


@pytest.mark.parametrize("variant", sorted(exgrpo_config.ABLATIONS))
def test_two_steps_of_each_ablation_variant(tiny_policy, tmp_path, monkeypatch, variant):
    """Stored from step 1 and mixing from step 2, so step 2 replays under the variant
    through the trainer (what each variant changes is checked mechanism by mechanism in
    test_exgrpo.py, test_each_ablation_variant_changes_its_mechanism)."""
    monkeypatch.setattr(run_setup, "make_verifier", lambda _: HalfCorrectVerifier())
    workdir = str(tmp_path / variant)
    c = tiny_config(tiny_policy, variant, **{
        "method.mixing_threshold": 0.0, "method.store_before_mixing": True,
        "train.num_steps": 2, "train.eval_every": 0})
    c.eval.enabled = False
    train.run(c, workdir)
    second = metric_lines(workdir)[-1]
    # floor(rho * B) with B = 4, rho as the variant names it (not read back from c).
    rho = {"rho025": 0.25, "rho075": 0.75}.get(variant, 0.5)
    expected = min(int(rho * 4), metric_lines(workdir)[0]["exgrpo/buffer_questions"])
    assert second["exgrpo/replay_groups"] == expected > 0
    assert second["off_policy_fraction"] > 0 and np.isfinite(second["loss"])
    # The replayed tokens' weight: the raw ratio w without shaping, else w / (w + 0.1),
    # below 1 whatever w is.
    if variant == "no_shaping":
        assert second["shaping_weight_mean"] == pytest.approx(second["off_policy_w_mean"],
                                                              rel=1e-5)
    else:
        assert second["shaping_weight_mean"] < 1.0
