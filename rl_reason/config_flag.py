"""The `--config` flag of the commands: a mistake in it is one line, like every other
user error (rl_reason/errors.py).

    --config=configs/<method>.py[:variant[,variant...]] [--config.key=value ...]

ml_collections parses the flag, and raises from deep inside absl when the file, a
variant or an override key does not exist (a 30-line traceback, at best ending in a
"Did you mean"). `parse_flags` parses as usual; when parsing fails it looks at the
`--config` arguments itself and raises a `ConfigFlagError` that says what is wrong:

    --config=configs/lte.py:nonexistent      the config's variants
    --config.rollout.group_sise=4            the key and the closest one that exists
    --config.method.rho=0.25                 (exgrpo) method.replay_ratio, the key the
                                             paper calls rho (a config's PAPER_NAMES)
    --config.loss.estimator=rloo             loss.estimator moved to advantage.estimator
                                             (MOVED_KEYS: keys that changed place)

A config file raises `errors.UnknownVariantError` (which lists its variants) for a
variant it does not define; any other exception while building a config is a bug in
it and keeps its traceback.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
from typing import Sequence

from absl import flags
import ml_collections

from rl_reason.errors import UnknownVariantError, UserError, one_line


class ConfigFlagError(UserError, ValueError):
    """A `--config` file, variant or override key that does not exist."""


# Keys that changed place, old -> new: an old key on the command line is answered with
# its new place. Issue 29: `loss` keeps only the keys that reach the loss (LossConfig);
# the advantage estimator, reward shaping and DAPO's batch refill have blocks of theirs.
MOVED_KEYS = {
    "loss.estimator": "advantage.estimator",
    "loss.norm_by_std": "advantage.norm_by_std",
    "loss.overlong_buffer": "reward.overlong_buffer",
    "loss.overlong_penalty": "reward.overlong_penalty",
    "loss.mask_truncated": "reward.mask_truncated",
    "loss.dynamic_sampling": "rollout.dynamic_sampling",
    "loss.max_refill_rounds": "rollout.max_refill_rounds",
}


def moved_key(key: str) -> str | None:
    """'<key> moved to <new key>' for a key that changed place (MOVED_KEYS), else None."""
    return f"{key} moved to {MOVED_KEYS[key]}" if key in MOVED_KEYS else None


def parse_flags(argv: Sequence[str], flag_values: flags.FlagValues | None = None,
                name: str = "config") -> list[str]:
    """`flag_values(argv)` (absl's FLAGS by default), the arguments left; raises
    ConfigFlagError for a mistake in the `--<name>` flag or its overrides, and absl's
    own flags.Error for other flag mistakes."""
    flag_values = flags.FLAGS if flag_values is None else flag_values
    spec = _config_spec(argv, name)
    # ml_collections keeps a load failure until the value is first read, far from here.
    if spec is not None and not os.path.isfile(spec.partition(":")[0]):
        raise ConfigFlagError(missing_file(spec, name))
    try:
        return flag_values(list(argv))
    except Exception:  # noqa: BLE001  absl lets AttributeError / KeyError through
        problem = diagnose(argv, name)
        if problem:
            raise ConfigFlagError(problem) from None
        raise


def app_flags_parser(argv: Sequence[str]) -> list[str]:
    """A `flags_parser` for absl's app.run: every flag mistake is a UserError (absl's
    default prints a usage hint and exits with status 1)."""
    try:
        return parse_flags(argv)
    except flags.Error as error:
        raise ConfigFlagError(f"{one_line(error)} (--helpfull lists the flags)") from None


def diagnose(argv: Sequence[str], name: str = "config") -> str | None:
    """What is wrong with the `--<name>` flag and its overrides in `argv`, or None when
    the file loads, every variant exists and every override key names a field."""
    spec = _config_spec(argv, name)
    if spec is None:
        return None
    path, _, variant = spec.partition(":")
    if not os.path.isfile(path):
        return missing_file(spec, name)
    module = _load(path)
    try:
        config = module.get_config(variant) if variant else module.get_config()
    except UnknownVariantError as error:
        return (f"--{name}={spec}: {path} has no variant {error.variant!r}; its variants "
                f"(combined with commas): {', '.join(error.known)}")
    paper_names = getattr(module, "PAPER_NAMES", {})
    for key in _override_keys(argv, name):
        problem = unknown_key(config, key, paper_names)
        if problem:
            return moved_key(key) or f"--{name}.{key}: {path} has no key {key}; {problem}"
    return None


def missing_file(spec: str, name: str = "config") -> str:
    """The message for a config file that does not exist, with those next to it."""
    path = spec.partition(":")[0]
    folder = os.path.dirname(path) or "."
    configs = sorted(f for f in os.listdir(folder) if f.endswith(".py")
                     and f not in ("__init__.py", "base.py")) if os.path.isdir(folder) else []
    there = f"; {folder} holds {', '.join(configs)}" if configs else ""
    return f"--{name}={spec}: no config file {path}{there}"


def unknown_key(config: ml_collections.ConfigDict, key: str,
                paper_names: dict[str, str] | None = None) -> str | None:
    """None when `key` (dotted) names a field of `config`; else the closest key there
    is, as "did you mean <key>?"."""
    node, walked = config, []
    for part in key.split("."):
        if not isinstance(node, ml_collections.ConfigDict):
            return f"{'.'.join(walked)} is a value, not a block of keys"
        if not node:
            return f"{'.'.join(walked)} has no keys in this config"
        if part not in node:
            rest = key.split(".")[len(walked) + 1:]
            return f"did you mean {closest_key(config, walked, part, paper_names or {}, rest)}?"
        node = node[part]
        walked.append(part)
    return None


def closest_key(config: ml_collections.ConfigDict, block: Sequence[str], part: str,
                paper_names: dict[str, str], rest: Sequence[str] = ()) -> str:
    """The existing key a mistyped `part` of block `block` most likely meant: the key a
    paper calls `part`; the same name in another block; else the most similar name in
    `block` (difflib), followed by the closest keys to `rest` (the keys after `part`)
    under it (`rolout.group_sise` -> `rollout.group_size`)."""
    if part in paper_names:
        return f"{paper_names[part]} (the paper's {part})"
    elsewhere = [k for k in _leaf_keys(config) if k.rsplit(".", 1)[-1] == part]
    if elsewhere:
        return elsewhere[0]
    node = config
    for name in block:
        node = node[name]
    path = list(block)
    for wanted in (part, *rest):
        if not isinstance(node, ml_collections.ConfigDict) or not node:
            break
        name = wanted if wanted in node else max(
            sorted(node.keys()), key=lambda n: difflib.SequenceMatcher(None, wanted, n).ratio())
        path.append(name)
        node = node[name]
    return ".".join(path)


def _leaf_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for name in config.keys():
        value = config[name]
        if isinstance(value, ml_collections.ConfigDict):
            keys += _leaf_keys(value, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def _config_spec(argv: Sequence[str], name: str) -> str | None:
    """The value of `--<name>=X` or `--<name> X` (the last one given)."""
    spec = None
    for i, arg in enumerate(argv):
        match = re.match(rf"^-{{1,2}}{name}(=(.*))?$", arg)
        if match:
            spec = match.group(2) if match.group(1) else (argv[i + 1] if i + 1 < len(argv)
                                                           else None)
    return spec


def _override_keys(argv: Sequence[str], name: str) -> list[str]:
    """The dotted keys of `--<name>.key=value` (and `--no<name>.key`) arguments, as
    ml_collections finds them."""
    keys = []
    for arg in argv:
        if re.match(rf"^-{{1,2}}(no)?{name}\.", arg):
            keys.append(arg.split("=", 1)[0].split(".", 1)[1])
    return keys


def _load(path: str):
    spec = importlib.util.spec_from_file_location(
        "_config_" + os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
