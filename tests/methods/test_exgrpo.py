"""ExGRPO, mechanism by mechanism, on hand-worked cases; then end to end on the tiny
policy (with a verifier that marks about half of all responses correct)."""

import dataclasses
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from exgrpo_helpers import FakeContext, HalfCorrectVerifier, group, record, sample, tiny_config
from configs import exgrpo as exgrpo_config
from rl_reason import checkpoint, models, run_setup, train
from rl_reason.config_check import ConfigError, check
from rl_reason.methods.components import experience
from rl_reason.methods.exgrpo.method import ExGRPO
from rl_reason.methods.components.experience import Trajectory, text_key
from rl_reason.data.stream import PromptStream
from rl_reason.rl import losses
from rl_reason.verifiers import VerifyResult


@pytest.fixture(scope="module")
def tokenizer(tiny_policy):
    return models.load_tokenizer(tiny_policy)


def method_with(tokenizer, **overrides):
    return ExGRPO(tiny_config(**overrides), tokenizer)


def stored(tokenizer, response, logp=None):
    response = np.asarray(response, np.int32)
    logp = np.asarray(logp if logp is not None else np.full(len(response), -0.5), np.float32)
    return Trajectory(response, logp, text_key(tokenizer.decode(response.tolist(),
                                                                skip_special_tokens=True)))


# ---------------------------------------------------------------------- question selection
def test_bucket_weights_are_the_normal_density_of_k_renormalised():
    # G = 8: N(k; 4, 1) = exp(-(k-4)^2 / 2) / sqrt(2 pi).
    density = {4: 0.398942, 3: 0.241971, 5: 0.241971, 2: 0.053991, 6: 0.053991,
               1: 0.004432, 7: 0.004432}
    full = experience.bucket_weights(range(1, 8), group_size=8)
    total = sum(density.values())                                   # 0.999700
    for k, d in density.items():
        assert full[k] == pytest.approx(d / total, abs=1e-6)
    # Only buckets 3, 4 and 7 hold questions: 0.241971 + 0.398942 + 0.004432 = 0.645345.
    some = experience.bucket_weights([4, 3, 7, 4], group_size=8)
    assert some == pytest.approx({3: 0.374948, 4: 0.618184, 7: 0.006868}, abs=1e-6)


def test_bucket_counts_cap_a_small_bucket_and_hand_the_excess_on():
    # Buckets 3 and 4: p = 0.241971 / 0.640913 = 0.377541 and 0.622459. Bucket 4 holds
    # one question: whenever the multinomial gives it 2 or 3, it gives 1 and bucket 3
    # the rest, so bucket 4 gives 1 unless the draw gave it none: 1 - 0.377541^3 = 0.946187.
    probs = experience.bucket_weights([3, 4], 8)
    rng = np.random.default_rng(0)
    draws = [experience.bucket_counts({3: 5, 4: 1}, probs, 3, rng) for _ in range(5000)]
    assert all(d[3] + d[4] == 3 and d[4] <= 1 for d in draws)
    assert np.mean([d[4] for d in draws]) == pytest.approx(0.946187, abs=0.01)
    # Asking for every question there is gives each bucket its size.
    assert experience.bucket_counts({3: 5, 4: 1}, probs, 6, rng) == {3: 5, 4: 1}
    # Every bucket full: all of them, once each.
    probs = experience.bucket_weights([1, 4, 7], 8)
    assert experience.bucket_counts({1: 1, 4: 1, 7: 1}, probs, 3,
                                    np.random.default_rng(0)) == {1: 1, 4: 1, 7: 1}


def test_bucketed_selection_draws_buckets_by_weight_and_questions_uniformly():
    buckets = {1: ["a"], 4: ["b", "c"], 6: ["d"]}
    rng = np.random.default_rng(0)
    draws = [experience.select_questions(buckets, 1, 8, rng)[0] for _ in range(20000)]
    freq = {q: draws.count(q) / len(draws) for q in "abcd"}
    # Buckets 1, 4, 6: 0.004432, 0.398942, 0.053991 -> 0.00969, 0.87230, 0.11805;
    # b and c share bucket 4's half each.
    assert freq["a"] == pytest.approx(0.00969, abs=0.003)
    assert freq["b"] == pytest.approx(0.43615, abs=0.01)
    assert freq["c"] == pytest.approx(0.43615, abs=0.01)
    assert freq["d"] == pytest.approx(0.11805, abs=0.01)
    # Without replacement: asking for more than there are gives each question once.
    assert sorted(experience.select_questions(buckets, 9, 8, rng)) == ["a", "b", "c", "d"]


def test_uniform_question_selection_ignores_k():
    buckets = {1: ["a"], 4: ["b"]}
    rng = np.random.default_rng(0)
    draws = [experience.select_questions(buckets, 1, 8, rng, mode="uniform")[0]
             for _ in range(10000)]
    assert draws.count("a") / len(draws) == pytest.approx(0.5, abs=0.02)


# ---------------------------------------------------------------------- trajectory selection
def test_pick_trajectory_lowest_highest_random():
    rng = np.random.default_rng(0)
    entropies = [0.5, 0.2, 0.9]
    assert experience.pick_trajectory(entropies, "lowest_entropy", rng) == 1
    assert experience.pick_trajectory(entropies, "highest_entropy", rng) == 2
    picks = [experience.pick_trajectory(entropies, "random", rng) for _ in range(3000)]
    assert [picks.count(i) / 3000 for i in range(3)] == pytest.approx([1 / 3] * 3, abs=0.04)


def buffer_with(method, tokenizer, questions):
    """questions: [(record index, k, [responses])] stored under context [1, 2, 3]."""
    for i, k, responses in questions:
        method.buffer.update(record(i), [1, 2, 3], k, [stored(tokenizer, r) for r in responses])


def test_prepare_replays_n_exp_questions_and_draws_the_rest_fresh(tokenizer):
    # tiny: B = 4 prompts, G = 4; rho 0.5 -> n_exp = 2.
    m = method_with(tokenizer)
    buffer_with(m, tokenizer, [(1, 2, [[10, 11]]), (2, 2, [[12]]), (3, 1, [[13]])])
    fake = FakeContext(m.config, tokenizer)
    assert len(m.prepare(fake.ctx)) == 4 and fake.drawn == [4]   # mixing off: all fresh
    m.mixing = True
    requests = m.prepare(fake.ctx)
    assert fake.drawn[-1] == 2
    replays = [r for r in requests if r.tag == "replay"]
    assert len(replays) == 2 and all(r.num_samples == 3 for r in replays)
    assert all(r.num_samples == 4 and r.tag == "fresh" for r in requests if r not in replays)
    assert fake.ctx.metrics["exgrpo/replay_share"] == 0.5
    # rho 0.75 asks for 3, but only 3 questions are eligible; with 1 eligible, 1.
    m = method_with(tokenizer, **{"method.replay_ratio": 0.75})
    m.mixing = True
    buffer_with(m, tokenizer, [(1, 2, [[10]])])
    fake = FakeContext(m.config, tokenizer)
    assert [r.tag for r in m.prepare(fake.ctx)].count("replay") == 1 and fake.drawn == [3]
    buffer_with(m, tokenizer, [(2, 2, [[11]]), (3, 2, [[12]]), (4, 2, [[13]])])
    assert [r.tag for r in m.prepare(fake.ctx)].count("replay") == 3 and fake.drawn[-1] == 1


@pytest.mark.parametrize("mode, expected", [("lowest_entropy", [20, 21]),
                                            ("highest_entropy", [30, 31, 32])])
def test_prepare_picks_the_trajectory_by_its_entropy(tokenizer, mode, expected):
    m = method_with(tokenizer, **{"method.trajectory_selection": mode})
    m.mixing = True
    buffer_with(m, tokenizer, [(1, 3, [[10, 11, 12], [20, 21], [30, 31, 32]])])
    entropy = {(10, 11, 12): 0.7, (20, 21): 0.3, (30, 31, 32): 0.9}
    fake = FakeContext(m.config, tokenizer, entropy_of=lambda t, s: entropy[tuple(t[s:])])
    replay, = [r for r in m.prepare(fake.ctx) if r.tag == "replay"]
    # Every stored trajectory was scored after its context, in one call.
    assert fake.scored == [[([1, 2, 3, 10, 11, 12], 3), ([1, 2, 3, 20, 21], 3),
                            ([1, 2, 3, 30, 31, 32], 3)]]
    assert m._replayed[0].response == expected and m._replayed[0].request is replay
    assert replay.context == [1, 2, 3]
    assert fake.ctx.metrics["exgrpo/selected_entropy"] == entropy[tuple(expected)]
    # Fake scores say log p = -1 on every token; recorded log-probs are -0.5.
    assert fake.ctx.metrics["exgrpo/replay_w_mean"] == pytest.approx(math.exp(-0.5))
    assert fake.ctx.metrics["exgrpo/replay_w_std"] == pytest.approx(0.0, abs=1e-7)


def test_selection_averages_entropy_over_the_response_not_padding(tiny_policy, tokenizer,
                                                                  tmp_path):
    """With the real scorer: a short and a long stored response, where the short one
    has the higher mean entropy per own token but the smaller sum. The method picks the
    long one, as a direct per-token computation says; averaging over the padded row
    (the released code's bug) would pick the short one."""
    from rl_reason.rl.logprobs import token_logprobs

    c = tiny_config(tiny_policy, **{"train.eval_every": 0})
    trainer = train.Trainer(c, str(tmp_path / "score"))
    params = trainer.state.params
    context = [5, 6, 7, 8]

    def own_entropies(responses):
        """Per-token entropies of each response after `context`, each scored alone."""
        out = []
        for length in sorted({len(r) for r in responses}):
            same = [r for r in responses if len(r) == length]
            tokens = jnp.array([context + r for r in same])
            _, entropy = token_logprobs(params, trainer.model_config, tokens,
                                        jnp.ones(tokens.shape, bool), with_entropy=True)
            out += list(zip(map(tuple, same), np.asarray(entropy)[:, len(context):]))
        found = dict(out)
        return [found[tuple(r)] for r in responses]

    long = list(range(40, 80))
    long_entropy, = own_entropies([long])
    candidates = [[a, b] for a in range(20, 120) for b in (20, 30)]
    short, short_entropy = next((r, e) for r, e in zip(candidates, own_entropies(candidates))
                                if e.mean() > long_entropy.mean())
    # Averaged over the same padded width (the released code's bug), the comparison is
    # one of sums, and the 2-token response has the smaller sum.
    assert short_entropy.sum() < long_entropy.sum()
    padded_choice = int(np.argmin([short_entropy.sum(), long_entropy.sum()]))
    direct_choice = int(np.argmin([short_entropy.mean(), long_entropy.mean()]))
    assert (padded_choice, direct_choice) == (0, 1)
    long_mean = float(long_entropy.mean())

    m = ExGRPO(c, trainer.tokenizer)
    m.mixing = True
    m.buffer.update(record(1), context, 2, [stored(tokenizer, short), stored(tokenizer, long)])
    fake = FakeContext(c, tokenizer)
    fake.ctx.score = lambda sequences: trainer.score(params, sequences)
    m.prepare(fake.ctx)
    assert m._replayed[0].response == long
    assert fake.ctx.metrics["exgrpo/selected_entropy"] == pytest.approx(long_mean, abs=1e-5)
    trainer.close()


# ---------------------------------------------------------------------- batch and loss
def replay_step(tokenizer, **overrides):
    """A mixing step by hand: one replay group (stored [20, 21] + 3 fresh, 1 of them
    correct) and one fresh group of 4 (2 correct)."""
    m = method_with(tokenizer, **overrides)
    m.mixing = True
    m.buffer.update(record(1), [1, 2, 3], 2, [stored(tokenizer, [20, 21], [-0.7, -0.2])])
    fake = FakeContext(m.config, tokenizer, records=[record(2)])
    requests = m.prepare(fake.ctx)
    replay_req, fresh_req = requests
    replay_req.group, fresh_req.group = "q1#0", "q2#1"   # as the engine names them
    samples = [sample(replay_req, [30 + i], c, tokenizer) for i, c in enumerate([1, 0, 0])]
    samples += [sample(fresh_req, [40 + i], c, tokenizer) for i, c in enumerate([1, 1, 0, 0])]
    return m, fake, samples


def test_replay_group_rows_share_one_advantage_baseline(tokenizer):
    m, fake, samples = replay_step(tokenizer)
    rows = m.build_batch(samples, fake.ctx)
    assert len(rows) == 8
    # Replay group rewards [1, 0, 0] fresh + 1 stored: mean 0.5, no std.
    assert [r.advantage for r in rows[:3]] == [0.5, -0.5, -0.5]
    assert [r.advantage for r in rows[3:7]] == [0.5, 0.5, -0.5, -0.5]
    stored_row = rows[7]
    assert stored_row.advantage == 0.5 and stored_row.group == "q1#0"
    assert stored_row.tokens == [1, 2, 3, 20, 21]
    np.testing.assert_array_equal(stored_row.loss_mask, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(stored_row.off_policy, [0, 0, 0, 1, 1])
    np.testing.assert_allclose(stored_row.behaviour_logp, [0, 0, 0, -0.7, -0.2])
    assert all(r.off_policy is None for r in rows[:7])
    assert fake.ctx.metrics["exgrpo/off_policy_token_share"] == pytest.approx(2 / 9)
    # Switch: std-normalised; both groups hold two 1s and two 0s, sample std
    # sqrt(4 * 0.25 / 3) = 0.577350, so A = +-0.5 / 0.577350 = +-0.866025.
    m, fake, samples = replay_step(tokenizer, **{"advantage.norm_by_std": True})
    rows = m.build_batch(samples, fake.ctx)
    assert rows[7].advantage == pytest.approx(0.866025, abs=1e-5)
    assert rows[1].advantage == pytest.approx(-0.866025, abs=1e-5)


def test_loss_settings_follow_the_mixing_flag(tokenizer):
    m = method_with(tokenizer)
    before = m.loss_config()
    assert before.clip_on_policy and before.entropy_coef == 0.001 and before.kl_coef == 0
    assert before.off_policy_weight == "shaped" and before.shaping_gamma == 0.1
    m.mixing = True
    assert not m.loss_config().clip_on_policy
    m = method_with(tokenizer, **{"method.drop_clip_when_mixing": False})
    m.mixing = True
    assert m.loss_config().clip_on_policy
    c = tiny_config()
    assert (c.optim.skip_grad_norm_above, c.optim.grad_clip) == (500.0, 1.0)
    assert not m.needs_reference()


def two_token_loss(config, *, logp_on, old_on, logp_off, behaviour_off, advantage=0.5):
    """policy_loss of one on-policy and one replayed token, token-mean, no entropy."""
    logp = jnp.array([[logp_on, logp_off]])
    loss, metrics = losses.policy_loss(
        logp, jnp.array([[old_on, 0.0]]), jnp.array([advantage]), jnp.ones((1, 2)), config,
        off_policy_BT=jnp.array([[False, True]]),
        behaviour_logp_BT=jnp.array([[0.0, behaviour_off]]))
    return float(loss), metrics


def test_shaped_loss_by_hand(tokenizer):
    m = method_with(tokenizer, **{"loss.entropy_coef": 0.0})
    clipped = m.loss_config()
    m.mixing = True
    mixing = m.loss_config()
    # On-policy ratio e^0.5 = 1.648721; replayed w = e^(-1 - (-2)) = e = 2.718282,
    # f(w) = w / (w + 0.1) = 0.964533. A = 0.5, token-mean over the two tokens.
    args = dict(logp_on=-1.0, old_on=-1.5, logp_off=-1.0, behaviour_off=-2.0)
    loss, metrics = two_token_loss(mixing, **args)
    assert loss == pytest.approx((-0.5 * 1.648721 - 0.5 * 0.964533) / 2, abs=1e-5)
    assert float(metrics["off_policy_w_mean"]) == pytest.approx(2.718282, abs=1e-5)
    # Before mixing the on-policy ratio is clipped at 1.2; the replayed token never is.
    loss, _ = two_token_loss(clipped, **args)
    assert loss == pytest.approx((-0.5 * 1.2 - 0.5 * 0.964533) / 2, abs=1e-5)
    # Switches: the raw ratio (w = 2.718282, unclipped) and no correction (value 1).
    ratio = dataclasses.replace(mixing, off_policy_weight="ratio")
    assert two_token_loss(ratio, **args)[0] == pytest.approx(
        (-0.5 * 1.648721 - 0.5 * 2.718282) / 2, abs=1e-5)
    none = dataclasses.replace(mixing, off_policy_weight="none")
    assert two_token_loss(none, **args)[0] == pytest.approx(
        (-0.5 * 1.648721 - 0.5 * 1.0) / 2, abs=1e-5)
    # Gradient of the replayed token's term w.r.t. its log-prob: -A * f'(w) * w
    # = -0.5 * 0.1 * w / (w + 0.1)^2 = -0.5 * 0.034214 / 2 (token-mean) at w = e.
    grad = jax.grad(lambda lp: losses.policy_loss(
        jnp.array([[-1.0, lp]]), jnp.array([[-1.5, 0.0]]), jnp.array([0.5]), jnp.ones((1, 2)),
        mixing, off_policy_BT=jnp.array([[False, True]]),
        behaviour_logp_BT=jnp.array([[0.0, -2.0]]))[0])(-1.0)
    assert float(grad) == pytest.approx(-0.5 * 0.1 * 2.718282 / 2.818282 ** 2 / 2, abs=1e-6)


# ---------------------------------------------------------------------- ablation variants
def variant_method(tokenizer, variant=""):
    """configs/exgrpo.py:tiny[,variant] as an ExGRPO method, mixing on."""
    m = ExGRPO(tiny_config(variant=variant), tokenizer)
    m.mixing = True
    return m


def replayed_counts(tokenizer, variant):
    """Replay groups of one step with 4 eligible questions (B = 4)."""
    m = variant_method(tokenizer, variant)
    buffer_with(m, tokenizer, [(i, 2, [[10 + i]]) for i in range(1, 5)])
    return sum(r.tag == "replay" for r in m.prepare(FakeContext(m.config, tokenizer).ctx))


def picked_responses(tokenizer, variant, seeds):
    """The trajectory replayed for one question of three stored trajectories (mean
    entropies 0.7, 0.3, 0.9), one step per seed."""
    entropy = {(10, 11, 12): 0.7, (20, 21): 0.3, (30, 31, 32): 0.9}
    picks = []
    for seed in seeds:
        m = variant_method(tokenizer, variant)
        buffer_with(m, tokenizer, [(1, 3, [[10, 11, 12], [20, 21], [30, 31, 32]])])
        m.prepare(FakeContext(m.config, tokenizer, seed=seed,
                              entropy_of=lambda t, s: entropy[tuple(t[s:])]).ctx)
        picks.append(tuple(m._replayed[0].response))
    return picks


def middle_bucket_share(tokenizer, variant, steps=200):
    """How often one step's 2 replayed questions include the only question at k = 2
    (G/2, the bucket weighted most), next to 9 questions at k = 1."""
    chosen = 0
    for seed in range(steps):
        m = variant_method(tokenizer, variant)
        buffer_with(m, tokenizer, [(1, 2, [[10]])] + [(i, 1, [[10 + i]]) for i in range(2, 11)])
        m.prepare(FakeContext(m.config, tokenizer, seed=seed).ctx)
        chosen += any(s.request.record.id == "q1" for s in m._replayed)
    return chosen / steps


def off_policy_term(tokenizer, variant):
    """The loss of one replayed token with w = e and A = 0.5 (no on-policy token)."""
    m = variant_method(tokenizer, variant)
    config = dataclasses.replace(m.loss_config(), entropy_coef=0.0)
    loss, _ = losses.policy_loss(
        jnp.array([[-1.0]]), jnp.array([[0.0]]), jnp.array([0.5]), jnp.ones((1, 1)), config,
        off_policy_BT=jnp.array([[True]]), behaviour_logp_BT=jnp.array([[-2.0]]))
    return float(loss)


# Each ablation against the default, on the mechanism it switches off or changes.
def check_rho025(tok):
    # n_exp = floor(rho * B) with B = 4: 1 replay group, against the default's 2.
    assert (replayed_counts(tok, "rho025"), replayed_counts(tok, "")) == (1, 2)


def check_rho075(tok):
    assert (replayed_counts(tok, "rho075"), replayed_counts(tok, "")) == (3, 2)


def check_highest_entropy(tok):
    # The highest mean entropy (0.9), where the default takes the lowest (0.3).
    assert set(picked_responses(tok, "highest_entropy", range(5))) == {(30, 31, 32)}
    assert set(picked_responses(tok, "", range(5))) == {(20, 21)}


def check_random_trajectory(tok):
    # Each of the three in 30 steps, where the default always takes the lowest.
    assert len(set(picked_responses(tok, "random_trajectory", range(30)))) == 3
    assert set(picked_responses(tok, "", range(30))) == {(20, 21)}


def check_no_question_selection(tok):
    # Uniform over the 10 questions: q1 is one of the 2 drawn 20% of the time; bucketed
    # (weights N(k; 2, 1)), bucket 2 gets a draw with probability 1 - 0.377541^2 = 0.857.
    assert middle_bucket_share(tok, "no_question_selection") < 0.35
    assert middle_bucket_share(tok, "") > 0.75


def check_no_shaping(tok):
    # The raw ratio, -A * w = -0.5 * e, against the shaped -A * w / (w + 0.1).
    assert off_policy_term(tok, "no_shaping") == pytest.approx(-0.5 * 2.718282, abs=1e-5)
    assert off_policy_term(tok, "") == pytest.approx(-0.5 * 0.964533, abs=1e-5)


ABLATION_CHECKS = {"rho025": check_rho025, "rho075": check_rho075,
                   "highest_entropy": check_highest_entropy,
                   "random_trajectory": check_random_trajectory,
                   "no_question_selection": check_no_question_selection,
                   "no_shaping": check_no_shaping}


@pytest.mark.parametrize("variant", sorted(ABLATION_CHECKS))
def test_each_ablation_variant_changes_its_mechanism(tokenizer, variant):
    assert set(ABLATION_CHECKS) == set(exgrpo_config.ABLATIONS)   # none left unchecked
    ABLATION_CHECKS[variant](tokenizer)


# ---------------------------------------------------------------------- after the step
def test_delayed_start_switches_once_accuracy_exceeds_the_threshold(tokenizer):
    m = method_with(tokenizer, **{"method.mixing_threshold": 0.35})
    fake = FakeContext(m.config, tokenizer)

    def step(num_correct, of=20):
        flags = [i < num_correct for i in range(of)]
        samples = []
        for g in range(of // 4):   # groups of 4, never all correct
            samples += group(record(g), [[50 + g * 4 + j] for j in range(4)],
                             flags[g::of // 4], tokenizer, f"g{g}")
        m.after_step(samples, fake.ctx)
        return fake.ctx.metrics["exgrpo/fresh_accuracy"]

    assert step(7) == 0.35 and not m.mixing            # equal is not above
    assert len(m.buffer) == 0                          # nothing stored before the switch
    assert step(8) == 0.4 and m.mixing
    assert len(m.buffer) == 0                          # the switching step is not stored
    assert step(0) == 0.0 and m.mixing                 # on for good
    restored = method_with(tokenizer)
    restored.restore(m.state())
    assert restored.mixing and not restored.loss_config().clip_on_policy


def test_all_correct_groups_are_retired_mixing_or_not(tokenizer):
    m = method_with(tokenizer)
    buffer_with(m, tokenizer, [(1, 3, [[10]]), (2, 1, [[11]])])
    fake = FakeContext(m.config, tokenizer)
    samples = (group(record(1), [[60], [61], [62], [63]], [1, 1, 1, 1], tokenizer, "a")
               + group(record(3), [[64], [65], [66], [67]], [1, 1, 1, 0], tokenizer, "b"))
    m.after_step(samples, fake.ctx)
    assert fake.retired == ["q1"] and 1 not in [int(q[1:]) for q in m.buffer.entries]
    assert list(m.buffer.entries) == ["q2"]
    assert fake.ctx.metrics["exgrpo/retired"] == 1
    # A replay group whose 3 fresh samples are all correct retires its question too.
    m.mixing = True
    fake = FakeContext(m.config, tokenizer, records=[])
    m.prepare(fake.ctx)
    req = m._replayed[0].request
    req.group = "q2#0"
    m.after_step([sample(req, [70 + i], True, tokenizer) for i in range(3)], fake.ctx)
    assert fake.retired == ["q2"] and len(m.buffer) == 0 and m.retired == 2


def test_storing_dedups_by_text_and_updates_k(tokenizer):
    m = method_with(tokenizer)
    m.mixing = True
    fake = FakeContext(m.config, tokenizer)
    # 2 of 4 correct with the same text: one trajectory, k = 2, the policy log-probs.
    first = group(record(1), [[10, 11], [10, 11], [12], [13]], [1, 1, 0, 0], tokenizer, "a")
    m.after_step(first, fake.ctx)
    entry = m.buffer.entries["q1"]
    assert entry.k == 2 and [t.response.tolist() for t in entry.trajectories] == [[10, 11]]
    np.testing.assert_array_equal(entry.trajectories[0].logprobs, [-0.5, -0.5])
    np.testing.assert_array_equal(entry.context, [1, 2, 3])
    # Later: 3 of 4, one already stored: two more, k = 3.
    m.after_step(group(record(1), [[10, 11], [14], [15], [16]], [1, 1, 1, 0], tokenizer, "b"),
                 fake.ctx)
    assert entry.k == 3 and [t.response.tolist() for t in entry.trajectories] == [
        [10, 11], [14], [15]]
    # None correct: k and trajectories unchanged (the released code skips such groups).
    m.after_step(group(record(1), [[17], [18], [19], [20]], [0, 0, 0, 0], tokenizer, "c"),
                 fake.ctx)
    assert entry.k == 3 and len(entry.trajectories) == 3
    # A replay group counts its stored trajectory in k and does not store it twice.
    fake = FakeContext(m.config, tokenizer, records=[])
    m.prepare(fake.ctx)
    req = m._replayed[0].request
    req.group = "q1#0"
    m.after_step([sample(req, [21], True, tokenizer), sample(req, [22], False, tokenizer),
                  sample(req, [23], False, tokenizer)], fake.ctx)
    assert entry.k == 2 and len(entry.trajectories) == 4
    assert fake.ctx.metrics["exgrpo/bucket/2"] == 1
    assert fake.ctx.metrics["exgrpo/buffer_trajectories"] == 4


def test_store_before_mixing_switch(tokenizer):
    samples = None
    for before, expected in [(False, 0), (True, 1)]:
        m = method_with(tokenizer, **{"method.store_before_mixing": before,
                                      "method.mixing_threshold": 1.0})
        samples = group(record(1), [[10], [11], [12], [13]], [1, 0, 0, 0], tokenizer, "a")
        m.after_step(samples, FakeContext(m.config, tokenizer).ctx)
        assert len(m.buffer) == expected and not m.mixing


def test_buffer_state_round_trips_exactly_through_a_checkpoint_encoding(tokenizer):
    m = method_with(tokenizer)
    m.mixing, m.retired = True, 3
    buffer_with(m, tokenizer, [(2, 3, [[10, 11, 12], [13]]), (1, 1, [[14, 15]])])
    m.buffer.update(record(3), [9], 2, [stored(tokenizer, [16], [-1.25])])
    skeleton, arrays = checkpoint.encode_method_state(m.state())
    state = checkpoint.decode_method_state(skeleton, arrays)
    restored = method_with(tokenizer)
    restored.restore(state)
    assert (restored.mixing, restored.retired) == (True, 3)
    assert list(restored.buffer.entries) == ["q2", "q1", "q3"]   # insertion order kept
    for qid, entry in m.buffer.entries.items():
        other = restored.buffer.entries[qid]
        assert (other.record, other.k) == (entry.record, entry.k)
        np.testing.assert_array_equal(other.context, entry.context)
        for a, b in zip(entry.trajectories, other.trajectories, strict=True):
            assert a.key == b.key and b.response.dtype == np.int32
            np.testing.assert_array_equal(a.response, b.response)
            np.testing.assert_array_equal(a.logprobs, b.logprobs)
    with pytest.raises(ValueError, match="no ExGRPO state"):
        method_with(tokenizer).restore({})


# ---------------------------------------------------------------------- config, workdir, plan
@pytest.mark.parametrize("key, value, message", [
    ("method.replay_ratio", 1.5, "method.replay_ratio=1.5"),
    ("method.question_selection", "greedy", "method.question_selection='greedy'"),
    ("method.trajectory_selection", "shortest", "method.trajectory_selection='shortest'"),
    ("method.bucket_sd", 0.0, "method.bucket_sd=0.0"),
    ("rollout.dynamic_sampling", True, "rollout.dynamic_sampling=True"),
])
def test_bad_method_settings_fail_before_compute(key, value, message):
    c = tiny_config(**{key: value})
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        check(c, num_devices=1)


def test_a_config_without_the_method_block_is_named():
    from configs import grpo
    c = grpo.get_config("")
    c.unlock()
    c.method_name = "exgrpo"
    with pytest.raises(ConfigError, match="missing .*'replay_ratio'"):
        check(c, num_devices=1)


def test_an_old_grpo_workdir_is_not_resumed_as_exgrpo(tmp_path, capsys):
    from configs import grpo
    workdir = str(tmp_path / "exgrpo")
    run_setup.prepare_workdir(workdir, grpo.get_config(""))
    with pytest.raises(run_setup.WorkdirMismatchError,
                       match="method_name: 'grpo' there, 'exgrpo' now"):
        run_setup.prepare_workdir(workdir, tiny_config())
    # The buffer's k counts out of G: another group size is another run too.
    workdir = str(tmp_path / "g")
    run_setup.prepare_workdir(workdir, tiny_config())
    with pytest.raises(run_setup.WorkdirMismatchError, match="rollout.group_size: 4 there"):
        run_setup.prepare_workdir(workdir, tiny_config(**{"rollout.group_size": 8}))
    # Other keys only earn a note.
    run_setup.prepare_workdir(workdir, tiny_config(**{"method.replay_ratio": 0.25}))
    assert "method.replay_ratio" in capsys.readouterr().out


def test_plan_counts_the_buffer_in_host_memory():
    from configs import exgrpo
    from rl_reason import plan
    from rl_reason.models import get_preset
    c = exgrpo.get_config("qwen3_4b")
    p = plan.plan(c, get_preset("qwen3-4b-base"), num_devices=64, hbm_gib=16)
    # 500 steps x 128 prompts, 4 trajectories of 8192 tokens x 8 bytes + 1024 x 4 context.
    expected = 500 * 128 * (4 * 8192 * 8 + 1024 * 4)
    assert p.host_bytes["replay_buffer"] == expected
    assert "replay_buffer" in p.table() and "host" in p.table()
    assert p.total == sum(p.bytes_per_device.values())   # not counted against HBM


# ---------------------------------------------------------------------- end to end
class SomeAlwaysSolvedVerifier(HalfCorrectVerifier):
    """HalfCorrectVerifier, except that every response to a question whose answer is a
    multiple of 3 is correct: those groups are all correct, so the run retires some."""

    def verify_batch(self, responses, answers):
        return [VerifyResult(1.0, "correct", str(answer)) if int(answer) % 3 == 0 else result
                for result, answer in zip(super().verify_batch(responses, answers), answers)]


def test_tiny_run_mixes_replays_and_stores(tiny_policy, tmp_path, monkeypatch):
    monkeypatch.setattr(run_setup, "make_verifier", lambda _: SomeAlwaysSolvedVerifier())
    # What the stream was asked to serve and to retire, recorded outside the method.
    drawn, retired = [], []
    next_records, retire = PromptStream.next_records, PromptStream.retire

    def recorded_next_records(self, count):
        records = next_records(self, count)
        drawn.extend(records)
        return records

    def recorded_retire(self, ids):
        retired.extend(ids)
        retire(self, ids)

    monkeypatch.setattr(PromptStream, "next_records", recorded_next_records)
    monkeypatch.setattr(PromptStream, "retire", recorded_retire)
    workdir = str(tmp_path / "run")
    c = tiny_config(tiny_policy, **{"method.mixing_threshold": 0.0, "train.num_steps": 3,
                                    "train.eval_every": 0})
    train.run(c, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f if '"loss"' in line]
    assert [m["exgrpo/mixing"] for m in lines] == [0.0, 1.0, 1.0]
    assert lines[0]["exgrpo/buffer_questions"] == 0          # not stored before mixing
    assert lines[1]["exgrpo/replay_groups"] == 0             # empty buffer: all fresh
    assert lines[1]["exgrpo/buffer_questions"] > 0
    third = lines[2]
    assert third["exgrpo/replay_groups"] == min(2, lines[1]["exgrpo/buffer_questions"])
    assert third["rollout/replay/samples"] == 3 * third["exgrpo/replay_groups"]
    assert third["samples"] == 4 * (4 - third["exgrpo/replay_groups"])   # headline: fresh
    assert third["off_policy_fraction"] == pytest.approx(third["exgrpo/off_policy_token_share"],
                                                         abs=1e-6)
    assert third["off_policy_fraction"] > 0 and third["clip_fraction"] == 0
    assert third["off_policy_w_mean"] > 0
    # Every drawn question the verifier always solves was retired, and only those or
    # questions a group of 4 solved by chance (1 in 16); the method's counters agree.
    always = {r.id for r in drawn if int(r.answer) % 3 == 0}
    assert always and always <= set(retired) and len(retired) == len(set(retired))
    assert lines[-1]["exgrpo/retired"] == len(retired)
    assert sum(m["exgrpo/retired_this_step"] for m in lines) == len(retired)
