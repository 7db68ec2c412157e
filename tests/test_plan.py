"""The pod layouts written in the real-run configs, checked on abstract shapes."""

import pytest

from configs import grpo
from rl_reason import plan
from rl_reason.models import get_preset


def test_qwen3_4b_config_fits_a_v5e_64_pod():
    c = grpo.get_config("qwen3_4b")
    model = get_preset("qwen3-4b-base")
    p = plan.plan(c, model, num_devices=64, hbm_gib=16)
    assert p.mesh_shape == {"data": 1, "fsdp": 16, "tensor": 4}
    # Every weight matrix is split 64 ways: float32 parameters cost 4 bytes / 64 each.
    assert p.bytes_per_device["parameters"] == pytest.approx(4 * model.num_params() / 64,
                                                             rel=0.02)
    assert p.bytes_per_device["optimizer"] == pytest.approx(
        2 * p.bytes_per_device["parameters"], rel=0.01)
    assert not p.replicated_params
    assert p.fits, p.table()


def test_qwen3_4b_does_not_fit_eight_v5e_chips():
    p = plan.plan(grpo.get_config("qwen3_4b"), get_preset("qwen3-4b-base"), num_devices=8,
                  hbm_gib=16)
    assert not p.fits and "DOES NOT FIT" in p.table()


def test_indivisible_heads_are_reported_replicated():
    c = grpo.get_config("qwen3_4b")
    c.unlock()
    c.mesh.tensor = 16      # Qwen3-4B has 8 KV heads
    p = plan.plan(c, get_preset("qwen3-4b-base"), num_devices=64, hbm_gib=32)
    assert any("kv_heads" in name for name in p.replicated_params)


def test_mesh_that_does_not_match_the_device_count_is_an_error():
    c = grpo.get_config("qwen3_4b")
    with pytest.raises(ValueError, match="does not fit 6 devices"):
        plan.plan(c, get_preset("qwen3-4b-base"), num_devices=6, hbm_gib=16)


def test_cli_prints_the_plan_with_config_overrides(capsys):
    plan.main(["--config=configs/grpo.py:qwen25_math_1p5b", "--preset=qwen2.5-math-1.5b",
               "--devices=8", "--hbm_gib=80", "--config.mesh.fsdp=2", "--config.mesh.tensor=4"])
    out = capsys.readouterr().out
    assert "'fsdp': 2, 'tensor': 4" in out and "(fits;" in out


def test_cli_names_a_missing_flag():
    with pytest.raises(SystemExit, match="--preset"):
        plan.main(["--config=configs/grpo.py", "--devices=8"])
