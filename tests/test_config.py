"""Configs load with every variant, and bad settings fail before any compute."""

import pytest

from configs import exgrpo, failure_prefix, grpo, lte, lte_exgrpo, multi_attempt
from rl_reason.config_check import ConfigError, check


@pytest.mark.parametrize("variant", ["", "tiny", "dapo", "drgrpo", "qwen25_math_1p5b",
                                     "qwen3_4b", "tiny,dapo"])
def test_grpo_variants_are_valid(variant):
    check(grpo.get_config(variant), num_devices=8)


def test_grpo_switches_live_in_their_blocks():
    """loss keeps the keys that reach the loss (LossConfig); DAPO's refill is the
    rollout's, its overlong shaping the reward's, Dr.GRPO's std switch the advantage's."""
    default = grpo.get_config("")
    assert (default.advantage.estimator, default.advantage.norm_by_std) == ("grpo", True)
    assert (default.rollout.dynamic_sampling, default.rollout.max_refill_rounds) == (False, 3)
    assert (default.reward.overlong_buffer, default.reward.overlong_penalty,
            default.reward.mask_truncated) == (0, 1.0, False)
    assert sorted(default.loss.keys()) == [
        "aggregation", "clip_high", "clip_low", "clip_on_policy", "entropy_coef", "kl_coef",
        "kl_estimator", "off_policy_weight", "shaping_gamma"]
    dapo = grpo.get_config("dapo")
    assert dapo.rollout.dynamic_sampling and dapo.reward.overlong_buffer == 16
    assert (dapo.reward.mask_truncated, dapo.loss.clip_high) == (False, 0.28)
    drgrpo = grpo.get_config("drgrpo")
    assert (drgrpo.advantage.norm_by_std, drgrpo.loss.aggregation) == (False, "constant")
    assert exgrpo.get_config("").advantage.norm_by_std is False


@pytest.mark.parametrize("variant", ["", "tiny", "per_episode", "last_attempt", "binary_reward",
                                     "single_attempt", "authors_kl", "qwen25_math_1p5b",
                                     "qwen3_4b", "tiny,per_episode,drgrpo"])
def test_multi_attempt_variants_are_valid(variant):
    c = multi_attempt.get_config(variant)
    check(c, num_devices=8)
    # Evaluated as the paper does, attempts@1..7, whatever the training budget (N <= 5).
    assert c.method_name == "multi_attempt" and c.eval.attempts == 7
    assert c.eval.attempt_feedback == "multi_attempt" and c.eval.attempt_temperature == 0.0


def test_multi_attempt_variants_set_their_switches():
    assert multi_attempt.get_config("per_episode").method.budget_per == "episode"
    assert multi_attempt.get_config("last_attempt").method.reward_rule == "last_attempt"
    binary = multi_attempt.get_config("binary_reward").method
    assert (binary.reward_correct, binary.reward_wrong, binary.reward_no_answer) == (1, 0, 0)
    assert multi_attempt.get_config("single_attempt").method.max_attempts == 1
    assert multi_attempt.get_config("authors_kl").loss.kl_coef == 0.01
    assert multi_attempt.get_config("qwen25_math_1p5b").rollout.max_new_tokens == 3072
    with pytest.raises(ValueError, match="known: tiny, .*, per_episode, last_attempt"):
        multi_attempt.get_config("nope")
    with pytest.raises(ConfigError, match="dynamic_sampling"):
        check(multi_attempt.get_config("dapo"), num_devices=1)
@pytest.mark.parametrize("variant", ["", "tiny", "tau025", "tau075", "plateau", "no_refresh",
                                     "grpo", "qwen25_math_1p5b", "qwen3_4b", "tiny,tau075",
                                     "qwen25_math_1p5b,no_refresh"])
def test_failure_prefix_variants_are_valid(variant):
    c = failure_prefix.get_config(variant)
    check(c, num_devices=8)
    assert c.method_name == ("grpo" if variant == "grpo" else "failure_prefix")


def test_embedded_eval_levels_choose_the_held_out_levels():
    from rl_reason import run_setup

    c = grpo.get_config("tiny")
    c.unlock()
    c.data.update(embedded_levels=(1,), embedded_eval_size=8)
    assert {r.meta["level"] for r in run_setup.held_out_records(c)} == {1}
    c.data.embedded_eval_levels = (1, 2)
    assert [r.meta["level"] for r in run_setup.held_out_records(c)] == [1, 2] * 4
    c.data.embedded_eval_levels = (9,)
    with pytest.raises(ConfigError, match=r"data.embedded_eval_levels=\(9,\)"):
        check(c, num_devices=1)


@pytest.mark.parametrize("variant", ["", "tiny", "qwen25_math_1p5b", "qwen3_4b",
                                     "tiny,no_cap,no_concise"] + list(lte.VARIANTS))
def test_lte_variants_are_valid(variant):
    c = lte.get_config(variant)
    assert c.method_name == "lte"
    check(c, num_devices=8)


EXGRPO_VARIANTS = ["", "tiny", "qwen25_math_1p5b", "qwen3_4b", *exgrpo.ABLATIONS,
                   "qwen25_math_1p5b,no_shaping", "tiny,rho075"]


@pytest.mark.parametrize("variant", EXGRPO_VARIANTS)
def test_exgrpo_variants_are_valid(variant):
    c = exgrpo.get_config(variant)
    assert c.method_name == "exgrpo" and not c.note
    check(c, num_devices=8)


@pytest.mark.parametrize("variant", ["", "tiny", "qwen25_math_1p5b", "qwen3_4b", "no_shaping",
                                     "tiny,no_cap,no_concise"])
def test_lte_exgrpo_variants_are_valid(variant):
    c = lte_exgrpo.get_config(variant)
    assert c.method_name == "lte_exgrpo"
    # Both components' keys, each as its own config sets it.
    assert set(c.method) == set(exgrpo.get_config("").method) | set(lte.get_config("").method)
    check(c, num_devices=8)


def test_exgrpo_ablations_are_one_flag_each():
    default = exgrpo.get_config("")
    expected = {
        "no_question_selection": ("method", "question_selection", "uniform"),
        "random_trajectory": ("method", "trajectory_selection", "random"),
        "highest_entropy": ("method", "trajectory_selection", "highest_entropy"),
        "no_shaping": ("loss", "off_policy_weight", "ratio"),
        "rho025": ("method", "replay_ratio", 0.25),
        "rho075": ("method", "replay_ratio", 0.75),
    }
    assert set(expected) == set(exgrpo.ABLATIONS)
    flat = lambda c: {(s, k): v for s in ("method", "loss", "optim", "rollout", "data")
                      for k, v in c[s].items()}
    for variant, (section, key, value) in expected.items():
        c = exgrpo.get_config(variant)
        changed = {k for k, v in flat(c).items() if flat(default)[k] != v}
        assert changed == {(section, key)} and c[section][key] == value, variant


def test_exgrpo_real_model_variants_use_the_released_settings():
    for variant in ("qwen25_math_1p5b", "qwen3_4b"):
        c = exgrpo.get_config(variant)
        assert c.rollout.group_size == 8 and c.optim.learning_rate == 1e-6
        assert c.optim.warmup_steps == 0 and c.optim.weight_decay == 0.01
        assert c.optim.num_minibatches >= 2 and c.verifier.name == "math"
        assert c.method.mixing_threshold == 0.35
    assert exgrpo.get_config("").method.mixing_threshold == 0.15   # embedded: see docstring
    with pytest.raises(ValueError, match="unknown config variant 'dapo'"):
        exgrpo.get_config("dapo")


def test_unknown_variant_is_named():
    with pytest.raises(ValueError, match="unknown config variant 'nope'"):
        grpo.get_config("nope")


def test_unknown_key_cannot_be_set():
    c = grpo.get_config("")
    with pytest.raises(AttributeError):
        c.rollout.group_sise = 4


@pytest.mark.parametrize("key, value, message", [
    ("rollout.group_size", 1, "needs at least 2 samples per prompt"),
    ("loss.aggregation", "sum", "loss.aggregation='sum'"),
    ("loss.kl_estimator", "k4", "loss.kl_estimator"),
    ("advantage.estimator", "ppo", "advantage.estimator='ppo'"),
    ("rollout.max_refill_rounds", -1, "rollout.max_refill_rounds must be >= 0"),
    ("rollout.temperature", 0.0, "rollout.temperature must be > 0"),
    ("rollout.cache_dtype", "int8", "rollout.cache_dtype='int8'"),
    ("method_name", "ppo", "method_name='ppo'"),
    ("verifier.name", "regex", "verifier.name='regex'"),
    ("reward.overlong_buffer", 64, "reward.overlong_buffer=64"),
    ("optim.num_minibatches", 3, "not divisible by optim.num_minibatches=3"),
    ("eval.attempts", -1, "eval.attempts must be >= 0"),
    ("eval.attempt_feedback", "system", "eval.attempt_feedback='system'"),
    ("eval.attempt_temperature", -0.5, "eval.attempt_temperature must be >= 0"),
    ("eval.prefix_fraction", 1.0, "eval.prefix_fraction=1.0 must be in (0, 1)"),
    ("eval.prefix_samples", 0, "eval.prefix_samples must be >= 1"),
    ("eval.temperature", 0.0, "eval.temperature must be > 0"),
])
def test_bad_settings_are_named(key, value, message):
    c = grpo.get_config("")
    c.unlock()
    section, _, name = key.rpartition(".")
    target = c[section] if section else c
    target[name] = value
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check(c, num_devices=1)


def test_batch_must_divide_over_the_mesh():
    c = grpo.get_config("")
    c.unlock()
    c.rollout.update(prompts_per_step=3, group_size=3)   # 9 rows over 8 batch shards
    with pytest.raises(ConfigError, match="does not divide over the 8 batch shards"):
        check(c, num_devices=8)
    c.mesh.update(data=3, fsdp=1, tensor=1)
    with pytest.raises(ConfigError, match="does not fit 8 devices"):
        check(c, num_devices=8)


def test_eval_modes_config_matches_the_evaluator():
    """Every eval key reaches EvalSettings, and a valid config builds valid settings."""
    from rl_reason.evaluation.settings import EvalSettings

    c = grpo.get_config("")
    c.unlock()
    c.eval.update(attempts=3, attempt_feedback="verifier", attempt_temperature=0.4,
                  misleading_prefix=True, prefix_fraction=0.25, prefix_samples=16)
    check(c, num_devices=1)
    settings = EvalSettings.from_config(c)
    assert (settings.attempts, settings.attempt_feedback, settings.attempt_temperature,
            settings.misleading_prefix, settings.prefix_fraction, settings.prefix_samples) == (
        3, "verifier", 0.4, True, 0.25, 16)


@pytest.mark.parametrize("variant", ["", "tiny", "no_reflect_retry", "no_pivotal_credit",
                                     "no_amplification", "restart", "grpo_feedback",
                                     "qwen25_math_1p5b", "qwen3_4b", "tiny,no_amplification",
                                     "qwen25_math_1p5b,restart"])
def test_r3l_variants_are_valid(variant):
    from configs import r3l

    c = r3l.get_config(variant)
    check(c, num_devices=8)
    # Success within 3 attempts with verifier feedback at temperature 0.4, as the paper.
    assert c.method_name == "r3l" and c.eval.attempts == 3
    assert c.eval.attempt_feedback == "verifier" and c.eval.attempt_temperature == 0.4


def test_r3l_variants_set_their_switches():
    from configs import r3l

    default = r3l.get_config("")
    assert default.method.reflect_retry and default.method.pivotal_credit
    assert default.method.amplification and default.method.retry_mode == "replay"
    assert (default.loss.kl_coef, default.loss.kl_estimator) == (0.001, "k2")
    assert not r3l.get_config("no_reflect_retry").method.reflect_retry
    assert not r3l.get_config("no_pivotal_credit").method.pivotal_credit
    assert not r3l.get_config("no_amplification").method.amplification
    assert r3l.get_config("restart").method.retry_mode == "restart"
    feedback = r3l.get_config("grpo_feedback")
    assert (feedback.method.reflect_retry, feedback.method.objective) == (False, "grpo")
    assert feedback.loss.kl_coef == 0.0 and feedback.name == "r3l_grpo_feedback"
    real = r3l.get_config("qwen25_math_1p5b")
    assert real.rollout.max_new_tokens == 3072 and real.method.reflection_max_new_tokens == 1024
    assert real.optim.learning_rate == 1e-6 and real.eval.max_problems == 0
    with pytest.raises(ValueError, match="known: tiny, .*, no_reflect_retry"):
        r3l.get_config("nope")
    with pytest.raises(ConfigError, match="dynamic_sampling"):
        check(r3l.get_config("dapo"), num_devices=1)


@pytest.mark.parametrize("name", ["lte", "multi_attempt", "r3l", "failure_prefix"])
def test_a_misspelt_method_key_is_named_not_ignored(name):
    import importlib
    c = importlib.import_module(f"configs.{name}").get_config()
    c.unlock()
    with c.method.ignore_type():
        c.method["replay_ratoi"] = 0.5
    with pytest.raises(ConfigError, match=rf"unknown {name} keys \['replay_ratoi'\]"):
        check(c)
