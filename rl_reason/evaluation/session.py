"""Generation and scoring shared by every evaluation mode.

An EvalSession holds what an evaluation needs (model, tokenizer, the records, the
verifier, the settings); the modes (plain.py, attempts.py, misleading_prefix.py) ask it
for responses and scores, and it keeps one log of generations and one count of
verifier statuses for the whole evaluation.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from rl_reason import sampling
from rl_reason.data import templates
from rl_reason.evaluation.settings import EvalSettings
from rl_reason.verifiers import STATUSES, VerifyResult, count_statuses

Row = tuple[list[int], bool]   # response token ids (up to and including a stop token), truncated


class EvalSession:
    def __init__(self, model, tokenizer, records: Sequence, settings: EvalSettings, *, verifier,
                 stop_token_ids: Sequence[int], pad_id: int, mesh=None):
        if not records:
            raise ValueError("evaluation: no records")
        self.model = model
        self.tokenizer = tokenizer
        self.records = list(records)
        self.settings = settings
        self.verifier = verifier
        self.stop_token_ids = tuple(stop_token_ids)
        self.pad_id = pad_id
        self.mesh = mesh
        self.generations: list[dict] = []
        self.statuses = {status: 0 for status in STATUSES}
        self._plain_prompts: dict[int, list[int]] = {}

    @property
    def context_limit(self) -> int:
        return self.model.config.max_position_embeddings

    def plain_prompt(self, index: int) -> list[int]:
        """Token ids of record `index`'s plain prompt (no hints, feedback or prefix)."""
        if index not in self._plain_prompts:
            self._plain_prompts[index] = templates.encode_prompt(
                self.tokenizer, templates.plain_prompt(self.records[index].problem))
        return self._plain_prompts[index]

    def check_context(self) -> None:
        """A clear error, before any generation, when plain prompts cannot fit."""
        longest = max(len(self.plain_prompt(i)) for i in range(len(self.records)))
        budget = self.settings.max_new_tokens
        if longest + budget > self.context_limit:
            raise ValueError(f"a prompt of {longest} tokens + max_new_tokens={budget} exceeds the "
                             f"model's context of {self.context_limit}; lower max_new_tokens")

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def generate(self, prompts: Sequence[Sequence[int]], *, temperature: float, rng,
                 prefixes: Sequence[Sequence[int]] | None = None,
                 budgets: Sequence[int] | None = None) -> list[Row]:
        """Responses to `prompts`, in order, in one sampler call decoding batch_size rows
        at a time (a continuous batch); temperature 0 is greedy. With `prefixes`, each
        prompt is continued after its prefix (the response rows hold the continuation
        only). `budgets`: new tokens per row (default max_new_tokens). A row whose
        context leaves less room than its budget is shortened to fit (it then counts as
        truncated)."""
        settings = self.settings
        if not prompts:
            return []
        budgets = list(budgets) if budgets is not None else [settings.max_new_tokens] * len(prompts)
        contexts = [len(p) + (len(prefixes[j]) if prefixes is not None else 0)
                    for j, p in enumerate(prompts)]
        fitted = [min(budget, self.context_limit - n) for budget, n in zip(budgets, contexts)]
        if min(fitted) < 1:
            longest = contexts[int(np.argmin(fitted))]
            raise ValueError(f"a context of {longest} tokens leaves no room to generate in "
                             f"the model's context of {self.context_limit}")
        # fold_in(rng, 0): the key of the first call when calls were batch_size rows each.
        out = sampling.generate(
            self.model, prompts, max_new_tokens=fitted, rng=jax.random.fold_in(rng, 0),
            temperature=temperature, top_p=settings.top_p, greedy=temperature == 0,
            stop_token_ids=self.stop_token_ids, prefixes=prefixes, pad_id=self.pad_id,
            max_slots=settings.batch_size, cache_dtype=settings.cache_dtype or None,
            mesh=self.mesh)
        return [(ids, bool(truncated))
                for ids, truncated in zip(out.response_tokens(), out.truncated)]

    def score(self, mode: str, indices: Sequence[int], texts: Sequence[str], rows: Sequence[Row], *,
              samples: Sequence[int] | None = None, attempt: int | None = None,
              extra: Sequence[dict] | None = None) -> list[VerifyResult]:
        """Verifies `texts` (responses to records `indices`), counts their statuses and
        logs each as a generation row (`extra`: more fields per row)."""
        results = self.verifier.verify_batch(list(texts), [self.records[i].answer for i in indices])
        for status, count in count_statuses(results).items():
            self.statuses[status] += count
        samples = samples or [0] * len(indices)
        extra = extra or [{}] * len(indices)
        for i, sample, text, (ids, truncated), result, more in zip(
                indices, samples, texts, rows, results, extra):
            self.generations.append(dict(
                mode=mode, problem=i, id=self.records[i].id, sample=sample, attempt=attempt,
                response=text, extracted=result.extracted, status=result.status,
                reward=result.reward, num_tokens=len(ids), truncated=truncated, **more))
        return results
