"""The rollout stage every method shares: sample responses for requests, verify them.

Requests with the same generation length are sampled together, so a step costs one
jitted decode loop per distinct length (per `rollout.max_sample_batch` rows, when set
to bound the KV cache), whatever the method.
"""

from __future__ import annotations

import collections
from typing import Sequence

import jax
import numpy as np

from rl_reason import sampling
from rl_reason.methods.base import Request, Sample


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
        self.generated_tokens = 0
        self.status_counts: collections.Counter = collections.Counter()

    def _phase(self, name):
        if self.timer is None:
            import contextlib
            return contextlib.nullcontext()
        return self.timer.phase(name)

    def rollout(self, model, requests: Sequence[Request], rng) -> list[Sample]:
        """Samples for every request (num_samples each), in request order."""
        by_length: dict[int, list[int]] = collections.defaultdict(list)
        for i, req in enumerate(requests):
            by_length[req.max_new_tokens or self.cfg.max_new_tokens].append(i)
        per_request: dict[int, list[tuple]] = {}
        for call, (max_new, indices) in enumerate(sorted(by_length.items())):
            prompts, owners = [], []
            for i in indices:
                prompts += [requests[i].context] * requests[i].num_samples
                owners += [i] * requests[i].num_samples
            if not prompts:
                continue
            chunk = self.cfg.max_sample_batch or len(prompts)
            for start in range(0, len(prompts), chunk):
                with self._phase("sampling"):
                    out = sampling.generate(
                        model, prompts[start:start + chunk], max_new_tokens=max_new,
                        rng=jax.random.fold_in(jax.random.fold_in(rng, call), start),
                        temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                        top_k=self.cfg.top_k, stop_token_ids=self.stop_token_ids,
                        pad_id=self.pad_id, mesh=self.mesh)
                for row, i in enumerate(owners[start:start + chunk]):
                    n = int(out.lengths[row])
                    per_request.setdefault(i, []).append(
                        (out.tokens[row, :n].tolist(), np.asarray(out.logprobs[row, :n]),
                         bool(out.truncated[row])))
                    self.generated_tokens += n

        flat = [(requests[i], *item) for i in range(len(requests))
                for item in per_request.get(i, [])]
        texts = [self.tokenizer.decode(resp, skip_special_tokens=True)
                 for _, resp, _, _ in flat]
        with self._phase("verify"):
            results = self.verifier.verify_batch(texts, [req.record.answer for req, *_ in flat])
        samples = []
        for (req, resp, logp, trunc), text, res in zip(flat, texts, results):
            self.status_counts[res.status] += 1
            samples.append(Sample(request=req, response=resp, logprobs=logp, truncated=trunc,
                                  text=text, reward=float(res.reward), status=res.status,
                                  extracted=res.extracted))
        return samples
