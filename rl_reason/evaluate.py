"""Evaluate a checkpoint on benchmark files: greedy accuracy, avg@k, pass@k, maj@k, and
on request k attempts with feedback and continuation from misleading prefixes.

    python -m rl_reason.evaluate --checkpoint=DIR --data=math500.jsonl [--data=aime24.jsonl]
        [--k=1,4,8] [--num_samples=8] [--temperature=0.6] [--top_p=1.0]
        [--max_new_tokens=1024] [--verifier=math] [--max_problems=N]
        [--attempts=K] [--attempt_feedback=multi_attempt|verifier] [--attempt_temperature=T]
        [--misleading_prefix] [--prefix_fraction=0.5] [--prefix_samples=8]
        [--misleading_prefixes=FILE] [--problem_key=KEY] [--answer_key=KEY] [--out=DIR]
    python -m rl_reason.evaluate --config=configs/grpo.py --checkpoint=WORKDIR

DIR is a Hugging Face folder (config.json, weights, tokenizer), or a training workdir
whose exported `hf/` folder is used. With --config, the run's eval settings (its `eval`
block), eval files, data keys and verifier are the defaults (explicit flags win), and
without eval files the run's own held-out records are evaluated
(run_setup.held_out_records: the embedded task at the config's levels and size); with
neither --config nor --data, the embedded task's held-out split (200 problems, all
levels).

Benchmark files are read by rl_reason/data/sources.py: JSON Lines, a JSON array or
Parquet, one problem per row; the problem and answer fields are detected per file
(problem / question / prompt; answer / ground_truth / reward_model.ground_truth /
final_answer / solution), so MATH500, AIME24/25, AMC23, Minerva, OlympiadBench and
GSM8K ("... #### 42") load as distributed; --problem_key / --answer_key (dots for
nested fields) override the detection for every file.

Per benchmark (docs/methods.md, "Evaluation protocol"): plain prompts, no hints or
feedback; greedy accuracy; num_samples samples per problem at the given temperature
and top_p, giving avg@num_samples and, for each k, the unbiased pass@k, avg@k and
maj@k (rl_reason/evaluation_metrics.py); verifier status counts (timeouts and errors
score 0 and are counted). Modes that add feedback or prefixes (rl_reason/evaluation/):
- --attempts=K: attempts@k, solved within k = 1..K attempts with feedback after each
  wrong one (multi-attempt's or R3L's wording) in one episode whose attempts share
  max_new_tokens, the answer-repeat rate and the context-overflow count
  (evaluation/attempts.py).
- --misleading_prefix: misleading_prefix_accuracy, the greedy continuation from a prefix
  of one of the model's own wrong responses, next to the plain greedy accuracy on the
  same problems (evaluation/misleading_prefix.py). The prefixes are mined on first use
  and stored in --misleading_prefixes (default OUT/misleading_prefixes.jsonl); give a
  training run's WORKDIR/eval/misleading_prefixes.jsonl to measure on its prefixes.

Writes OUT/<benchmark>.json (settings and metrics), OUT/<benchmark>.generations.jsonl
(every response with its extracted answer and status) and OUT/results.json, and
prints a table. OUT defaults to DIR/eval.

Library entry points: `evaluate_model` (any records, any settings) and
`held_out_metrics` (the trainer's held-out evaluation).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Sequence

import jax

from rl_reason import models, run_setup, verifiers
from rl_reason.errors import MissingPathError, UnwritablePathError
from rl_reason.data import sources, worlds
from rl_reason.evaluation import attempts, misleading_prefix, plain
from rl_reason.evaluation.session import EvalSession
from rl_reason.evaluation.settings import ATTEMPT_FEEDBACKS, DEFAULT_KS, EvalResults, EvalSettings

__all__ = ["DEFAULT_KS", "EvalResults", "EvalSettings", "evaluate_model", "held_out_metrics",
           "run", "main"]


def evaluate_model(model, tokenizer, records: Sequence, settings: EvalSettings, *, verifier,
                   stop_token_ids: Sequence[int], pad_id: int, rng: jax.Array | int | None = None,
                   mesh=None, prefixes_path: str | None = None) -> EvalResults:
    """Every mode `settings` asks for, on `records` (problem, answer).

    `verifier` is any rl_reason.verifiers verifier (the trainer passes its own, so no
    extra worker processes start); `rng` defaults to settings.seed. `prefixes_path`:
    the misleading-prefix file to reuse and extend (None: mine in memory).
    """
    if not records:
        raise ValueError("evaluate_model: no records")
    rng = settings.seed if rng is None else rng
    rng = jax.random.PRNGKey(rng) if isinstance(rng, int) else rng
    session = EvalSession(model, tokenizer, records, settings, verifier=verifier,
                          stop_token_ids=stop_token_ids, pad_id=pad_id, mesh=mesh)
    session.check_context()
    metrics: dict[str, float] = {"num_problems": len(records)}
    start = time.monotonic()
    # The prefix metric needs greedy correctness on its problems to compare against.
    if settings.greedy or settings.misleading_prefix:
        greedy = plain.greedy_correct(session, rng)
        metrics["greedy_accuracy"] = sum(greedy) / len(records)
    if settings.num_samples:
        metrics |= plain.sampled_metrics(session, jax.random.fold_in(rng, 1))
    if settings.attempts:
        metrics |= attempts.evaluate_attempts(session, jax.random.fold_in(rng, 2))
    if settings.misleading_prefix:
        prefixes = misleading_prefix.load_or_mine_prefixes(prefixes_path, session,
                                                           jax.random.fold_in(rng, 3))
        metrics |= misleading_prefix.misleading_prefix_metrics(session, prefixes, greedy)
    metrics |= {f"verifier_{status}": count for status, count in session.statuses.items()}
    metrics["seconds"] = time.monotonic() - start
    return EvalResults(metrics, session.generations)


def held_out_metrics(model, tokenizer, records, config, *, rng, mesh, verifier, stop_ids, pad,
                     eval_dir: str, step: int) -> dict:
    """The trainer's held-out evaluation, as the config's `eval` block says: metrics
    under 'eval/'; the generations go to EVAL_DIR/step_STEP.jsonl so a run's answers can
    be read afterwards; misleading prefixes are mined at the first evaluation into
    EVAL_DIR/misleading_prefixes.jsonl and reused by every later one (a resumed run's
    too)."""
    settings = EvalSettings.from_config(config)
    results = evaluate_model(model, tokenizer, records, settings, verifier=verifier,
                             stop_token_ids=stop_ids, pad_id=pad, rng=rng, mesh=mesh,
                             prefixes_path=os.path.join(eval_dir, misleading_prefix.PREFIXES_FILE))
    if jax.process_index() == 0:
        os.makedirs(eval_dir, exist_ok=True)
        with open(os.path.join(eval_dir, f"step_{step}.jsonl"), "w") as f:
            for row in results.generations:
                f.write(json.dumps(row, ensure_ascii=True) + "\n")
    return {f"eval/{k}": v for k, v in results.metrics.items() if isinstance(v, (int, float))}


# ------------------------------------------------------------------------ command line

EMBEDDED_NAME = "synthetic_held_out"


def resolve_checkpoint(path: str) -> str:
    """The Hugging Face folder for `path`: itself, or a training workdir's `hf/` export."""
    path = os.path.abspath(os.path.expanduser(path))
    for candidate in (path, os.path.join(path, "hf")):
        if os.path.isfile(os.path.join(candidate, "config.json")):
            return candidate
    raise MissingPathError(f"--checkpoint={path}: no config.json there or in its hf/ folder "
                            "(expected a Hugging Face checkpoint or a training workdir)")


def benchmark_name(spec: str) -> str:
    stem = spec[len("tfds:"):] if spec.startswith("tfds:") else os.path.splitext(os.path.basename(spec))[0]
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem) or "benchmark"


def _check_writable(out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    probe = os.path.join(out_dir, ".write_test")
    try:
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        raise UnwritablePathError(f"--out={out_dir} is not writable: {error}") from error


# Table columns in this order, with their headers (a "@" metric gets its k appended).
_COLUMNS = (("greedy_accuracy", "greedy"), ("avg@", "avg@"), ("pass@", "pass@"), ("maj@", "maj@"),
            ("attempts@", "attempts@"), ("attempts_answer_repeat_rate", "repeats"),
            ("misleading_prefix_plain_accuracy", "prefix_plain"),
            ("misleading_prefix_accuracy", "prefix"))


def format_table(rows: list[tuple[str, dict]]) -> str:
    """One line per benchmark; columns are the rates (accuracies, the answer-repeat
    rate) any benchmark reported."""
    prefixes = tuple(prefix for prefix, _ in _COLUMNS)
    columns = []
    for _, metrics in rows:
        columns += [k for k in metrics if k.startswith(prefixes) and k not in columns]
    order = {k: next(i for i, p in enumerate(prefixes) if k.startswith(p)) for k in columns}
    columns.sort(key=lambda k: (order[k], int(k.split("@")[1]) if "@" in k else 0))
    headers = ["benchmark", "problems"] + [
        _COLUMNS[order[c]][1] + (c.split("@")[1] if "@" in c else "") for c in columns] + ["timeouts"]
    table = [headers] + [
        [name, str(int(m["num_problems"]))] + [f"{100 * m[c]:.1f}" if c in m else "-" for c in columns]
        + [str(int(m.get("verifier_timeout", 0)))] for name, m in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    return "\n".join("  ".join(cell.rjust(w) if j else cell.ljust(w) for j, (cell, w) in
                               enumerate(zip(row, widths))) for row in table)


def run(checkpoint: str, data_specs: Sequence[str], settings: EvalSettings, *, out_dir: str | None = None,
        verifier_name: str = "math", verifier_kwargs: dict | None = None,
        max_problems: int = 0, problem_key: str | None = None, answer_key: str | None = None,
        tfds_data_dir: str | None = None, held_out: Sequence | None = None,
        prefixes_path: str | None = None) -> list[dict]:
    """Evaluates `checkpoint` on each dataset; writes and prints the results (see module doc).

    problem_key / answer_key: the fields to read from every data file (None: detect).
    held_out: the records evaluated (as "synthetic_held_out") when no data file is given
    (None: 200 problems of the default world's held-out split). prefixes_path: the misleading-
    prefix file, shared by every benchmark (default OUT/misleading_prefixes.jsonl).
    """
    path = resolve_checkpoint(checkpoint)
    out_dir = os.path.abspath(out_dir or os.path.join(path, "eval"))
    _check_writable(out_dir)
    benchmarks, names = [], set()
    for spec in data_specs:
        name = benchmark_name(spec)
        while name in names:
            name += "_"
        names.add(name)
        data_dir = tfds_data_dir if spec.startswith("tfds:") else None
        benchmarks.append((name, spec, sources.load_records(
            spec, problem_key=problem_key, answer_key=answer_key, data_dir=data_dir)))
    if not data_specs:
        records = (worlds.get(worlds.DEFAULT).task.held_out_records(200) if held_out is None
                   else list(held_out))
        if not records:
            raise ValueError("no data to evaluate: no --data, and the config names no held-out "
                             "records (it trains on data.train and has no data.eval files)")
        benchmarks.append((EMBEDDED_NAME, "embedded", records))
    if max_problems:
        benchmarks = [(name, spec, records[:max_problems]) for name, spec, records in benchmarks]

    model = models.load(path)
    tokenizer = models.load_tokenizer(path)
    gen = dict(stop_token_ids=models.stop_token_ids(tokenizer, model.config),
               pad_id=models.pad_token_id(tokenizer))
    prefixes_path = prefixes_path or os.path.join(out_dir, misleading_prefix.PREFIXES_FILE)
    if settings.misleading_prefix:
        print(f"Misleading prefixes: {prefixes_path} (problems it lacks are mined and added)",
              flush=True)
    summaries, table_rows = [], []
    with verifiers.make_verifier(verifier_name, **(verifier_kwargs or {})) as verifier:
        for name, spec, records in benchmarks:
            print(f"Evaluating {name}: {len(records)} problems", flush=True)
            result = evaluate_model(model, tokenizer, records, settings, verifier=verifier,
                                    prefixes_path=prefixes_path, **gen)
            summary = dict(benchmark=name, data=spec, checkpoint=path, max_problems=max_problems,
                           data_keys=dict(problem_key=problem_key, answer_key=answer_key),
                           settings=dataclasses.asdict(settings),
                           misleading_prefixes=prefixes_path if settings.misleading_prefix else None,
                           verifier=dict(name=verifier_name, **(verifier_kwargs or {})),
                           metrics=result.metrics)
            with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
                json.dump(summary, f, indent=2)
            with open(os.path.join(out_dir, f"{name}.generations.jsonl"), "w") as f:
                for row in result.generations:
                    # Model text may hold lone surrogates, which strict UTF-8 refuses.
                    f.write(json.dumps(row, ensure_ascii=True) + "\n")
            summaries.append(summary)
            table_rows.append((name, result.metrics))
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(summaries, f, indent=2)
    print("Accuracy (and answer repeats) in %; timeouts are verifier items that hit the time "
          "limit (scored 0).")
    print(format_table(table_rows))
    print(f"Results and generations in {out_dir}", flush=True)
    return summaries


# EvalSettings fields a flag of the same name overrides (None: not given).
_SETTINGS_FLAGS = ("num_samples", "temperature", "top_p", "max_new_tokens", "seed", "attempts",
                   "attempt_feedback", "attempt_temperature", "misleading_prefix",
                   "prefix_fraction", "prefix_samples")


def main(argv=None) -> None:
    # Config files import `configs.base`; make the repository root importable.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)
    from absl import app, flags
    from ml_collections import config_flags

    config_flag = config_flags.DEFINE_config_file("config", None, "Optional run config: its eval "
                                                  "settings, eval files and verifier are the defaults.")
    flags.DEFINE_string("checkpoint", None, "Hugging Face folder, or a training workdir with hf/.")
    flags.DEFINE_multi_string("data", [], "Benchmark file (.jsonl/.json/.parquet or "
                              "tfds:NAME/SPLIT); repeat for several.")
    flags.DEFINE_list("k", None, "k values for pass@k / avg@k / maj@k (default: the config's, "
                      f"else {DEFAULT_KS}, up to num_samples).")
    flags.DEFINE_integer("num_samples", None, "Samples per problem (0: greedy only).")
    flags.DEFINE_float("temperature", None, "Sampling temperature (default 0.6).")
    flags.DEFINE_float("top_p", None, "Nucleus sampling (default 1.0).")
    flags.DEFINE_integer("max_new_tokens", None, "Response length limit (default 1024).")
    flags.DEFINE_integer("attempts", None, "K > 0: accuracy within 1..K attempts with feedback "
                         "(default: the config's eval.attempts, else 0).")
    flags.DEFINE_enum("attempt_feedback", None, list(ATTEMPT_FEEDBACKS), "Feedback after a wrong "
                      "attempt: multi-attempt's 'k attempts left' or R3L's verifier turn.")
    flags.DEFINE_float("attempt_temperature", None, "Attempt temperature (default 0: greedy).")
    flags.DEFINE_boolean("misleading_prefix", None, "Accuracy continuing from a prefix of a "
                         "wrong response (default: the config's eval.misleading_prefix).")
    flags.DEFINE_float("prefix_fraction", None, "Where a wrong response is cut (default 0.5).")
    flags.DEFINE_integer("prefix_samples", None, "Samples per problem to find a wrong response "
                         "in (default 8).")
    flags.DEFINE_string("misleading_prefixes", None, "Prefix file to reuse, extended with the "
                        "problems it lacks (implies --misleading_prefix; default "
                        "OUT/misleading_prefixes.jsonl).")
    flags.DEFINE_boolean("greedy", True, "Report greedy accuracy.")
    flags.DEFINE_integer("batch_size", 256, "Rows decoded at once (the sampler's slots).")
    flags.DEFINE_integer("seed", None, "Sampling seed.")
    flags.DEFINE_string("verifier", None, "'math' or 'exact_int' (default: the config's, else math).")
    flags.DEFINE_float("verifier_timeout_s", None, "Per-item verifier time limit (default 5).")
    flags.DEFINE_integer("verifier_workers", None, "Verifier processes (default: one per core, <= 16).")
    flags.DEFINE_string("out", None, "Output folder (default CHECKPOINT/eval).")
    flags.DEFINE_integer("max_problems", None, "Evaluate the first N problems of each file (0: all).")
    flags.DEFINE_string("problem_key", None, "Problem field of every data file, dots for nested "
                        "fields (default: the config's, else detected per file).")
    flags.DEFINE_string("answer_key", None, "Answer field of every data file (default: the "
                        "config's, else detected per file).")
    flags.DEFINE_string("tfds_data_dir", None, "Where prepared TFDS datasets live (tfds: specs).")
    flags.mark_flags_as_required(["checkpoint"])
    FLAGS = flags.FLAGS

    def _main(args):
        if len(args) > 1:
            raise app.UsageError(f"unexpected arguments: {args[1:]}")
        config = config_flag.value
        fields = dataclasses.asdict(EvalSettings.from_config(config)) if config else {}
        given = {name: FLAGS[name].value for name in _SETTINGS_FLAGS
                 if FLAGS[name].value is not None}
        fields |= given | dict(greedy=FLAGS.greedy, batch_size=FLAGS.batch_size)
        if FLAGS.misleading_prefixes:
            fields["misleading_prefix"] = True
        if FLAGS.k is not None:
            fields["ks"] = tuple(int(k) for k in FLAGS.k)
        else:  # The default k list (the config's or DEFAULT_KS) up to --num_samples.
            samples = fields.get("num_samples", EvalSettings.num_samples)
            fields["ks"] = tuple(k for k in fields.get("ks", DEFAULT_KS) if k <= samples)
        settings = EvalSettings(**fields)
        data = list(FLAGS.data) or (list(config.data.eval) if config else [])
        verifier_name = FLAGS.verifier or (config.verifier.name if config else "math")
        verifier_kwargs = dict(timeout_s=config.verifier.timeout_s,
                               num_workers=config.verifier.num_workers) if config else {}
        if FLAGS.verifier_timeout_s is not None:
            verifier_kwargs["timeout_s"] = FLAGS.verifier_timeout_s
        if FLAGS.verifier_workers is not None:
            verifier_kwargs["num_workers"] = FLAGS.verifier_workers
        max_problems = FLAGS.max_problems if FLAGS.max_problems is not None else (
            config.eval.max_problems if config else 0)
        held_out = None
        if config and not data:
            # The trainer's held-out records, cut at --max_problems when given.
            config.eval.max_problems = max_problems
            held_out = run_setup.held_out_records(config)
        data_config = config.data if config else None
        # '' in a config means "detect", as for training.
        keys = {name: (FLAGS[name].value if FLAGS[name].value is not None else
                       getattr(data_config, name, None)) or None
                for name in ("problem_key", "answer_key", "tfds_data_dir")}
        run(FLAGS.checkpoint, data, settings, out_dir=FLAGS.out, verifier_name=verifier_name,
            verifier_kwargs=verifier_kwargs, max_problems=max_problems, held_out=held_out,
            prefixes_path=FLAGS.misleading_prefixes, **keys)

    from rl_reason.config_flag import app_flags_parser
    from rl_reason.errors import exit_on_user_error
    app.run(exit_on_user_error(_main), argv=argv,
            flags_parser=exit_on_user_error(app_flags_parser))


if __name__ == "__main__":
    main()
