"""The premise table: what each learn-from-failure method assumes of the policy,
measured on a policy before any RL.

    python -m rl_reason.premises [--world=traps] [--skill=0.5] [--checkpoint=DIR]

Each method rests on a premise: a hint listing the policy's wrong answers helps it
(LTE), feedback after a wrong attempt helps the next one (multi-attempt), it can name
where an episode went wrong and recover from there (R3L), it can recover from a
prefix of its own failure (failure-prefix), some questions are solved sometimes
(ExGRPO). Each row below is measured the way the method meets it, with the method's
own prompts, on the policy's own samples (temperature 1), each figure a mean over
questions with its standard error:

    LTE            on questions where G plain samples all fail: success of G samples
                   under LTE's hint (its wrong answers, hints.choose_prompt) against
                   G more plain samples of the same questions
    multi-attempt  after a wrong first attempt and "incorrect, 2 attempts left":
                   success of the second attempt against an independent first
                   attempt on the same question; how often the second attempt
                   repeats the rejected answer
    R3L            episodes of 3 failed attempts with the verifier's feedback: the
                   share of the policy's own reports that are valid and that name the
                   step where the mistake behind the failure first appears (the
                   world's `first_error_step`: the first attempt read left to right in
                   the trap world); success of the retry guided by a valid report from
                   the step it names, against a restart (a fresh plain attempt)
    failure-prefix on saturated questions (pass rate >= 7/8): the policy's wrong
                   responses cut at fractions of their tokens, continued; recovery
                   rate by fraction
    ExGRPO         share of questions with 1..G-1 of G plain samples correct

A premise holds where the method prompt's success is clearly above plain
resampling's: the target for the default world is at least 1.5x (and below 0.5, so
there is something left to learn).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Callable, Sequence

import jax
import numpy as np

from rl_reason import sampling, stats
from rl_reason.data import templates
from rl_reason.errors import ConfigError, exit_on_user_error
from rl_reason.models.tokenizer import pad_token_id, stop_token_ids
from rl_reason.verifiers import cut_after_first_box
from rl_reason.verifiers.exact_int import ExactIntVerifier

R3L_ATTEMPTS = 3
MULTI_ATTEMPT_BUDGET = 3


@dataclasses.dataclass(frozen=True)
class PremiseSettings:
    """What the table samples. levels: the RL levels (LTE, multi-attempt, R3L,
    ExGRPO); saturated_levels: where failure-prefix conditioning trains."""

    levels: tuple = (2, 3)
    saturated_levels: tuple = (1,)
    questions: int = 128
    group_size: int = 8
    # Most episodes end solved: 512 leave ~150 failed ones to reflect on (128 left ~40,
    # too few to tell a guided retry from a restart).
    r3l_episodes: int = 512
    fp_questions: int = 96
    fp_mining_samples: int = 16
    saturation: float = 0.875
    cut_fractions: tuple = (0.2, 0.4, 0.6, 0.8)
    probe_samples: int = 4
    max_new_tokens: int = 128
    reflection_max_new_tokens: int = 160
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Response:
    """A sampled response: its text (a given prefix included), token ids (without the
    stop token), verdict and extracted answer."""

    text: str
    ids: tuple[int, ...]
    truncated: bool
    status: str = ""
    extracted: str | None = None

    @property
    def correct(self) -> bool:
        return self.status == "correct"


class Policy:
    """Samples from a model on chat prompts (temperature 1) and scores the answers."""

    def __init__(self, model, tokenizer, seed: int, max_new_tokens: int):
        self.model, self.tokenizer = model, tokenizer
        self.stop = stop_token_ids(tokenizer)
        self.pad = pad_token_id(tokenizer)
        self.max_new_tokens = max_new_tokens
        self.calls = 0
        self.seed = seed
        self.verifier = ExactIntVerifier()

    def encode(self, messages, prefix_ids: Sequence[int] = ()) -> list[int]:
        return templates.encode_prompt(self.tokenizer, messages) + list(prefix_ids)

    def sample(self, prompts: Sequence[Sequence[int]], answers: Sequence[str], *,
               prefixes: Sequence[Sequence[int]] | None = None, max_new_tokens=None,
               cut_at_box: bool = False, chunk: int = 512) -> list[Response]:
        """One response per prompt; `prefixes` are given starts of the responses (part
        of the prompt ids too), scored with the continuation."""
        budget = max_new_tokens or self.max_new_tokens
        prefixes = prefixes or [()] * len(prompts)
        out: list[Response | None] = [None] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        for c in range(0, len(order), chunk):
            part = order[c:c + chunk]
            self.calls += 1
            result = sampling.generate(
                self.model, [prompts[i] for i in part], max_new_tokens=budget,
                rng=jax.random.PRNGKey(self.seed * 100_003 + self.calls), temperature=1.0,
                stop_token_ids=self.stop, pad_id=self.pad)
            for row, i in enumerate(part):
                ids = [int(t) for t in result.tokens[row, :result.lengths[row]]]
                if ids and ids[-1] in self.stop:
                    ids = ids[:-1]
                ids = list(prefixes[i]) + ids
                text = self.tokenizer.decode(ids)
                if cut_at_box:
                    text = cut_after_first_box(text)
                out[i] = Response(text, tuple(ids), bool(result.truncated[row]))
        verdicts = self.verifier.verify_batch([r.text for r in out], list(answers))
        return [dataclasses.replace(r, status=v.status, extracted=v.extracted)
                for r, v in zip(out, verdicts)]


def _estimate(per_question: dict) -> dict:
    values = [float(np.mean(v)) for v in per_question.values() if len(v)]
    if not values:
        return {"mean": None, "se": None, "questions": 0, "n": 0}
    e = stats.mean_and_se(values)
    return {"mean": round(e.mean, 4), "se": round(e.se, 4), "questions": len(values),
            "n": int(sum(len(v) for v in per_question.values()))}


def _ratio(a: dict, b: dict) -> float | None:
    if a["mean"] is None or not b["mean"]:
        return None
    return round(a["mean"] / b["mean"], 2)


# ------------------------------------------------------------------- LTE and ExGRPO

def lte_and_exgrpo(policy: Policy, records, s: PremiseSettings) -> dict:
    from rl_reason.methods.components import hints

    G = s.group_size
    plain = [policy.encode(templates.plain_prompt(r.problem)) for r in records]
    first = policy.sample([p for p in plain for _ in range(G)],
                          [r.answer for r in records for _ in range(G)])
    groups = [first[i * G:(i + 1) * G] for i in range(len(records))]
    correct = np.array([[x.correct for x in g] for g in groups])
    k = correct.sum(axis=1)
    none_pass = [i for i in range(len(records)) if k[i] == 0]
    hinted_prompts, kinds = [], []
    for i in none_pass:
        kind, wrong = hints.choose_prompt(groups[i])
        kinds.append(kind)
        hinted_prompts.append(policy.encode(hints.prompt_messages(kind, records[i].problem, wrong)))
    answers = [records[i].answer for i in none_pass for _ in range(G)]
    hinted = policy.sample([p for p in hinted_prompts for _ in range(G)], answers)
    again = policy.sample([plain[i] for i in none_pass for _ in range(G)], answers)
    by_q = lambda responses: {i: [x.correct for x in responses[j * G:(j + 1) * G]]
                              for j, i in enumerate(none_pass)}
    lte = {"hinted": _estimate(by_q(hinted)), "plain": _estimate(by_q(again)),
           "none_pass_share": round(len(none_pass) / len(records), 4),
           "prompt_kinds": {kind: kinds.count(kind) for kind in sorted(set(kinds))}}
    lte["ratio"] = _ratio(lte["hinted"], lte["plain"])
    mixed = {i: [float(0 < k[i] < G)] for i in range(len(records))}
    exgrpo = {"mixed": _estimate(mixed),
              "plain_accuracy": _estimate({i: list(correct[i]) for i in range(len(records))}),
              "all_pass_share": round(float(np.mean(k == G)), 4)}
    return {"lte": lte, "exgrpo": exgrpo}


# --------------------------------------------------------------------- multi-attempt

def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


def multi_attempt(policy: Policy, records, s: PremiseSettings) -> dict:
    G = s.group_size
    start = [templates.multi_attempt_prompt(r.problem, MULTI_ATTEMPT_BUDGET) for r in records]
    firsts = policy.sample([policy.encode(m) for m in start for _ in range(G)],
                           [r.answer for r in records for _ in range(G)], cut_at_box=True)
    failed = [(j // G, x) for j, x in enumerate(firsts) if x.status == "wrong"]
    seconds = policy.sample(
        [policy.encode(start[i] + [_assistant(x.text),
                                   _user(templates.attempt_feedback(MULTI_ATTEMPT_BUDGET - 1))])
         for i, x in failed],
        [records[i].answer for i, _ in failed], cut_at_box=True)
    fresh = policy.sample([policy.encode(start[i]) for i, _ in failed],
                          [records[i].answer for i, _ in failed], cut_at_box=True)
    second, independent, repeat = {}, {}, {}
    for (i, x), y, z in zip(failed, seconds, fresh):
        second.setdefault(i, []).append(y.correct)
        independent.setdefault(i, []).append(z.correct)
        repeat.setdefault(i, []).append(y.extracted is not None and y.extracted == x.extracted)
    out = {"second_attempt": _estimate(second), "independent": _estimate(independent),
           "repeat_rate": _estimate(repeat),
           "first_attempt_accuracy": round(float(np.mean([x.correct for x in firsts])), 4)}
    out["ratio"] = _ratio(out["second_attempt"], out["independent"])
    return out


# ----------------------------------------------------------------------------- R3L

def r3l(policy: Policy, records, s: PremiseSettings, first_error_step) -> dict:
    episodes = [[] for _ in records]
    live = list(range(len(records)))
    for step in range(R3L_ATTEMPTS):
        messages = []
        for i in live:
            m = templates.plain_prompt(records[i].problem)
            for a in episodes[i]:
                m += [_assistant(a.text), _user(templates.verifier_feedback(a.extracted))]
            messages.append(m)
        got = policy.sample([policy.encode(m) for m in messages],
                            [records[i].answer for i in live], cut_at_box=True)
        for i, a in zip(live, got):
            episodes[i].append(a)
        live = [i for i in live if not episodes[i][-1].correct]
    failed = [i for i in range(len(records)) if not episodes[i][-1].correct]
    logs = [[(a.text, templates.verifier_feedback(a.extracted)) for a in episodes[i]]
            for i in failed]
    reports = policy.sample(
        [policy.encode(templates.reflection_request(records[i].problem, log))
         for i, log in zip(failed, logs)], ["0"] * len(failed),
        max_new_tokens=s.reflection_max_new_tokens)
    valid, named, retry_prompts, retried = {}, {}, [], []
    for i, text in zip(failed, (r.text for r in reports)):
        report = templates.parse_reflection_report(text, R3L_ATTEMPTS)
        valid.setdefault(i, []).append(report.valid)
        if not report.valid:
            continue
        root = first_error_step(records[i], [a.extracted for a in episodes[i]])
        named.setdefault(i, []).append(report.retry_from_step == root)
        if report.needs_retry:
            k = report.retry_from_step
            m = templates.plain_prompt(records[i].problem)
            for a in episodes[i][:k]:
                m += [_assistant(a.text), _user(templates.verifier_feedback(a.extracted))]
            retry_prompts.append(policy.encode(templates.insert_guidance(m, report)))
            retried.append(i)
    answers = [records[i].answer for i in retried]
    guided = policy.sample(retry_prompts, answers, cut_at_box=True)
    restart = policy.sample([policy.encode(templates.plain_prompt(records[i].problem))
                             for i in retried], answers, cut_at_box=True)
    by_q = lambda responses: {i: [x.correct for x, j in zip(responses, retried) if j == i]
                              for i in set(retried)}
    out = {"failed_episodes": len(failed), "episodes": len(records),
           "valid_reports": _estimate(valid), "names_first_error": _estimate(named),
           "guided_retry": _estimate(by_q(guided)), "restart": _estimate(by_q(restart))}
    out["ratio"] = _ratio(out["guided_retry"], out["restart"])
    return out


# -------------------------------------------------------------------- failure-prefix

def failure_prefix(policy: Policy, records, s: PremiseSettings) -> dict:
    n = s.group_size + s.fp_mining_samples
    plain = [policy.encode(templates.plain_prompt(r.problem)) for r in records]
    got = policy.sample([p for p in plain for _ in range(n)],
                        [r.answer for r in records for _ in range(n)])
    pass_rate = [np.mean([x.correct for x in got[i * n:i * n + s.group_size]])
                 for i in range(len(records))]
    prompts, prefixes, owners, fractions = [], [], [], []
    saturated = 0
    for i, rate in enumerate(pass_rate):
        if rate < s.saturation:
            continue
        saturated += 1
        wrong = [x for x in got[i * n:(i + 1) * n] if not x.correct and len(x.ids) >= 2][:2]
        for x in wrong:
            for f in s.cut_fractions:
                cut = min(max(1, int(round(f * len(x.ids)))), len(x.ids) - 1)
                for _ in range(s.probe_samples):
                    prompts.append(plain[i] + list(x.ids[:cut]))
                    prefixes.append(x.ids[:cut])
                    owners.append(i)
                    fractions.append(f)
    budgets = [max(2, s.max_new_tokens - len(p)) for p in prefixes]
    conts = policy.sample(prompts, [records[i].answer for i in owners], prefixes=prefixes,
                          max_new_tokens=max(budgets) if budgets else None)
    by_fraction = {}
    for f in s.cut_fractions:
        per_q = {}
        for x, i, g in zip(conts, owners, fractions):
            if g == f:
                per_q.setdefault(i, []).append(x.correct)
        by_fraction[f"{f:g}"] = _estimate(per_q)
    return {"saturated_questions": saturated, "questions": len(records),
            "recovery_by_cut": by_fraction}


# ------------------------------------------------------------------------- the table

def measure(model, tokenizer, world, s: PremiseSettings = PremiseSettings()) -> dict:
    """Every row of the premise table (module docstring) for one policy."""
    policy = Policy(model, tokenizer, s.seed, s.max_new_tokens)
    records = world.task.train_records(s.questions, seed=s.seed + 1, levels=s.levels)
    out = lte_and_exgrpo(policy, records, s)
    out["multi_attempt"] = multi_attempt(policy, records, s)
    r3l_records = world.task.train_records(s.r3l_episodes, seed=s.seed + 2, levels=s.levels)
    out["r3l"] = r3l(policy, r3l_records, s, world.first_error_step)
    fp_records = world.task.train_records(s.fp_questions, seed=s.seed + 3,
                                          levels=s.saturated_levels)
    out["failure_prefix"] = failure_prefix(policy, fp_records, s)
    out["settings"] = json.loads(json.dumps(dataclasses.asdict(s)))
    return out


def _fmt(e: dict) -> str:
    return "n/a" if e["mean"] is None else f"{e['mean']:.3f} ± {e['se']:.3f}"


def table(p: dict) -> str:
    """The premise table as markdown: one row per method."""
    lte, ma, r, fp, ex = p["lte"], p["multi_attempt"], p["r3l"], p["failure_prefix"], p["exgrpo"]
    ratio = lambda x: "n/a" if x is None else f"{x:.2f}x"
    cuts = ", ".join(f"{f}: {_fmt(e)}" for f, e in fp["recovery_by_cut"].items())
    rows = [
        "| method | premise measured | method prompt | plain | ratio |",
        "|---|---|---|---|---|",
        f"| LTE | success on none-pass questions ({lte['hinted']['questions']} of "
        f"{round(lte['none_pass_share'] * p['settings']['questions'])}): hinted vs plain resamples "
        f"| {_fmt(lte['hinted'])} | {_fmt(lte['plain'])} | {ratio(lte['ratio'])} |",
        f"| multi-attempt | attempt 2 after \"incorrect\" vs an independent attempt "
        f"(repeats the rejected answer: {_fmt(ma['repeat_rate'])}) "
        f"| {_fmt(ma['second_attempt'])} | {_fmt(ma['independent'])} | {ratio(ma['ratio'])} |",
        f"| R3L | retry guided by the policy's report vs a restart ({r['failed_episodes']} failed "
        f"episodes; valid reports {_fmt(r['valid_reports'])}, naming the first-error step "
        f"{_fmt(r['names_first_error'])}) | {_fmt(r['guided_retry'])} | {_fmt(r['restart'])} "
        f"| {ratio(r['ratio'])} |",
        f"| failure-prefix | recovery from the policy's own failure prefixes by cut "
        f"({fp['saturated_questions']} saturated questions): {cuts} | | | |",
        f"| ExGRPO | questions with 1..G-1 of G correct (plain accuracy "
        f"{_fmt(ex['plain_accuracy'])}) | {_fmt(ex['mixed'])} | | |",
    ]
    return "\n".join(rows)


def dial_table(by_setting: dict[str, dict]) -> str:
    """One row per method, one column per dial setting: the method prompt against plain
    resampling and their ratio (failure-prefix: recovery at the earliest and the
    latest cut; ExGRPO: the share of partly solved questions)."""
    def pair(e_method, e_plain, ratio) -> str:
        r = "n/a" if ratio is None else f"{ratio:.2f}x"
        return f"{_fmt(e_method)} vs {_fmt(e_plain)} ({r})"

    cells = {
        "LTE: hinted vs plain resamples on none-pass questions":
            lambda p: pair(p["lte"]["hinted"], p["lte"]["plain"], p["lte"]["ratio"]),
        "multi-attempt: attempt 2 after \"incorrect\" vs an independent attempt":
            lambda p: pair(p["multi_attempt"]["second_attempt"],
                           p["multi_attempt"]["independent"], p["multi_attempt"]["ratio"]),
        "multi-attempt: attempt 2 repeats the rejected answer":
            lambda p: _fmt(p["multi_attempt"]["repeat_rate"]),
        "R3L: guided retry vs restart on failed episodes":
            lambda p: pair(p["r3l"]["guided_retry"], p["r3l"]["restart"], p["r3l"]["ratio"]),
        "R3L: reports naming the first-error step":
            lambda p: _fmt(p["r3l"]["names_first_error"]),
        "failure-prefix: recovery, earliest / latest cut":
            lambda p: " / ".join(_fmt(e) for e in (
                list(p["failure_prefix"]["recovery_by_cut"].values())[0],
                list(p["failure_prefix"]["recovery_by_cut"].values())[-1])),
        "ExGRPO: questions with 1..G-1 of G correct":
            lambda p: _fmt(p["exgrpo"]["mixed"]),
    }
    settings = list(by_setting)
    rows = ["| premise | " + " | ".join(f"skill {k}" for k in settings) + " |",
            "|---|" + "---|" * len(settings)]
    for name, cell in cells.items():
        rows.append(f"| {name} | " + " | ".join(cell(by_setting[k]) for k in settings) + " |")
    return "\n".join(rows)


@exit_on_user_error
def main(argv=None, *, base_policy: Callable[[str, float | None], str]) -> None:
    """The command; base_policy(world, skill) is the folder of the world's base policy
    (pretrain.ensure_base_policy, passed in by `__main__` below)."""
    from rl_reason import models
    from rl_reason.data import worlds

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", default=worlds.DEFAULT, choices=sorted(worlds.WORLDS))
    parser.add_argument("--skill", type=float, default=None,
                        help="the premise dial of the base policy (default: the world's)")
    parser.add_argument("--checkpoint", default=None,
                        help="a policy folder to measure instead of the world's base policy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the table's numbers here")
    parser.add_argument("--summary", nargs="+", default=None, metavar="SKILL=JSON",
                        help="print the dial table of measured settings (--json outputs) "
                        "and exit, e.g. --summary 0=s0.json 0.7=s07.json")
    args = parser.parse_args(argv)
    if args.summary:
        by_setting = {}
        for item in args.summary:
            setting, sep, path = item.partition("=")
            if not sep:
                raise ConfigError(f"--summary {item!r}: expected SKILL=JSON")
            try:
                with open(path) as f:
                    by_setting[setting] = json.load(f)
            except (OSError, json.JSONDecodeError) as e:
                raise ConfigError(f"--summary {item!r}: cannot read {path}: {e}") from None
        print(dial_table(by_setting))
        return
    world = worlds.get(args.world)
    path = args.checkpoint or base_policy(world.name, args.skill)
    model, tokenizer = models.load(path), models.load_tokenizer(path)
    premises = measure(model, tokenizer, world, PremiseSettings(seed=args.seed))
    print(f"Premises of {path} ({world.label(world.resolve_skill(args.skill))}):")
    print(table(premises))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(premises, f, indent=2)


if __name__ == "__main__":
    # pretrain imports this module (it measures the premises of a policy it built), so
    # the command, not the module, imports pretrain.
    from rl_reason import pretrain
    main(base_policy=pretrain.ensure_base_policy)
