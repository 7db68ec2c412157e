"""Multi-attempt RL by hand: scripted episodes through the real rollout engine (cuts,
feedback, the shared budget, per-row budgets in one sampler call per round, rewards,
rows, advantages, metrics), the settings, and a tiny run through the trainer that
resumes exactly."""

import json
import os

import jax
import numpy as np
import pytest

from configs import multi_attempt as ma_config
from rl_reason import models, train
from rl_reason.config_check import ConfigError, check
from rl_reason.data import templates
from rl_reason import episodes as episodes_lib
from rl_reason.protocol import StepContext
from rl_reason.methods.multi_attempt.method import MultiAttempt, MultiAttemptSettings, episode_reward

import scripted_step  # noqa: E402
from scripted_step import make_record  # noqa: E402


QA = make_record("What is 3+4?", "7")
QB = make_record("What is 2*5?", "10")


def config(**method):
    c = ma_config.get_config("tiny")
    c.unlock()
    c.rollout.update(prompts_per_step=2, group_size=2, max_new_tokens=40)
    c.method.update(**(dict(min_attempts=3, max_attempts=3) | method))
    return c


@pytest.fixture(scope="module")
def tok(tiny_policy):
    return models.load_tokenizer(tiny_policy)


# Episodes A0, A1 (question A, answer 7) and B0, B1 (question B, answer 10), N = 3,
# one budget of 40 tokens each. Token counts: the tiny tokenizer's (digits,
# punctuation and most letters one token each; "boxed" and " \\" one token).
SCRIPT = [
    [("3+4=8. \\boxed{8} so", True),      # A0: 11 tokens up to the box (wrong), 3 cut
     ("I think it is seven " * 3, False),  # A1: no box, runs out of its 40 tokens
     ("2*5=12. \\boxed{12}", True),        # B0: 13 + end-of-turn, wrong
     ("2*5=11. \\boxed{11}", True)],       # B1: 13 + end-of-turn, wrong
    [("\\boxed{7}", True),                 # A0: correct at attempt 2
     ("2*5=12. \\boxed{12}", True),        # B0: wrong again, repeats 12
     ("2*5 is " * 10, False)],             # B1: runs out of its 26 tokens left
    [("\\boxed{12}", True)],               # B0: wrong a third time; attempts spent
]


def run_step(c, tok, monkeypatch, script=SCRIPT, records=(QA, QB)):
    method = MultiAttempt(c, tok)
    return (method, *scripted_step.run_step(method, c, tok, monkeypatch, script, records))


def test_hand_worked_episodes_through_the_engine(tok, monkeypatch):
    method, samples, rows, ctx, sampler = run_step(config(), tok, monkeypatch)
    # Each round samples the next attempt of every live episode in one sampler call,
    # each row with what is left of its episode's budget: A0 40-11, B0 and B1 40-14,
    # then B0 26-14.
    assert [call["budgets"] for call in sampler.calls] == [[40] * 4, [29, 26, 26], [12]]
    A0, A1, B0, B1 = episodes = episodes_lib.episodes_of(samples)
    assert [len(e.attempts) for e in episodes] == [2, 1, 3, 2]
    assert [e.group for e in episodes] == [f"{QA.id}#episodes0"] * 2 + [f"{QB.id}#episodes1"] * 2
    assert all(e.max_attempts == 3 for e in episodes)
    assert "You have 3 attempts" in tok.decode(A0.prompt)
    assert A0.solved and A1.out_of_budget and B1.out_of_budget and not B0.out_of_budget
    # Rewards (sticky): solved +1; A1 never answered -1; B0 three wrong answers -0.5;
    # B1 a wrong answer, then out of tokens: -0.5.
    assert [episode_reward(e, method.settings) for e in episodes] == [1.0, -1.0, -0.5, -0.5]
    # Advantages (GRPO: sample std): group A's rewards (1, -1) have mean 0 and std
    # sqrt(2), so +-1/sqrt(2); group B's are equal, 0.
    h = 2 ** -0.5
    np.testing.assert_allclose([r.advantage for r in rows], [h, -h, 0, 0], atol=1e-5)

    # A0's row is the ids as sampled: attempt 1 up to its box (" so" and the end of turn
    # cut), the feedback block (its own <|im_end|> closes the attempt), attempt 2 with
    # its end-of-turn, trained.
    first = sampler.calls[0]
    prompt = first["contexts"][0]
    attempt_1 = tok.encode("3+4=8. \\boxed{8}", add_special_tokens=False)
    feedback = tok.encode(f"<|im_end|>\n<|im_start|>user\n{templates.attempt_feedback(2)}"
                          "<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)
    attempt_2 = tok.encode("\\boxed{7}", add_special_tokens=False) + [3]
    assert sampler.calls[1]["contexts"][0] == prompt + attempt_1 + feedback
    assert rows[0].tokens == prompt + attempt_1 + feedback + attempt_2
    np.testing.assert_array_equal(rows[0].loss_mask, np.concatenate([
        np.zeros(len(prompt)), np.ones(11), np.zeros(len(feedback)), np.ones(6)]))
    # B0's last row equals its last context plus its last attempt as sampled; the
    # end-of-turn closing each failed attempt is masked with the feedback.
    last_context = sampler.calls[2]["contexts"][0]
    assert rows[2].tokens == last_context + tok.encode("\\boxed{12}", add_special_tokens=False) + [3]
    mask = rows[2].loss_mask
    assert mask.sum() == 13 + 13 + 7
    closes = [i for i, t in enumerate(rows[2].tokens) if t == 3 and i >= len(prompt)]
    assert [mask[i] for i in closes] == [0, 0, 0, 0, 1]   # 2 sampled, 2 in blocks, the last

    # Headline outcomes count episodes; the per-step metrics, worked out.
    outcomes = method.outcomes(samples)
    assert [(o.reward, o.correct, o.truncated) for o in outcomes] == [
        (1.0, True, False), (-1.0, False, True), (-0.5, False, False), (-0.5, False, True)]
    assert outcomes[0].length == 15 + 6
    m = ctx.metrics
    assert m["multi_attempt/episodes"] == 4 and m["multi_attempt/attempts_per_episode"] == 2.0
    assert (m["multi_attempt/attempt_1/count"], m["multi_attempt/attempt_1/accuracy"]) == (4, 0.0)
    assert (m["multi_attempt/attempt_2/count"], m["multi_attempt/attempt_2/accuracy"]) == (3, 1 / 3)
    assert (m["multi_attempt/attempt_3/count"], m["multi_attempt/attempt_3/accuracy"]) == (1, 0.0)
    assert (m["multi_attempt/outcome/solved"], m["multi_attempt/outcome/wrong"],
            m["multi_attempt/outcome/no_answer"]) == (0.25, 0.5, 0.25)
    # Later answers: A0 "7" (new), B0 "12" twice (repeats); B1's second has none.
    assert m["multi_attempt/answer_repeat_rate"] == 2 / 3
    assert m["multi_attempt/out_of_tokens"] == 0.5
    assert m["multi_attempt/cut_tokens"] == 4            # A0's " so" and end-of-turn


def test_last_attempt_rule_and_reward_values(tok, monkeypatch):
    c = config(reward_rule="last_attempt", reward_correct=2.0, reward_no_answer=-3.0)
    method, samples, rows, _, _ = run_step(c, tok, monkeypatch)
    # B1's last attempt ran out of tokens: now reward_no_answer, and group B differs.
    assert [episode_reward(e, method.settings) for e in episodes_lib.episodes_of(samples)] == [
        2.0, -3.0, -0.5, -3.0]
    h = 2 ** -0.5
    np.testing.assert_allclose([r.advantage for r in rows], [h, -h, h, -h], atol=1e-5)


def test_attempt_budget_per_question_or_per_episode(tok, monkeypatch):
    records = [make_record(f"What is {i}+1?", str(i + 1)) for i in range(8)]
    for per, shared in (("question", True), ("episode", False)):
        c = config(min_attempts=1, max_attempts=5, budget_per=per)
        c.rollout.update(prompts_per_step=8, group_size=4)
        method = MultiAttempt(c, tok)
        ctx = StepContext(step=0, config=c, tokenizer=tok, rng=np.random.default_rng(1),
                          draw_records=lambda n: records[:n], retire=None, rollout=None,
                          score=None)
        requests = method.prepare(ctx)
        assert len(requests) == 32 and all(r.max_new_tokens == 40 for r in requests)
        by_group = {}
        for r in requests:
            n = r.meta["episode"].max_attempts
            assert f"You have {n} attempt" in tok.decode(r.context)
            by_group.setdefault(r.group, set()).add(n)
        assert len(by_group) == 8
        assert all(len(ns) == 1 for ns in by_group.values()) == shared
        assert set().union(*by_group.values()) <= {1, 2, 3, 4, 5}


def test_settings_are_checked_before_compute():
    check(config(), num_devices=1)
    for method, message in [(dict(min_attempts=4, max_attempts=2), "min_attempts=4"),
                            (dict(budget_per="step"), "budget_per='step'"),
                            (dict(reward_rule="first"), "reward_rule='first'")]:
        with pytest.raises(ConfigError, match=message):
            check(config(**method), num_devices=1)
    c = config()
    c.method.attempts = 3
    with pytest.raises(ConfigError, match=r"unknown multi_attempt keys \['attempts'\]"):
        check(c, num_devices=1)
    c = config()
    c.rollout.dynamic_sampling = True
    with pytest.raises(ConfigError, match="dynamic_sampling"):
        check(c, num_devices=1)
    assert MultiAttemptSettings.from_config(config()).max_attempts == 3


def tiny_run_config(policy, **train):
    c = ma_config.get_config("tiny")
    c.unlock()
    c.model.checkpoint = policy
    c.rollout.update(prompts_per_step=2, group_size=4)
    c.train.update(export_hf=True, eval_every=0, **train)
    c.eval.update(max_problems=2, num_samples=1, ks=(1,), attempts=2)
    c.optim.update(learning_rate=1e-3, warmup_steps=0)
    c.loss.entropy_coef = 0.01     # a gradient even when a random policy earns nothing
    c.verifier.num_workers = 1
    return c


def test_tiny_run_through_the_trainer(tiny_policy, tmp_path):
    workdir = str(tmp_path / "run")
    train.run(tiny_run_config(tiny_policy, num_steps=2), workdir)
    lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    steps = [m for m in lines if "loss" in m]
    assert len(steps) == 2
    for m in steps:
        # Headline metrics count episodes (2 questions x 4); samples are attempts.
        assert m["samples"] == m["multi_attempt/episodes"] == 8 and m["rows"] == 8
        assert m["rollout/fresh/samples"] == sum(
            m[f"multi_attempt/attempt_{i}/count"] for i in range(1, 6))
        assert m["sampler_calls"] == max(i for i in range(1, 6)
                                         if m[f"multi_attempt/attempt_{i}/count"])
        assert -1.0 <= m["reward_mean"] <= 1.0 and m["update_applied"] == 1.0
    # Evaluated with k attempts before and after training.
    assert "eval/attempts@2" in lines[0] and "eval/attempts_answer_repeat_rate" in lines[-1]
    start = models.load(tiny_policy).params
    end = models.load(os.path.join(workdir, "hf")).params
    moved = jax.tree.map(lambda x, y: float(np.abs(np.asarray(x) - np.asarray(y)).max()),
                         start, end)
    assert max(jax.tree.leaves(moved)) > 0


@pytest.mark.slow
def test_tiny_run_resumes_exactly(tiny_policy, tmp_path):
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    train.run(tiny_run_config(tiny_policy, num_steps=2), straight)
    train.run(tiny_run_config(tiny_policy, num_steps=1), resumed)
    train.run(tiny_run_config(tiny_policy, num_steps=2), resumed)
    a, b = (models.load(os.path.join(w, "hf")).params for w in (straight, resumed))
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)
    keep = ("reward_mean", "loss", "multi_attempt/attempts_per_episode")
    rows = lambda w: [{k: m.get(k) for k in keep} for m in map(
        json.loads, open(os.path.join(w, "metrics.jsonl"))) if "loss" in m]
    assert rows(straight) == rows(resumed)
