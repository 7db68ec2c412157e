"""The rollout stage: requests in, verified samples out, in request order."""

import jax
import numpy as np

from configs import base
from rl_reason import models, sampling
from rl_reason.data import synthetic, templates
from rl_reason.protocol import Request
from rl_reason.rollout import RolloutEngine
from rl_reason.verifiers.exact_int import ExactIntVerifier


def _engine(tiny_policy, max_sample_batch=0, temperature=0.0):
    model = models.load(tiny_policy)
    tokenizer = models.load_tokenizer(tiny_policy)
    cfg = base.get_base_config().rollout
    cfg.update(temperature=temperature, max_new_tokens=10, max_sample_batch=max_sample_batch)
    engine = RolloutEngine(tokenizer, ExactIntVerifier(), cfg,
                           stop_token_ids=model.config.eos_token_ids, pad_id=0)
    return model, tokenizer, engine


def _requests(tokenizer):
    records = synthetic.train_records(5, seed=3)
    # Two generation budgets, sampled together in one call.
    return [Request(record=r, context=templates.encode_prompt(
                        tokenizer, templates.plain_prompt(r.problem)),
                    num_samples=2 + i % 2, max_new_tokens=None if i % 2 else 6)
            for i, r in enumerate(records)]


def test_few_slots_give_the_same_samples_in_request_order(tiny_policy):
    model, tokenizer, engine = _engine(tiny_policy, max_sample_batch=0)
    requests = _requests(tokenizer)
    whole = engine.rollout(model, requests, jax.random.PRNGKey(0))
    assert engine.sampler_calls == 1   # both budgets in one sampler call

    model, tokenizer, chunked_engine = _engine(tiny_policy, max_sample_batch=3)
    before = sampling.scheduler.WORK["admissions"]
    chunked = chunked_engine.rollout(model, _requests(tokenizer), jax.random.PRNGKey(0))
    # 12 rows in one call through 3 slots: freed slots were refilled.
    assert chunked_engine.sampler_calls == 1
    assert sampling.scheduler.WORK["admissions"] - before > 1

    expected_owners = [id(r) for r in requests for _ in range(r.num_samples)]
    assert [id(s.request) for s in whole] == expected_owners
    assert [(s.request.group, s.response, s.truncated) for s in chunked] == \
        [(s.request.group, s.response, s.truncated) for s in whole]
    for s in whole:
        limit = s.request.max_new_tokens or 10
        assert 1 <= len(s.response) <= limit
        assert len(s.logprobs) == len(s.policy_logprobs) == len(s.response)
    assert chunked_engine.generated_tokens == sum(len(s.response) for s in chunked)
    assert sum(chunked_engine.status_counts.values()) == len(chunked)


def test_groups_are_unique_per_request_even_for_the_same_record(tiny_policy):
    model, tokenizer, engine = _engine(tiny_policy)
    record = synthetic.train_records(1, seed=0)[0]
    context = templates.encode_prompt(tokenizer, templates.plain_prompt(record.problem))
    named = Request(record=record, context=context, num_samples=1, group="mine")
    requests = [Request(record=record, context=context, num_samples=2),
                Request(record=record, context=context, num_samples=2), named]
    samples = engine.rollout(model, requests, jax.random.PRNGKey(0))
    groups = [s.request.group for s in samples]
    assert groups[0] == groups[1] != groups[2] == groups[3]
    assert groups[4] == "mine"
    assert all(g.startswith(record.id) for g in groups[:4])
    # A later round of the same step keeps counting: no name is reused.
    again = engine.rollout(model, [Request(record=record, context=context, num_samples=1)],
                           jax.random.PRNGKey(1))
    assert again[0].request.group not in groups


def test_response_prefix_is_continued_and_scored_with_the_continuation(tiny_policy):
    model, tokenizer, engine = _engine(tiny_policy)
    record = synthetic.train_records(1, seed=0)[0]
    context = templates.encode_prompt(tokenizer, templates.plain_prompt(record.problem))
    prefix = tokenizer.encode("7+5=", add_special_tokens=False)
    sample, = engine.rollout(model, [Request(record=record, context=context, num_samples=1,
                                             prefix=prefix)], jax.random.PRNGKey(0))
    out = sampling.generate(model, [context + prefix], max_new_tokens=10,
                            rng=jax.random.fold_in(jax.random.PRNGKey(0), 0), temperature=0.0,
                            stop_token_ids=model.config.eos_token_ids, pad_id=0)
    assert sample.response == out.response_tokens()[0]
    assert sample.full_response == prefix + sample.response
    assert sample.text == tokenizer.decode(prefix + sample.response, skip_special_tokens=True)
    assert sample.text.startswith("7+5=")


def test_a_cut_inside_the_box_is_scored_with_its_continuation(tiny_policy, monkeypatch):
    """The engine verifies decode(prefix + continuation): a prefix cut inside
    \\boxed{3|2} still scores; the continuation alone would not."""
    model, tokenizer, engine = _engine(tiny_policy)
    record = synthetic.train_records(1, seed=0)[0]
    assert len(record.answer) > 1
    ids = tokenizer.encode(f"So \\boxed{{{record.answer}}}", add_special_tokens=False)
    cut = len(tokenizer.encode("So \\boxed{", add_special_tokens=False)) + 1
    context = templates.encode_prompt(tokenizer, templates.plain_prompt(record.problem))

    def scripted(model, prompts, *, max_new_tokens, **kwargs):
        rest = np.array([ids[cut:]], np.int32)
        zeros = np.zeros(rest.shape, np.float32)
        return sampling.SampleOutput(tokens=rest, lengths=np.array([rest.shape[1]]),
                                     logprobs=zeros, policy_logprobs=zeros,
                                     truncated=np.array([False]))

    monkeypatch.setattr(sampling, "generate", scripted)
    sample, = engine.rollout(model, [Request(record=record, context=context, num_samples=1,
                                             prefix=ids[:cut])], jax.random.PRNGKey(0))
    assert sample.correct and sample.extracted == record.answer
    alone, = engine.verifier.verify_batch([tokenizer.decode(ids[cut:])], [record.answer])
    assert not alone.correct


def test_an_episode_attempt_is_scored_up_to_its_first_box(tiny_policy, monkeypatch):
    """With answer_at_first_box the verifier reads the response up to its first complete
    box (an attempt); otherwise, as always, the last box."""
    model, tokenizer, engine = _engine(tiny_policy)
    record = synthetic.train_records(1, seed=0)[0]
    wrong = str(int(record.answer) + 1)
    ids = tokenizer.encode(f"\\boxed{{{record.answer}}} or \\boxed{{{wrong}}}",
                           add_special_tokens=False)
    context = templates.encode_prompt(tokenizer, templates.plain_prompt(record.problem))

    def scripted(model, prompts, *, max_new_tokens, **kwargs):
        rows = np.array([ids] * len(prompts), np.int32)
        zeros = np.zeros(rows.shape, np.float32)
        return sampling.SampleOutput(tokens=rows, lengths=np.array([len(ids)] * len(prompts)),
                                     logprobs=zeros, policy_logprobs=zeros,
                                     truncated=np.array([True] * len(prompts)))

    monkeypatch.setattr(sampling, "generate", scripted)
    attempt, whole = engine.rollout(model, [
        Request(record=record, context=context, num_samples=1, answer_at_first_box=True),
        Request(record=record, context=context, num_samples=1)], jax.random.PRNGKey(0))
    assert attempt.correct and attempt.text == f"\\boxed{{{record.answer}}}"
    assert attempt.response == ids                       # every sampled id is kept
    assert whole.status == "wrong" and whole.extracted == wrong
