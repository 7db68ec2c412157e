"""Test helper for the episode methods (multi-attempt, R3L): one trainer step with a
scripted sampler in place of sampling.generate, through the real rollout engine."""

from __future__ import annotations

import jax
import numpy as np

from rl_reason import sampling
from rl_reason.data import record as record_lib
from rl_reason.protocol import StepContext
from rl_reason.rollout import RolloutEngine
from rl_reason.verifiers import ExactIntVerifier

END = 3   # <|im_end|> in the tiny tokenizer


def make_record(question, answer):
    return record_lib.Record(problem=question, answer=answer,
                             id=record_lib.problem_id(question), source="test")


class ScriptedSampler:
    """Stands in for sampling.generate: call i answers its rows with script[i] (text,
    whether the turn ends), cut to each row's budget as the sampler does, and records
    the contexts and budgets it was given."""

    def __init__(self, tok, script):
        self.tok, self.script, self.calls = tok, list(script), []

    def __call__(self, model, prompts, *, max_new_tokens, **kwargs):
        texts = self.script.pop(0)
        assert len(texts) == len(prompts)
        self.calls.append(dict(contexts=[list(p) for p in prompts], budgets=list(max_new_tokens)))
        rows, truncated = [], []
        for (text, ends), budget in zip(texts, max_new_tokens):
            ids = self.tok.encode(text, add_special_tokens=False) + ([END] if ends else [])
            rows.append(ids[:budget])
            truncated.append(len(ids) > budget or not ends)
        tokens = np.zeros((len(rows), max(len(r) for r in rows)), np.int32)
        for i, r in enumerate(rows):
            tokens[i, :len(r)] = r
        logp = np.full(tokens.shape, -0.5, np.float32)
        return sampling.SampleOutput(tokens=tokens, lengths=np.array([len(r) for r in rows]),
                                     logprobs=logp, policy_logprobs=logp,
                                     truncated=np.array(truncated))


def run_step(method, c, tok, monkeypatch, script, records):
    """prepare -> rounds of (engine rollout, follow_up) -> build_batch, as the trainer.
    Returns (samples, rows, ctx, sampler); every scripted call must be used."""
    sampler = ScriptedSampler(tok, script)
    monkeypatch.setattr(sampling, "generate", sampler)
    engine = RolloutEngine(tok, ExactIntVerifier(), c.rollout, stop_token_ids=(END, 1),
                           pad_id=0)
    ctx = StepContext(step=0, config=c, tokenizer=tok, rng=np.random.default_rng(0),
                      draw_records=lambda n: list(records)[:n], retire=lambda ids: None,
                      rollout=None, score=None)
    requests, samples = method.prepare(ctx), []
    for round_ in range(method.max_rollout_rounds):
        if not requests:
            break
        samples += engine.rollout(None, requests, jax.random.PRNGKey(round_))
        requests = method.follow_up(samples, ctx)
    assert not requests and not sampler.script
    return samples, method.build_batch(samples, ctx), ctx, sampler
