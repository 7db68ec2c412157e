"""Plot or tabulate runs' metrics.jsonl side by side.

    python -m rl_reason.plot WORKDIR [WORKDIR ...] [--metrics=reward_mean,eval/accuracy]
                             [--out=FILE.png] [--smooth=N] [--table]

One subplot per metric, one line per run (labelled by the workdir's name). Without
--metrics it draws the preferred metrics (reward, accuracy, eval accuracies, response
length, entropy, KL, grad norm, none-pass fraction) that every run logged. --table
prints the last and best value per run and metric instead of plotting (add --out to
get both).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
from typing import Sequence

import numpy as np

from rl_reason import stats

METRICS_FILE = "metrics.jsonl"   # written by rl_reason.metrics.MetricsWriter
PREFERRED = ("reward_mean", "accuracy", "eval/*", "response_length_mean", "entropy", "kl",
             "grad_norm", "none_pass_fraction")
# Eval keys worth a default panel; other eval/ keys (counts, timings) only on request.
_EVAL_WORDS = ("acc", "avg@", "pass@", "maj@", "reward")
# "best" means the minimum for these (substring match), the maximum otherwise.
_LOWER_IS_BETTER = ("loss", "kl", "grad_norm", "none_pass", "truncation", "time/", "skipped")

Series = tuple[np.ndarray, np.ndarray]   # steps, values (NaN where not finite)


def read_metrics(workdir: str | os.PathLike) -> dict[str, Series]:
    """{metric: (steps, values)} of one run, sorted by step.

    A step logged twice (a resume that did not truncate) keeps its last value; lines
    cut short by a crash and non-numeric values are skipped.
    """
    path = pathlib.Path(workdir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{workdir}: no {METRICS_FILE} (expected a training workdir "
                                "written by rl_reason.main)")
    by_metric: dict[str, dict[int, float]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            step = int(row["step"])
        except (ValueError, KeyError, TypeError):
            continue
        for key, value in row.items():
            if key in ("step", "wall_time") or isinstance(value, (str, bool, list, dict)):
                continue
            by_metric.setdefault(key, {})[step] = math.nan if value is None else float(value)
    return {key: (np.array(sorted(points)), np.array([points[s] for s in sorted(points)]))
            for key, points in by_metric.items()}


# Eval metrics that are accuracies, in the order held_out_report lists them.
_ACCURACY_PREFIXES = ("eval/greedy_accuracy", "eval/avg@", "eval/pass@", "eval/maj@",
                      "eval/attempts@")
# rl_reason.train writes each evaluation's generations to EVAL_DIR/step_<step>.jsonl.
EVAL_DIR = "eval"


def held_out_report(workdir: str | os.PathLike) -> str | None:
    """A run's held-out accuracies at its first and last evaluations, side by side
    (what `rl_reason.main` prints at the end), each with its standard error over
    problems and the change with its paired standard error (rl_reason/stats.py),
    computed from the evaluations' generation files. Values come from metrics.jsonl,
    so a resumed run reports from its very first evaluation; without the generation
    files the standard errors are left out. None with fewer than two evaluations."""
    series = read_metrics(workdir)
    # The sampled @1 metrics all estimate one sample's accuracy, which avg@k states
    # best; attempts@1 is the first attempt of a k-attempt episode, kept.
    keys = [k for prefix in _ACCURACY_PREFIXES for k in sorted(series, key=_by_k)
            if k.startswith(prefix) and (prefix == "eval/attempts@" or not k.endswith("@1"))]
    steps = sorted({int(s) for k in keys for s in series[k][0]})
    if len(steps) < 2:
        return None
    first, last = steps[0], steps[-1]

    def at(key: str, step: int) -> float | None:
        hits = np.flatnonzero(series[key][0] == step)
        return float(series[key][1][hits[0]]) if hits.size else None

    rows = [(k[len("eval/"):], at(k, first), at(k, last)) for k in keys]
    rows = [(name, a, b) for name, a, b in rows if a is not None and b is not None]
    ks = sorted({int(name.split("@")[1]) for name, _, _ in rows
                 if "@" in name and not name.startswith("attempts@")})
    before, after = (_eval_scores(workdir, step, ks) for step in (first, last))
    width = max((len(name) for name, _, _ in rows), default=0)
    header = f"Held-out accuracy, step {first} -> step {last}"
    lines = []
    for name, a, b in rows:
        if name in before and name in after:
            change = _paired(before[name], after[name])
            ea, eb = stats.mean_and_se(before[name]), stats.mean_and_se(after[name])
            lines.append(f"  {name:<{width}}  {ea} -> {eb}  ({b - a:+.3f}"
                         + (f" ± {change.se:.3f})" if change else ")"))
        else:
            lines.append(f"  {name:<{width}}  {a:.3f} -> {b:.3f}  ({b - a:+.3f})")
    if any("±" in line for line in lines):
        problems = len(next(iter(after.values())))
        header += (f" ({problems} problems; ± standard error over problems, paired for "
                   "the change)")
    return "\n".join([header + ":"] + lines)


def _by_k(key: str) -> tuple[str, int]:
    """Sort order: avg@4 before avg@8 before avg@16."""
    name, _, k = key.partition("@")
    return name, int(k) if k.isdigit() else 0


def _eval_scores(workdir, step: int, ks) -> dict[str, dict[int, float]]:
    path = pathlib.Path(workdir) / EVAL_DIR / f"step_{step}.jsonl"
    if not path.is_file():
        return {}
    try:
        generations = stats.read_generations(path)
        return stats.per_problem_scores(generations, ks) | stats.attempt_scores(generations)
    except (ValueError, KeyError, TypeError):
        return {}   # an unreadable or partial file: report without standard errors


def _paired(before: dict[int, float], after: dict[int, float]) -> "stats.Estimate | None":
    try:
        return stats.paired_difference(before, after)
    except ValueError:
        return None   # not the same problems (the held-out set changed on resume)


def default_metrics(runs: dict[str, dict[str, Series]]) -> list[str]:
    """The preferred metrics every run has (or, failing that, any run has)."""
    key_sets = [set(series) for series in runs.values()]
    for available in (set.intersection(*key_sets), set.union(*key_sets)):
        chosen: list[str] = []
        for pattern in PREFERRED:
            if pattern == "eval/*":
                chosen += sorted(k for k in available if k.startswith("eval/")
                                 and any(w in k for w in _EVAL_WORDS))
            elif pattern in available:
                chosen.append(pattern)
        if chosen:
            return chosen
    return []


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last `window` logged points (NaNs ignored)."""
    if window <= 1 or len(values) == 0:
        return values
    finite = np.isfinite(values)
    sums = np.cumsum(np.where(finite, values, 0.0))
    counts = np.cumsum(finite)
    lagged = lambda a: np.concatenate([np.zeros(window), a[:-window]])[:len(a)]
    n = counts - lagged(counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (sums - lagged(sums)) / np.maximum(n, 1), np.nan)


def run_labels(workdirs: Sequence[str]) -> list[str]:
    """Workdir names; paths relative to their common parent when names collide."""
    paths = [pathlib.Path(w).resolve() for w in workdirs]
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    parent = pathlib.Path(os.path.commonpath(paths))
    return [str(p.relative_to(parent)) if p != parent else p.name for p in paths]


def plot(runs: dict[str, dict[str, Series]], metrics: Sequence[str], out: str | os.PathLike,
         *, smooth_window: int = 1) -> None:
    # Figure + Agg canvas directly: no pyplot, so no global backend switch for callers.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    figure = Figure(figsize=(5 * cols, 3.4 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    for ax, metric in zip(axes, metrics):
        for label, series in runs.items():
            if metric in series:
                steps, values = series[metric]
                ax.plot(steps, smooth(values, smooth_window), label=label,
                        marker="." if len(steps) <= 20 else None)
        ax.set_title(metric + (f" (mean of {smooth_window})" if smooth_window > 1 else ""))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    if len(runs) > 1 or labels:
        figure.legend(handles, labels, loc="outside upper center", ncols=min(len(labels), 4))
    figure.savefig(out, dpi=110)


def table(runs: dict[str, dict[str, Series]], metrics: Sequence[str]) -> str:
    """Last and best value (with their steps) per metric and run, as aligned text."""
    header = ("metric", "run", "last", "@step", "best", "@step")
    rows = []
    for metric in metrics:
        lower = any(word in metric for word in _LOWER_IS_BETTER)
        for label, series in runs.items():
            if metric not in series or not np.isfinite(series[metric][1]).any():
                rows.append((metric, label, "-", "", "-", ""))
                continue
            steps, values = series[metric]
            finite = np.flatnonzero(np.isfinite(values))
            best = finite[np.argmin(values[finite]) if lower else np.argmax(values[finite])]
            rows.append((metric, label, f"{values[-1]:.4g}", str(steps[-1]),
                         f"{values[best]:.4g}", str(steps[best])))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
    note = "best = max, or min for " + ", ".join(_LOWER_IS_BETTER)
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows), note])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rl_reason.plot",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("workdirs", nargs="+", metavar="WORKDIR")
    parser.add_argument("--metrics", help="comma-separated metric names (default: preferred "
                        "metrics every run has)")
    parser.add_argument("--out", help="PNG to write (default: metrics.png; with --table: "
                        "no plot unless given)")
    parser.add_argument("--smooth", type=int, default=1, metavar="N",
                        help="trailing mean over N logged points")
    parser.add_argument("--table", action="store_true", help="print last/best values")
    args = parser.parse_args(argv)
    if args.smooth < 1:
        parser.error("--smooth must be >= 1")

    labels = run_labels(args.workdirs)
    try:
        runs = {label: read_metrics(w) for label, w in zip(labels, args.workdirs)}
    except FileNotFoundError as e:
        parser.error(str(e))
    available = sorted(set().union(*runs.values()))
    if args.metrics:
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
        unknown = [m for m in metrics if m not in available]
        if unknown:
            parser.error(f"no run logged {', '.join(unknown)}; available: {', '.join(available)}")
    else:
        metrics = default_metrics(runs)
        if not metrics:
            parser.error("none of the preferred metrics was logged; pick some with --metrics "
                         f"from: {', '.join(available) or '(none: the files are empty)'}")
    if args.table:
        print(table(runs, metrics))
    if args.out or not args.table:
        out = args.out or "metrics.png"
        plot(runs, metrics, out, smooth_window=args.smooth)
        print(f"Wrote {out}: {len(metrics)} metrics x {len(runs)} runs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
