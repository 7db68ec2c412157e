"""LTE (rl_reason/methods/lte/method.py): the three prompt kinds and the no-answer hint,
replacement and its cap, rows rebuilt under the plain prompt with the hinted
log-probs as the off-policy denominator, the metrics, the control arm, and end-to-end
runs where the hint never reaches a training row or the held-out evaluation."""

import json
import math
import os

import numpy as np
import pytest

from configs import lte as lte_config
from rl_reason import models, run_setup, train
from rl_reason.config_check import ConfigError, check
from rl_reason.data import synthetic, templates
from rl_reason.methods.registry import METHODS
from rl_reason.methods.components import hints
from rl_reason.methods.lte import method as lte
from rl_reason.protocol import FRESH, Request, Sample, StepContext, TokenScores
from rl_reason.rl import batch as batch_lib
from rl_reason.rl.losses import LossConfig, policy_loss
from rl_reason.verifiers.result import VerifyResult

G = 4
RECORD = synthetic.train_records(1, seed=5)[0]


@pytest.fixture(scope="module")
def tokenizer(tiny_policy):
    return models.load_tokenizer(tiny_policy)


def plain_ids(tokenizer, record=RECORD):
    return templates.encode_prompt(tokenizer, templates.plain_prompt(record.problem))


def sample(request, response, status="wrong", extracted=None, truncated=False,
           policy_logprobs=None):
    """A verified sample made by hand; `status` 'correct' gives reward 1."""
    if status == "wrong" and extracted is None:
        extracted = "0"
    p = np.full(len(response), np.log(0.5), np.float32) if policy_logprobs is None else \
        np.asarray(policy_logprobs, np.float32)
    return Sample(request=request, response=list(response), logprobs=p.copy(),
                  policy_logprobs=p, truncated=truncated, text="", status=status,
                  reward=float(status == "correct"),
                  extracted=extracted if status != "no_answer" else None)


def fresh_group(tokenizer, name, outcomes, record=RECORD):
    """G fresh samples of one group: outcomes are (status, extracted, truncated)."""
    req = Request(record=record, context=plain_ids(tokenizer, record), num_samples=len(outcomes),
                  group=name)
    response = req.context[-3:]   # plain-prompt ids: never hint-only ids
    return [sample(req, response, status, extracted, truncated)
            for status, extracted, truncated in outcomes]


def make_ctx(config, tokenizer, score=None, seed=0):
    return StepContext(step=0, config=config, tokenizer=tokenizer,
                       rng=np.random.default_rng(seed), draw_records=None, retire=None,
                       rollout=None, score=score or (lambda sequences: []))


def make_method(tokenizer, variant=""):
    config = lte_config.get_config(",".join(filter(None, ["tiny", variant])))
    config.unlock()
    config.rollout.group_size = G
    return lte.LTE(config, tokenizer), config


WRONG, NONE_, RIGHT = "wrong", "no_answer", "correct"


# ------------------------------------------------------------------ the prompt kinds

def test_choose_prompt_by_truncation_with_the_wrong_answers_of_untruncated_responses(tokenizer):
    def kind(outcomes, concise=True):
        return hints.choose_prompt(fresh_group(tokenizer, "g", outcomes), concise)

    # None truncated: the hint lists distinct wrong answers, first seen first; a response
    # without an answer, and one the verifier timed out on, add nothing.
    assert kind([(WRONG, "31", False), (WRONG, " 40", False), (WRONG, "31", False),
                 (NONE_, None, False), ("timeout", "12", False)]) == ("hint", ["31", "40"])
    # Some truncated: concise + hint, listing only the untruncated responses' answers.
    assert kind([(WRONG, "9", True), (WRONG, "31", False), (NONE_, None, True),
                 (WRONG, "40", False)]) == ("concise_hint", ["31", "40"])
    # All truncated: concise, no answers (even if a truncated response boxed one).
    assert kind([(WRONG, "9", True), (NONE_, None, True)]) == ("concise", [])
    # No final answer anywhere: the hint says so (no answers to list).
    assert kind([(NONE_, None, False)] * 4) == ("hint", [])
    assert kind([(NONE_, None, True), (NONE_, None, False)]) == ("concise_hint", [])
    # The no-concise ablation: always the hint.
    assert kind([(WRONG, "9", True), (NONE_, None, True)], concise=False) == ("hint", [])
    assert kind([(WRONG, "9", True), (WRONG, "31", False)], concise=False) == ("hint", ["31"])


def test_prompt_messages_are_the_template_wordings():
    q = "What is 2+3?"
    reason = "Please reason step by step, and put your final answer within \\boxed{}."
    concise = ("Your earlier answers were too long. Please reason step by step more concisely, "
               "and put your final answer within \\boxed{}.")
    hint = "Hint: these answers are incorrect: 4, 6. Do not mention this hint in your answer."
    no_answer = ("Hint: earlier attempts ended without a final answer in \\boxed{}. "
                 "Do not mention this hint in your answer.")
    text = lambda kind, wrong: hints.prompt_messages(kind, q, wrong)[0]["content"]
    assert text("hint", ["4", "6"]) == f"{q}\n{reason}\n{hint}"
    assert text("hint", []) == f"{q}\n{reason}\n{no_answer}"
    assert text("concise", []) == f"{q}\n{concise}"
    assert text("concise_hint", ["4", "6"]) == f"{q}\n{concise}\n{hint}"
    assert text("concise_hint", []) == f"{q}\n{concise}\n{no_answer}"
    assert text("plain", []) == f"{q}\n{reason}"


def test_follow_up_asks_for_G_hinted_samples_per_none_pass_group_in_the_same_group(tokenizer):
    method, config = make_method(tokenizer)
    samples = (fresh_group(tokenizer, "solved", [(RIGHT, "7", False)] + [(WRONG, "1", False)] * 3)
               + fresh_group(tokenizer, "wrong", [(WRONG, "31", False), (WRONG, "40", False),
                                                  (NONE_, None, False), (WRONG, "31", False)])
               + fresh_group(tokenizer, "long", [(WRONG, "5", True)] * 4))
    requests = method.follow_up(samples, make_ctx(config, tokenizer))
    assert [(r.group, r.tag, r.num_samples, r.meta["kind"]) for r in requests] == [
        ("wrong", "hinted", G, "hint"), ("long", "hinted", G, "concise")]
    q = RECORD.problem
    assert requests[0].context == templates.encode_prompt(
        tokenizer, templates.hint_prompt(q, ["31", "40"]))
    assert tokenizer.decode(requests[0].context).count("these answers are incorrect: 31, 40.") == 1
    assert requests[1].context == templates.encode_prompt(tokenizer, templates.concise_prompt(q))
    assert all(r.meta["plain_context"] == plain_ids(tokenizer) and r.record is RECORD
               for r in requests)
    # One round of hints per step: once hinted samples exist, nothing more is asked.
    hinted = [sample(requests[0], [5])]
    assert method.follow_up(samples + hinted, make_ctx(config, tokenizer)) == []


def test_control_asks_for_the_same_extra_samples_on_the_plain_prompt(tokenizer):
    method, config = make_method(tokenizer, "grpo_extra_rollouts")
    samples = (fresh_group(tokenizer, "wrong", [(WRONG, "31", False)] * 4)
               + fresh_group(tokenizer, "long", [(WRONG, "5", True)] * 4))
    requests = method.follow_up(samples, make_ctx(config, tokenizer))
    assert [(r.group, r.tag, r.num_samples, r.meta["kind"]) for r in requests] == [
        ("wrong", "extra", G, "plain"), ("long", "extra", G, "plain")]
    assert all(r.context == plain_ids(tokenizer) for r in requests)


# ------------------------------------------------------------- replacement and the cap

def test_replacement_takes_only_correct_untruncated_extras_and_caps_at_G_minus_1(tokenizer):
    originals = fresh_group(tokenizer, "g", [(WRONG, "1", False)] * 4)
    req = Request(record=RECORD, context=[1, 2], num_samples=4, group="g", tag="hinted")
    good = [sample(req, [10 + i], RIGHT, "7") for i in range(4)]
    bad = [sample(req, [20], RIGHT, "7", truncated=True), sample(req, [21], WRONG, "1"),
           sample(req, [22], NONE_)]

    def positions(chosen, among):   # samples hold arrays: compare by identity
        return [next(i for i, x in enumerate(among) if x is s) for s in chosen]

    kept, added = hints.replace_failures(originals, bad + good[:2], cap=True,
                                       rng=np.random.default_rng(0))
    assert positions(added, good) == [0, 1] and len(kept) == 2
    kept_at = positions(kept, originals)
    assert kept_at == sorted(kept_at)   # the kept originals stay in order

    # Four successes: capped at G - 1 = 3 (one failure left to contrast with) ...
    kept, added = hints.replace_failures(originals, good, cap=True, rng=np.random.default_rng(0))
    assert len(positions(kept, originals)) == 1 and len(set(positions(added, good))) == 3
    # ... and all four without the cap.
    kept, added = hints.replace_failures(originals, good, cap=False, rng=np.random.default_rng(0))
    assert kept == [] and positions(added, good) == [0, 1, 2, 3]
    # No success: nothing replaced.
    kept, added = hints.replace_failures(originals, bad, cap=True, rng=np.random.default_rng(0))
    assert positions(kept, originals) == [0, 1, 2, 3] and added == []


def test_replaced_failures_are_random_and_fixed_by_the_rng(tokenizer):
    originals = fresh_group(tokenizer, "g", [(WRONG, "1", False)] * 4)
    req = Request(record=RECORD, context=[1, 2], num_samples=4, group="g", tag="hinted")
    good = [sample(req, [10 + i], RIGHT, "7") for i in range(2)]

    def dropped(seed):
        kept, _ = hints.replace_failures(originals, good, cap=True,
                                       rng=np.random.default_rng(seed))
        return tuple(i for i, s in enumerate(originals) if all(s is not k for k in kept))

    assert dropped(3) == dropped(3)
    assert len({dropped(seed) for seed in range(20)}) > 2   # not always the same two


# ------------------------------------------------------------------- the batch

def hand_worked_step(tokenizer, variant=""):
    """Three groups of G=4: 'a' mixed (no extras); 'b' none-pass, untruncated, two of
    its hinted samples succeed (one more is correct but truncated); 'c' none-pass, all
    truncated, all four hinted samples succeed (G' capped at 3)."""
    method, config = make_method(tokenizer, variant)
    a = fresh_group(tokenizer, "a", [(RIGHT, "7", False), (WRONG, "5", False),
                                     (WRONG, "6", False), (NONE_, None, False)])
    b = fresh_group(tokenizer, "b", [(WRONG, "31", False), (WRONG, "40", False),
                                     (WRONG, "31", False), (NONE_, None, False)])
    c = fresh_group(tokenizer, "c", [(WRONG, "5", True)] * 4)
    ctx = make_ctx(config, tokenizer)
    req_b, req_c = method.follow_up(a + b + c, ctx)
    plain = plain_ids(tokenizer)
    hinted_b = [sample(req_b, plain[-3:], RIGHT, "7", policy_logprobs=np.log([0.25] * 3)),
                sample(req_b, plain[-2:], RIGHT, "7", truncated=True),
                sample(req_b, plain[-2:], WRONG, "31"),
                sample(req_b, plain[-1:], RIGHT, "7", policy_logprobs=np.log([0.5]))]
    hinted_c = [sample(req_c, plain[-2:], RIGHT, "7") for _ in range(4)]
    return method, config, a, b, c, hinted_b, hinted_c


def test_batch_rows_advantages_and_metrics_by_hand(tokenizer):
    method, config, a, b, c, hinted_b, hinted_c = hand_worked_step(tokenizer)
    plain = plain_ids(tokenizer)
    scored = []

    def score(sequences):   # the current policy gives every response token p = 0.5
        scored.extend(sequences)
        return [TokenScores(np.full(len(t) - start, np.log(0.5), np.float32), 0.0)
                for t, start in sequences]

    ctx = make_ctx(config, tokenizer, score=score)
    rows = method.build_batch(a + b + c + hinted_b + hinted_c, ctx)
    assert len(rows) == 3 * G   # replacement keeps every group at G members

    by_group = {g: [r for r in rows if r.group == g] for g in "abc"}
    # a: rewards [1, 0, 0, 0]: mean 1/4, unbiased std 1/2.
    np.testing.assert_allclose([r.advantage for r in by_group["a"]], [1.5, -0.5, -0.5, -0.5],
                               rtol=1e-5)
    # b: two of its failures replaced by the two correct untruncated hinted responses:
    # rewards [0, 0, 1, 1]: mean 1/2, std sqrt(1/3).
    s3 = 0.5 / math.sqrt(1 / 3)
    np.testing.assert_allclose([r.advantage for r in by_group["b"]], [-s3, -s3, s3, s3], rtol=1e-5)
    # c: four successes, capped at G - 1 = 3: rewards [0, 1, 1, 1]: mean 3/4, std 1/2.
    np.testing.assert_allclose([r.advantage for r in by_group["c"]], [-1.5, 0.5, 0.5, 0.5],
                               rtol=1e-5)

    originals = [r for r in rows if r.off_policy is None]
    hinted = [r for r in rows if r.off_policy is not None]
    assert len(originals) == 4 + 2 + 1 and len(hinted) == 2 + 3
    for row in originals:   # on-policy, under their own (plain) prompt
        assert row.tokens[:len(plain)] == plain and row.loss_mask[:len(plain)].sum() == 0
    hinted_samples = [hinted_b[0], hinted_b[3]] + hinted_c[:3]
    for row, s in zip(hinted, hinted_samples):
        # The row is the plain prompt followed by the response: the hint is not in it.
        assert row.tokens == plain + s.response
        n = len(plain)
        assert not row.off_policy[:n].any() and row.off_policy[n:].all()
        assert row.loss_mask[:n].sum() == 0 and row.loss_mask[n:].all()
        # The denominator of w: the policy log-probs recorded under the hinted prompt.
        np.testing.assert_array_equal(row.behaviour_logp[n:], s.policy_logprobs)
    hint_only = set(hinted_b[0].request.context) - set(plain)
    assert hint_only and not any(hint_only & set(row.tokens) for row in rows)

    # The numerator of w: the current policy scored on plain prompt + response.
    assert scored == [(plain + s.response, len(plain)) for s in hinted_samples]
    m = ctx.metrics
    # w = 0.5 / 0.25 on b's first response (3 tokens), 0.5 / 0.5 elsewhere (1 + 3 x 2).
    assert m["lte/hinted_w_mean"] == pytest.approx((3 * 2.0 + 1 + 6) / 10)
    assert m["lte/none_pass_fraction"] == pytest.approx(2 / 3)
    assert (m["lte/extra_prompts"], m["lte/extra_prompts/hint"], m["lte/extra_prompts/concise"],
            m["lte/extra_prompts/concise_hint"], m["lte/no_answer_hints"]) == (2, 1, 1, 0, 0)
    assert m["lte/extra_success_rate"] == pytest.approx(6 / 8)
    assert (m["lte/replaced"], m["lte/rescued_groups"]) == (5, 2)
    assert m["lte/extra_generated_tokens"] == 3 + 2 + 2 + 1 + 4 * 2


def test_without_the_cap_a_solved_hinted_group_has_no_contrast(tokenizer):
    method, config, a, b, c, hinted_b, hinted_c = hand_worked_step(tokenizer, "no_cap")
    ctx = make_ctx(config, tokenizer, score=lambda seqs: [
        TokenScores(np.zeros(len(t) - s, np.float32), 0.0) for t, s in seqs])
    rows = method.build_batch(a + b + c + hinted_b + hinted_c, ctx)
    c_rows = [r for r in rows if r.group == "c"]
    assert len(c_rows) == G and all(r.off_policy is not None for r in c_rows)
    assert [r.advantage for r in c_rows] == [0.0] * G
    assert ctx.metrics["lte/replaced"] == 2 + 4


def test_control_trains_its_extra_successes_on_policy(tokenizer):
    method, config = make_method(tokenizer, "grpo_extra_rollouts")
    b = fresh_group(tokenizer, "b", [(WRONG, "31", False)] * 4)
    req, = method.follow_up(b, make_ctx(config, tokenizer))
    extras = [sample(req, [7], RIGHT, "7"), sample(req, [8], WRONG, "3")] + \
             [sample(req, [9], NONE_) for _ in range(2)]
    ctx = make_ctx(config, tokenizer)
    rows = method.build_batch(b + extras, ctx)
    assert len(rows) == G and all(r.off_policy is None for r in rows)
    assert rows[-1].tokens == plain_ids(tokenizer) + [7]
    np.testing.assert_allclose([r.advantage for r in rows], [-0.5, -0.5, -0.5, 1.5], rtol=1e-5)
    assert "lte/hinted_w_mean" not in ctx.metrics
    assert (ctx.metrics["lte/extra_prompts/plain"], ctx.metrics["lte/replaced"]) == (1, 1)


def test_hinted_row_loss_uses_w_of_the_plain_row_over_the_hinted_record(tokenizer):
    """Loss of one hinted row with A = 0.5 and two response tokens: recorded (hinted)
    p = 0.25, 0.5; current policy on the plain row p = 0.5, 0.5; so w = 2, 1 and the
    token-mean loss is -0.5 * (2/2.1 + 1/1.1) / 2; with 'ratio', -0.5 * (2 + 1) / 2."""
    from rl_reason.methods.components import common

    plain = plain_ids(tokenizer)
    hinted_req = Request(record=RECORD, context=[9, 9, 9] + plain, num_samples=1, group="g",
                         tag="hinted", meta={"plain_context": plain})
    s = sample(hinted_req, [5, 6], RIGHT, "7", policy_logprobs=np.log([0.25, 0.5]))
    row = common.response_row(s, 0.5, off_policy=True, context=plain)
    batch = batch_lib.collate([row], row_multiple=1, seq_bucket=8, pad_id=0)
    logp = np.where(batch["loss_mask"] > 0, np.log(0.5), 0.0)   # current policy, plain row
    for weight, expected in (("shaped", -0.5 * (2 / 2.1 + 1 / 1.1) / 2),
                             ("ratio", -0.5 * (2 + 1) / 2)):
        loss, metrics = policy_loss(
            logp, logp, batch["advantages"], batch["loss_mask"],
            LossConfig(off_policy_weight=weight), off_policy_BT=batch["off_policy"],
            behaviour_logp_BT=batch["behaviour_logp"])
        assert float(loss) == pytest.approx(expected, rel=1e-5)
        assert float(metrics["off_policy_w_mean"]) == pytest.approx(1.5, rel=1e-5)
        assert float(metrics["clip_fraction"]) == 0.0


# -------------------------------------------------------------------- settings

def test_every_variant_is_valid_and_switches_what_it_names():
    for variant in ("", "tiny", "qwen25_math_1p5b", "qwen3_4b") + lte_config.VARIANTS:
        check(lte_config.get_config(variant), num_devices=8)
    c = lambda v: lte_config.get_config(v)
    assert (c("").method.extra_prompt, c("").loss.entropy_coef) == ("hinted", 0.0)
    assert c("lte_entropy").loss.entropy_coef == lte_config.ENTROPY_COEF > 0
    assert c("grpo_extra_rollouts").method.extra_prompt == "plain"
    assert c("no_shaping").loss.off_policy_weight == "ratio"
    assert c("no_concise").method.concise is False
    assert c("no_cap").method.cap_replacements is False
    with pytest.raises(ValueError, match="unknown config variant 'dapo'"):
        lte_config.get_config("dapo")


@pytest.mark.parametrize("key, value, message", [
    ("method.extra_prompt", "hints", "method.extra_prompt='hints'"),
    ("rollout.dynamic_sampling", True, "LTE does not refill batches"),
])
def test_bad_lte_settings_fail_before_compute(key, value, message):
    c = lte_config.get_config("")
    c.unlock()
    section, name = key.split(".")
    c[section][name] = value
    with pytest.raises(ConfigError, match=message):
        check(c, num_devices=1)


def test_settings_built_by_hand_are_checked_too():
    with pytest.raises(ConfigError, match="method.concise=1 must be True or False"):
        lte.LTESettings(concise=1)


# ------------------------------------------------------------ with the rollout engine

class AllWrong:
    """Every response wrong with answer '3' (the concise-branch test needs failures)."""

    def verify_batch(self, texts, answers):
        return [VerifyResult(0.0, "wrong", "3") for _ in texts]

    def close(self):
        pass


def test_concise_branches_fire_when_responses_run_out_of_length(tiny_policy, tokenizer):
    import jax
    from configs import base
    from rl_reason.rollout import RolloutEngine

    model = models.load(tiny_policy)
    method, config = make_method(tokenizer)
    records = synthetic.train_records(3, seed=1)
    kinds = {}
    for budget in (2, 64):
        cfg = base.get_base_config().rollout
        cfg.update(max_new_tokens=budget)
        engine = RolloutEngine(tokenizer, AllWrong(), cfg,
                               stop_token_ids=model.config.eos_token_ids, pad_id=0)
        fresh = engine.rollout(model, [Request(record=r, context=plain_ids(tokenizer, r),
                                               num_samples=G) for r in records],
                               jax.random.PRNGKey(0))
        requests = method.follow_up(fresh, make_ctx(config, tokenizer))
        groups = hints.groups_of(fresh)
        assert len(requests) == len(records)
        for r in requests:
            expected, _ = hints.choose_prompt(groups[r.group])
            assert r.meta["kind"] == expected
        kinds[budget] = [r.meta["kind"] for r in requests]
    # Two new tokens: every response is cut off, so every group gets the concise prompt.
    assert kinds[2] == ["concise"] * 3
    assert kinds[64] != kinds[2]


# -------------------------------------------------------------------- end to end

class ScriptedVerifier:
    """A batch of 16 (the fresh round: 4 prompts x 4) gets one correct response in group
    0; group 1 answers 11, 12, 10 and gives no answer once; group 2 answers 22, 20, 21, 22;
    group 3 never answers. Any smaller batch (hinted rounds) is correct on even rows."""

    def verify_batch(self, texts, answers):
        out = []
        for i, _ in enumerate(texts):
            group = i // G
            if len(texts) != 16:
                ok = i % 2 == 0
                out.append(VerifyResult(float(ok), "correct" if ok else "wrong", "99"))
            elif group == 0 and i == 0:
                out.append(VerifyResult(1.0, "correct", "7"))
            elif group == 3 or i == 7:
                out.append(VerifyResult(0.0, "no_answer", None))
            else:
                out.append(VerifyResult(0.0, "wrong", str(10 * group + i % 3)))
        return out

    def close(self):
        pass


class RecordingLTE(lte.LTE):
    """LTE that keeps each step's requests and rows, and scores each trained hinted
    response under its hinted prompt (to compare with the recorded log-probs)."""

    log: list = []

    def build_batch(self, samples, ctx):
        rows = super().build_batch(samples, ctx)
        hinted = [s for s in samples if s.request.tag == "hinted" and hints.is_success(s)]
        under_hint = ctx.score([(s.request.context + s.response, len(s.request.context))
                                for s in hinted])
        plain = [s.request.meta["plain_context"] for s in hinted]
        under_plain = ctx.score([(p + s.response, len(p)) for p, s in zip(plain, hinted)])
        gap = lambda a, b: max(float(np.abs(x - y).max()) for x, y in zip(a, b))
        self.log.append(dict(
            samples=list(samples), rows=rows,
            denominator_gap=gap([x.logprobs for x in under_hint],
                                [s.policy_logprobs for s in hinted]),
            hint_effect=gap([x.logprobs for x in under_hint], [x.logprobs for x in under_plain])))
        return rows


def e2e_config(policy, **method):
    c = lte_config.get_config("tiny")
    c.unlock()
    c.model.checkpoint = policy
    c.train.update(export_hf=False, num_steps=2, eval_every=0)
    c.rollout.update(group_size=G, prompts_per_step=4, max_new_tokens=16)
    c.eval.update(max_problems=4)
    c.verifier.num_workers = 1
    c.optim.update(learning_rate=1e-3, warmup_steps=0)
    c.method.update(method)
    return c


def read_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_lte_run_end_to_end(tiny_policy, tokenizer, tmp_path, monkeypatch):
    """A tiny run with a scripted verifier and many stop tokens (short, mostly finished
    responses): the counts of each step follow from the script; the hint reaches no
    training row and no evaluation prompt; w's numerator and denominator are the ones
    the docs say."""
    from rl_reason.evaluation.session import EvalSession

    monkeypatch.setitem(METHODS, "lte", RecordingLTE)
    RecordingLTE.log = []
    monkeypatch.setattr(run_setup, "make_verifier", lambda cfg: ScriptedVerifier())
    # Half the vocabulary stops a response: almost none runs out of its 16 tokens.
    vocab = len(tokenizer)
    monkeypatch.setattr(train.models, "stop_token_ids",
                        lambda tok, cfg: tuple(range(1, vocab // 2)))
    eval_prompts = []
    real_generate = EvalSession.generate

    def recording_generate(session, prompts, **kwargs):
        assert kwargs.get("prefixes") is None
        eval_prompts.extend(map(list, prompts))
        return real_generate(session, prompts, **kwargs)

    monkeypatch.setattr(EvalSession, "generate", recording_generate)
    workdir = str(tmp_path / "lte")
    train.run(e2e_config(tiny_policy), workdir)

    lines = [m for m in read_metrics(workdir) if "loss" in m]
    assert len(lines) == 2 and len(RecordingLTE.log) == 2
    for m, step in zip(lines, RecordingLTE.log):
        truncated = [s.truncated for s in step["samples"]]
        assert not any(truncated), "a response ran out of its budget: the script's counts need none"
        assert (m["samples"], m["rows"], m["rollout/hinted/samples"]) == (16, 16, 12)
        assert m["accuracy"] == pytest.approx(1 / 16) and m["none_pass_fraction"] == 0.75
        assert m["lte/none_pass_fraction"] == 0.75
        assert (m["lte/extra_prompts/hint"], m["lte/extra_prompts/concise"],
                m["lte/no_answer_hints"]) == (3, 0, 1)
        assert (m["lte/extra_success_rate"], m["lte/replaced"]) == (0.5, 6)
        assert m["lte/extra_generated_tokens"] == m["rollout/hinted/generated_tokens"] > 0
        assert m["generated_tokens"] == (m["rollout/fresh/generated_tokens"]
                                         + m["rollout/hinted/generated_tokens"])
        # The numerator (ctx.score on plain prompt + response) is what the training pass
        # computes on the row: the loss's w over the off-policy tokens matches.
        assert m["lte/hinted_w_mean"] == pytest.approx(m["off_policy_w_mean"], rel=1e-5)
        # The denominator: the recorded log-probs are the policy's under the hinted prompt.
        assert step["denominator_gap"] < 1e-5
        # The hint moves the policy's log-probs far more than these tolerances, so a row
        # trained under the hinted prompt (w = 1) would fail the checks above.
        assert step["hint_effect"] > 1e-3

        hinted_requests = {s.request.group: s.request for s in step["samples"]
                           if s.request.tag == "hinted"}
        texts = [tokenizer.decode(r.context) for r in hinted_requests.values()]
        assert sum("these answers are incorrect: 11, 12, 10." in t for t in texts) == 1
        assert sum("these answers are incorrect: 22, 20, 21." in t for t in texts) == 1
        assert sum(templates.NO_ANSWER_HINT in t for t in texts) == 1
        plain_contexts = {tuple(s.request.context) for s in step["samples"]
                          if s.request.tag == FRESH}
        for row in step["rows"]:
            text = tokenizer.decode(row.tokens)
            assert "Hint" not in text and "incorrect" not in text
            assert any(tuple(row.tokens[:len(p)]) == p for p in plain_contexts)

    # Evaluation saw only plain prompts: before training and after.
    records = run_setup.held_out_records(e2e_config(tiny_policy))
    plain = [plain_ids(tokenizer, r) for r in records]
    assert {tuple(p) for p in eval_prompts} == {tuple(p) for p in plain}
    assert not any("Hint" in tokenizer.decode(p) for p in eval_prompts)


@pytest.mark.slow
def test_resumed_lte_run_matches_uninterrupted(tiny_policy, tokenizer, tmp_path, monkeypatch):
    """The random replacements come from (seed, step): a run stopped after step 1 and
    resumed ends where an uninterrupted run does."""
    monkeypatch.setattr(run_setup, "make_verifier", lambda cfg: ScriptedVerifier())
    vocab = len(tokenizer)
    monkeypatch.setattr(train.models, "stop_token_ids",
                        lambda tok, cfg: tuple(range(1, vocab // 2)))
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    config = e2e_config(tiny_policy)
    config.eval.enabled = False
    train.run(config, straight)
    config.train.num_steps = 1
    train.run(config, resumed)
    config.train.num_steps = 2
    train.run(config, resumed)
    keep = ("loss", "grad_norm", "lte/replaced", "lte/hinted_w_mean", "off_policy_w_mean")
    rows = lambda w: [{k: m.get(k) for k in keep} for m in read_metrics(w) if "loss" in m]
    assert rows(straight) == rows(resumed)
    assert all(r["lte/replaced"] == 6 for r in rows(straight))
