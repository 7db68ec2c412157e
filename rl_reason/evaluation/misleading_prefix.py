"""Continuation from a misleading prefix: how well the policy recovers when its
response starts the way one of its own wrong responses did (failure-prefix
conditioning's robustness check, docs/methods.md section 4).

Building and evaluating are separate, so a method can evaluate its own prefixes:

  build     mine_misleading_prefixes: prefix_samples responses per problem to the plain
            prompt at the eval temperature; build_misleading_prefixes keeps per problem
            the first one the verifier calls "wrong" (a final answer, not the gold one)
            and cuts its token ids at prefix_fraction of its length.
  evaluate  evaluate_from_prefixes: the greedy continuation of plain prompt + prefix
            ids, scored on prefix + continuation decoded as ONE response (a cut inside
            `\\boxed{3|2}` still reads 32). The response budget is the plain one:
            prefix + continuation <= max_new_tokens.

Prefixes are mined once and stored (JSONL, one row per mined problem, with
`prefix_ids: null` where no sample was wrong), and `load_or_mine_prefixes` reuses the
file: robustness before and after training is measured on the same prefixes, and a
problem's prefix comes from the policy that was evaluated first. The trainer keeps the
file at WORKDIR/eval/misleading_prefixes.jsonl.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Sequence

import jax

from rl_reason.evaluation.session import EvalSession

PREFIXES_FILE = "misleading_prefixes.jsonl"


@dataclasses.dataclass(frozen=True)
class MisleadingPrefix:
    problem_id: str               # Record.id of the problem
    prefix_ids: tuple[int, ...]   # appended to the encoded plain prompt
    prefix_text: str              # decoded prefix_ids, for reading
    source_response: str          # the whole wrong response it was cut from
    source_answer: str | None     # that response's (wrong) extracted answer
    fraction: float               # the prefix_fraction it was cut at


Mined = dict[str, "MisleadingPrefix | None"]   # problem id -> prefix (None: no wrong sample)


def prefix_length(num_tokens: int, fraction: float) -> int:
    """Tokens a prefix keeps of a `num_tokens` response: floor(fraction * n), at least
    1 and at most n - 1, so a prefix is never empty nor the whole response."""
    if num_tokens < 2:
        raise ValueError(f"a response of {num_tokens} tokens cannot be cut")
    return min(num_tokens - 1, max(1, math.floor(fraction * num_tokens)))


def build_misleading_prefixes(records: Sequence, responses: Sequence[Sequence[Sequence[int]]],
                              statuses: Sequence[Sequence[str]],
                              extracted: Sequence[Sequence[str | None]], tokenizer, *,
                              fraction: float, stop_token_ids: Sequence[int] = ()) -> Mined:
    """Per record, a prefix of its first "wrong" response (None when none is wrong).

    responses[p][j] are the token ids of sample j of records[p], with statuses[p][j]
    and extracted[p][j] from the verifier. A trailing stop token is not part of the
    response (a prefix never ends the turn); responses shorter than 2 tokens are
    skipped.
    """
    if not len(records) == len(responses) == len(statuses) == len(extracted):
        raise ValueError("records, responses, statuses and extracted need one entry per record")
    stops = set(stop_token_ids)
    mined: Mined = {}
    for record, ids_list, status_list, answer_list in zip(records, responses, statuses, extracted):
        mined[record.id] = None
        for ids, status, answer in zip(ids_list, status_list, answer_list):
            ids = list(ids)
            if ids and ids[-1] in stops:
                ids = ids[:-1]
            if status != "wrong" or len(ids) < 2:
                continue
            prefix = ids[:prefix_length(len(ids), fraction)]
            mined[record.id] = MisleadingPrefix(
                problem_id=record.id, prefix_ids=tuple(prefix),
                prefix_text=tokenizer.decode(prefix, skip_special_tokens=True),
                source_response=tokenizer.decode(ids, skip_special_tokens=True),
                source_answer=answer, fraction=fraction)
            break
    return mined


def mine_misleading_prefixes(session: EvalSession, indices: Sequence[int], rng: jax.Array) -> Mined:
    """Samples prefix_samples responses of session.model to records `indices` (plain
    prompt, eval temperature) and builds their prefixes. Not logged as generations
    nor counted in the verifier statuses: only the first evaluation mines, and the
    metrics of every evaluation should count the same things."""
    settings = session.settings
    n = settings.prefix_samples
    rows_for = [i for i in indices for _ in range(n)]
    rows = session.generate([session.plain_prompt(i) for i in rows_for],
                            temperature=settings.temperature, rng=rng)
    results = session.verifier.verify_batch([session.decode(ids) for ids, _ in rows],
                                            [session.records[i].answer for i in rows_for])
    per_record = range(len(indices))
    return build_misleading_prefixes(
        [session.records[i] for i in indices],
        [[ids for ids, _ in rows[p * n:(p + 1) * n]] for p in per_record],
        [[r.status for r in results[p * n:(p + 1) * n]] for p in per_record],
        [[r.extracted for r in results[p * n:(p + 1) * n]] for p in per_record],
        session.tokenizer, fraction=settings.prefix_fraction, stop_token_ids=session.stop_token_ids)


def save_prefixes(path: str, mined: Mined) -> None:
    """Writes `mined` as JSONL. Every process of a multi-host run holds the same
    prefixes and writes them; the atomic replace makes that safe on shared storage
    and gives each host a copy on local storage."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{jax.process_index()}"
    with open(tmp, "w") as f:
        for problem_id, prefix in mined.items():
            row = (dataclasses.asdict(prefix) if prefix is not None else
                   dict(problem_id=problem_id, prefix_ids=None))
            # Model text may hold lone surrogates, which strict UTF-8 refuses.
            f.write(json.dumps(row, ensure_ascii=True) + "\n")
    os.replace(tmp, path)


def load_prefixes(path: str) -> Mined:
    mined: Mined = {}
    with open(path) as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if row["prefix_ids"] is None:
                    mined[row["problem_id"]] = None
                else:
                    row["prefix_ids"] = tuple(int(t) for t in row["prefix_ids"])
                    mined[row["problem_id"]] = MisleadingPrefix(**row)
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"{path}:{line_number}: not a misleading-prefix row "
                                 f"({error})") from error
    return mined


def load_or_mine_prefixes(path: str | None, session: EvalSession,
                          rng: jax.Array) -> list[MisleadingPrefix]:
    """The prefixes of session.records, in record order: read from `path`, and for
    the problems the file does not hold yet, mined from session.model and added to it
    (path None: mined, not stored)."""
    mined = load_prefixes(path) if path and os.path.exists(path) else {}
    fractions = {p.fraction for p in mined.values() if p is not None}
    if fractions - {session.settings.prefix_fraction} and jax.process_index() == 0:
        print(f"Note: {path} holds prefixes cut at {sorted(fractions)}; they are reused as "
              f"they are (prefix_fraction={session.settings.prefix_fraction} applies to new "
              "ones).", flush=True)
    missing, seen = [], set(mined)
    for i, record in enumerate(session.records):
        if record.id not in seen:
            seen.add(record.id)
            missing.append(i)
    if missing:
        mined |= mine_misleading_prefixes(session, missing, rng)
        if path:
            save_prefixes(path, mined)
    return [mined[r.id] for r in session.records if mined.get(r.id) is not None]


def evaluate_from_prefixes(session: EvalSession,
                           prefixes: Sequence[MisleadingPrefix]) -> dict[int, bool]:
    """{record index: correct} for the records of session.records that have a prefix
    (matched by Record.id): greedy continuation of the plain prompt + prefix ids,
    scored on prefix + continuation as one response, logged as mode "misleading_prefix"."""
    by_id = {p.problem_id: p for p in prefixes}
    chosen = [i for i, record in enumerate(session.records) if record.id in by_id]
    if not chosen:
        return {}
    budget = session.settings.max_new_tokens
    prefix_ids = [list(by_id[session.records[i].id].prefix_ids) for i in chosen]
    rows = session.generate([session.plain_prompt(i) for i in chosen], temperature=0.0,
                            rng=jax.random.PRNGKey(0), prefixes=prefix_ids,
                            budgets=[max(1, budget - len(p)) for p in prefix_ids])
    texts = [session.decode(p + ids) for p, (ids, _) in zip(prefix_ids, rows)]
    results = session.score("misleading_prefix", chosen, texts, rows,
                            extra=[dict(prefix_tokens=len(p)) for p in prefix_ids])
    return {i: result.correct for i, result in zip(chosen, results)}


def misleading_prefix_metrics(session: EvalSession, prefixes: Sequence[MisleadingPrefix],
                              plain_correct: Sequence[bool]) -> dict[str, float]:
    """misleading_prefix_problems, and (when > 0) misleading_prefix_accuracy next to
    misleading_prefix_plain_accuracy: the greedy accuracy (`plain_correct`, per record)
    on the same problems, so the two compare like with like."""
    correct = evaluate_from_prefixes(session, prefixes)
    metrics: dict[str, float] = {"misleading_prefix_problems": len(correct)}
    if correct:
        metrics["misleading_prefix_accuracy"] = sum(correct.values()) / len(correct)
        metrics["misleading_prefix_plain_accuracy"] = (
            sum(plain_correct[i] for i in correct) / len(correct))
    return metrics
