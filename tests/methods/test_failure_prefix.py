"""Failure-prefix conditioning: every rule worked by hand on scripted samples (the
saturated set, cut positions, the prefix nearest tau, no loss on the prefix, scoring
across the cut, refresh and plateau, state), then tiny end-to-end runs: the budget
and the metrics, held-out-only robustness prefixes, and an exact resume after a
refresh."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import failure_prefix as fp_config
from rl_reason import checkpoint, models, sampling, train
from rl_reason.config_check import ConfigError, check
from rl_reason.data import record as record_lib
from rl_reason.data import synthetic
from rl_reason.methods.components import common
from rl_reason.methods.failure_prefix import mining
from rl_reason.protocol import FRESH, Request, Sample, StepContext
from rl_reason.methods.failure_prefix.method import FailurePrefix
from rl_reason.rollout import RolloutEngine
from rl_reason.verifiers import ExactIntVerifier, VerifyResult

STOP = 1


class CharTokenizer:
    """One token per character (id = code point); id 1 is the stop token."""

    chat_template = None
    bos_token_id = None

    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids if not (skip_special_tokens and i == STOP))


TOK = CharTokenizer()


def ids(text):
    return [ord(c) for c in text]


def rec(question, answer):
    return record_lib.Record(problem=question, answer=answer,
                             id=record_lib.problem_id(question), source="test")


A, B, C = rec("What is 2+3?", "5"), rec("What is 4*8?", "32"), rec("What is 9-4?", "5")


def config(**method):
    c = fp_config.get_config("tiny")
    c.unlock()
    c.method.update(pool_size=4, pass_samples=4, saturation_threshold=0.75, mining_samples=4,
                    max_failures=1, cut_fractions=(0.25, 0.5, 0.75), probe_samples=4, tau=0.5,
                    refresh_every=0)
    c.method.update(**method)
    return c


class Script:
    """A stand-in for ctx.rollout: each request's continuations come from
    `replies[(tag, record id, prefix text)]` (a list of texts, one per sample, cycled);
    the verifier scores prefix + continuation, as the engine does."""

    def __init__(self, replies):
        self.replies = replies
        self.calls = []
        self.verifier = ExactIntVerifier()

    def __call__(self, requests):
        self.calls.append([(r.tag, r.record.id, r.num_samples) for r in requests])
        samples = []
        for r in requests:
            texts = self.replies[(r.tag, r.record.id, TOK.decode(r.prefix))]
            for j in range(r.num_samples):
                samples.append(make_sample(r, texts[j % len(texts)], self.verifier))
        return samples


def make_sample(request, continuation, verifier=None, truncated=False):
    response = ids(continuation) + ([] if truncated else [STOP])
    text = TOK.decode(list(request.prefix) + response)
    result = (verifier or ExactIntVerifier()).verify_batch([text], [request.record.answer])[0]
    n = len(response)
    return Sample(request=request, response=response, logprobs=np.zeros(n, np.float32),
                  policy_logprobs=np.zeros(n, np.float32), truncated=truncated, text=text,
                  reward=result.reward, status=result.status, extracted=result.extracted)


def context(step, rollout, draws, held_out=None, c=None):
    def draw(n):
        out, draws[:] = draws[:n], draws[n:]
        return out
    return StepContext(step=step, config=c, tokenizer=TOK, rng=np.random.default_rng(0),
                       draw_records=draw, retire=lambda ids: None, rollout=rollout,
                       score=lambda seqs: [], held_out=dict(held_out or {}))


# B's first failure "4*8=31. \boxed{31}" has 18 characters: cut at 25% -> round(4.5) = 5
# ("4*8=3"), 50% -> 9 ("4*8=31. \"), 75% -> round(13.5) = 14 ("4*8=31. \boxed").
CUT_25, CUT_50, CUT_75 = "4*8=3", "4*8=31. \\", "4*8=31. \\boxed"
SCRIPT = {
    # Pass rates: A 4/4, B 3/4 (saturated at 0.75), C 2/4 (not).
    ("pass_rate", A.id, ""): ["2+3=5. \\boxed{5}"],
    ("pass_rate", B.id, ""): ["4*8=32. \\boxed{32}", "4*8=31. \\boxed{31}",
                              "4*8=32. \\boxed{32}", "4*8=32. \\boxed{32}"],
    ("pass_rate", C.id, ""): ["9-4=5. \\boxed{5}", "9-4=6. \\boxed{6}"],
    # Mining: A never fails; B fails once more ("4*8=30"), which max_failures=1 leaves.
    ("mining", A.id, ""): ["2+3=5. \\boxed{5}"],
    ("mining", B.id, ""): ["4*8=32. \\boxed{32}", "4*8=32. \\boxed{32}",
                           "4*8=30. \\boxed{30}", "4*8=32. \\boxed{32}"],
    # Probes: the policy recovers from the early cut (4/4), half the time from the
    # middle one (2/4), never once the wrong number is written (0/4).
    ("probe", B.id, CUT_25): ["2. \\boxed{32}"],
    ("probe", B.id, CUT_50): ["boxed{32}", "boxed{31}"],
    ("probe", B.id, CUT_75): ["{31}"],
}


# ---------------------------------------------------------------- the rules by hand

@pytest.mark.parametrize("n, fraction, kept", [(10, 0.5, 5), (10, 0.25, 3), (10, 0.1, 1),
                                               (7, 0.5, 4), (3, 0.1, 1), (3, 0.9, 2),
                                               (2, 0.5, 1), (18, 0.75, 14)])
def test_cut_length_rounds_half_up_and_keeps_one_token_each_side(n, fraction, kept):
    assert mining.prefix_length(n, fraction) == kept


def test_failure_cuts_are_token_positions_of_the_response_without_its_stop_token():
    request = Request(record=B, context=[], num_samples=1)
    finished = make_sample(request, "4*8=31. \\boxed{31}")
    assert finished.response[-1] == STOP
    assert mining.content_ids(finished) == ids("4*8=31. \\boxed{31}")
    truncated = make_sample(request, "4*8=31. 31*", truncated=True)
    assert mining.content_ids(truncated) == ids("4*8=31. 31*")
    cuts = mining.failure_cuts(mining.content_ids(finished), (0.25, 0.5, 0.75))
    assert [(f, TOK.decode(p)) for f, p in cuts] == [(0.25, CUT_25), (0.5, CUT_50),
                                                      (0.75, CUT_75)]
    # 3 tokens: 0.1 -> 1, 0.3 -> 1 (same cut, dropped), 0.5 -> round(1.5) = 2, 0.9 -> 2.
    assert mining.failure_cuts([7, 8, 9], (0.1, 0.3, 0.5, 0.9)) == [(0.1, (7,)), (0.5, (7, 8))]
    assert mining.failure_cuts([7], (0.5,)) == []


def test_saturated_set_is_the_pool_at_or_above_the_threshold():
    samples = Script(SCRIPT)([Request(record=r, context=[], num_samples=4, tag="pass_rate")
                              for r in (A, B, C)])
    rates = mining.pass_rates(samples)
    assert rates == {A.id: 1.0, B.id: 0.75, C.id: 0.5}
    assert mining.saturated([A, B, C], rates, 0.75) == [A, B]
    assert mining.saturated([A, B, C], rates, 0.8) == [A]
    assert mining.saturated([C, A], rates, 0.0) == [C, A]


@pytest.mark.parametrize("tau, index", [(0.5, 1), (0.0, 2), (1.0, 0),
                                        # ties go to the first (shorter) candidate:
                                        (0.25, 1), (0.75, 0)])
def test_closest_to_tau(tau, index):
    assert mining.closest_to_tau([1.0, 0.5, 0.0], tau) == index


@pytest.mark.parametrize("values, delta, patience, expected", [
    ([0.5], 0.0, 1, False),                  # nothing before the window
    ([0.5, 0.5], 0.0, 1, True),              # no improvement
    ([0.5, 0.6], 0.0, 1, False),
    ([0.5, 0.6], 0.1, 1, True),              # improved by exactly delta: not more
    ([0.5, 0.7, 0.6, 0.65], 0.0, 2, True),   # best before the last two is 0.7
    ([0.5, 0.7, 0.6, 0.75], 0.0, 2, False),
    ([0.5, 0.7, 0.6], 0.0, 2, False),        # 0.7 vs 0.5: improved
])
def test_plateau(values, delta, patience, expected):
    assert mining.plateaued(values, delta, patience) is expected


# ---------------------------------------------------------------- mining and a step

@pytest.mark.parametrize("tau, fraction, accuracy", [(0.5, 0.5, 0.5), (0.0, 0.75, 0.0),
                                                     (0.75, 0.25, 1.0), (0.25, 0.5, 0.5)])
def test_mining_round_by_hand(tau, fraction, accuracy):
    c = config(tau=tau)
    method = FailurePrefix(c, TOK)
    script = Script(SCRIPT)
    ctx = context(0, script, [A, B, A, C], c=c)
    requests = method.prepare(ctx)

    # One call per stage: the pool (A drawn twice: one problem), the saturated A and B,
    # then B's three cuts of its first failure.
    assert script.calls == [[("pass_rate", A.id, 4), ("pass_rate", B.id, 4),
                             ("pass_rate", C.id, 4)],
                            [("mining", A.id, 4), ("mining", B.id, 4)],
                            [("probe", B.id, 4)] * 3]
    m = {k.removeprefix("failure_prefix/"): v for k, v in ctx.metrics.items()}
    assert {k: m[k] for k in ("mining", "pool_problems", "saturated_problems",
                              "mined_failures", "no_failure_problems", "candidates",
                              "mined_problems", "mined_set", "plain_step", "refreshes")} == {
        "mining": 1, "pool_problems": 3, "saturated_problems": 2, "mined_failures": 2,
        "no_failure_problems": 1, "candidates": 3, "mined_problems": 1, "mined_set": 1,
        "plain_step": 0, "refreshes": 0}
    assert m["saturated_share"] == pytest.approx(2 / 3)
    assert (m["cut_25pct/probe_accuracy"], m["cut_50pct/probe_accuracy"],
            m["cut_75pct/probe_accuracy"]) == (1.0, 0.5, 0.0)
    assert m[f"cut_{round(100 * fraction)}pct/chosen"] == 1
    assert (m["chosen_fraction_mean"], m["chosen_accuracy_mean"]) == (fraction, accuracy)

    # The step trains on B continued from the chosen prefix, B x G continuations.
    prefix = {0.25: CUT_25, 0.5: CUT_50, 0.75: CUT_75}[fraction]
    assert len(requests) == c.rollout.prompts_per_step
    for r in requests:
        assert (r.record, r.tag, r.num_samples, TOK.decode(r.prefix)) == (
            B, FRESH, c.rollout.group_size, prefix)
        assert r.context == ids(f"User: {B.problem}\n") + ids(
            "Please reason step by step, and put your final answer within \\boxed{}.\n\n"
            "Assistant:")
        assert r.max_new_tokens == c.rollout.max_new_tokens - len(prefix)


def test_the_cursor_cycles_over_the_mined_set():
    c = config(saturation_threshold=0.0, max_failures=1, cut_fractions=(0.5,))
    c.rollout.prompts_per_step = 3
    everyone_fails = {(tag, r.id, ""): ["0. \\boxed{0}"] for tag in ("pass_rate", "mining")
                      for r in (A, B, C)}
    half = TOK.decode(ids("0. \\boxed{0}")[:6])     # 12 characters, cut at 50%
    assert half == "0. \\bo"
    everyone_fails.update({("probe", r.id, half): ["xed{0}"] for r in (A, B, C)})
    method = FailurePrefix(c, TOK)
    script = Script(everyone_fails)
    first = method.prepare(context(0, script, [A, B, C], c=c))
    second = method.prepare(context(1, script, [], c=c))
    assert [r.record for r in first + second] == [A, B, C, A, B, C]
    assert [r.record for r in method.prepare(context(2, script, [], c=c))][:1] == [A]
    assert len(script.calls) == 3   # mined once: pass rate, mining, probes


def test_no_failure_means_a_plain_grpo_step_on_fresh_records():
    c = config(pool_size=3)
    always_right = {("pass_rate", r.id, ""): [f"{r.problem[8:-1]}={r.answer}. "
                                              f"\\boxed{{{r.answer}}}"] for r in (A, B, C)}
    always_right.update({("mining", r.id, ""): always_right[("pass_rate", r.id, "")]
                         for r in (A, B, C)})
    method = FailurePrefix(c, TOK)
    fresh = synthetic.train_records(c.rollout.prompts_per_step, seed=5)
    ctx = context(0, Script(always_right), [A, B, C] + fresh, c=c)
    requests = method.prepare(ctx)
    assert [r.record for r in requests] == fresh
    assert all(r.prefix == [] and r.tag == FRESH for r in requests)
    assert ctx.metrics["failure_prefix/plain_step"] == 1
    assert ctx.metrics["failure_prefix/no_failure_problems"] == 3
    assert ctx.metrics["failure_prefix/mined_set"] == 0


def test_no_loss_on_the_prefix_and_grpo_advantages_on_the_continuation():
    c = config()
    method = FailurePrefix(c, TOK)
    request = method.prefix_request(B, ids(CUT_50), 2, tag=FRESH)
    request.group = "g"
    right, wrong = make_sample(request, "boxed{32}"), make_sample(request, "boxed{31}")
    assert (right.reward, wrong.reward) == (1.0, 0.0)
    rows = method.build_batch([right, wrong], context(1, None, [], c=c))
    head = len(request.context) + len(CUT_50)
    for row, sample in zip(rows, (right, wrong)):
        assert row.tokens == request.context + ids(CUT_50) + sample.response
        assert row.loss_mask[:head].sum() == 0
        assert row.loss_mask[head:].tolist() == [1.0] * len(sample.response)
    # rewards (1, 0): mean 0.5, sample std sqrt(0.5) -> advantages +-0.5 / sqrt(0.5)
    assert [row.advantage for row in rows] == pytest.approx([0.5 ** 0.5, -0.5 ** 0.5],
                                                            abs=1e-5)


def test_the_overlong_penalty_measures_a_continuation_against_its_own_budget():
    """L = 32, overlong buffer 8. After the 14-token prefix CUT_75 a continuation has
    32 - 14 = 18 tokens, so the penalty starts at its 10th: a 14-token continuation
    (with its stop token) is 4 into the buffer, -0.5 (as prefix + continuation, 28 of
    32 tokens, would be against L). Against L itself it would be free."""
    c = config()
    c.reward.overlong_buffer = 8
    assert c.rollout.max_new_tokens == 32
    method = FailurePrefix(c, TOK)
    request = method.prefix_request(B, ids(CUT_75), 2, tag=FRESH)
    request.group = "g"
    assert request.max_new_tokens == 18
    short, long = make_sample(request, "{32}"), make_sample(request, "{32}. The end")
    assert (len(short.response), len(long.response), short.reward, long.reward) == (5, 14, 1, 1)
    rewards = common.shaped_rewards([short, long], common.RewardShaping.from_config(c))
    np.testing.assert_allclose(rewards, [1.0, 0.5])
    # Both right, but the long one pays for its length: it is the worse of the group.
    rows = method.build_batch([short, long], context(1, None, [], c=c))
    assert rows[0].advantage > 0 > rows[1].advantage
    # A plain request (no prefix, no budget of its own) is measured against L: 28
    # tokens are 4 into the buffer.
    plain = common.plain_request(TOK, B, 1)
    assert plain.max_new_tokens is None
    right = make_sample(plain, "x" * 17 + "\\boxed{32}")
    assert (len(right.response), right.reward) == (28, 1.0)
    np.testing.assert_allclose(common.shaped_rewards(
        [right], common.RewardShaping.from_config(c)), [0.5])


def test_a_cut_inside_the_box_is_scored_with_its_continuation(monkeypatch):
    """A training prompt whose prefix ends inside \\boxed{3|2}: the engine scores
    prefix + continuation, so "2}" is right and "1}" wrong, and the advantages follow."""
    c = config()
    method = FailurePrefix(c, TOK)
    failure = ids("4*8=32. \\boxed{32}")        # a response cut after "\boxed{3"
    cut = mining.prefix_length(len(failure), 0.9)
    assert TOK.decode(failure[:cut]) == "4*8=32. \\boxed{3"
    request = method.prefix_request(B, failure[:cut], 2, tag=FRESH)
    continuations = [ids("2}") + [STOP], ids("1}") + [STOP]]

    def scripted(model, prompts, *, max_new_tokens, **kwargs):
        assert [list(p) for p in prompts] == [request.context + failure[:cut]] * 2
        tokens = np.array(continuations, np.int32)
        zeros = np.zeros(tokens.shape, np.float32)
        return sampling.SampleOutput(tokens=tokens, lengths=np.array([3, 3]), logprobs=zeros,
                                     policy_logprobs=zeros, truncated=np.array([False, False]))

    monkeypatch.setattr(sampling, "generate", scripted)
    engine = RolloutEngine(TOK, ExactIntVerifier(), c.rollout, stop_token_ids=(STOP,), pad_id=0)
    right, wrong = engine.rollout(None, [request], jax.random.PRNGKey(0))
    assert (right.text, right.correct, wrong.text, wrong.correct) == (
        "4*8=32. \\boxed{32}", True, "4*8=32. \\boxed{31}", False)
    assert not ExactIntVerifier().verify_batch(["2}"], ["32"])[0].correct
    rows = method.build_batch([right, wrong], context(1, None, [], c=c))
    assert rows[0].advantage > 0 > rows[1].advantage


# ---------------------------------------------------------------- refresh and state

def test_refresh_every_k_steps_up_to_max_refreshes():
    c = config(refresh_every=2, max_refreshes=1)
    method = FailurePrefix(c, TOK)
    script = Script(SCRIPT)
    mined_at = []
    for step in range(7):
        ctx = context(step, script, [A, B, C], c=c)
        method.prepare(ctx)
        if ctx.metrics["failure_prefix/mining"]:
            mined_at.append(step)
    assert mined_at == [0, 2]
    assert ctx.metrics["failure_prefix/refreshes"] == 1


def test_refresh_on_plateau_counts_evaluations_since_the_last_mining():
    c = config(refresh_on_plateau=True, plateau_patience=2, plateau_delta=0.01)
    c.train.eval_every = 2
    method = FailurePrefix(c, TOK)
    script = Script(SCRIPT)
    # Held-out greedy accuracy at eval steps 0, 2, 4, ...; a step sees the latest one.
    evals = {0: 0.50, 2: 0.60, 4: 0.605, 6: 0.607, 8: 0.63, 10: 0.632, 12: 0.635}
    mined_at, reasons = [], []
    for step in range(13):
        latest = max(s for s in evals if s <= step)
        ctx = context(step, script, [A, B, C], c=c,
                      held_out={"step": latest, "eval/greedy_accuracy": evals[latest]})
        method.prepare(ctx)
        if ctx.metrics["failure_prefix/mining"]:
            mined_at.append(step)
            reasons.append(ctx.metrics.get("failure_prefix/refresh_plateau", 0))
    # Mined at 0 (first); evaluations since: 0.50, 0.60 (step 2: too few to judge),
    # 0.605 (step 4: the last two, up to 0.605, beat 0.50 by more than 0.01), 0.607
    # (step 6: the last two, up to 0.607, beat the best before them, 0.60, by no more
    # than 0.01 -> refresh). Since step 6: 0.607, 0.63, 0.632 (step 10: 0.632 beats
    # 0.607 by 0.025), 0.635 (step 12: 0.635 vs 0.63 -> refresh).
    assert mined_at == [0, 6, 12] and reasons == [0, 1, 1]
    assert method.history == sorted(evals.items())


def test_state_round_trips_through_the_checkpoint_encoding():
    c = config(refresh_every=3)
    method = FailurePrefix(c, TOK)
    script = Script(SCRIPT)
    for step in range(2):
        method.prepare(context(step, script, [A, B, C], c=c,
                               held_out={"step": 0, "eval/greedy_accuracy": 0.5}))
    skeleton, arrays = checkpoint.encode_method_state(method.state())
    restored = FailurePrefix(c, TOK)
    restored.restore(checkpoint.decode_method_state(skeleton, arrays))
    assert (restored.mined, restored.cursor, restored.minings, restored.mined_at,
            restored.history) == (method.mined, method.cursor, method.minings,
                                  method.mined_at, method.history)
    assert restored.mined[0].record == B and restored.mined[0].prefix == tuple(ids(CUT_50))
    a = method.prepare(context(2, script, [], c=c))
    b = restored.prepare(context(2, script, [], c=c))
    assert [(r.record, r.prefix) for r in a] == [(r.record, r.prefix) for r in b]


# ---------------------------------------------------------------- config

@pytest.mark.parametrize("key, value, message", [
    ("pool_size", 0, "method.pool_size=0 must be >= 1"),
    ("saturation_threshold", 1.5, "saturation_threshold=1.5 must be in"),
    ("cut_fractions", (0.5, 0.3), "cut_fractions=(0.5, 0.3) must be increasing"),
    ("cut_fractions", (0.0, 0.5), "must be increasing, distinct, each in (0, 1)"),
    ("tau", -0.1, "tau=-0.1 must be in [0, 1]"),
    ("plateau_metric", "greedy_accuracy", "must be a held-out metric"),
    ("refresh_every", -1, "refresh_every=-1 must be >= 0"),
])
def test_bad_method_settings_are_named(key, value, message):
    c = fp_config.get_config("")
    c.unlock()
    c.method[key] = value
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[")):
        check(c, num_devices=1)


def test_refresh_on_plateau_needs_evaluations_during_the_run():
    c = fp_config.get_config("plateau")
    c.unlock()
    c.train.eval_every = 0
    with pytest.raises(ConfigError, match="refresh_on_plateau needs held-out evaluations"):
        check(c, num_devices=1)


# ---------------------------------------------------------------- end to end

def tiny_run_config(policy, **train_keys):
    c = fp_config.get_config("tiny")
    c.unlock()
    c.model.checkpoint = policy
    c.train.update(export_hf=False, **train_keys)
    # An entropy bonus gives a gradient even when a random policy earns no reward.
    c.loss.entropy_coef = 0.01
    c.optim.update(learning_rate=1e-3, warmup_steps=0)
    c.verifier.num_workers = 1
    c.eval.update(max_problems=8, prefix_samples=2)
    return c


class AlwaysWrong:
    """Says every response answered 0 (status "wrong"), so a random policy still has
    failures to cut and held-out responses to build misleading prefixes from."""

    def verify_batch(self, responses, answers):
        return [VerifyResult(reward=0.0, status="wrong", extracted="0") for _ in responses]

    def close(self):
        pass


def read_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_tiny_run_mines_refreshes_and_keeps_mining_out_of_training(tiny_policy, tmp_path,
                                                                   monkeypatch):
    from rl_reason import run_setup
    monkeypatch.setattr(run_setup, "make_verifier", lambda config: AlwaysWrong())
    workdir = str(tmp_path / "run")
    c = tiny_run_config(tiny_policy)
    trainer = train.Trainer(c, workdir)
    trainer.train()
    method = trainer.method
    train_ids = {r.id for r in trainer.stream.records}
    held_out_ids = {r.id for r in trainer.eval_records}
    trainer.close()

    lines = [m for m in read_metrics(workdir) if "loss" in m]
    assert [m["failure_prefix/mining"] for m in lines] == [1, 0, 1]   # refresh_every=2
    assert [m["failure_prefix/refreshes"] for m in lines] == [0, 0, 1]
    G, B = c.rollout.group_size, c.rollout.prompts_per_step
    for m in lines:
        # Headline metrics and rows: the B x G prefix-conditioned samples only.
        assert m["samples"] == m["rows"] == m["rollout/fresh/samples"] == B * G
        tags = [k.split("/")[1] for k in m if k.startswith("rollout/") and
                k.endswith("/generated_tokens")]
        assert m["generated_tokens"] == sum(m[f"rollout/{t}/generated_tokens"] for t in tags)
        assert m["failure_prefix/plain_step"] == 0
    for m in (lines[0], lines[2]):
        assert set(("pass_rate", "mining", "probe")) <= {k.split("/")[1] for k in m
                                                         if k.startswith("rollout/")}
        # 4 pool records (repeats merged), all saturated at threshold 0, 1 failure each
        # cut at 25% and 75%, each cut probed twice.
        pool = m["failure_prefix/pool_problems"]
        assert m["rollout/pass_rate/samples"] == 2 * pool
        assert m["rollout/mining/samples"] == 2 * m["failure_prefix/saturated_problems"] == 2 * pool
        assert m["rollout/probe/samples"] == 2 * m["failure_prefix/candidates"]
        assert m["failure_prefix/mined_problems"] == pool
    assert "rollout/probe/samples" not in lines[1]

    # Training prefixes come from training problems; the robustness prefixes of the
    # held-out evaluation from held-out problems only.
    assert {p.record.id for p in method.mined} <= train_ids
    with open(os.path.join(workdir, "eval", "misleading_prefixes.jsonl")) as f:
        robustness = [json.loads(line) for line in f]
    assert robustness and all(row["prefix_ids"] for row in robustness)
    assert {row["problem_id"] for row in robustness} == held_out_ids
    assert not held_out_ids & train_ids
    evals = [m for m in read_metrics(workdir) if "eval/misleading_prefix_accuracy" in m]
    assert [m["step"] for m in evals] == [0, 3]
    assert all(m["eval/misleading_prefix_problems"] == c.eval.max_problems for m in evals)


def run_command(policy, workdir, steps):
    return [sys.executable, "-m", "rl_reason.main", "--config=configs/failure_prefix.py:tiny",
            f"--workdir={workdir}", f"--config.model.checkpoint={policy}",
            f"--config.train.num_steps={steps}", "--config.train.eval_every=0",
            "--config.eval.max_problems=4", "--config.loss.entropy_coef=0.01",
            "--config.optim.learning_rate=0.001", "--config.optim.warmup_steps=0",
            "--config.verifier.num_workers=1"]


def trained_lines(workdir):
    keep = ("step", "loss", "reward_mean", "generated_tokens", "budget/generated_tokens")
    return [{k: v for k, v in m.items() if k in keep or k.startswith("failure_prefix/")}
            for m in read_metrics(workdir) if "loss" in m]


@pytest.mark.slow
def test_a_run_killed_after_a_refresh_continues_exactly(tiny_policy, tmp_path):
    """Mining at steps 0, 2 and 4 (refresh_every=2); the run is SIGKILLed once step 3
    is checkpointed (after the first refresh), and the resumed run, which refreshes
    again at step 4, matches an uninterrupted one: metrics, mined prefixes used, budget
    and final parameters."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
               XLA_FLAGS="--xla_force_host_platform_device_count=1")
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    subprocess.run(run_command(tiny_policy, straight, 5), cwd=root, env=env, check=True,
                   timeout=900)
    proc = subprocess.Popen(run_command(tiny_policy, killed, 5), cwd=root, env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    target = os.path.join(killed, "checkpoints", "3")
    deadline = time.time() + 900
    while not os.path.isdir(target) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)   # the trainer and its verifier worker
    proc.wait()
    subprocess.run(run_command(tiny_policy, killed, 5), cwd=root, env=env, check=True,
                   timeout=900)

    lines = trained_lines(straight)
    assert [m["failure_prefix/mining"] for m in lines] == [1, 0, 1, 0, 1]
    assert [m["failure_prefix/refreshes"] for m in lines] == [0, 0, 1, 1, 2]
    assert trained_lines(killed) == lines
    a, b = (models.load(os.path.join(w, "hf")).params for w in (straight, killed))
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)),
                 a, b)
