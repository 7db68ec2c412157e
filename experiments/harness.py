"""The protocol every method experiment shares: arms x seeds, one start, one budget.

    arms = [Arm("grpo", "grpo"), Arm("exgrpo", "exgrpo"),
            Arm("exgrpo_no_shaping", "exgrpo", variant="no_shaping")]
    harness.main(arms, argv, name="exgrpo_vs_grpo", report=("eval/greedy_accuracy", ...))

Each (arm, seed) is an ordinary training run of `configs/<config>.py[:variant]` in
its own workdir (RUNS/<arm>/seed<seed>), started from one shared checkpoint
(`--start`: a Hugging Face folder; by default the experiment's `start`, a run of
`start_checkpoint.py` trained once into RUNS/start, or the embedded base policy) and
stopped at one generated-token budget (`--budget`, every sampler call counted:
rollouts, hints, retries, replays' fresh samples, mining). The trainer resumes a
stopped run and skips a finished one, so re-running the command continues a sweep
where it stopped.

Outputs in OUT (default experiments/results/WORLD/NAME, committed with the project;
workdirs live under RUNS, default runs/WORLD/NAME, which is not):
    results.md      per-arm mean +- standard error over seeds of each reported final
                    metric, then every run's values
    results.json    the same numbers, and each run's final metrics
    curves.png      per-arm mean (+- SE band) over seeds against generated tokens

`--smoke` runs each arm for two steps with the `tiny` variant and one seed (CI).
`--report_only` writes the outputs from the runs already finished and starts or resumes
none (a look at a sweep that another process is running).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import math
import os
import sys
from typing import Any, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (ROOT, os.path.join(ROOT, "experiments")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import numpy as np  # noqa: E402

from rl_reason import plot  # noqa: E402
from rl_reason.config_flag import moved_key  # noqa: E402
from rl_reason.data import worlds  # noqa: E402

TOKENS = "budget/generated_tokens"
MINUTES = "wall_minutes"


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm: a config file (configs/<config>.py), a variant, and overrides
    (dotted key -> value) applied on top."""

    name: str
    config: str
    variant: str = ""
    overrides: tuple[tuple[str, Any], ...] = ()


def parse_value(current, raw: str):
    """A command-line string as the type of the config value it replaces."""
    if isinstance(current, bool):
        if raw.lower() not in ("1", "true", "yes", "0", "false", "no"):
            raise ValueError(f"{raw!r} is not a boolean")
        return raw.lower() in ("1", "true", "yes")
    if isinstance(current, (int, float, str)):
        return type(current)(raw)
    return json.loads(raw)


def set_key(config, dotted: str, value, *, parse: bool = False) -> None:
    """config[dotted] = value; parse=True reads a command-line string as the type of
    the value it replaces."""
    *sections, name = dotted.split(".")
    node = config
    for s in sections:
        node = node[s]
    if name not in node:
        raise KeyError(moved_key(dotted) or f"unknown config key {dotted!r}")
    node[name] = parse_value(node[name], value) if parse else value


def build_config(arm: Arm, *, seed: int, start: str, budget: int, max_steps: int,
                 smoke: bool, overrides: Sequence[tuple[str, str]]):
    module = importlib.import_module(f"configs.{arm.config}")
    variant = ",".join(filter(None, [arm.variant, "tiny" if smoke else ""]))
    config = module.get_config(variant)
    config.unlock()
    config.seed = seed
    config.model.checkpoint = start
    for key, value in arm.overrides:
        set_key(config, key, value)
    if smoke:
        config.train.update(num_steps=2, eval_every=0, export_hf=False)
        config.verifier.num_workers = 1
        # The arm's evaluation protocol at a size that keeps a smoke to seconds.
        config.eval.max_problems = min(config.eval.max_problems or 16, 16)
        config.eval.num_samples = min(config.eval.num_samples, 2)
        config.eval.ks = tuple(k for k in config.eval.ks
                               if k <= config.eval.num_samples) or (1,)
    else:
        config.train.num_steps = max_steps
        config.train.max_generated_tokens = budget
    for key, raw in overrides:
        set_key(config, key, raw, parse=True)
    config.lock()
    return config


def read_lines(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, plot.METRICS_FILE)) as f:
        return [json.loads(line) for line in f if line.strip()]


def final_metrics(workdir: str, keys: Sequence[str]) -> dict[str, float]:
    """The last logged value of each key (the final evaluation for eval/ keys)."""
    found: dict[str, float] = {}
    for line in read_lines(workdir):
        for key in keys:
            if line.get(key) is not None:
                found[key] = float(line[key])
    return found


# A gap between logged lines that exceeds the time the later line accounts for (its
# step and evaluation seconds) by more than this is a pause (a stopped and resumed
# run), not time the run spent.
PAUSE_S = 600.0


def run_finished(workdir: str) -> bool:
    """Whether the run in `workdir` reached the generation budget or step limit its
    config.json records and logged its final evaluation (what `--report_only` reports)."""
    try:
        with open(os.path.join(workdir, "config.json")) as f:
            limits = json.load(f)["train"]
        lines = read_lines(workdir)
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        return False
    steps = [line for line in lines if TOKENS in line]
    if not steps:
        return False
    last = steps[-1]
    budget = limits.get("max_generated_tokens") or 0
    if not (budget and float(last[TOKENS]) >= budget) and \
            int(last["step"]) < int(limits["num_steps"]):
        return False
    return any(line["step"] == last["step"] and any(k.startswith("eval/") for k in line)
               for line in lines)


def recorded_start(workdirs: Sequence[str]) -> str:
    """The start checkpoint recorded in the first of `workdirs` that has a config."""
    for workdir in workdirs:
        try:
            with open(os.path.join(workdir, "config.json")) as f:
                return str(json.load(f)["model"]["checkpoint"])
        except (FileNotFoundError, KeyError, json.JSONDecodeError):
            continue
    return "(no finished run records one)"


def run_minutes(workdir: str) -> float:
    """Wall-clock minutes a run spent after its step-0 evaluation (which runs that start
    alike share, so it is no method's cost), pauses between a stop and its resume
    excluded.

    Each logged line accounts for its own step and evaluation seconds, so a long final
    evaluation is counted; of a gap that is a pause only those seconds count."""
    lines = [line for line in read_lines(workdir) if "wall_time" in line]

    def own(line) -> float:
        return float(line.get("time/step", 0.0)) + float(line.get("eval/seconds", 0.0))

    total = 0.0
    for prev, line in zip(lines, lines[1:]):
        gap = float(line["wall_time"]) - float(prev["wall_time"])
        total += own(line) if gap - own(line) > PAUSE_S else max(gap, 0.0)
    return total / 60.0


def machine() -> str:
    """The machine in words: CPU count and JAX's backend and devices."""
    import platform

    import jax
    devices = jax.devices()
    return (f"{platform.machine()} {os.cpu_count()} CPU cores, JAX {jax.__version__} on "
            f"{len(devices)} {devices[0].platform} device(s) ({devices[0].device_kind})")


def curve(workdir: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(generated tokens, value) of a metric over a run; the step-0 evaluation is at 0."""
    xs, ys, tokens = [], [], 0.0
    for line in read_lines(workdir):
        tokens = float(line.get(TOKENS, tokens))
        if line.get(key) is not None:
            xs.append(tokens)
            ys.append(float(line[key]))
    return np.array(xs), np.array(ys)


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error (sample sd / sqrt(n); 0 for one value)."""
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return math.nan, math.nan
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else 0.0
    return float(v.mean()), se


def results_table(results: dict[str, dict[int, dict[str, float]]], keys: Sequence[str]) -> str:
    """Markdown: one row per arm (mean +- SE over seeds), then one row per run."""
    short = [k.removeprefix("eval/") for k in keys]
    lines = ["| arm | seeds | " + " | ".join(short) + " |",
             "|---|---|" + "---|" * len(keys)]
    for arm, runs in results.items():
        cells = []
        for key in keys:
            mean, se = mean_se([m[key] for m in runs.values() if key in m])
            cells.append("n/a" if math.isnan(mean) else f"{mean:.3f} ± {se:.3f}")
        lines.append(f"| {arm} | {len(runs)} | " + " | ".join(cells) + " |")
    lines += ["", "| run | " + " | ".join(short) + " |", "|---|" + "---|" * len(keys)]
    for arm, runs in results.items():
        for seed, m in runs.items():
            cells = [f"{m[k]:.3f}" if k in m else "n/a" for k in keys]
            lines.append(f"| {arm} seed {seed} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(workdirs: dict[str, list[str]], keys: Sequence[str], out: str) -> list[str]:
    """One panel per metric; per arm the mean over seeds (interpolated on a common
    token grid) with a +-SE band. Returns the metrics no arm logged (their panels say
    so), which a misspelt key would otherwise leave as an empty panel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    figure = Figure(figsize=(5 * cols, 3.4 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    # One colour per arm in every panel, whether or not the arm logs the panel's metric.
    colours = {arm: f"C{i % 10}" for i, arm in enumerate(workdirs)}
    unlogged = []
    for ax, key in zip(axes, keys):
        drawn = False
        for arm, dirs in workdirs.items():
            series = [curve(d, key) for d in dirs]
            series = [(x, y) for x, y in series if len(x)]
            if not series:
                continue
            drawn = True
            end = min(x[-1] for x, _ in series)
            grid = np.linspace(min(x[0] for x, _ in series), end, 50) if end > 0 else \
                np.array([0.0])
            values = np.array([np.interp(grid, x, y) for x, y in series])
            mean = values.mean(axis=0)
            # Evaluations logged only at the start and the end: mark the measured points.
            sparse = max(len(x) for x, _ in series) <= 3
            line, = ax.plot(grid, mean, label=arm, color=colours[arm],
                            marker="o" if sparse else None,
                            markevery=[0, len(grid) - 1] if sparse else None)
            if len(series) > 1:
                se = values.std(axis=0, ddof=1) / math.sqrt(len(series))
                ax.fill_between(grid, mean - se, mean + se, color=line.get_color(), alpha=0.2)
        if not drawn:
            unlogged.append(key)
            ax.text(0.5, 0.5, "not logged by any run", transform=ax.transAxes,
                    ha="center", va="center")
        ax.set_title(key)
        ax.set_xlabel("generated tokens")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k"))
        ax.grid(alpha=0.3)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color=colours[arm]) for arm in workdirs]
    labels = list(workdirs)
    if labels:
        figure.legend(handles, labels, loc="outside upper center", ncols=min(len(labels), 4))
    figure.savefig(out, dpi=110)
    return unlogged


def parse_args(argv, name: str, default_budget: int, default_seeds: str):
    parser = argparse.ArgumentParser(description=f"Experiment {name}: arms x seeds from one "
                                     "start checkpoint at one generated-token budget.")
    parser.add_argument("--seeds", default=default_seeds, help="comma-separated seeds")
    parser.add_argument("--arms", default="", help="comma-separated subset of the arms")
    parser.add_argument("--budget", type=int, default=default_budget,
                        help="generated tokens per run (train.max_generated_tokens)")
    parser.add_argument("--max_steps", type=int, default=1000,
                        help="upper bound on steps (the budget normally ends a run first)")
    parser.add_argument("--start", default="",
                        help="start checkpoint (a Hugging Face folder); default: the "
                        "experiment's own start, else the embedded base policy")
    parser.add_argument("--out", default="",
                        help="where results.md, results.json and curves.png go (default "
                        "experiments/results/WORLD/NAME; a smoke: runs/WORLD/NAME_smoke/results)")
    parser.add_argument("--runs", default="",
                        help="where the run workdirs go (default runs/WORLD/NAME; a smoke: "
                        "runs/WORLD/NAME_smoke, so it never resumes or overwrites a sweep)")
    parser.add_argument("--shared", default="",
                        help="the folder of runs shared between sweeps (default: "
                        "dirname(RUNS)/shared, i.e. runs/WORLD/shared)")
    parser.add_argument("--smoke", action="store_true",
                        help="two steps of each arm with the tiny variant, one seed (CI)")
    parser.add_argument("--report_only", action="store_true",
                        help="write the results of the runs already finished; start or "
                        "resume none")
    args, rest = parser.parse_known_args(argv)
    overrides = []
    for flag in rest:
        if not flag.startswith("--config.") or "=" not in flag:
            parser.error(f"unknown argument {flag!r} (only --config.key=value is passed on)")
        key, raw = flag[len("--config."):].split("=", 1)
        overrides.append((key, raw))
    if args.smoke:
        args.seeds = args.seeds.split(",")[0]
    # Each world's sweeps and results apart: the world's name heads both paths.
    world = dict(overrides).get("world.name", worlds.DEFAULT)
    runs_name = f"{name}_smoke" if args.smoke else name
    args.runs = args.runs or os.path.join(ROOT, "runs", world, runs_name)
    args.out = args.out or (os.path.join(args.runs, "results") if args.smoke
                            else os.path.join(ROOT, "experiments", "results", world, name))
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if not args.seeds:
        parser.error("--seeds is empty")
    if args.budget < 1 and not args.smoke:
        parser.error("--budget must be >= 1 generated tokens")
    args.overrides = overrides
    return args, overrides


@dataclasses.dataclass(frozen=True)
class Start:
    """A start checkpoint trained for the experiment: `config` (configs/<name>.py
    [:variant]) for `steps` steps with seed 0 and `overrides`, once
    (experiments/start_checkpoint.py)."""

    config: str
    steps: int
    overrides: tuple[tuple[str, Any], ...] = ()


def overrides_of(args) -> list[tuple[str, str]]:
    """The sweep's --config.key=value overrides, as (key, raw value)."""
    return list(getattr(args, "overrides", ()))


def resolve_start(args, start: Start | None, smoke: bool) -> str:
    from rl_reason import pretrain
    from start_checkpoint import start_checkpoint

    if args.start:
        return args.start
    if start is None or smoke:
        world = dict(overrides_of(args)).get("world.name", worlds.DEFAULT)
        skill = float(dict(overrides_of(args)).get("world.skill", -1))
        return pretrain.ensure_base_policy(world, skill)
    print(f"=== start checkpoint: {start.config} for {start.steps} steps", flush=True)
    return start_checkpoint(start.config, steps=start.steps, seed=0,
                            out=os.path.join(args.runs, "start"),
                            overrides=dict(start.overrides))


def main(arms: Sequence[Arm], argv: Sequence[str] | None, *, name: str,
         report: Sequence[str], curves: Sequence[str], default_budget: int,
         default_seeds: str = "0,1,2", start: Start | None = None) -> dict:
    """Runs (or resumes) the sweep, then writes and prints the results. Returns
    {arm: {seed: final metrics}}."""
    from rl_reason import train

    args, overrides = parse_args(argv, name, default_budget, default_seeds)
    chosen = [a for a in arms if not args.arms or a.name in args.arms.split(",")]
    unknown = set(filter(None, args.arms.split(","))) - {a.name for a in arms}
    if unknown or not chosen:
        raise SystemExit(f"unknown arms {sorted(unknown)}; arms are {[a.name for a in arms]}")
    workdirs = [(seed, arm, os.path.join(args.runs, arm.name, f"seed{seed}"))
                for seed in args.seeds for arm in chosen]
    if args.report_only:
        workdirs = [(seed, arm, d) for seed, arm, d in workdirs if run_finished(d)]
        if not workdirs:
            raise SystemExit(f"--report_only: no finished run under {args.runs}")
        start = args.start or recorded_start([d for _, _, d in workdirs])
    else:
        start = resolve_start(args, start, args.smoke)
    total = len(chosen) * len(args.seeds)
    results: dict[str, dict[int, dict[str, float]]] = {}

    def write() -> str:
        ordered = {a.name: results[a.name] for a in chosen if a.name in results}
        return write_results(args, name, start, ordered, report, curves, total)

    # Seed-major: a sweep stopped part way has every arm at the same number of seeds.
    for seed, arm, workdir in workdirs:
        if not args.report_only:
            print(f"=== {name}: {arm.name}, seed {seed} -> {workdir}", flush=True)
            config = build_config(arm, seed=seed, start=start, budget=args.budget,
                                  max_steps=args.max_steps, smoke=args.smoke,
                                  overrides=overrides)
            with shared_run(args, workdir, config) as (rundir, mine):
                if mine and not run_finished(rundir):
                    train.run(config, rundir)
            if not mine and not run_finished(workdir):
                print(f"    {rundir} is being trained by another sweep; skipped for now "
                      "(re-run this command later to pick it up)", flush=True)
                continue
        metrics = final_metrics(workdir, report)
        metrics[MINUTES] = run_minutes(workdir)
        results.setdefault(arm.name, {})[seed] = metrics
        if not args.report_only:
            text = write()     # after every run, so a stopped sweep leaves the results so far
    if args.report_only or not results:
        text = write()
    print(text)
    print(f"Wrote {args.out}/results.md, results.json and curves.png", flush=True)
    return {a.name: results[a.name] for a in chosen if a.name in results}


def runs_world(dirs: dict[str, list[str]]) -> str:
    """The world the runs started in (their world.json records), e.g. 'traps_v1
    (skill 0.5)'; every distinct one, joined, if they differ; 'not recorded' for
    runs from a real checkpoint."""
    from rl_reason import pretrain, run_setup

    labels = []
    for workdirs in dirs.values():
        for workdir in workdirs:
            world = pretrain.read_world(workdir)
            label = run_setup.world_label(world) if world else "not recorded"
            if label not in labels:
                labels.append(label)
    return " / ".join(labels) or "not recorded"


def config_key(config) -> str:
    """A run's identity: a hash of its whole config (arm, protocol, seed, start, budget)."""
    import hashlib
    text = json.dumps(json.loads(config.to_json_best_effort()), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def shared_run(args, workdir: str, config):
    """The workdir a run trains in, shared by every sweep whose runs sit beside this
    one's (by default every sweep of the world: runs/WORLD/NAME) and that asks for the
    same config: runs/WORLD/shared/<config_key>, which the sweep's own workdir
    (RUNS/arm/seedN) links to. So GRPO seed 0 under the common protocol runs once for
    all the experiments that compare with it (a smoke's runs/WORLD/NAME_smoke shares
    with other smokes only through runs/WORLD/shared, and with the same tiny configs). Yields (rundir, mine): mine is
    False while another process holds the run's lock (it is training it now).
    A workdir that is a real folder (an older sweep) is used as it is."""
    import fcntl
    if os.path.isdir(workdir) and not os.path.islink(workdir):
        yield workdir, True
        return
    root = args.shared or os.path.join(os.path.dirname(os.path.abspath(args.runs)), "shared")
    shared = os.path.join(root, config_key(config))
    os.makedirs(shared, exist_ok=True)
    os.makedirs(os.path.dirname(workdir), exist_ok=True)
    if not os.path.islink(workdir):
        os.symlink(shared, workdir)
    elif os.path.realpath(workdir) != os.path.realpath(shared):
        raise SystemExit(f"{workdir} links to {os.path.realpath(workdir)}, but this arm's "
                         f"config is {shared}: the arm or the protocol changed since that run; "
                         "remove the link (or use another --runs) to start it afresh")
    with open(os.path.join(shared, ".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield shared, False
            return
        try:
            yield shared, True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def run_dirs(runs: str, results: dict) -> dict[str, list[str]]:
    """{arm: [workdir of each finished seed]} of a sweep's results."""
    return {arm: [os.path.join(runs, arm, f"seed{seed}") for seed in seeds]
            for arm, seeds in results.items()}


def add_section(out: str, markdown: str, key: str | None = None, value: Any = None) -> None:
    """Appends an experiment's own table to results.md (and `value` under `key` to
    results.json), and prints it."""
    with open(os.path.join(out, "results.md"), "a") as f:
        f.write(markdown)
    if key is not None:
        path = os.path.join(out, "results.json")
        with open(path) as f:
            summary = json.load(f)
        summary[key] = value
        with open(path, "w") as f:
            json.dump(summary, f, indent=2)
    print(markdown, flush=True)


def write_results(args, name: str, start: str, results: dict, report: Sequence[str],
                  curves: Sequence[str], total: int) -> str:
    """results.md, results.json and curves.png of the runs finished so far."""
    done = sum(len(runs) for runs in results.values())
    progress = "" if done == total else f" **Partial: {done} of {total} runs finished.**"
    os.makedirs(args.out, exist_ok=True)
    world = runs_world(run_dirs(args.runs, results))
    text = (f"# {name}\n\nWorld: {world}. "
            f"Start: `{start}`; budget {args.budget} generated tokens per run"
            f"{' (smoke)' if args.smoke else ''}; seeds {args.seeds}. Mean ± standard error "
            f"over seeds of the final held-out evaluation.{progress}\n\n"
            + results_table(results, tuple(report) + (MINUTES,)) + "\n"
            + f"\nMachine: {machine()}; {MINUTES}: each run's wall-clock time after its "
            f"step-0 evaluation, pauses between a stop and its resume excluded.\n")
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"name": name, "world": world, "start": start, "budget": args.budget,
                   "seeds": args.seeds,
                   "smoke": args.smoke, "machine": machine(), "finished_runs": done,
                   "planned_runs": total, "results": results}, f, indent=2)
    unlogged = plot_curves(run_dirs(args.runs, results), curves,
                           os.path.join(args.out, "curves.png"))
    if unlogged and results:
        print(f"Warning: no run logged {', '.join(unlogged)}; their curve panels are empty.")
    return text

