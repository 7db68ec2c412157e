"""What a base policy offers RL, measured before any training (rl_reason/pretrain.py).

- Per-problem pass rates (8 samples, temperature 1) on a training slice over all
  levels: RL needs problems never solved, always solved and in between.
- Greedy accuracy on the RL held-out split (the evaluation a run starts from), with
  its size and levels.
- The arithmetic world: accuracy and boxed share by prompt kind (data/probes.py) on
  the same training problems at the RL levels: a method that routes samples through
  its own prompts must not start with a better format than the plain prompt gives.
- The trap world: the premise table (rl_reason/premises.py), each method's premise
  measured the way the method meets it.
"""

from __future__ import annotations

import jax
import numpy as np

from rl_reason import sampling, stats
from rl_reason.data import probes, templates, worlds
from rl_reason.models.tokenizer import pad_token_id, stop_token_ids
from rl_reason.verifiers.exact_int import ExactIntVerifier

PASS_SAMPLES = 8


def _sample(model, tokenizer, prompts, *, greedy: bool, seed: int, max_new_tokens: int,
            prefixes=None, chunk: int = 512) -> list[str]:
    """Responses (prefix included) to encoded prompts, temperature 1 unless greedy.

    Prompts go to the sampler shortest first, so a call pads to a length near its own
    prompts' (probe prompts range from 30 to 250 tokens)."""
    stop_ids = stop_token_ids(tokenizer)
    prefixes = prefixes or [""] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    texts = [""] * len(prompts)
    for c in range(0, len(prompts), chunk):
        part = order[c:c + chunk]
        out = sampling.generate(model, [prompts[i] for i in part], max_new_tokens=max_new_tokens,
                                rng=jax.random.PRNGKey(seed + c), temperature=1.0,
                                greedy=greedy, stop_token_ids=stop_ids,
                                pad_id=pad_token_id(tokenizer))
        for i, text in zip(part, out.decode(tokenizer, skip_stop_tokens=stop_ids)):
            texts[i] = prefixes[i] + text
    return texts


def _scores(texts, answers) -> tuple[np.ndarray, np.ndarray]:
    """(reward, boxed) per response under the exact-int verifier."""
    results = ExactIntVerifier().verify_batch(texts, answers)
    return (np.array([r.reward for r in results], np.float64),
            np.array([r.status != "no_answer" for r in results], bool))


def _plain_prompts(tokenizer, records):
    return [templates.encode_prompt(tokenizer, templates.plain_prompt(r.problem)) for r in records]


def _by_level(records, values) -> dict[str, float]:
    levels = np.array([r.meta["level"] for r in records])
    return {str(level): round(float(values[levels == level].mean()), 4)
            for level in sorted(set(levels.tolist()))}


def pass_rates(model, tokenizer, s) -> dict:
    task = worlds.get(s.world).task
    records = task.train_records(s.eval_train_problems, seed=s.seed)
    prompts = [p for p in _plain_prompts(tokenizer, records) for _ in range(PASS_SAMPLES)]
    texts = _sample(model, tokenizer, prompts, greedy=False, seed=s.seed,
                    max_new_tokens=s.max_new_tokens)
    rewards, boxed = _scores(texts, [r.answer for r in records for _ in range(PASS_SAMPLES)])
    rates = rewards.reshape(len(records), PASS_SAMPLES).mean(axis=1)
    counts = np.bincount(np.rint(rates * PASS_SAMPLES).astype(int), minlength=PASS_SAMPLES + 1)
    return {
        "pass_rate_histogram": {f"{k}/{PASS_SAMPLES}": int(n) for k, n in enumerate(counts)},
        "train_slice_problems": len(records),
        "train_slice_mean_pass_rate": round(float(rates.mean()), 4),
        "train_slice_pass_rate_by_level": _by_level(records, rates),
        "none_pass_fraction": round(float(np.mean(rates == 0)), 4),
        "all_pass_fraction": round(float(np.mean(rates == 1)), 4),
        "mixed_fraction": round(float(np.mean((rates > 0) & (rates < 1))), 4),
        "train_slice_no_answer_share": round(float(1 - boxed.mean()), 4),
    }


def held_out(model, tokenizer, s) -> dict:
    task = worlds.get(s.world).task
    records = task.held_out_records(s.eval_held_out_problems, seed=s.seed, levels=s.rl_levels)
    texts = _sample(model, tokenizer, _plain_prompts(tokenizer, records), greedy=True,
                    seed=s.seed, max_new_tokens=s.max_new_tokens)
    rewards, boxed = _scores(texts, [r.answer for r in records])
    return {
        "held_out_problems": len(records),
        "held_out_distinct_problems": len({r.problem for r in records}),
        "held_out_problems_by_level": {str(k): v for k, v in task.level_counts(records).items()},
        "held_out_greedy_accuracy": round(float(rewards.mean()), 4),
        "held_out_greedy_accuracy_by_level": _by_level(records, rewards),
        "held_out_greedy_no_answer_share": round(float(1 - boxed.mean()), 4),
    }


def by_prompt_kind(model, tokenizer, s) -> dict:
    """{kind: accuracy, boxed share, accuracy of the boxed answers, n} on the same
    training problems at the RL levels, `s.kind_samples` samples each."""
    from rl_reason.data import synthetic
    problems = synthetic.generate_problems("train", s.kind_problems, seed=s.seed,
                                           levels=s.rl_levels, distinct=True)
    probe_list = probes.build_probes(problems, seed=s.seed, unboxed_share=s.unboxed_share)
    repeated = [p for p in probe_list for _ in range(s.kind_samples)]
    prompts = [templates.encode_prompt(tokenizer, list(p.messages), p.response_prefix)
               for p in repeated]
    texts = _sample(model, tokenizer, prompts, greedy=False, seed=s.seed + 1,
                    max_new_tokens=s.max_new_tokens, prefixes=[p.response_prefix for p in repeated])
    rewards, boxed = _scores(texts, [p.answer for p in repeated])
    kinds = np.array([p.kind for p in repeated])
    problem_of = np.array([p.problem for p in repeated])
    context = np.array([p.context_boxed for p in repeated], object)

    def over_problems(values, where):
        """Mean and its standard error over problems (samples averaged per problem)."""
        per_problem = [values[where & (problem_of == i)].mean() for i in range(len(problems))]
        estimate = stats.mean_and_se(per_problem)
        return round(estimate.mean, 4), round(estimate.se, 4)

    out = {}
    for kind in probes.KINDS:
        here = kinds == kind
        (accuracy, accuracy_se), (boxed_share, boxed_se) = (
            over_problems(rewards, here), over_problems(boxed.astype(float), here))
        row = {"n": int(here.sum()), "accuracy": accuracy, "accuracy_se": accuracy_se,
               "boxed_share": boxed_share, "boxed_share_se": boxed_se,
               "accuracy_of_boxed": round(float(rewards[here & boxed].sum()
                                                / max(1, (here & boxed).sum())), 4)}
        for label, value in (("after_boxed_attempt", True), ("after_unboxed_attempt", False)):
            where = here & (context == value)
            if where.any():
                row[f"boxed_share_{label}"] = round(float(boxed[where].mean()), 4)
        out[kind] = row
    return {"by_prompt_kind": out, "by_prompt_kind_problems": len(problems),
            "by_prompt_kind_samples": s.kind_samples}


def evaluate(model, tokenizer, s) -> dict:
    out = pass_rates(model, tokenizer, s) | held_out(model, tokenizer, s)
    if s.world == "arith":
        return out | by_prompt_kind(model, tokenizer, s)
    from rl_reason import premises
    settings = premises.PremiseSettings(levels=tuple(s.rl_levels), seed=s.seed,
                                        max_new_tokens=s.max_new_tokens,
                                        **dict(s.premise_sizes))
    return out | {"premises": premises.measure(model, tokenizer, worlds.get(s.world), settings)}


def print_stats(summary: dict) -> None:
    hist = summary["pass_rate_histogram"]
    total = max(1, sum(hist.values()))
    print(f"Per-problem pass rate ({PASS_SAMPLES} samples, temperature 1) on "
          f"{summary['train_slice_problems']} training problems, all levels:")
    for label, n in hist.items():
        print(f"  {label:>4} {n:4d} {'#' * round(60 * n / total)}")
    print(f"  none-pass {summary['none_pass_fraction']:.2f}  mixed {summary['mixed_fraction']:.2f}  "
          f"all-pass {summary['all_pass_fraction']:.2f}")
    print(f"  mean pass rate by level: {summary['train_slice_pass_rate_by_level']}; "
          f"{summary['train_slice_no_answer_share']:.0%} of the samples give no boxed answer")
    levels = ", ".join(f"level {k}: {v}" for k, v in summary["held_out_problems_by_level"].items())
    print(f"Held-out split of the RL runs: {summary['held_out_problems']} problems "
          f"({summary['held_out_distinct_problems']} distinct; {levels}); greedy accuracy "
          f"{summary['held_out_greedy_accuracy']:.3f}, by level "
          f"{summary['held_out_greedy_accuracy_by_level']}; "
          f"{summary['held_out_greedy_no_answer_share']:.0%} give no boxed answer")
    if "premises" in summary:
        from rl_reason import premises
        print(f"Premises ({summary['premises']['settings']['questions']} training questions "
              f"at the RL levels, temperature 1; ± standard error over questions):")
        print(premises.table(summary["premises"]))
    else:
        print_by_prompt_kind(summary)
    census = summary.get("warm_start")
    if census:
        print(f"Warm-start data: {census['conversations']} conversations; boxed share of the "
              f"trained answers on multi-step problems: {census['multi_step_boxed_share_by_kind']}")
        for kind, spread in census["retry_from_step"].items():
            print(f"  {kind}: retry_from_step {spread}")


def print_by_prompt_kind(summary: dict) -> None:
    print(f"By prompt kind ({summary['by_prompt_kind_problems']} training problems at the RL "
          f"levels, {summary['by_prompt_kind_samples']} samples each, temperature 1):")
    print(f"  {'kind':<22} {'accuracy':>13} {'boxed share':>13} {'acc. of boxed':>13}")
    for kind, row in summary["by_prompt_kind"].items():
        extra = ""
        if "boxed_share_after_boxed_attempt" in row:
            extra = (f"   (boxed after a boxed attempt {row['boxed_share_after_boxed_attempt']:.2f}"
                     f", after an unboxed one {row.get('boxed_share_after_unboxed_attempt', 0):.2f})")
        print(f"  {kind:<22} {row['accuracy']:.3f} ± {row['accuracy_se']:.3f} "
              f"{row['boxed_share']:.3f} ± {row['boxed_share_se']:.3f} "
              f"{row['accuracy_of_boxed']:13.3f}{extra}")
    print("  (± standard error over problems)")
