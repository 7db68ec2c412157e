"""Failure-prefix conditioning (docs/methods.md, section "Failure-prefix conditioning"):
learning from problems the policy already solves by training it to recover from the
start of its own rare failures.

A mining round (the first step, then each refresh) runs inside `prepare`, through
ctx.rollout, so its samples count in the generation budget, show under their own tags
and are never trained:

    pool       method.pool_size records drawn from the training stream (repeats merged)
    pass_rate  method.pass_samples plain samples each; saturated: pass rate >=
               method.saturation_threshold
    mining     method.mining_samples plain samples per saturated problem; the wrong
               ones (of both rounds) are its failures, the first max_failures are cut
    probe      each failure cut at method.cut_fractions of its token ids; each cut
               continued method.probe_samples times; per problem the cut whose
               continuation accuracy is nearest method.tau is kept

A training step takes prompts_per_step problems from the mined set (a cursor cycling
over it) and samples group_size continuations of plain prompt + chosen prefix (tag
"fresh": the headline metrics), each with the budget left after its prefix. The
reward scores prefix + continuation as one response; the prefix is context, never
trained; advantages as GRPO's. A step with an empty mined set (no saturated problem
had a failure) is a plain GRPO step on fresh records, counted in
failure_prefix/plain_step; the set is refilled at the next refresh only.

Refresh: a new mining round with the current policy every method.refresh_every steps
and/or when method.plateau_metric has plateaued since the last round (the held-out
history is method state, so a resumed run decides the same way); the new set
replaces the old one. The mined set, cursor, refresh count and history are saved
with the checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Sequence

import numpy as np

from rl_reason.data import templates
from rl_reason.data.record import Record
from rl_reason.methods.components import common
from rl_reason.methods.failure_prefix import mining
from rl_reason.methods.base import Method
from rl_reason.protocol import FRESH, Request, Sample, StepContext
from rl_reason.methods.components.sampler_shape import SamplerShape, rows_per_call

PASS_RATE, MINING, PROBE = "pass_rate", "mining", "probe"
METRIC = "failure_prefix/"


@dataclasses.dataclass(frozen=True)
class MinedPrefix:
    """A saturated problem with the failure prefix chosen for it."""

    record: Record
    prefix: tuple[int, ...]
    fraction: float          # the cut fraction it came from
    accuracy: float          # its continuation accuracy when it was probed


def cut_label(fraction: float) -> str:
    return f"cut_{round(100 * fraction)}pct"


class FailurePrefix(Method):
    name = "failure_prefix"
    Settings = mining.FailurePrefixSettings

    def __init__(self, config, tokenizer):
        super().__init__(config, tokenizer)
        self.settings = mining.FailurePrefixSettings.from_config(config)
        self.mined: list[MinedPrefix] = []
        self.cursor = 0
        self.minings = 0             # mining rounds so far (the first, then refreshes)
        self.mined_at = -1           # the step of the last round
        self.history: list[tuple[int, float]] = []   # (eval step, plateau_metric)

    @classmethod
    def sampler_shape(cls, config) -> SamplerShape:
        """Training and probe calls continue prefixes of wrong plain responses (at most
        rollout.max_new_tokens long) cut at up to the largest cut fraction, next to
        rows with a short prefix and nearly the whole budget; a mining round's
        pass-rate and mining calls ask for more rows than a step."""
        s = mining.FailurePrefixSettings.from_config(config)
        r = config.rollout
        prefix = mining.prefix_length(r.max_new_tokens, max(s.cut_fractions))
        rows = max(r.prompts_per_step * r.group_size, s.pool_size * s.pass_samples,
                   s.pool_size * s.mining_samples,
                   s.pool_size * s.max_failures * len(s.cut_fractions) * s.probe_samples)
        return SamplerShape(
            rows_per_call(config, rows), r.max_prompt_len + prefix, r.max_new_tokens,
            f"prompt <= {r.max_prompt_len} + failure prefix <= {prefix} "
            f"(cut at {max(s.cut_fractions):g} of {r.max_new_tokens}), next to a row with "
            f"{r.max_new_tokens} new; mining calls up to {rows} rows")

    # ------------------------------------------------------------------ requests
    def prompt(self, record: Record) -> list[int]:
        return templates.encode_prompt(self.tokenizer, templates.plain_prompt(record.problem))

    def prefix_request(self, record: Record, prefix: Sequence[int], num_samples: int, *,
                       tag: str, meta: dict | None = None) -> Request:
        """Plain prompt + prefix, continued; prefix + continuation get the plain budget."""
        budget = max(1, self.config.rollout.max_new_tokens - len(prefix))
        return Request(record=record, context=self.prompt(record), num_samples=num_samples,
                       tag=tag, prefix=list(prefix), max_new_tokens=budget, meta=dict(meta or {}))

    # ------------------------------------------------------------------ mining
    def mine(self, ctx: StepContext) -> tuple[list[MinedPrefix], dict]:
        """One mining round with the current policy: the new mined set and its metrics."""
        s = self.settings
        pool = list({r.id: r for r in ctx.draw_records(s.pool_size)}.values())
        checked = ctx.rollout([common.plain_request(self.tokenizer, r, s.pass_samples,
                                                    tag=PASS_RATE) for r in pool])
        saturated = mining.saturated(pool, mining.pass_rates(checked), s.saturation_threshold)
        mined_samples = ctx.rollout([common.plain_request(self.tokenizer, r, s.mining_samples,
                                                          tag=MINING) for r in saturated])
        failures: dict[str, list[Sample]] = {r.id: [] for r in saturated}
        for sample in checked + mined_samples:
            if sample.request.record.id in failures and not sample.correct:
                failures[sample.request.record.id].append(sample)

        candidates = []   # (record, fraction, prefix ids), by problem, failure, fraction
        for record in saturated:
            cuttable = [f for f in failures[record.id] if len(mining.content_ids(f)) >= 2]
            for failure in cuttable[:s.max_failures]:
                candidates += [(record, fraction, prefix) for fraction, prefix in
                               mining.failure_cuts(mining.content_ids(failure), s.cut_fractions)]
        probes = ctx.rollout([self.prefix_request(record, prefix, s.probe_samples, tag=PROBE)
                              for record, _, prefix in candidates])
        accuracies = [float(np.mean([p.correct for p in probes[i * s.probe_samples:
                                                               (i + 1) * s.probe_samples]]))
                      for i in range(len(candidates))]

        per_problem: dict[str, list[int]] = {}   # record id -> its candidates' indices
        for i, (record, _, _) in enumerate(candidates):
            per_problem.setdefault(record.id, []).append(i)
        chosen: list[MinedPrefix] = []
        for indices in per_problem.values():
            best = indices[mining.closest_to_tau([accuracies[i] for i in indices], s.tau)]
            record, fraction, prefix = candidates[best]
            chosen.append(MinedPrefix(record, prefix, fraction, accuracies[best]))

        m = {"pool_problems": len(pool), "saturated_problems": len(saturated),
             "saturated_share": len(saturated) / len(pool) if pool else 0.0,
             "mined_failures": sum(len(f) for f in failures.values()),
             "no_failure_problems": sum(not f for f in failures.values()),
             "candidates": len(candidates), "mined_problems": len(chosen)}
        if chosen:
            m["chosen_fraction_mean"] = float(np.mean([c.fraction for c in chosen]))
            m["chosen_accuracy_mean"] = float(np.mean([c.accuracy for c in chosen]))
        for fraction in s.cut_fractions:
            at = [a for (_, f, _), a in zip(candidates, accuracies) if f == fraction]
            m[f"{cut_label(fraction)}/chosen"] = sum(c.fraction == fraction for c in chosen)
            if at:
                m[f"{cut_label(fraction)}/probe_accuracy"] = float(np.mean(at))
        return chosen, m

    def mining_reason(self, step: int, history: Sequence[tuple[int, float]]) -> str:
        """Why this step mines ('' when it does not): 'first', 'schedule' or 'plateau'.
        history: (eval step, plateau_metric) of every held-out evaluation so far."""
        s = self.settings
        if self.minings == 0:
            return "first"
        if s.max_refreshes and self.minings - 1 >= s.max_refreshes:
            return ""
        if s.refresh_every and step - self.mined_at >= s.refresh_every:
            return "schedule"
        since = [v for eval_step, v in history if eval_step >= self.mined_at]
        if s.refresh_on_plateau and mining.plateaued(since, s.plateau_delta, s.plateau_patience):
            return "plateau"
        return ""

    # ------------------------------------------------------------------ the step
    def prepare(self, ctx: StepContext) -> list[Request]:
        # Every draw and sample happens before any state changes, so a step cut short
        # by exhausted data leaves the method as it was.
        history = list(self.history)
        latest = ctx.held_out.get(self.settings.plateau_metric)
        if latest is not None and (not history or ctx.held_out["step"] > history[-1][0]):
            history.append((int(ctx.held_out["step"]), float(latest)))
        mined, cursor, minings, mined_at = self.mined, self.cursor, self.minings, self.mined_at
        reason = self.mining_reason(ctx.step, history)
        m: dict = {"mining": int(bool(reason))}
        if reason:
            mined, mining_metrics = self.mine(ctx)
            cursor, minings, mined_at = 0, minings + 1, ctx.step
            m.update(mining_metrics)
            m.update({f"refresh_{r}": int(reason == r) for r in ("schedule", "plateau")})
        B, G = self.config.rollout.prompts_per_step, self.config.rollout.group_size
        if mined:
            batch = [mined[(cursor + i) % len(mined)] for i in range(B)]
            requests = [self.prefix_request(p.record, p.prefix, G, tag=FRESH,
                                            meta={"fraction": p.fraction}) for p in batch]
            cursor = (cursor + B) % len(mined)
            m.update(prefix_tokens_mean=float(np.mean([len(p.prefix) for p in batch])),
                     prefix_fraction_mean=float(np.mean([p.fraction for p in batch])),
                     prefix_probe_accuracy_mean=float(np.mean([p.accuracy for p in batch])))
        else:
            requests = [common.plain_request(self.tokenizer, r, G)
                        for r in ctx.draw_records(B)]
        m.update(plain_step=int(not mined), mined_set=len(mined), refreshes=max(0, minings - 1))
        self.mined, self.cursor, self.minings, self.mined_at = mined, cursor, minings, mined_at
        self.history = history
        ctx.metrics.update({METRIC + k: v for k, v in m.items()})
        return requests

    def build_batch(self, samples, ctx: StepContext):
        """GRPO rows over the step's fresh samples; response_row leaves the prefix
        untrained (it sits between the prompt and the trained continuation)."""
        fresh = [s for s in samples if s.request.tag == FRESH]
        rewards = common.shaped_rewards(fresh, common.RewardShaping.from_config(self.config))
        return common.grouped_rows(fresh, rewards,
                                   common.AdvantageSettings.from_config(self.config),
                                   mask_truncated=self.config.reward.mask_truncated)

    # ------------------------------------------------------------------ state
    def state(self) -> dict:
        return {
            "mined": [{"record": json.dumps(dataclasses.asdict(p.record)),
                       "prefix": np.asarray(p.prefix, np.int32), "fraction": float(p.fraction),
                       "accuracy": float(p.accuracy)} for p in self.mined],
            "cursor": self.cursor, "minings": self.minings, "mined_at": self.mined_at,
            "history_steps": [step for step, _ in self.history],
            "history_values": [value for _, value in self.history],
        }

    def restore(self, state: dict) -> None:
        if not state:
            return
        self.mined = [MinedPrefix(Record(**json.loads(p["record"])),
                                  tuple(int(t) for t in p["prefix"]), float(p["fraction"]),
                                  float(p["accuracy"])) for p in state["mined"]]
        self.cursor, self.minings = int(state["cursor"]), int(state["minings"])
        self.mined_at = int(state["mined_at"])
        self.history = [(int(step), float(value)) for step, value in
                        zip(state["history_steps"], state["history_values"])]
