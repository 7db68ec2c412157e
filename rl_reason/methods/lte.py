"""LTE, learning from the policy's own wrong answers (docs/methods.md, "LTE").

Per step:

    fresh       B plain prompts x G samples (tag "fresh": the headline metrics)
    follow_up   for each none-pass group, one request of G more samples in the same
                group, on a prompt chosen by truncation:
                    every response truncated  -> concise
                    some truncated            -> concise + hint
                    none truncated            -> hint
                The hint lists the distinct wrong final answers of the untruncated
                responses; when they gave none, it says no final answer was given
                (templates.NO_ANSWER_HINT).
    build_batch G' = the correct, untruncated extra responses (capped at G - 1):
                they replace G' randomly chosen failures of the group; advantages as
                in GRPO over the final G members. Hinted responses are trained
                off-policy under the plain prompt: row = plain prompt + response,
                w = pi_theta(response | plain) / pi_rollout(response | hinted), the
                shaped loss f(w) = w / (w + gamma); the originals keep the clipped loss.

The `grpo_extra_rollouts` control (method.extra_prompt='plain') spends the same extra
samples on the plain prompt with the same replacement rule; its extra responses are
on-policy and trained as such.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from rl_reason.data import templates
from rl_reason.methods import common
from rl_reason.methods.base import FRESH, Method, Request, Sample, StepContext

# The extra samples' tags: LTE's hinted retries, and the control's plain ones. Their
# group is the original group's, so they count in its advantage statistics, but the
# headline rollout metrics stay those of the fresh samples.
HINTED = "hinted"
EXTRA = "extra"

# Prompt kinds of the extra requests ("plain" only in the control).
HINT, CONCISE, CONCISE_HINT, PLAIN = "hint", "concise", "concise_hint", "plain"
HINTED_KINDS = (HINT, CONCISE, CONCISE_HINT)
EXTRA_PROMPTS = ("hinted", "plain")


@dataclasses.dataclass(frozen=True)
class LTESettings:
    """The `config.method` keys of LTE.

    extra_prompt: 'hinted' (LTE) or 'plain' (the grpo_extra_rollouts control: the
        extra samples are drawn on the plain prompt and trained on-policy).
    concise: the concise branches for groups with truncated responses; False sends
        every none-pass group the hint prompt (the no-concise ablation).
    cap_replacements: cap G' at G - 1, so a fully solved hinted group still leaves one
        failure to contrast with (False: the no-cap ablation, G' up to G).
    """

    extra_prompt: str = "hinted"
    concise: bool = True
    cap_replacements: bool = True

    def __post_init__(self):
        from rl_reason.config_check import ConfigError

        if self.extra_prompt not in EXTRA_PROMPTS:
            raise ConfigError(f"method.extra_prompt={self.extra_prompt!r}: one of {EXTRA_PROMPTS}")
        for name in ("concise", "cap_replacements"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"method.{name}={getattr(self, name)!r} must be True or False")

    @property
    def hinted(self) -> bool:
        return self.extra_prompt == "hinted"

    @property
    def tag(self) -> str:
        return HINTED if self.hinted else EXTRA

    @classmethod
    def from_config(cls, config) -> "LTESettings":
        """The settings of `config.method`, checked together with the run config."""
        from rl_reason.config_check import ConfigError

        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config.method.keys()) - known)
        if unknown:
            raise ConfigError(f"method.{unknown[0]}: not an LTE setting; known: {sorted(known)}")
        if config.loss.dynamic_sampling:
            raise ConfigError("loss.dynamic_sampling=True: LTE does not refill batches; it "
                              "spends its extra samples on none-pass groups instead")
        return cls(**dict(config.method))


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


class LTE(Method):
    name = "lte"
    Settings = LTESettings

    def __init__(self, config, tokenizer):
        super().__init__(config, tokenizer)
        self.settings = LTESettings.from_config(config)
        self.reward_shaping = common.RewardShaping.from_config(config)
        self.advantage_settings = common.AdvantageSettings.from_config(config)

    def prepare(self, ctx: StepContext) -> list[Request]:
        r = self.config.rollout
        return [common.plain_request(self.tokenizer, record, r.group_size)
                for record in ctx.draw_records(r.prompts_per_step)]

    def follow_up(self, samples: Sequence[Sample], ctx: StepContext) -> list[Request]:
        """After the fresh round: G more samples for each none-pass group."""
        if any(s.request.tag != FRESH for s in samples):
            return []
        requests = []
        for group, members in groups_of(samples).items():
            if any(s.correct for s in members):
                continue
            original = members[0].request
            if self.settings.hinted:
                kind, wrong = choose_prompt(members, self.settings.concise)
                context = templates.encode_prompt(
                    self.tokenizer, prompt_messages(kind, original.record.problem, wrong))
            else:
                kind, wrong, context = PLAIN, [], list(original.context)
            requests.append(Request(
                record=original.record, context=context, num_samples=len(members),
                group=group, tag=self.settings.tag,
                meta={"kind": kind, "wrong_answers": wrong,
                      "plain_context": list(original.context)}))
        return requests

    def build_batch(self, samples: Sequence[Sample], ctx: StepContext):
        s = self.settings
        fresh = groups_of([x for x in samples if x.request.tag == FRESH])
        extra = groups_of([x for x in samples if x.request.tag == s.tag])
        members: list[tuple[Sample, bool]] = []   # (sample, is an extra response)
        replaced = 0
        for group, originals in fresh.items():
            kept, added = replace_failures(originals, extra.get(group, []),
                                           cap=s.cap_replacements, rng=ctx.rng)
            replaced += len(added)
            members += [(x, False) for x in kept] + [(x, True) for x in added]
        self._metrics(ctx, fresh, extra, replaced)
        if not members:
            return []

        chosen = [x for x, _ in members]
        rewards = common.shaped_rewards(chosen, self.reward_shaping)
        advantages = common.group_advantages([x.request.group for x in chosen], rewards,
                                             self.advantage_settings)
        mask_truncated = self.config.loss.mask_truncated
        rows = []
        for (x, is_extra), advantage in zip(members, advantages):
            if is_extra:
                # Trained under the plain prompt: the hint never enters a row. Hinted
                # responses carry the policy log-probs recorded under the hint as the
                # behaviour log-probs of the off-policy loss.
                rows.append(common.response_row(x, advantage, off_policy=s.hinted,
                                                context=x.request.meta["plain_context"]))
            else:
                rows.append(common.response_row(
                    x, advantage, trained=not (mask_truncated and x.truncated)))
        if s.hinted:
            hinted = [x for x, is_extra in members if is_extra]
            if hinted:
                ctx.metrics["lte/hinted_w_mean"] = hinted_w_mean(hinted, ctx)
        return rows

    def _metrics(self, ctx: StepContext, fresh: dict, extra: dict, replaced: int) -> None:
        m = ctx.metrics
        none_pass = [g for g, members in fresh.items() if not any(x.correct for x in members)]
        m["lte/none_pass_fraction"] = len(none_pass) / len(fresh) if fresh else 0.0
        requests = [members[0].request for members in extra.values()]
        m["lte/extra_prompts"] = len(requests)
        for kind in (HINTED_KINDS if self.settings.hinted else (PLAIN,)):
            m[f"lte/extra_prompts/{kind}"] = sum(r.meta["kind"] == kind for r in requests)
        if self.settings.hinted:
            m["lte/no_answer_hints"] = sum(r.meta["kind"] != CONCISE
                                           and not r.meta["wrong_answers"] for r in requests)
        extras = [x for members in extra.values() for x in members]
        if extras:
            m["lte/extra_success_rate"] = float(np.mean([is_success(x) for x in extras]))
        m["lte/rescued_groups"] = sum(any(is_success(x) for x in members)
                                      for members in extra.values())
        m["lte/replaced"] = replaced
        m["lte/extra_generated_tokens"] = int(sum(len(x.response) for x in extras))


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
