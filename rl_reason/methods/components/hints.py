"""LTE's mechanism as a component: hinted retries of none-pass groups, and the
replacement of failures by the hinted successes (docs/methods.md, "LTE").

    extra_requests(samples)     after the fresh round: for each none-pass group, G more
                                samples in the same group, on a prompt chosen by
                                truncation (concise / concise + hint / hint), or on the
                                plain prompt (the grpo_extra_rollouts control)
    final_members(samples)      per group: the kept originals plus the G' correct,
                                untruncated extra responses that replace G' randomly
                                chosen failures (G' capped at G - 1); hinted ones are
                                off-policy members trained under the plain prompt

The LTE method is these two over plain GRPO; the LTE + ExGRPO composition uses them
on ExGRPO's fresh groups.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from rl_reason.data import templates
from rl_reason.methods.components import common
from rl_reason.protocol import FRESH, Request, Sample, StepContext
from rl_reason.methods.components.hint_settings import (  # noqa: F401
    CONCISE, CONCISE_HINT, EXTRA, EXTRA_PROMPTS, HINT, HINTED, HINTED_KINDS, PLAIN, HintSettings)
from rl_reason.methods.components.sampler_shape import (ANSWER_TOKENS, SamplerShape, default_shape,
                                             tokens_at_most)

def sampler_shape(config, settings: HintSettings) -> SamplerShape:
    """The hinted round's calls: G more samples for each none-pass group (at most the
    step's B x G, as the fresh round), on the plain prompt plus the concise
    instruction and a hint listing up to G distinct wrong answers. The control's extra
    samples are on the plain prompt."""
    shape = default_shape(config)
    if not settings.hinted:
        return shape
    G = config.rollout.group_size
    listed = (tokens_at_most(templates.wrong_answers_hint(["x"])) - 1
              + G * ANSWER_TOKENS + (G - 1) * tokens_at_most(", "))
    hint = 1 + max(listed, tokens_at_most(templates.NO_ANSWER_HINT))
    if settings.concise:
        hint += 1 + tokens_at_most(templates.CONCISE_INSTRUCTION)
    return dataclasses.replace(
        shape, context=shape.context + hint,
        assumption=f"hinted prompts: plain prompt <= {config.rollout.max_prompt_len} + "
                   f"hint <= {hint} (up to G={G} wrong answers <= {ANSWER_TOKENS} tokens "
                   f"each{', concise instruction' if settings.concise else ''}), "
                   f"{config.rollout.max_new_tokens} new")


def choose_prompt(failed: Sequence[Sample], concise: bool = True) -> tuple[str, list[str]]:
    """The prompt kind for a none-pass group and the wrong answers its hint lists.

    The wrong answers are the distinct extracted answers of the untruncated responses
    the verifier judged wrong, in first-seen order (a truncated response's answer, and
    one the verifier could not judge, are not listed).
    """
    wrong = [str(s.extracted).strip() for s in failed
             if not s.truncated and s.status == "wrong" and s.extracted
             and str(s.extracted).strip()]
    wrong = list(dict.fromkeys(wrong))
    truncated = [s.truncated for s in failed]
    if concise and all(truncated):
        return CONCISE, []
    if concise and any(truncated):
        return CONCISE_HINT, wrong
    return HINT, wrong


def prompt_messages(kind: str, question: str, wrong: Sequence[str]) -> list[templates.Message]:
    if kind == HINT:
        return templates.hint_prompt(question, wrong)
    if kind == CONCISE:
        return templates.concise_prompt(question)
    if kind == CONCISE_HINT:
        return templates.concise_hint_prompt(question, wrong)
    if kind == PLAIN:
        return templates.plain_prompt(question)
    raise ValueError(f"unknown LTE prompt kind {kind!r}")


def is_success(sample: Sample) -> bool:
    """An extra response that may enter the group: correct and not truncated."""
    return sample.correct and not sample.truncated


def replace_failures(originals: Sequence[Sample], extras: Sequence[Sample], *, cap: bool,
                     rng: np.random.Generator) -> tuple[list[Sample], list[Sample]]:
    """(kept originals in order, extra successes that replace the others).

    G' = the number of successful extra responses, capped at G - 1 when `cap` (and at
    the number of failures); G' randomly chosen failures of the original group are
    dropped, and G' successes join (chosen at random when there are more).
    """
    successes = [s for s in extras if is_success(s)]
    failures = [i for i, s in enumerate(originals) if not s.correct]
    n = min(len(successes), len(failures))
    if cap:
        n = min(n, len(originals) - 1)
    if n <= 0:
        return list(originals), []
    if len(successes) > n:
        picked = sorted(rng.choice(len(successes), size=n, replace=False).tolist())
        successes = [successes[i] for i in picked]
    dropped = set(rng.choice(failures, size=n, replace=False).tolist())
    return [s for i, s in enumerate(originals) if i not in dropped], successes


def groups_of(samples: Sequence[Sample]) -> dict[str, list[Sample]]:
    """Samples by group name, groups in first-seen order."""
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault(s.request.group, []).append(s)
    return groups


def extra_requests(samples: Sequence[Sample], tokenizer, settings: HintSettings) -> list[Request]:
    """G more samples, in the same group, for each none-pass group of the fresh samples."""
    requests = []
    for group, members in groups_of([s for s in samples if s.request.tag == FRESH]).items():
        if any(s.correct for s in members):
            continue
        original = members[0].request
        if settings.hinted:
            kind, wrong = choose_prompt(members, settings.concise)
            context = templates.encode_prompt(
                tokenizer, prompt_messages(kind, original.record.problem, wrong))
        else:
            kind, wrong, context = PLAIN, [], list(original.context)
        requests.append(Request(
            record=original.record, context=context, num_samples=len(members),
            group=group, tag=settings.tag,
            meta={"kind": kind, "wrong_answers": wrong,
                  "plain_context": list(original.context)}))
    return requests


def final_members(samples: Sequence[Sample], settings: HintSettings, ctx: StepContext,
                  prefix: str = "lte/") -> list[common.Member]:
    """The fresh groups after replacement, as training members, in group order: kept
    originals on-policy, then the extra successes, trained under the plain prompt
    (off-policy with the log-probs recorded under the hint, or on-policy in the
    control). Logs the mechanism's metrics under `prefix`."""
    fresh = groups_of([x for x in samples if x.request.tag == FRESH])
    extra = groups_of([x for x in samples if x.request.tag == settings.tag])
    members: list[common.Member] = []
    replaced = 0
    for group, originals in fresh.items():
        kept, added = replace_failures(originals, extra.get(group, []),
                                       cap=settings.cap_replacements, rng=ctx.rng)
        replaced += len(added)
        members += [common.Member(x) for x in kept]
        members += [common.Member(x, off_policy=settings.hinted,
                                  context=x.request.meta["plain_context"]) for x in added]
    _metrics(ctx, settings, fresh, extra, replaced, prefix)
    hinted = [m.sample for m in members if m.off_policy]
    if hinted:
        ctx.metrics[prefix + "hinted_w_mean"] = hinted_w_mean(hinted, ctx)
    return members


def _metrics(ctx: StepContext, settings: HintSettings, fresh: dict, extra: dict,
             replaced: int, prefix: str) -> None:
    m = ctx.metrics
    none_pass = [g for g, members in fresh.items() if not any(x.correct for x in members)]
    m[prefix + "none_pass_fraction"] = len(none_pass) / len(fresh) if fresh else 0.0
    requests = [members[0].request for members in extra.values()]
    m[prefix + "extra_prompts"] = len(requests)
    for kind in (HINTED_KINDS if settings.hinted else (PLAIN,)):
        m[f"{prefix}extra_prompts/{kind}"] = sum(r.meta["kind"] == kind for r in requests)
    if settings.hinted:
        m[prefix + "no_answer_hints"] = sum(r.meta["kind"] != CONCISE
                                            and not r.meta["wrong_answers"] for r in requests)
    extras = [x for members in extra.values() for x in members]
    if extras:
        m[prefix + "extra_success_rate"] = float(np.mean([is_success(x) for x in extras]))
    m[prefix + "rescued_groups"] = sum(any(is_success(x) for x in members)
                                       for members in extra.values())
    m[prefix + "replaced"] = replaced
    m[prefix + "extra_generated_tokens"] = int(sum(len(x.response) for x in extras))


def hinted_w_mean(hinted: Sequence[Sample], ctx: StepContext) -> float:
    """Mean importance ratio w over the tokens of the trained hinted responses:
    numerator the current policy on plain prompt + response (ctx.score), denominator
    the policy probability recorded when the response was sampled with the hint."""
    sequences = [(list(x.request.meta["plain_context"]) + list(x.response),
                  len(x.request.meta["plain_context"])) for x in hinted]
    scores = ctx.score(sequences)
    log_w = np.concatenate([score.logprobs - np.asarray(x.policy_logprobs, np.float32)
                            for score, x in zip(scores, hinted)])
    return float(np.mean(np.exp(np.clip(log_w, -20.0, 20.0))))
