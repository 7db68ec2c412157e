"""Evaluate a checkpoint on benchmark files: greedy accuracy, avg@k, pass@k, maj@k.

    python -m rl_reason.evaluate --checkpoint=DIR --data=math500.jsonl [--data=aime24.jsonl]
        [--k=1,4,8] [--num_samples=8] [--temperature=0.6] [--top_p=1.0]
        [--max_new_tokens=1024] [--multi_attempt=K] [--verifier=math] [--max_problems=N]
        [--problem_key=KEY] [--answer_key=KEY] [--out=DIR]
    python -m rl_reason.evaluate --config=configs/grpo.py --checkpoint=WORKDIR

DIR is a Hugging Face folder (config.json, weights, tokenizer), or a training workdir
whose exported `hf/` folder is used. With --config, the run's eval settings, eval
files, data keys and verifier are the defaults (explicit flags win); with neither
--config nor --data, the embedded task's held-out split is evaluated.

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
score 0 and are counted). --multi_attempt=K adds the multi-attempt metric: greedy
attempts with "incorrect, try again" feedback (data/templates.py), and the fraction
solved within k attempts for k = 1..K.

Writes OUT/<benchmark>.json (settings and metrics), OUT/<benchmark>.generations.jsonl
(every response with its extracted answer and status) and OUT/results.json, and
prints a table. OUT defaults to DIR/eval.

`evaluate_model` is the library entry point the trainer calls for held-out evaluation.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Sequence

import jax

from rl_reason import evaluation_metrics, sampling
from rl_reason.data import templates
from rl_reason.verifiers import count_statuses

DEFAULT_KS = (1, 4, 8)


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    num_samples: int = 8          # samples per problem (0: greedy only)
    ks: tuple[int, ...] = DEFAULT_KS
    temperature: float = 0.6
    top_p: float = 1.0
    max_new_tokens: int = 1024
    greedy: bool = True           # also report greedy accuracy
    multi_attempt: int = 0        # K > 0: greedy multi-attempt accuracy within 1..K attempts
    batch_size: int = 256         # rows per sampler call
    seed: int = 0

    def __post_init__(self):
        if self.num_samples < 0 or self.multi_attempt < 0:
            raise ValueError("num_samples and multi_attempt must be >= 0")
        if self.num_samples == 0 and not self.greedy and not self.multi_attempt:
            raise ValueError("nothing to evaluate: num_samples=0, greedy=False, multi_attempt=0")
        bad = [k for k in self.ks if not 1 <= k <= self.num_samples]
        if self.num_samples and bad:
            raise ValueError(f"every k must be in 1..num_samples={self.num_samples}, got {bad}")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be >= 1")
        if self.temperature <= 0 and self.num_samples:
            raise ValueError("sampled metrics need temperature > 0 (greedy accuracy is separate)")

    @classmethod
    def from_config(cls, config, **overrides) -> "EvalSettings":
        """From a run config's `eval` block (max_new_tokens 0: the rollout's)."""
        e = config.eval
        fields = dict(num_samples=e.num_samples, ks=tuple(e.ks), temperature=e.temperature,
                      top_p=e.top_p, max_new_tokens=e.max_new_tokens or config.rollout.max_new_tokens,
                      seed=config.seed)
        return cls(**(fields | overrides))


@dataclasses.dataclass(frozen=True)
class EvalResults:
    metrics: dict[str, float]    # flat, JSON-able: "greedy_accuracy", "pass@4", ...
    generations: list[dict]      # one row per response (mode, problem index, text, status)


def _generate(model, prompts, settings, *, greedy, rng, stop_token_ids, pad_id, mesh):
    """(response token ids, truncated) per prompt, in order, batch_size prompts per call."""
    rows = []
    for call, start in enumerate(range(0, len(prompts), settings.batch_size)):
        out = sampling.generate(
            model, prompts[start:start + settings.batch_size], max_new_tokens=settings.max_new_tokens,
            rng=jax.random.fold_in(rng, call), temperature=settings.temperature, top_p=settings.top_p,
            greedy=greedy, stop_token_ids=stop_token_ids, pad_id=pad_id, mesh=mesh)
        rows += [(ids, bool(trunc)) for ids, trunc in zip(out.response_tokens(), out.truncated)]
    return rows


def _check_context(model, prompts, settings) -> None:
    longest = max(map(len, prompts))
    limit = model.config.max_position_embeddings
    if longest + settings.max_new_tokens > limit:
        raise ValueError(f"a prompt of {longest} tokens + max_new_tokens={settings.max_new_tokens} "
                         f"exceeds the model's context of {limit}; lower max_new_tokens")


def evaluate_model(model, tokenizer, records: Sequence, settings: EvalSettings, *, verifier,
                   stop_token_ids: Sequence[int], pad_id: int, rng: jax.Array | int | None = None,
                   mesh=None) -> EvalResults:
    """Greedy / sampled / multi-attempt evaluation of `model` on `records` (problem, answer).

    `verifier` is any rl_reason.verifiers verifier (the trainer passes its own, so no
    extra worker processes start); `rng` defaults to settings.seed.
    """
    if not records:
        raise ValueError("evaluate_model: no records")
    rng = settings.seed if rng is None else rng
    rng = jax.random.PRNGKey(rng) if isinstance(rng, int) else rng
    prompts = [templates.encode_prompt(tokenizer, templates.plain_prompt(r.problem)) for r in records]
    _check_context(model, prompts, settings)
    answers = [r.answer for r in records]
    gen = dict(stop_token_ids=stop_token_ids, pad_id=pad_id, mesh=mesh)
    metrics: dict[str, float] = {"num_problems": len(records)}
    generations: list[dict] = []
    statuses = {status: 0 for status in count_statuses([])}
    start = time.monotonic()

    def score(mode, indices, rows, samples=None, attempt=None):
        """Verifies decoded rows for problems `indices`; records each as a generation."""
        texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids, _ in rows]
        results = verifier.verify_batch(texts, [answers[i] for i in indices])
        for key, count in count_statuses(results).items():
            statuses[key] += count
        samples = samples or [0] * len(indices)
        for i, sample, text, (ids, truncated), result in zip(indices, samples, texts, rows, results):
            generations.append(dict(
                mode=mode, problem=i, id=records[i].id, sample=sample, attempt=attempt,
                response=text, extracted=result.extracted, status=result.status,
                reward=result.reward, num_tokens=len(ids), truncated=truncated))
        return texts, results

    if settings.greedy:
        rows = _generate(model, prompts, settings, greedy=True, rng=rng, **gen)
        _, results = score("greedy", list(range(len(records))), rows)
        metrics["greedy_accuracy"] = sum(r.correct for r in results) / len(records)

    if settings.num_samples:
        n = settings.num_samples
        indices = [i for i in range(len(records)) for _ in range(n)]
        rows = _generate(model, [prompts[i] for i in indices], settings, greedy=False,
                         rng=jax.random.fold_in(rng, 1), **gen)
        _, results = score("sample", indices, rows, samples=[j % n for j in range(len(indices))])
        correct = [[r.correct for r in results[i * n:(i + 1) * n]] for i in range(len(records))]
        extracted = [[r.extracted for r in results[i * n:(i + 1) * n]] for i in range(len(records))]
        metrics |= evaluation_metrics.sample_metrics(extracted, correct, settings.ks)
        metrics["mean_response_tokens"] = sum(len(ids) for ids, _ in rows) / len(rows)
        metrics["truncation_rate"] = sum(t for _, t in rows) / len(rows)

    if settings.multi_attempt:
        metrics |= _multi_attempt(model, tokenizer, records, settings, score, gen, rng)

    metrics |= {f"verifier_{status}": count for status, count in statuses.items()}
    metrics["seconds"] = time.monotonic() - start
    return EvalResults(metrics, generations)


def _multi_attempt(model, tokenizer, records, settings, score, gen, rng) -> dict[str, float]:
    """Greedy attempts with feedback after each wrong one; solved-within-k for k = 1..K."""
    K = settings.multi_attempt
    conversations = [templates.multi_attempt_prompt(r.problem, K) for r in records]
    solved_at: list[int | None] = [None] * len(records)
    active = list(range(len(records)))
    overflow = 0
    limit = model.config.max_position_embeddings - settings.max_new_tokens
    for attempt in range(1, K + 1):
        prompts = {i: templates.encode_prompt(tokenizer, conversations[i]) for i in active}
        # A conversation that no longer fits the context counts as unsolved from here on.
        fits = [i for i in active if len(prompts[i]) <= limit]
        overflow += len(active) - len(fits)
        if not fits:
            break
        rows = _generate(model, [prompts[i] for i in fits], settings, greedy=True, rng=rng, **gen)
        texts, results = score("multi_attempt", fits, rows, attempt=attempt)
        active = []
        for i, text, result in zip(fits, texts, results):
            if result.correct:
                solved_at[i] = attempt
            elif attempt < K:
                conversations[i] = conversations[i] + [
                    {"role": "assistant", "content": text},
                    {"role": "user", "content": templates.attempt_feedback(K - attempt)}]
                active.append(i)
    metrics = {f"multi_attempt@{k}": sum(s is not None and s <= k for s in solved_at) / len(records)
               for k in range(1, K + 1)}
    metrics["multi_attempt_context_overflow"] = overflow
    return metrics


# ------------------------------------------------------------------------ command line

EMBEDDED_NAME = "synthetic_held_out"


def resolve_checkpoint(path: str) -> str:
    """The Hugging Face folder for `path`: itself, or a training workdir's `hf/` export."""
    path = os.path.abspath(os.path.expanduser(path))
    for candidate in (path, os.path.join(path, "hf")):
        if os.path.isfile(os.path.join(candidate, "config.json")):
            return candidate
    raise FileNotFoundError(f"--checkpoint={path}: no config.json there or in its hf/ folder "
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
        raise OSError(f"--out={out_dir} is not writable: {error}") from error


def format_table(rows: list[tuple[str, dict]]) -> str:
    """One line per benchmark; columns are the accuracy metrics any benchmark reported."""
    prefixes = ("greedy_accuracy", "avg@", "pass@", "maj@", "multi_attempt@")
    columns = []
    for _, metrics in rows:
        columns += [k for k in metrics if k.startswith(prefixes) and k not in columns]
    columns.sort(key=lambda k: (next(i for i, p in enumerate(prefixes) if k.startswith(p)),
                                int(k.split("@")[1]) if "@" in k else 0))
    headers = ["benchmark", "problems"] + [c.replace("_accuracy", "") for c in columns] + ["timeouts"]
    table = [headers] + [
        [name, str(int(m["num_problems"]))] + [f"{100 * m[c]:.1f}" if c in m else "-" for c in columns]
        + [str(int(m.get("verifier_timeout", 0)))] for name, m in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    return "\n".join("  ".join(cell.rjust(w) if j else cell.ljust(w) for j, (cell, w) in
                               enumerate(zip(row, widths))) for row in table)


def run(checkpoint: str, data_specs: Sequence[str], settings: EvalSettings, *, out_dir: str | None = None,
        verifier_name: str = "math", verifier_kwargs: dict | None = None,
        max_problems: int = 0, problem_key: str | None = None, answer_key: str | None = None,
        tfds_data_dir: str | None = None) -> list[dict]:
    """Evaluates `checkpoint` on each dataset; writes and prints the results (see module doc).

    problem_key / answer_key: the fields to read from every data file (None: detect).
    """
    from rl_reason import models, verifiers
    from rl_reason.data import sources, synthetic

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
        benchmarks.append((EMBEDDED_NAME, "embedded", synthetic.held_out_records(200)))
    if max_problems:
        benchmarks = [(name, spec, records[:max_problems]) for name, spec, records in benchmarks]

    model = models.load(path)
    tokenizer = models.load_tokenizer(path)
    gen = dict(stop_token_ids=models.stop_token_ids(tokenizer, model.config),
               pad_id=models.pad_token_id(tokenizer))
    summaries, table_rows = [], []
    with verifiers.make_verifier(verifier_name, **(verifier_kwargs or {})) as verifier:
        for name, spec, records in benchmarks:
            print(f"Evaluating {name}: {len(records)} problems", flush=True)
            result = evaluate_model(model, tokenizer, records, settings, verifier=verifier, **gen)
            summary = dict(benchmark=name, data=spec, checkpoint=path, max_problems=max_problems,
                           data_keys=dict(problem_key=problem_key, answer_key=answer_key),
                           settings=dataclasses.asdict(settings),
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
    print("Accuracy in %; timeouts are verifier items that hit the time limit (scored 0).")
    print(format_table(table_rows))
    print(f"Results and generations in {out_dir}", flush=True)
    return summaries


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
    flags.DEFINE_integer("multi_attempt", 0, "K > 0: multi-attempt accuracy within 1..K attempts.")
    flags.DEFINE_boolean("greedy", True, "Report greedy accuracy.")
    flags.DEFINE_integer("batch_size", 256, "Rows per sampler call.")
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
        given = {name: FLAGS[name].value
                 for name in ("num_samples", "temperature", "top_p", "max_new_tokens", "seed")
                 if FLAGS[name].value is not None}
        fields |= given | dict(multi_attempt=FLAGS.multi_attempt, greedy=FLAGS.greedy,
                               batch_size=FLAGS.batch_size)
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
        data_config = config.data if config else None
        # '' in a config means "detect", as for training.
        keys = {name: (FLAGS[name].value if FLAGS[name].value is not None else
                       getattr(data_config, name, None)) or None
                for name in ("problem_key", "answer_key", "tfds_data_dir")}
        run(FLAGS.checkpoint, data, settings, out_dir=FLAGS.out, verifier_name=verifier_name,
            verifier_kwargs=verifier_kwargs, max_problems=max_problems, **keys)

    from rl_reason.errors import exit_on_user_error
    app.run(exit_on_user_error(_main), argv=argv)


if __name__ == "__main__":
    main()
