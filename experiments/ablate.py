"""Ablations of one method config under the experiments' protocol: the full config and
each ablation from the same start, at one generated-token budget, over seeds.

    python experiments/ablate.py --config=exgrpo
        # the full config and every named ablation of configs/exgrpo.py (ABLATIONS)
    python experiments/ablate.py --config=r3l --variants=no_pivotal_credit,no_amplification
    python experiments/ablate.py --config=lte \\
        --switch=no_hint_cap:method.max_hint_answers=0 --switch=lr3e5:optim.learning_rate=3e-5
    ... [--baseline=grpo] [--report=eval/attempts@3,eval/greedy_accuracy]
        [--seeds=0,1,2] [--budget=TOKENS] [--start=HF_FOLDER] [--config.key=value ...]
        [--smoke]

Arms: `<config>` (the config as it stands), `<config>_<variant>` for each named variant
(`configs/<config>.py:<variant>`), `<config>_<name>` for each `--switch=NAME:key=value[,
key=value...]` (values read as the type of the key they replace), and `--baseline`'s
config when given. `--report` names the final metrics of the table (default: greedy
accuracy, avg@4, pass@4). A config's named ablations are its `ABLATIONS` (a tuple of variant
names, or a dict of variant name -> overrides). Everything else is the harness's
(experiments/harness.py): one start, one budget, resumable workdirs in
runs/<world>/ablate_<config>, results in experiments/results/<world>/ablate_<config>/ (results.md,
results.json, curves.png). Arm names match the method experiments' (exgrpo_no_shaping,
r3l_no_pivotal_credit), so `--runs` may point at an experiment's workdirs to reuse the
runs it made under the same protocol.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402

REPORT = ("eval/greedy_accuracy", "eval/avg@4", "eval/pass@4")
CURVES = ("reward_mean", "entropy", "eval/greedy_accuracy", "grad_norm")
DEFAULT_BUDGET = 120_000


def named_ablations(config: str) -> tuple[str, ...]:
    module = importlib.import_module(f"configs.{config}")
    return tuple(getattr(module, "ABLATIONS", ()))


def parse_switch(config: str, text: str) -> tuple[str, tuple]:
    """`NAME:key=value,key=value` as (NAME, ((key, typed value), ...)); values take the
    type of the value they replace in the config."""
    name, sep, assignments = text.partition(":")
    if not sep or not name or not assignments:
        raise SystemExit(f"--switch={text!r}: expected NAME:key=value[,key=value...]")
    base_config = importlib.import_module(f"configs.{config}").get_config("")
    overrides = []
    for item in assignments.split(","):
        key, eq, raw = item.partition("=")
        if not eq:
            raise SystemExit(f"--switch={text!r}: {item!r} is not key=value")
        node = base_config
        *sections, last = key.split(".")
        try:
            for s in sections:
                node = node[s]
            current = node[last]
        except (KeyError, AttributeError):
            raise SystemExit(f"--switch={text!r}: unknown config key {key!r}") from None
        try:
            overrides.append((key, harness.parse_value(current, raw)))
        except ValueError as e:
            raise SystemExit(f"--switch={text!r}: {key}: {e}") from None
    return name, tuple(overrides)


def arms_for(config: str, variants: list[str], switches: list[str],
             baseline: str) -> list[harness.Arm]:
    arms = [harness.Arm(config, config)]
    for v in variants:
        arms.append(harness.Arm(f"{config}_{v}", config, variant=v))
    for text in switches:
        name, overrides = parse_switch(config, text)
        arms.append(harness.Arm(f"{config}_{name}", config, overrides=overrides))
    if baseline:
        arms.append(harness.Arm(baseline, baseline))
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise SystemExit(f"two arms share a name: {names}")
    return arms


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=False)
    parser.add_argument("--config", required=True, help="configs/<config>.py, e.g. exgrpo")
    parser.add_argument("--variants", default=None,
                        help="comma-separated variants (default: the config's ABLATIONS)")
    parser.add_argument("--switch", action="append", default=[],
                        help="NAME:key=value[,key=value...], one arm each (repeatable)")
    parser.add_argument("--baseline", default="", help="a config to run alongside, e.g. grpo")
    parser.add_argument("--report", default=",".join(REPORT),
                        help="comma-separated metrics for the results table")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    config = args.config.removeprefix("configs/").removesuffix(".py")
    try:
        importlib.import_module(f"configs.{config}")
    except ModuleNotFoundError:
        raise SystemExit(f"--config={args.config!r}: no configs/{config}.py") from None
    variants = (named_ablations(config) if args.variants is None
                else [v for v in args.variants.split(",") if v])
    for v in variants:     # a variant the config does not know fails now, not mid-sweep
        try:
            importlib.import_module(f"configs.{config}").get_config(v)
        except ValueError as e:
            raise SystemExit(f"--variants: {e}") from None
    arms = arms_for(config, list(variants), args.switch, args.baseline)
    if len(arms) < 2:
        raise SystemExit(f"configs/{config}.py names no ABLATIONS: give --variants or --switch")
    report = tuple(k for k in args.report.split(",") if k)
    if not report:
        raise SystemExit("--report: name at least one metric, e.g. eval/greedy_accuracy")
    return harness.main(arms, rest, name=f"ablate_{config}", report=report, curves=CURVES,
                        default_budget=DEFAULT_BUDGET)


if __name__ == "__main__":
    main()
