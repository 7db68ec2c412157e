"""The rollout stage: requests in, verified samples out, in request order."""

import jax

from configs import base
from rl_reason import models
from rl_reason.data import synthetic, templates
from rl_reason.methods.base import Request
from rl_reason.rollout import RolloutEngine
from rl_reason.verifiers.exact_int import ExactIntVerifier


def _requests(tokenizer):
    records = synthetic.train_records(5, seed=3)
    # Two generation lengths, so the engine makes one sampler call per length.
    return [Request(record=r, context=templates.encode_prompt(
                        tokenizer, templates.plain_prompt(r.problem)),
                    num_samples=2 + i % 2, group=r.id,
                    max_new_tokens=None if i % 2 else 6)
            for i, r in enumerate(records)]


def _rollout(tiny_policy, max_sample_batch):
    model = models.load(tiny_policy)
    tokenizer = models.load_tokenizer(tiny_policy)
    cfg = base.get_base_config().rollout
    cfg.update(temperature=0.0, max_new_tokens=10, max_sample_batch=max_sample_batch)
    engine = RolloutEngine(tokenizer, ExactIntVerifier(), cfg,
                           stop_token_ids=model.config.eos_token_ids, pad_id=0)
    requests = _requests(tokenizer)
    return requests, engine.rollout(model, requests, jax.random.PRNGKey(0)), engine


def test_chunked_sampling_gives_the_same_samples_in_request_order(tiny_policy):
    requests, whole, _ = _rollout(tiny_policy, max_sample_batch=0)
    _, chunked, engine = _rollout(tiny_policy, max_sample_batch=3)

    expected_owners = [id(r) for r in requests for _ in range(r.num_samples)]
    assert [id(s.request) for s in whole] == expected_owners
    assert [(s.request.group, s.response, s.truncated) for s in chunked] == \
        [(s.request.group, s.response, s.truncated) for s in whole]
    for s in whole:
        limit = s.request.max_new_tokens or 10
        assert 1 <= len(s.response) <= limit
        assert len(s.logprobs) == len(s.response)
    assert engine.generated_tokens == sum(len(s.response) for s in chunked)
    assert sum(engine.status_counts.values()) == len(chunked)
