"""The rollout stage every method shares: sample responses for requests, verify them.

All requests of a call are sampled together in one sampler call, each row with its own
generation budget (`Request.max_new_tokens`), decoding at most `rollout.max_sample_batch`
rows at a time (all when 0): a continuous batch that refills a finished row's slot with
a waiting row (rl_reason/sampling). A request's response prefix is continued and
scored with the continuation as one response; an episode's attempt
(`Request.answer_at_first_box`) is scored up to its first complete box.

The engine also keeps the run's generation budget: tokens generated and sampler calls
in all, saved with the checkpoint, so methods are compared at an equal budget.
"""

from __future__ import annotations

import collections
import contextlib
from typing import Sequence

import jax
import numpy as np

from rl_reason import sampling
from rl_reason.protocol import Request, Sample
from rl_reason.verifiers import cut_after_first_box


class RolloutEngine:
    def __init__(self, tokenizer, verifier, rollout_config, *, stop_token_ids, pad_id,
                 mesh=None, timer=None):
        self.tokenizer = tokenizer
        self.verifier = verifier
        self.cfg = rollout_config
        self.stop_token_ids = tuple(stop_token_ids)
        self.pad_id = pad_id
        self.mesh = mesh
        self.timer = timer
        self.generated_tokens = 0     # in all, across steps (checkpointed)
        self.sampler_calls = 0
        self.status_counts: collections.Counter = collections.Counter()
        self._groups_named = 0

    def state(self) -> dict:
        return {"generated_tokens": self.generated_tokens, "sampler_calls": self.sampler_calls}

    def restore(self, state: dict) -> None:
        self.generated_tokens = int(state.get("generated_tokens", 0))
        self.sampler_calls = int(state.get("sampler_calls", 0))

    def begin_step(self) -> None:
        """Group names restart each step (they only need to be unique within one)."""
        self._groups_named = 0
        self.status_counts.clear()

    def _phase(self, name):
        return self.timer.phase(name) if self.timer is not None else contextlib.nullcontext()

    def _name_groups(self, requests: Sequence[Request]) -> None:
        for req in requests:
            if not req.group:
                req.group = f"{req.record.id}#{self._groups_named}"
                self._groups_named += 1

    def rollout(self, model, requests: Sequence[Request], rng) -> list[Sample]:
        """Samples for every request (num_samples each), in request order."""
        self._name_groups(requests)
        owners = [i for i, req in enumerate(requests) for _ in range(req.num_samples)]
        if not owners:
            return []
        contexts = [list(requests[i].context) + list(requests[i].prefix) for i in owners]
        budgets = [requests[i].max_new_tokens or self.cfg.max_new_tokens for i in owners]
        with self._phase("sampling"):
            # fold_in(rng, 0): the key the first (and, with max_sample_batch 0, only)
            # chunk of the static batch drew with, so such runs sample as before.
            out = sampling.generate(
                model, contexts, max_new_tokens=budgets, rng=jax.random.fold_in(rng, 0),
                temperature=self.cfg.temperature, top_p=self.cfg.top_p, top_k=self.cfg.top_k,
                stop_token_ids=self.stop_token_ids, pad_id=self.pad_id,
                max_slots=self.cfg.max_sample_batch, cache_dtype=self.cfg.cache_dtype or None,
                mesh=self.mesh)
        self.sampler_calls += 1
        generated = []
        for row in range(len(out.lengths)):
            n = int(out.lengths[row])
            generated.append((out.tokens[row, :n].tolist(),
                              np.asarray(out.logprobs[row, :n]),
                              np.asarray(out.policy_logprobs[row, :n]),
                              bool(out.truncated[row])))
            self.generated_tokens += n

        texts = [self.tokenizer.decode(list(requests[i].prefix) + response,
                                       skip_special_tokens=True)
                 for i, (response, *_) in zip(owners, generated)]
        texts = [cut_after_first_box(text) if requests[i].answer_at_first_box else text
                 for i, text in zip(owners, texts)]
        with self._phase("verify"):
            results = self.verifier.verify_batch(texts, [requests[i].record.answer
                                                         for i in owners])
        samples = []
        for i, (response, logp, policy_logp, truncated), text, res in zip(
                owners, generated, texts, results):
            self.status_counts[res.status] += 1
            samples.append(Sample(request=requests[i], response=response, logprobs=logp,
                                  policy_logprobs=policy_logp, truncated=truncated, text=text,
                                  reward=float(res.reward), status=res.status,
                                  extracted=res.extracted))
        return samples
