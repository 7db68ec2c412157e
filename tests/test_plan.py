"""The pod layouts written in the real-run configs, checked on abstract shapes."""

import importlib

import pytest

from configs import grpo
from rl_reason import plan
from rl_reason.methods.grpo.method import GRPO
from rl_reason.methods.registry import METHODS
from rl_reason.models import get_preset
from rl_reason.rl.losses import LossConfig

METHOD_CONFIGS = ("grpo", "exgrpo", "lte", "lte_exgrpo", "multi_attempt", "r3l",
                  "failure_prefix")
# Each real-model variant's target: (preset, chips, GiB a chip).
TARGETS = {"qwen25_math_1p5b": ("qwen2.5-math-1.5b", 1, 80),   # one 80 GB GPU
           "qwen3_4b": ("qwen3-4b-base", 64, 16)}              # a v5e-64 slice
# Methods whose sampler calls hold more than a plain prompt and one budget.
LONGER_CALLS = ("lte", "lte_exgrpo", "multi_attempt", "r3l", "failure_prefix")


def target_plan(name, variant):
    preset, chips, hbm = TARGETS[variant]
    config = importlib.import_module(f"configs.{name}").get_config(variant)
    return plan.plan(config, get_preset(preset), num_devices=chips, hbm_gib=hbm)


@pytest.mark.parametrize("variant", sorted(TARGETS))
@pytest.mark.parametrize("name", METHOD_CONFIGS)
def test_every_method_config_fits_its_target_with_its_extras(name, variant):
    p = target_plan(name, variant)
    assert p.fits, p.table()
    baseline = target_plan("grpo", variant)
    if name in LONGER_CALLS:
        assert p.sampler_slots > baseline.sampler_slots, p.table()
    else:
        assert p.sampler_slots == baseline.sampler_slots
    # R3L's own loss has a KL term (k2, loss.kl_coef 0.001): the reference is kept.
    assert ("reference" in p.bytes_per_device) == (name == "r3l")
    assert "slots (rows decoded at once) x" in p.table()


def test_multi_attempt_call_holds_the_earlier_attempts_and_a_full_budget():
    c = importlib.import_module("configs.multi_attempt").get_config("qwen3_4b")
    call = METHODS["multi_attempt"].sampler_shape(c)
    r = c.rollout
    assert call.context > r.max_prompt_len + r.max_new_tokens
    assert call.new_tokens == r.max_new_tokens
    assert call.rows == r.max_sample_batch


def test_r3l_call_holds_a_reflection_request():
    c = importlib.import_module("configs.r3l").get_config("qwen3_4b")
    call = METHODS["r3l"].sampler_shape(c)
    assert call.context >= c.method.max_reflection_prompt_len
    assert call.new_tokens == max(c.rollout.max_new_tokens, c.method.reflection_max_new_tokens)


class _KLInItsLoss(GRPO):
    """A method whose own loss adds a KL term that config.loss does not have."""

    def loss_config(self):
        return LossConfig(kl_coef=0.05)


def test_reference_follows_the_methods_loss_not_config_loss(monkeypatch):
    monkeypatch.setitem(METHODS, "grpo", _KLInItsLoss)
    c = grpo.get_config("qwen3_4b")
    assert c.loss.kl_coef == 0
    p = plan.plan(c, get_preset("qwen3-4b-base"), num_devices=64, hbm_gib=16)
    assert p.bytes_per_device["reference"] == p.bytes_per_device["parameters"]
    assert "kl_coef=0.05" in p.table()


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


def test_sampling_estimate_by_hand():
    from rl_reason import plan_sampling
    from rl_reason.models import ModelConfig
    # 1 layer, hidden 4, 1 head of 4, MLP 8, vocab 10: matmul parameters 4*(8+8) + 3*4*8
    # + 40 = 200; keys and values 2 * 4 values a token.
    config = ModelConfig(family="qwen3", vocab_size=10, hidden_size=4, intermediate_size=8,
                         num_layers=1, num_heads=1, num_kv_heads=1, head_dim=4)
    assert plan_sampling.matmul_params(config) == 200
    chip = plan_sampling.Chip(hbm_gib=1, hbm_gb_s=1e-9, bf16_tflops=1e-12)  # 1 B/s, 1 FLOP/s
    e = plan_sampling.estimate(config, chip, chips=1, rows=4, slots=2, context=2, budget=10,
                               dtype_bytes=1)
    r = plan_sampling.ROOFLINE
    # Static: two calls of 10 steps at 2 rows, attending from the middle of the budget:
    # max(200 + 2 * (2 + 5) * 8 bytes, 2 * 400 FLOPs) = 800 s a step; prefill 4 * 2 * 400.
    prefill = 3200 / r
    assert e.static_s == pytest.approx(2 * 10 * 800 / r + prefill)
    # Continuous: 4 * 0.25 * 10 / slot_use slot-steps, at least 10 steps.
    slot_steps = 10 / plan_sampling.SLOT_USE
    steps = max(10, slot_steps / 2)
    live = slot_steps / steps
    position = plan_sampling.LONGTAIL_MEAN_POSITION * 10
    step = max(200 + live * (2 + position) * 8, live * 400) / r
    assert e.continuous_s == pytest.approx(steps * step + prefill)
    assert e.speedup > 1


def test_sampling_estimate_lengths_are_the_benchmarks():
    import sys
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    from benchmarks import sampler_lengths
    from rl_reason import plan_sampling
    lengths = sampler_lengths.stop_points("longtail", 2048, 8192).astype(float)
    assert plan_sampling.LONGTAIL_MEAN == pytest.approx(lengths.mean() / 8192, abs=0.005)
    assert plan_sampling.LONGTAIL_MEAN_POSITION == pytest.approx(
        (lengths ** 2).sum() / (2 * lengths.sum()) / 8192, abs=0.005)


def test_plan_with_a_chip_prints_the_sampling_estimate():
    c = grpo.get_config("qwen25_math_1p5b")
    p = plan.plan(c, get_preset("qwen2.5-math-1.5b"), num_devices=1, hbm_gib=80, chip="h100")
    assert p.sampling is not None and p.sampling.speedup > 1
    assert "a round in the continuous batch" in p.table()
    assert plan.plan(c, get_preset("qwen2.5-math-1.5b"), num_devices=1, hbm_gib=80).sampling is None
