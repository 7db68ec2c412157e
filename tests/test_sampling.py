"""The sampler against step-by-step references built from models.logits (no cache).

Every compile costs seconds on CPU, so the tests share a few shapes: a batch of 3
prompts (up to 32 tokens with prefixes) and max_new_tokens <= 32 all land in the same
bucket, and each sampling mode (greedy, filtered, unfiltered) compiles once. The
references run models.logits on one fixed [8, 64] right-padded buffer for the same
reason.
"""

import contextlib

import jax
import numpy as np
import pytest

from rl_reason import models, sampling, sharding
from rl_reason.rl.logprobs import token_logprobs
from sampling_helpers import random_model

NEW = 10           # max_new_tokens in most tests
REF_SHAPE = (8, 64)
PROMPTS = [[3, 17, 42], [5, 9, 81, 11, 2, 60, 33, 7, 90, 14, 21], [100, 4, 8, 15, 16, 23, 1]]


@pytest.fixture(scope="module")
def model():
    return random_model()


def last_logits(model, contexts) -> np.ndarray:
    """[N, V] float64 logits after each context, from the full forward (no cache)."""
    tokens = np.zeros(REF_SHAPE, np.int32)
    valid = np.zeros(REF_SHAPE, bool)
    for i, c in enumerate(contexts):
        tokens[i, :len(c)] = c
        valid[i, :len(c)] = True
    logits = np.asarray(models.logits(model, tokens, valid), np.float64)
    return np.stack([logits[i, len(c) - 1] for i, c in enumerate(contexts)])


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def greedy_reference(model, prompts, steps):
    """(tokens, untempered logprobs) of step-by-step argmax decoding."""
    contexts = [list(p) for p in prompts]
    tokens, logprobs = [], []
    for _ in range(steps):
        logp = log_softmax(last_logits(model, contexts))
        best = logp.argmax(-1)
        tokens.append(best)
        logprobs.append(logp[np.arange(len(best)), best])
        for c, t in zip(contexts, best):
            c.append(int(t))
    return np.stack(tokens, 1), np.stack(logprobs, 1)


def filtered_reference(logits, temperature, top_k, top_p):
    """Log-probs of the renormalised temperature/top-k/top-p distribution (-inf: dropped)."""
    scaled = logits / temperature
    order = np.argsort(-scaled, axis=-1)
    sorted_ = np.take_along_axis(scaled, order, -1)
    k = top_k if top_k > 0 else scaled.shape[-1]
    in_k = np.arange(scaled.shape[-1]) < k
    probs = np.exp(log_softmax(np.where(in_k, sorted_, -np.inf)))
    keep_sorted = in_k & (np.cumsum(probs, -1) - probs < top_p)
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, -1)
    return log_softmax(np.where(keep, scaled, -np.inf))


@contextlib.contextmanager
def count_compiles():
    """Counts XLA backend compiles (of anything) inside the block."""
    count = [0]

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            count[0] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield count
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@pytest.fixture(scope="module")
def greedy_out(model):
    return sampling.generate(model, PROMPTS, max_new_tokens=NEW, rng=0, greedy=True,
                             stop_token_ids=())


def test_greedy_matches_full_forward_argmax(model, greedy_out):
    ref_tokens, ref_logprobs = greedy_reference(model, PROMPTS, NEW)
    np.testing.assert_array_equal(greedy_out.tokens, ref_tokens)
    np.testing.assert_allclose(greedy_out.logprobs, ref_logprobs, atol=1e-4)
    np.testing.assert_array_equal(greedy_out.lengths, [NEW] * 3)
    assert greedy_out.truncated.all()
    # temperature 0 means greedy too.
    zero = sampling.generate(model, PROMPTS, max_new_tokens=NEW, rng=1, temperature=0.0,
                             stop_token_ids=())
    np.testing.assert_array_equal(zero.tokens, ref_tokens)


def test_filters_keep_tokens_in_allowed_set_with_renormalised_logprobs(model, greedy_out):
    temperature, top_k, top_p = 1.3, 6, 0.7
    out = sampling.generate(model, PROMPTS, max_new_tokens=NEW, rng=3, temperature=temperature,
                            top_k=top_k, top_p=top_p, stop_token_ids=())
    for step in range(NEW):
        contexts = [p + list(row[:step]) for p, row in zip(PROMPTS, out.tokens)]
        ref = filtered_reference(last_logits(model, contexts), temperature, top_k, top_p)
        chosen = ref[np.arange(3), out.tokens[:, step]]
        assert np.isfinite(chosen).all(), f"step {step}: a token outside top-k/top-p"
        np.testing.assert_allclose(out.logprobs[:, step], chosen, atol=1e-4)
        assert (np.isfinite(ref).sum(-1) <= top_k).all()
    # A filter that leaves one token is greedy (logprob 0: a point mass).
    for options in (dict(top_k=1), dict(top_p=1e-6)):
        narrow = sampling.generate(model, PROMPTS, max_new_tokens=NEW, rng=4, stop_token_ids=(),
                                   **options)
        np.testing.assert_array_equal(narrow.tokens, greedy_out.tokens, err_msg=str(options))
        np.testing.assert_allclose(narrow.logprobs, 0.0, atol=1e-6)


def test_temperature_logprobs_and_rng(model):
    def sample(rng, prompts=PROMPTS):
        return sampling.generate(model, prompts, max_new_tokens=NEW, rng=rng, temperature=0.7,
                                 stop_token_ids=())

    out = sample(7)
    for step in (0, NEW - 1):
        contexts = [p + list(row[:step]) for p, row in zip(PROMPTS, out.tokens)]
        ref = log_softmax(last_logits(model, contexts) / 0.7)
        np.testing.assert_allclose(out.logprobs[:, step], ref[np.arange(3), out.tokens[:, step]],
                                   atol=1e-4)

    again = sample(jax.random.PRNGKey(7))  # an int seed is PRNGKey(seed)
    np.testing.assert_array_equal(again.tokens, out.tokens)
    np.testing.assert_array_equal(again.logprobs, out.logprobs)
    other = sample(8)
    assert (other.tokens != out.tokens).any(axis=1).all()
    # Row 0 keeps its tokens when the other rows change (and with them the longest
    # prompt, hence row 0's left padding).
    shuffled = sample(7, [PROMPTS[0], [1] * 30, [2]])
    np.testing.assert_array_equal(shuffled.tokens[0], out.tokens[0])
    np.testing.assert_allclose(shuffled.logprobs[0], out.logprobs[0], atol=1e-5)


def test_stop_ids_eos_and_max_new_tokens(model, greedy_out):
    ref = greedy_out.tokens
    # Stop ids that end rows 0 and 1 early and never appear in row 2.
    first = next(int(t) for t in ref[0, 2:] if t not in ref[2])
    second = next(int(t) for t in ref[1, 1:] if t not in ref[2] and t != first)
    stops = (first, second)

    def expected_length(row):
        hits = [i for i, t in enumerate(row) if t in stops]
        return hits[0] + 1 if hits else NEW

    lengths = [expected_length(row) for row in ref]
    assert lengths[0] < NEW and lengths[1] < NEW and lengths[2] == NEW
    pad = 127
    out = sampling.generate(model, PROMPTS, max_new_tokens=NEW, rng=0, greedy=True,
                            stop_token_ids=stops, pad_id=pad)
    np.testing.assert_array_equal(out.lengths, lengths)
    np.testing.assert_array_equal(out.truncated, [False, False, True])
    for row, n, ref_row, logp in zip(out.tokens, lengths, ref, out.logprobs):
        np.testing.assert_array_equal(row[:n], ref_row[:n])  # includes the stop token
        assert (row[n:] == pad).all() and (logp[n:] == 0).all()
    assert out.response_tokens()[0] == ref[0, :lengths[0]].tolist()

    # The model's eos_token_id(s) are the default stop ids.
    eos_model = model.replace(config=model.config.replace(eos_token_id=stops))
    eos_out = sampling.generate(eos_model, PROMPTS, max_new_tokens=NEW, rng=0, greedy=True,
                                pad_id=pad)
    np.testing.assert_array_equal(eos_out.tokens, out.tokens)
    np.testing.assert_array_equal(eos_out.lengths, lengths)

    # max_new_tokens below the compiled capacity is respected exactly.
    short = sampling.generate(model, PROMPTS, max_new_tokens=4, rng=0, greedy=True,
                              stop_token_ids=())
    assert short.tokens.shape == (3, 4)
    np.testing.assert_array_equal(short.tokens, ref[:, :4])
    np.testing.assert_array_equal(short.lengths, [4, 4, 4])
    assert short.truncated.all()


def test_prefix_continuation_equals_concatenated_prompt(model):
    prefixes = [[50, 51, 52], [], [70, 8, 99, 1, 2]]
    out = sampling.generate(model, PROMPTS, prefixes=prefixes, max_new_tokens=NEW, rng=0,
                            greedy=True, stop_token_ids=())
    joined = [p + x for p, x in zip(PROMPTS, prefixes)]
    ref_tokens, ref_logprobs = greedy_reference(model, joined, NEW)
    np.testing.assert_array_equal(out.tokens, ref_tokens)
    # Log-probs are those of the continuation only, starting after the prefix.
    np.testing.assert_allclose(out.logprobs, ref_logprobs, atol=1e-4)
    concatenated = sampling.generate(model, joined, max_new_tokens=NEW, rng=0, greedy=True,
                                     stop_token_ids=())
    np.testing.assert_array_equal(out.tokens, concatenated.tokens)
    np.testing.assert_allclose(out.logprobs, concatenated.logprobs, atol=1e-6)


JITTED = (sampling.static.generate_static, sampling.slots.empty, sampling.slots.admit,
          sampling.slots.decode, sampling.slots.resize, sampling.slots.unstack_layers)


@pytest.mark.parametrize("continuous", [True, False])
def test_no_recompilation_within_a_bucket(model, continuous):
    # Three prompts of <= 16 tokens and budgets <= 32: one context bucket, three rows
    # (three slots, too few to compact), a capacity of 32 in two windows. Prompt lengths,
    # budgets, stop ids, pad_id and the sampling values all change but stay in the same
    # buckets; the first call reaches the second window.
    calls = [
        dict(prompts=[[1, 2], [3] * 13, [4] * 9], max_new_tokens=[7, 1, 32], stop_token_ids=()),
        dict(prompts=[[1, 2], [3] * 13, [4] * 9], max_new_tokens=7, stop_token_ids=(5, 6),
             pad_id=3),
        dict(prompts=[[9] * 16, [8], [7, 6]], max_new_tokens=NEW, stop_token_ids=range(8)),
        dict(prompts=[[9] * 16, [8], [7, 6]], max_new_tokens=[3, 30, 12], stop_token_ids=(9,)),
    ]
    # Greedy, filtered and unfiltered sampling are one set of compilations each.
    modes = [[dict(greedy=True)],
             [dict(temperature=0.5, top_k=3, top_p=0.9), dict(temperature=2.0, top_p=0.5)],
             [dict(temperature=0.7), dict(temperature=1.5)]]
    for mode in modes:  # compiled by the other tests already, unless run alone
        sampling.generate(model, **calls[0], rng=0, continuous=continuous, **mode[0])
    before = [f._cache_size() for f in JITTED]
    traces = dict(sampling.TRACE_COUNT)
    with count_compiles() as compiles:
        for call in calls:
            for mode in modes:
                for options in mode:
                    sampling.generate(model, **call, rng=1, continuous=continuous, **options)
    assert compiles[0] == 0
    assert [f._cache_size() for f in JITTED] == before
    assert dict(sampling.TRACE_COUNT) == traces


def test_segment_ends():
    assert [sampling.segment_ends(g) for g in (16, 32, 48, 64, 96, 128, 192)] == [
        (16,), (16, 32), (16, 32, 48), (16, 32, 48, 64), (24, 48, 72, 96),
        (32, 64, 96, 128), (48, 96, 144, 192)]
    assert sampling.segment_ends(1536) == (384, 768, 1152, 1536)


def test_short_generation_in_segments_gives_the_same_tokens(model, monkeypatch):
    # 40 new tokens: capacity 48 in three segments of 16 (the benchmark's 64 tokens: four).
    kwargs = dict(max_new_tokens=40, rng=3, temperature=1.0, stop_token_ids=())
    assert sampling.segment_ends(sampling.bucket(40)) == (16, 32, 48)
    segmented = sampling.generate(model, PROMPTS, **kwargs)
    monkeypatch.setattr(sampling.shapes, "MIN_SEGMENT", 64)
    assert sampling.segment_ends(sampling.bucket(40)) == (48,)
    single = sampling.generate(model, PROMPTS, **kwargs)
    np.testing.assert_array_equal(segmented.tokens, single.tokens)
    # Reductions over fewer slots may round differently: log-probs to float tolerance.
    np.testing.assert_allclose(segmented.logprobs, single.logprobs, atol=1e-5)
    np.testing.assert_array_equal(segmented.lengths, single.lengths)


def test_segmented_decode_equals_one_segment(model, monkeypatch):
    # 200 new tokens: capacity 256 in four segments whose attention windows grow.
    kwargs = dict(max_new_tokens=200, rng=5, temperature=0.9, stop_token_ids=(7,))
    prompts = PROMPTS + [[12, 13]]
    segmented = sampling.generate(model, prompts, **kwargs)
    monkeypatch.setattr(sampling.shapes, "DECODE_SEGMENTS", 1)
    single = sampling.generate(model, prompts, **kwargs)
    np.testing.assert_array_equal(segmented.tokens, single.tokens)
    np.testing.assert_allclose(segmented.logprobs, single.logprobs, atol=1e-5)
    np.testing.assert_array_equal(segmented.lengths, single.lengths)
    np.testing.assert_array_equal(segmented.truncated, single.truncated)
    # The rows end in different segments, some past the first.
    assert segmented.lengths.max() > 64 and len(set(segmented.lengths.tolist())) > 1
    # The cache grows between segments on a mesh too (batch and kv heads split).
    monkeypatch.setattr(sampling.shapes, "DECODE_SEGMENTS", 4)
    sharded = sampling.generate(model, prompts, **kwargs, mesh=sharding.make_mesh(2, 2, 2))
    np.testing.assert_array_equal(sharded.tokens, single.tokens)
    np.testing.assert_allclose(sharded.logprobs, single.logprobs, atol=1e-4)


def assert_rows_match_single_budget_calls(model, prompts, budgets, *, atol, **kwargs):
    """Row i of a call with per-row budgets is row i of the call with
    max_new_tokens=budgets[i] (padded to the widest budget); returns the former."""
    out = sampling.generate(model, prompts, max_new_tokens=budgets, **kwargs)
    width = max(budgets)
    assert out.tokens.shape == out.logprobs.shape == out.policy_logprobs.shape == (
        len(prompts), width)
    for i, budget in enumerate(budgets):
        single = sampling.generate(model, prompts, max_new_tokens=budget, **kwargs)
        padding = (0, width - budget)
        np.testing.assert_array_equal(
            out.tokens[i], np.pad(single.tokens[i], padding,
                                  constant_values=kwargs.get("pad_id", 0)), err_msg=f"row {i}")
        for name in ("logprobs", "policy_logprobs"):
            np.testing.assert_allclose(getattr(out, name)[i],
                                       np.pad(getattr(single, name)[i], padding),
                                       rtol=0, atol=atol, err_msg=f"row {i} {name}")
        assert out.lengths[i] == single.lengths[i] and out.truncated[i] == single.truncated[i]
    return out


def test_per_row_budgets_give_each_rows_single_budget_output(model):
    # Same shapes as the single-budget calls (capacity 32): bit for bit.
    budgets = [5, 12, 30]
    out = assert_rows_match_single_budget_calls(
        model, PROMPTS, budgets, atol=0, rng=3, temperature=1.3, top_p=0.7,
        stop_token_ids=(), pad_id=127)
    np.testing.assert_array_equal(out.lengths, budgets)
    assert out.truncated.all()
    assert out.response_tokens()[0] == out.tokens[0, :5].tolist()


def test_per_row_budgets_with_stop_ids_and_segments(model):
    # Capacity 256 in four segments; the single-budget calls have 1 to 4 segments, so
    # their attention windows differ (hence a tolerance on log-probs).
    budgets = [200, 100, 120, 70]
    out = assert_rows_match_single_budget_calls(
        model, PROMPTS + [[12, 13]], budgets, atol=1e-5, rng=5, temperature=0.9,
        stop_token_ids=(7,))
    # Rows 0 and 1 stop at id 7 before their budgets, row 0 in the third segment; rows 2
    # and 3 run to their own budgets, in the second segment.
    np.testing.assert_array_equal(out.truncated, [False, False, True, True])
    assert 128 < out.lengths[0] < budgets[0] and out.lengths[1] < budgets[1]
    np.testing.assert_array_equal(out.lengths[2:], budgets[2:])
    assert (out.tokens[[0, 1], out.lengths[:2] - 1] == 7).all()


def test_policy_logprobs_are_the_training_pass_logprobs(model):
    temperature = 1.3
    out = sampling.generate(model, PROMPTS, max_new_tokens=NEW, rng=3, temperature=temperature,
                            top_p=0.7, stop_token_ids=())
    # Top-p renormalises over fewer tokens: never below the policy, above it where it
    # dropped any.
    gap = out.logprobs - out.policy_logprobs
    assert (gap >= -1e-6).all() and (gap > 1e-3).any()
    tokens, valid = np.zeros(REF_SHAPE, np.int32), np.zeros(REF_SHAPE, bool)
    for i, (prompt, response) in enumerate(zip(PROMPTS, out.response_tokens())):
        tokens[i, :len(prompt) + NEW] = prompt + response
        valid[i, :len(prompt) + NEW] = True
    logp = np.asarray(token_logprobs(model.params, model.config, tokens, valid, temperature))
    for i, prompt in enumerate(PROMPTS):
        np.testing.assert_allclose(out.policy_logprobs[i], logp[i, len(prompt):][:NEW],
                                   rtol=0, atol=1e-5)
    # With no filter (or greedy) the sampling distribution is the policy's: one array.
    for options in (dict(temperature=0.7), dict(greedy=True)):
        plain = sampling.generate(model, PROMPTS, max_new_tokens=NEW, rng=3,
                                  stop_token_ids=(), **options)
        assert plain.policy_logprobs is plain.logprobs


@pytest.mark.parametrize("axes", [(2, 2, 2), (8, 1, 1)])
def test_sharded_parameters_give_single_device_tokens(model, axes):
    mesh = sharding.make_mesh(*axes)
    single = sampling.generate(model, PROMPTS, max_new_tokens=NEW, rng=7, temperature=0.7,
                               stop_token_ids=())
    sharded = sampling.generate(model, PROMPTS, max_new_tokens=NEW, rng=7, temperature=0.7,
                                stop_token_ids=(), mesh=mesh)
    # The batch of 3 is padded to 4 or 8 rows for the mesh: extra rows change nothing.
    np.testing.assert_array_equal(sharded.tokens, single.tokens)
    np.testing.assert_allclose(sharded.logprobs, single.logprobs, atol=1e-4)
    np.testing.assert_array_equal(sharded.lengths, single.lengths)
    # Per-row budgets are split over the batch axes with the rows.
    budgets = [1, NEW, 6]
    single = sampling.generate(model, PROMPTS, max_new_tokens=budgets, rng=7, temperature=0.7,
                               stop_token_ids=())
    sharded = sampling.generate(model, PROMPTS, max_new_tokens=budgets, rng=7, temperature=0.7,
                                stop_token_ids=(), mesh=mesh)
    np.testing.assert_array_equal(sharded.tokens, single.tokens)
    np.testing.assert_allclose(sharded.logprobs, single.logprobs, atol=1e-4)
    np.testing.assert_array_equal(sharded.lengths, budgets)


@pytest.mark.parametrize("kwargs, message", [
    (dict(prompts=[list(range(100)) * 6]), "600 tokens.*max_position_embeddings=512"),
    (dict(prompts=[[1] * 500], max_new_tokens=20), "500 tokens.*max_new_tokens=20"),
    (dict(prompts=[[1]], prefixes=[[2] * 600]), "601 tokens"),
    (dict(prompts=[]), "no prompts"),
    (dict(prompts=[[1], []]), "at least one token"),
    (dict(prompts=[[1], [2]], prefixes=[[3]]), "1 prefixes for 2 prompts"),
    (dict(prompts=[[1, 128]]), "token id 128 .*vocab_size=128"),
    (dict(prompts=[[1, -1]]), "token id -1"),
    (dict(max_new_tokens=0), "max_new_tokens=0"),
    (dict(prompts=[[1], [2]], max_new_tokens=[3]), "1 max_new_tokens for 2 prompts"),
    (dict(prompts=[[1], [2]], max_new_tokens=[3, 0]), r"max_new_tokens\[1\]=0 must be >= 1"),
    (dict(prompts=[[1], [1] * 500], max_new_tokens=[20, 13]),
     r"row 1: context of 500 tokens \+ max_new_tokens\[1\]=13 .*=512"),
    (dict(temperature=-0.5), "temperature=-0.5"),
    (dict(top_p=0.0), "top_p=0.0"),
    (dict(top_p=1.5), "top_p=1.5"),
    (dict(top_k=-1), "top_k=-1"),
])
def test_bad_arguments_raise_clear_errors(model, kwargs, message):
    kwargs = dict(dict(prompts=[[1, 2]], max_new_tokens=4), **kwargs)
    with pytest.raises(ValueError, match=message):
        sampling.generate(model, kwargs.pop("prompts"), rng=0, **kwargs)


def test_bucket():
    assert [sampling.bucket(n) for n in (1, 32, 33, 48, 49, 64, 65, 97)] == [
        32, 32, 48, 48, 64, 64, 96, 128]
    assert [sampling.bucket(n, minimum=1) for n in (1, 2, 3, 4, 5, 7, 9)] == [1, 2, 3, 4, 6, 8, 12]
