"""LTE + ExGRPO (rl_reason/methods/lte_exgrpo/method.py) on a hand-worked step: hinted retries
only for the fresh none-pass groups, hinted successes and replayed trajectories as
off-policy members with their own recorded log-probs, hinted successes stored in the
buffer under the plain prompt; then end to end on the tiny policy."""

import json
import os

import numpy as np
import pytest

from configs import lte_exgrpo as lte_exgrpo_config
from exgrpo_helpers import FakeContext, HalfCorrectVerifier, record, sample, tiny_config
from rl_reason import models, run_setup, train
from rl_reason.config_check import ConfigError, check
from rl_reason.methods.components.experience import Trajectory, text_key
from rl_reason.methods.lte_exgrpo.method import LTEExGRPO
from rl_reason.verifiers import VerifyResult


@pytest.fixture(scope="module")
def tokenizer(tiny_policy):
    return models.load_tokenizer(tiny_policy)


def config(policy=None, variant="", **overrides):
    return tiny_config(policy, variant, config_module=lte_exgrpo_config, **overrides)


def mixing_step(tokenizer):
    """Mixing on, the buffer holds q1 (stored [20, 21] with recorded log-probs
    [-0.7, -0.2]); the step replays q1 (3 fresh samples, 1 correct) and draws q2 fresh
    (4 samples, none correct: a wrong boxed 5, a wrong boxed 6, two without answers)."""
    m = LTEExGRPO(config(), tokenizer)
    m.mixing = True
    response = np.asarray([20, 21], np.int32)
    m.buffer.update(record(1), [1, 2, 3], 2, [Trajectory(
        response, np.asarray([-0.7, -0.2], np.float32),
        text_key(tokenizer.decode(response.tolist(), skip_special_tokens=True)))])
    fake = FakeContext(m.config, tokenizer, records=[record(2)])
    replay_req, fresh_req = m.prepare(fake.ctx)
    replay_req.group, fresh_req.group = "q1#0", "q2#1"
    samples = [sample(replay_req, [30 + i], c, tokenizer) for i, c in enumerate([1, 0, 0])]
    fresh = [sample(fresh_req, [40 + i], False, tokenizer) for i in range(4)]
    for s, answer in zip(fresh, ["5", "6", None, None]):
        s.extracted = answer
        s.status = "wrong" if answer else "no_answer"
    return m, fake, samples + fresh


def test_hints_go_to_fresh_none_pass_groups_only(tokenizer):
    m, fake, samples = mixing_step(tokenizer)
    hinted, = m.follow_up(samples, fake.ctx)
    assert hinted.group == "q2#1" and hinted.tag == "hinted" and hinted.num_samples == 4
    assert hinted.meta["kind"] == "hint" and hinted.meta["wrong_answers"] == ["5", "6"]
    text = tokenizer.decode(hinted.context)
    assert "5, 6" in text and "What is 2+0?" in text
    assert hinted.meta["plain_context"] == samples[3].request.context
    # Once the hinted round is in, no more rounds.
    assert m.follow_up(samples + [sample(hinted, [50], True, tokenizer)], fake.ctx) == []


def test_rows_and_buffer_after_a_hinted_rescue(tokenizer):
    m, fake, samples = mixing_step(tokenizer)
    hinted_req, = m.follow_up(samples, fake.ctx)
    hinted = [sample(hinted_req, [50 + i], c, tokenizer, logp=[-1.5])
              for i, c in enumerate([1, 1, 0, 0])]
    rows = m.build_batch(samples + hinted, fake.ctx)
    by_group = {}
    for r in rows:
        by_group.setdefault(r.group, []).append(r)
    # Fresh group: 2 hinted successes replace 2 of the 4 failures; rewards [0, 0, 1, 1],
    # mean 0.5, no std: A = [-0.5, -0.5, 0.5, 0.5].
    fresh = by_group["q2#1"]
    assert [r.advantage for r in fresh] == [-0.5, -0.5, 0.5, 0.5]
    plain = samples[3].request.context
    for row, s in zip(fresh[2:], hinted[:2]):
        assert row.tokens == list(plain) + s.response         # the hint is never trained
        np.testing.assert_array_equal(row.off_policy, [0] * len(plain) + [1])
        np.testing.assert_allclose(row.behaviour_logp, [0] * len(plain) + [-1.5])
    assert all(r.off_policy is None for r in fresh[:2])
    assert fake.ctx.metrics["lte/replaced"] == 2
    # Replay group: rewards [1, 0, 0] fresh + the stored 1: A = [0.5, -0.5, -0.5, 0.5],
    # the stored row off-policy with its own recorded log-probs.
    replay = by_group["q1#0"]
    assert [r.advantage for r in replay] == [0.5, -0.5, -0.5, 0.5]
    assert replay[3].tokens == [1, 2, 3, 20, 21]
    np.testing.assert_allclose(replay[3].behaviour_logp, [0, 0, 0, -0.7, -0.2])

    m.after_step(samples + hinted, fake.ctx)
    # q2 (2 of 4 after the rescue) enters the buffer with both hinted successes, under
    # the plain prompt, with the log-probs recorded under the hint; q1 gets its new
    # fresh success and k = 2 (of its final group of 4).
    entry = m.buffer.entries["q2"]
    assert entry.k == 2 and entry.context.tolist() == list(plain)
    assert [t.response.tolist() for t in entry.trajectories] == [[50], [51]]
    np.testing.assert_allclose(entry.trajectories[0].logprobs, [-1.5])
    assert m.buffer.entries["q1"].k == 2
    assert sorted(t.response.tolist()[0] for t in m.buffer.entries["q1"].trajectories) == [20, 30]


def hinted_rescue(tokenizer, variant, hinted_correct):
    """A step of one fresh question, q2, mixing on: its 4 fresh samples are wrong, its
    hinted round is answered with `hinted_correct`; built and stepped."""
    m = LTEExGRPO(config(variant=variant), tokenizer)
    m.mixing = True
    fake = FakeContext(m.config, tokenizer, records=[record(2)])
    fresh_req, = m.prepare(fake.ctx)
    fresh_req.group = "q2#0"
    fresh = [sample(fresh_req, [40 + i], False, tokenizer) for i in range(4)]
    for s, answer in zip(fresh, ["5", "6", "7", "8"]):
        s.extracted = answer
    hinted_req, = m.follow_up(fresh, fake.ctx)
    hinted = [sample(hinted_req, [50 + i], c, tokenizer, logp=[-1.5])
              for i, c in enumerate(hinted_correct)]
    m.build_batch(fresh + hinted, fake.ctx)
    m.after_step(fresh + hinted, fake.ctx)
    return m, fake


def test_no_cap_a_group_solved_only_by_hints_is_neither_retired_nor_stored(tokenizer):
    """q2's 4 fresh samples all failed; all 4 hinted samples succeed. Without the cap
    they replace every failure, so the final group is all correct, but the policy
    solved nothing alone: q2 is not retired (it stays in the fresh stream) and not
    stored (k = 4 = G is no bucket)."""
    m, fake = hinted_rescue(tokenizer, "no_cap", [1, 1, 1, 1])
    assert fake.ctx.metrics["lte/replaced"] == 4
    assert fake.retired == [] and "q2" not in m.buffer.entries and m.retired == 0
    assert fake.ctx.metrics["exgrpo/retired_this_step"] == 0
    # With the cap (the default) the same round replaces 3: stored with k = 3.
    m, fake = hinted_rescue(tokenizer, "", [1, 1, 1, 1])
    assert fake.ctx.metrics["lte/replaced"] == 3 and fake.retired == []
    assert m.buffer.entries["q2"].k == 3 and len(m.buffer.entries["q2"].trajectories) == 3


def test_settings_need_both_blocks_and_refuse_the_plain_control():
    check(config(), num_devices=1)
    c = config()
    c.method.extra_prompt = "plain"
    with pytest.raises(ConfigError, match="plain-prompt control"):
        check(c, num_devices=1)
    c = config()
    with c.method.ignore_type():
        del c.method["concise"]
    with pytest.raises(ConfigError, match="missing \\['concise'\\]"):
        check(c, num_devices=1)


class SomeNeverSolvedVerifier(HalfCorrectVerifier):
    """HalfCorrectVerifier, except that every response to a question whose answer is a
    multiple of 3 is wrong: about a third of the fresh groups are none-pass, so the
    run has hinted rounds whatever the random tiny policy writes."""

    def verify_batch(self, responses, answers):
        return [result if int(answer) % 3 else VerifyResult(0.0, "wrong", "0")
                for result, answer in zip(super().verify_batch(responses, answers), answers)]


def test_tiny_run_hints_replays_and_stores(tiny_policy, tmp_path, monkeypatch):
    monkeypatch.setattr(run_setup, "make_verifier", lambda _: SomeNeverSolvedVerifier())
    workdir = str(tmp_path / "run")
    train.run(config(tiny_policy, **{"method.mixing_threshold": 0.0, "train.num_steps": 3,
                                     "train.eval_every": 0}), workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f if '"loss"' in line]
    assert [m["exgrpo/mixing"] for m in lines] == [0.0, 1.0, 1.0]
    assert lines[2]["exgrpo/replay_groups"] > 0
    # One hinted request of G = 4 samples per none-pass fresh group, every step; and
    # there were some (the verifier makes sure), so this is not vacuously true.
    for m in lines:
        fresh_groups = 4 - m["exgrpo/replay_groups"]
        none_pass = round(m["lte/none_pass_fraction"] * fresh_groups)
        assert m["lte/extra_prompts"] == none_pass
        assert m.get("rollout/hinted/samples", 0) == 4 * none_pass
    assert sum(m["lte/extra_prompts"] for m in lines) > 0
