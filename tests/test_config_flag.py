"""The --config flag's mistakes (rl_reason/config_flag.py): an unknown variant lists the
config's variants, an unknown override key names the closest key there is, and both
reach the user as one line with exit status 2 (through the real command lines in
tests/test_errors.py)."""

import importlib

import pytest
from absl import flags
from ml_collections import config_flags

from configs import exgrpo, grpo
from rl_reason import config_flag
from rl_reason.errors import UnknownVariantError

CONFIGS = ("grpo", "exgrpo", "lte", "lte_exgrpo", "multi_attempt", "r3l", "failure_prefix")


@pytest.mark.parametrize("name", CONFIGS)
def test_an_unknown_variant_lists_every_variant_the_config_accepts(name):
    module = importlib.import_module(f"configs.{name}")
    with pytest.raises(UnknownVariantError) as info:
        module.get_config("tiny,nonexistent")
    assert info.value.variant == "nonexistent"
    known = info.value.known
    assert "tiny" in known and set(getattr(module, "ABLATIONS", ())) <= set(known)
    for variant in known:          # every variant listed is one that loads
        module.get_config(variant)


@pytest.mark.parametrize("key, suggestion", [
    ("rollout.group_sise", "did you mean rollout.group_size?"),
    ("rolout.group_size", "did you mean rollout.group_size?"),      # the block mistyped
    ("rolout.group_sise", "did you mean rollout.group_size?"),      # both
    ("rollout.entropy_coef", "did you mean loss.entropy_coef?"),    # the key of another block
    ("seed.value", "seed is a value, not a block of keys"),
    ("method.rho", "method has no keys in this config"),            # GRPO has no method keys
])
def test_an_unknown_key_names_the_closest_key(key, suggestion):
    assert config_flag.unknown_key(grpo.get_config("tiny"), key) == suggestion


def test_a_paper_name_is_answered_with_the_key_it_means():
    c = exgrpo.get_config("")
    # By spelling alone, rho is nearer mixing_threshold than replay_ratio.
    assert config_flag.unknown_key(c, "method.rho") == "did you mean method.mixing_threshold?"
    assert config_flag.unknown_key(c, "method.rho", exgrpo.PAPER_NAMES) == (
        "did you mean method.replay_ratio (the paper's rho)?")
    assert config_flag.unknown_key(c, "method.replay_ratio") is None


def parse(*args):
    """The flags of a fresh FlagValues, as rl_reason.main defines --config."""
    fv = flags.FlagValues()
    argv = ["prog", *args]
    holder = config_flags.DEFINE_config_file("config", None, "", flag_values=fv,
                                             sys_argv=argv)
    config_flag.parse_flags(argv, fv)
    return holder.value


def test_parse_flags_passes_good_flags_through():
    c = parse("--config=configs/exgrpo.py:tiny,rho025", "--config.rollout.group_size=6")
    assert c.rollout.group_size == 6 and c.method.replay_ratio == 0.25


@pytest.mark.parametrize("args, message", [
    (["--config=configs/exgrpo.py:tiny", "--config.method.rho=0.25"],
     "--config.method.rho: configs/exgrpo.py has no key method.rho; did you mean "
     "method.replay_ratio (the paper's rho)?"),
    (["--config=configs/grpo.py", "--config.rollout.group_sise=4"],
     "--config.rollout.group_sise: configs/grpo.py has no key rollout.group_sise; did you "
     "mean rollout.group_size?"),
    (["--config=configs/lte.py:nonexistent"],
     "--config=configs/lte.py:nonexistent: configs/lte.py has no variant 'nonexistent'; its "
     "variants (combined with commas): lte_entropy, grpo_extra_rollouts, no_shaping, "
     "no_concise, no_cap, tiny, qwen25_math_1p5b, qwen3_4b"),
    (["--config=configs/nope.py"], "--config=configs/nope.py: no config file configs/nope.py; "
     "configs holds exgrpo.py, failure_prefix.py, grpo.py, lte.py, lte_exgrpo.py, "
     "multi_attempt.py, r3l.py"),
])
def test_parse_flags_says_what_is_wrong(args, message):
    with pytest.raises(config_flag.ConfigFlagError) as info:
        parse(*args)
    assert str(info.value) == message


OLD_KEY_VALUES = {"loss.estimator": "rloo", "loss.norm_by_std": "False",
                  "loss.overlong_buffer": "8", "loss.overlong_penalty": "0.5",
                  "loss.mask_truncated": "True", "loss.dynamic_sampling": "True",
                  "loss.max_refill_rounds": "2"}


def test_every_moved_key_has_a_new_place_that_exists():
    assert set(config_flag.MOVED_KEYS) == set(OLD_KEY_VALUES)
    c = grpo.get_config("")
    for old, new in config_flag.MOVED_KEYS.items():
        assert config_flag.unknown_key(c, new) is None and config_flag.unknown_key(c, old)


@pytest.mark.parametrize("config", ["configs/grpo.py:dapo", "configs/exgrpo.py",
                                    "configs/r3l.py"])
@pytest.mark.parametrize("old", sorted(OLD_KEY_VALUES))
def test_a_moved_key_names_its_new_place(config, old):
    with pytest.raises(config_flag.ConfigFlagError) as info:
        parse(f"--config={config}", f"--config.{old}={OLD_KEY_VALUES[old]}")
    assert str(info.value) == f"{old} moved to {config_flag.MOVED_KEYS[old]}"


def test_a_moved_boolean_key_given_as_a_switch_names_its_new_place():
    with pytest.raises(config_flag.ConfigFlagError, match="^loss.norm_by_std moved to "
                       "advantage.norm_by_std$"):
        parse("--config=configs/grpo.py", "--noconfig.loss.norm_by_std")


def test_the_new_keys_are_set_from_the_command_line():
    c = parse("--config=configs/grpo.py:dapo", "--config.advantage.estimator=rloo",
              "--config.advantage.norm_by_std=False", "--config.reward.overlong_buffer=8",
              "--config.reward.overlong_penalty=0.5", "--config.reward.mask_truncated=True",
              "--config.rollout.dynamic_sampling=False", "--config.rollout.max_refill_rounds=2")
    assert (c.advantage.estimator, c.advantage.norm_by_std) == ("rloo", False)
    assert (c.reward.overlong_buffer, c.reward.overlong_penalty, c.reward.mask_truncated) == (
        8, 0.5, True)
    assert (c.rollout.dynamic_sampling, c.rollout.max_refill_rounds) == (False, 2)


def test_a_bad_value_stays_absls_error_and_a_buggy_config_keeps_its_traceback(tmp_path):
    with pytest.raises(flags.IllegalFlagValueError, match="group_size=abc"):
        parse("--config=configs/grpo.py", "--config.rollout.group_size=abc")
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(arg=''):\n    raise ZeroDivisionError('a bug')\n")
    with pytest.raises(ZeroDivisionError, match="a bug"):
        parse(f"--config={broken}")
