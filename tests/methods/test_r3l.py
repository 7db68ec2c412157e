"""R3L by hand: report verdicts, a scripted step through the real rollout engine (base
episodes, reflections, the guided retry reusing the base episode's ids, the distilled
row without guidance, pivotal masks, positive experiences, advantages, metrics), the
ablation switches, the loss against a hand computation, and tiny runs through the
trainer."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import r3l as r3l_config
from rl_reason import models, train
from rl_reason.config_check import ConfigError, check
from rl_reason.data import packing, synthetic, templates, warm_start
from rl_reason import episodes as episodes_lib
from rl_reason.methods.r3l import trial as r3l_trial
from rl_reason.methods.r3l.method import R3L, R3LSettings
from rl_reason.rl.losses import LossConfig, policy_loss
from rl_reason.verifiers import ExactIntVerifier

import scripted_step  # noqa: E402
from scripted_step import END, make_record  # noqa: E402


QA = make_record("What is 3+4?", "7")
QB = make_record("What is 2*5?", "10")


def report(outcome, step, root="In step 1 the line 3+4=9 is wrong; 3+4=7.",
           suggestion="Recompute 3+4 carefully."):
    return (f"Summary: No attempt found the answer.\nRoot cause: {root}\nOutcome: {outcome}\n"
            f"Suggestion: {suggestion}\nRetry from step: {step}")


# ------------------------------------------------------------------ report verdicts

def test_report_verdicts_by_hand():
    verdict = lambda text, n=3: r3l_trial.verdict(text, n)[1]
    assert verdict(report("failure", 1)) == r3l_trial.RETRY
    assert verdict(report("success but inefficient", 0)) == r3l_trial.RETRY
    assert verdict(report("success", 0)) == r3l_trial.SUCCESS
    # Step 3 of an episode of 3 attempts (0..2), and step 1 of a one-attempt episode.
    assert verdict(report("failure", 3)) == r3l_trial.OUT_OF_RANGE
    assert verdict(report("failure", 1), n=1) == r3l_trial.OUT_OF_RANGE
    # Unparseable: a field missing, an outcome not in the list, a step that is no number.
    assert verdict(report("failure", 1).replace("Suggestion", "Advice")) == r3l_trial.UNPARSEABLE
    assert verdict(report("partial success", 1)) == r3l_trial.UNPARSEABLE
    assert verdict(report("failure", "two")) == r3l_trial.UNPARSEABLE
    assert verdict("I do not know.") == r3l_trial.UNPARSEABLE
    parsed, _ = r3l_trial.verdict(report("failure", 2), 3)
    assert (parsed.retry_from_step, parsed.root_cause) == (2, "In step 1 the line 3+4=9 is wrong; 3+4=7.")


# ------------------------------------------------------------- a scripted step

@pytest.fixture(scope="module")
def tok(tiny_policy):
    return models.load_tokenizer(tiny_policy)


def encode(tok, text):
    return tok.encode(text, add_special_tokens=False)


def config(variant="", **method):
    c = r3l_config.get_config(",".join(filter(None, ["tiny", variant])))
    c.unlock()
    c.rollout.update(prompts_per_step=2, group_size=4, max_new_tokens=40)
    c.method.update(**(dict(reflection_max_new_tokens=200, max_reflection_prompt_len=2000)
                       | method))
    return c


RAMBLE = "2*5 is " * 15     # 75 tokens: runs out of any budget here, no answer
FAILURE_REPORT = report("failure", 1)
# Base episodes A0, A1 (question A, answer 7), B0, B1 (question B), 3 attempts, 40
# tokens each. Rows of a call are in request order; follow_up asks in sample order.
SCRIPT = [
    [("3+4=8. \\boxed{8}", True),           # A0: 11 tokens + end of turn, wrong
     ("3+4=7. \\boxed{7}", True),           # A1: correct at once
     (RAMBLE, False), (RAMBLE, False)],     # B0, B1: out of tokens, episodes over
    [("3+4=9. \\boxed{9}", True),           # A0, attempt 1: wrong
     (report("success", 0), True),          # A1's report: a success, no retry
     (report("failure", 1), True),          # B0's: step 1 of a one-attempt episode
     ("I do not know.", True)],             # B1's: unparseable
    [("3+4=9. \\boxed{9}", True)],          # A0, attempt 2: wrong again; over
    [(FAILURE_REPORT, True)],               # A0's report: retry from step 1
    [("3+4=7. \\boxed{7}", True)],          # the guided retry's attempt 1: correct
]


def run_step(c, tok, monkeypatch, script=SCRIPT, records=(QA, QB)):
    method = R3L(c, tok)
    return (method, *scripted_step.run_step(method, c, tok, monkeypatch, script, records))


def feedback_block(tok, content):
    return encode(tok, f"<|im_end|>\n<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n")


GUIDANCE = ("Guidance from a reflection on an earlier try:\n"
            "Root cause: In step 1 the line 3+4=9 is wrong; 3+4=7.\n"
            "Suggestion: Recompute 3+4 carefully.\n"
            "Apply these lessons, and do not mention this guidance in your answer.")


def test_hand_worked_step_through_the_engine(tok, monkeypatch):
    method, samples, rows, ctx, sampler = run_step(config(), tok, monkeypatch)
    # Rounds pipeline: A1, B0 and B1 are reflected on while A0 still attempts. Budgets:
    # what each episode has left (40 - 12 - 12 = 16 for A0's attempt 2), 200 for a
    # report, and for the retry what A0 had left after its replayed attempt (40 - 12).
    assert [call["budgets"] for call in sampler.calls] == [
        [40] * 4, [28, 200, 200, 200], [16], [200], [28]]
    prompt = sampler.calls[0]["contexts"][0]
    assert prompt == templates.encode_prompt(tok, templates.plain_prompt(QA.problem))
    wrong_8 = feedback_block(tok, "Incorrect. Your answer 8 does not match. Please try again.")
    wrong_9 = feedback_block(tok, "Incorrect. Your answer 9 does not match. Please try again.")
    a0 = encode(tok, "3+4=8. \\boxed{8}")
    a1 = encode(tok, "3+4=9. \\boxed{9}")
    assert sampler.calls[1]["contexts"][0] == prompt + a0 + wrong_8

    # A0's reflection reads its log: each attempt's text and feedback, numbered from 0.
    log = [("3+4=8. \\boxed{8}", "Incorrect. Your answer 8 does not match. Please try again."),
           ("3+4=9. \\boxed{9}", "Incorrect. Your answer 9 does not match. Please try again."),
           ("3+4=9. \\boxed{9}", "Incorrect. Your answer 9 does not match. Please try again.")]
    reflection_prompt = templates.encode_prompt(tok, templates.reflection_request(QA.problem, log))
    assert sampler.calls[3]["contexts"] == [reflection_prompt]
    # A1 solved at once: its log ends "Correct.".
    assert sampler.calls[1]["contexts"][1] == templates.encode_prompt(
        tok, templates.reflection_request(QA.problem, [("3+4=7. \\boxed{7}", "Correct.")]))

    # The retry from step 1: A0's attempt 0 as sampled, its feedback turn with the
    # guidance added, then sampling on.
    guided_block = feedback_block(
        tok, "Incorrect. Your answer 8 does not match. Please try again.\n\n" + GUIDANCE)
    assert sampler.calls[4]["contexts"] == [prompt + a0 + guided_block]

    # Rows: the question's group (A0, its distilled retry, A1), group B, then the
    # one-member positive experiences (A0's reflection and guided retry, A1's report).
    retry = encode(tok, "3+4=7. \\boxed{7}") + [END]
    a0_row, distilled, a1_row, b0_row, b1_row, reflection, guided, success_report = rows
    assert a0_row.tokens == prompt + a0 + wrong_8 + a1 + wrong_9 + a1 + [END]
    # The distilled row: the base episode's own ids for attempt 0 and its feedback, then
    # the retry's ids; no guidance anywhere.
    assert distilled.tokens == prompt + a0 + wrong_8 + retry
    assert distilled.tokens[:len(prompt) + 11 + len(wrong_8)] == a0_row.tokens[:len(prompt) + 11 + len(wrong_8)]
    assert "Guidance" not in tok.decode(distilled.tokens)
    # Pivotal credit: attempt 0 untrained in both; A0's attempts 1 and 2 (the last with
    # its end of turn) and the retry trained.
    z = np.zeros
    np.testing.assert_array_equal(a0_row.loss_mask, np.concatenate([
        z(len(prompt) + 11 + len(wrong_8)), np.ones(11), z(len(wrong_9)), np.ones(12)]))
    np.testing.assert_array_equal(distilled.loss_mask, np.concatenate([
        z(len(prompt) + 11 + len(wrong_8)), np.ones(12)]))
    assert a1_row.loss_mask.sum() == 12 and b0_row.loss_mask.sum() == 40
    assert {r.group for r in rows[:3]} == {f"{QA.id}#r3l0"} and b1_row.group == f"{QB.id}#r3l1"
    # The guided retry keeps its guidance; only the retry's own attempt is trained.
    assert guided.tokens == prompt + a0 + guided_block + retry
    np.testing.assert_array_equal(guided.loss_mask, np.concatenate([
        z(len(prompt) + 11 + len(guided_block)), np.ones(12)]))
    assert reflection.tokens == reflection_prompt + encode(tok, FAILURE_REPORT) + [END]
    assert reflection.loss_mask.sum() == len(encode(tok, FAILURE_REPORT)) + 1
    assert success_report.tokens[-1] == END and len({r.group for r in rows[5:]}) == 3

    # Advantages: group A's rewards (0, 1, 1), b = 2/3: A0 -2/3 (below the mean), A1 and
    # the distilled retry 1 (maximal reward); group B (0, 0): b = 0, A = 3 * 0 = 0; the
    # one-member experiences 1.
    np.testing.assert_allclose([r.advantage for r in rows],
                               [-2 / 3, 1, 1, 0, 0, 1, 1, 1], atol=1e-6)

    # Headline outcomes: the four base episodes only.
    assert [(o.reward, o.correct) for o in method.outcomes(samples)] == [
        (0.0, False), (1.0, True), (0.0, False), (0.0, False)]
    m = ctx.metrics
    assert (m["r3l/base_episodes"], m["r3l/base_solved"], m["r3l/problems_solved"]) == (4, 0.25, 0.5)
    assert (m["r3l/reports/retry"], m["r3l/reports/success_skipped"],
            m["r3l/reports/step_out_of_range"], m["r3l/reports/unparseable"],
            m["r3l/reports/prompt_too_long"]) == (1, 1, 1, 1, 0)
    assert (m["r3l/reports/valid"], m["r3l/reports/invalid"]) == (2, 2)
    assert m["r3l/reports/success_on_unsolved"] == 0
    assert (m["r3l/retries"], m["r3l/retry_success"], m["r3l/retry_beats_base"]) == (1, 1.0, 1.0)
    assert [m[f"r3l/retry_from_step/{k}"] for k in range(3)] == [0, 1, 0]
    assert m["r3l/positive_experiences"] == 3
    # Attempt tokens of the base and distilled rows: A0 11 + 11 + 12, its retry 11 + 12,
    # A1 12, B0 and B1 40 each; pivotal credit masks attempt 0 twice.
    assert m["r3l/pivotal_masked_share"] == pytest.approx(22 / (34 + 23 + 12 + 80))


def test_ablation_switches_change_only_their_part(tok, monkeypatch):
    # No pivotal credit: every attempt trained in both rows; same advantages.
    _, _, rows, ctx, _ = run_step(config("no_pivotal_credit"), tok, monkeypatch)
    assert rows[0].loss_mask.sum() == 34 and rows[1].loss_mask.sum() == 23
    assert ctx.metrics["r3l/pivotal_masked_share"] == 0.0
    np.testing.assert_allclose([r.advantage for r in rows], [-2 / 3, 1, 1, 0, 0, 1, 1, 1],
                               atol=1e-6)
    # No amplification: A = r - b, so A1 and the distilled retry get 1/3, not 1.
    _, _, rows, _, _ = run_step(config("no_amplification"), tok, monkeypatch)
    np.testing.assert_allclose([r.advantage for r in rows],
                               [-2 / 3, 1 / 3, 1 / 3, 0, 0, 1, 1, 1], atol=1e-6)
    # Without training success reports, A1's reflection is not a row.
    _, _, rows, ctx, _ = run_step(config(train_success_reflections=False), tok, monkeypatch)
    assert len(rows) == 7 and ctx.metrics["r3l/positive_experiences"] == 2


def test_no_reflect_retry_runs_g_base_episodes(tok, monkeypatch):
    script = [[("3+4=7. \\boxed{7}", True), ("3+4=8. \\boxed{8}", True), (RAMBLE, False),
               (RAMBLE, False)],
              [("\\boxed{7}", True)]]
    c = config("no_reflect_retry")
    c.rollout.update(prompts_per_step=1)
    method, samples, rows, ctx, sampler = run_step(c, tok, monkeypatch, script=script)
    # G = 4 base episodes of question A, no reflections: group rewards (1, 1, 0, 0).
    assert len(sampler.calls[0]["contexts"]) == 4 and len(rows) == 4
    assert all(s.request.tag == "fresh" for s in samples)
    np.testing.assert_allclose([r.advantage for r in rows], [1, 1, -0.5, -0.5])
    assert "r3l/reports/valid" not in ctx.metrics and ctx.metrics["r3l/base_solved"] == 0.5


def test_grpo_feedback_takes_grpo_advantages_and_loss(tok, monkeypatch):
    script = [[("3+4=7. \\boxed{7}", True), ("3+4=8. \\boxed{8}", True), (RAMBLE, False),
               (RAMBLE, False)],
              [("\\boxed{7}", True)]]
    c = config("grpo_feedback")
    c.rollout.update(prompts_per_step=1)
    method, _, rows, _, _ = run_step(c, tok, monkeypatch, script=script)
    # Rewards (1, 1, 0, 0): mean 1/2, sample std sqrt(1/3): +-0.866.
    np.testing.assert_allclose([r.advantage for r in rows], [0.866025, 0.866025, -0.866025,
                                                             -0.866025], atol=1e-5)
    assert method.loss_config() == LossConfig()
    assert not method.needs_reference()


def test_restart_retries_from_the_question_and_masks_the_first_k(tok, monkeypatch):
    script = [[("3+4=8. \\boxed{8}", True), ("3+4=9. \\boxed{9}", True)],
              [("3+4=9. \\boxed{9}", True), ("3+4=9. \\boxed{9}", True)],
              [("3+4=9. \\boxed{9}", True), ("3+4=9. \\boxed{9}", True)],
              [(FAILURE_REPORT, True), ("Summary: x", True)],
              # The restarted retry: attempt 0 wrong, attempt 1 right.
              [("3+4=6. \\boxed{6}", True)],
              [("3+4=7. \\boxed{7}", True)]]
    c = config("restart")
    c.rollout.update(prompts_per_step=1)
    _, _, rows, ctx, sampler = run_step(c, tok, monkeypatch, script=script)
    prompt = sampler.calls[0]["contexts"][0]
    guided_prompt = templates.encode_prompt(tok, [{"role": "user", "content": (
        f"{QA.problem}\n{templates.REASONING_INSTRUCTION}\n\n{GUIDANCE}")}])
    assert sampler.calls[4]["contexts"] == [guided_prompt]
    assert sampler.calls[4]["budgets"] == [40]
    wrong_6 = feedback_block(tok, "Incorrect. Your answer 6 does not match. Please try again.")
    retry_0, retry_1 = encode(tok, "3+4=6. \\boxed{6}"), encode(tok, "3+4=7. \\boxed{7}") + [END]
    assert sampler.calls[5]["contexts"] == [guided_prompt + retry_0 + wrong_6]
    base, distilled, other, reflection, guided = rows
    # The distilled row restarts from the plain prompt; pivotal credit masks its own
    # attempt 0 (k = 1), as the released code does, and the base row's attempt 0.
    assert distilled.tokens == prompt + retry_0 + wrong_6 + retry_1
    np.testing.assert_array_equal(distilled.loss_mask, np.concatenate([
        np.zeros(len(prompt) + 11 + len(wrong_6)), np.ones(12)]))
    assert base.loss_mask[:len(prompt) + 12].sum() == 0 and base.loss_mask.sum() == 23
    # The guided retry trains all of its own attempts.
    assert guided.tokens == guided_prompt + retry_0 + wrong_6 + retry_1
    assert guided.loss_mask.sum() == 11 + 12
    assert ctx.metrics["r3l/reports/unparseable"] == 1


def test_a_reflection_request_over_its_limit_is_skipped(tok, monkeypatch):
    script = [[(RAMBLE, False), (RAMBLE, False)]]
    c = config(max_reflection_prompt_len=50)
    c.rollout.update(prompts_per_step=1)
    _, _, rows, ctx, _ = run_step(c, tok, monkeypatch, script=script)
    assert len(rows) == 2 and ctx.metrics["r3l/reports/prompt_too_long"] == 2


# ---------------------------------------------------- the warm-start's conversations

def warm_start_context(tok, messages, answer):
    """The ids the warm-start trains `answer` after (rl_reason/data/packing.py): the
    untrained pieces of the conversation before the answer, each encoded on its own."""
    conversation = warm_start.Conversation(
        messages=tuple(messages) + ({"role": "assistant", "content": answer},),
        trained=(False,) * len(messages) + (True,), kind="test")
    ids = []
    for piece, trained in packing.conversation_segments(tok, conversation):
        if trained:
            return ids
        ids += encode(tok, piece)
    raise AssertionError("no trained piece")


def test_prompts_match_the_warm_start_token_for_token(tok):
    # The hand-checked failed episode of tests/data/test_warm_start.py: 7+5*3-4, three
    # attempts (13 boxed, 37 unboxed, 37 boxed), the lasting mistake from attempt 1.
    problem = synthetic.Problem(start=7, ops=(("+", 5), ("*", 3), ("-", 4)), level=3)
    failed = (synthetic.attempt_with_mistake(problem, 0, 13),
              synthetic.attempt_with_mistake(problem, 1, 37, boxed=False),
              synthetic.attempt_with_mistake(problem, 1, 37))
    record = make_record(problem.question, str(problem.answer))
    turns = episodes_lib.ChatTurns(tok)
    # The same attempts as a policy would sample them (each ending its turn), verified.
    episode = episodes_lib.Episode.start(record, templates.plain_prompt(record.problem), turns,
                                         budget=500, max_attempts=3, group="g")
    for attempt in failed:
        ids = encode(tok, attempt.text) + [END]
        n, text = episodes_lib.attempt_length(tok, ids)
        [verdict] = ExactIntVerifier().verify_batch([text], [record.answer])
        episode.add_attempt(episodes_lib.new_attempt(
            ids, n, text, truncated=False, status=verdict.status, extracted=verdict.extracted))
        if not episode.done:
            episode.add_feedback(turns.feedback(episode.messages,
                                                r3l_trial.feedback_turn(episode.attempts[-1])))
    assert [a.status for a in episode.attempts] == ["wrong", "no_answer", "wrong"]
    solution = problem.solution()
    for root in range(3):
        ws = warm_start.Episode(problem, failed, solved=False, root=root)
        # The base episode so far: the warm-start's R3L episode, token for token.
        assert episode.replay(root).context() == warm_start_context(
            tok, warm_start.r3l_replay(ws, root), solution)
        # The reflection request on it.
        assert r3l_trial.reflection_log(episode) == warm_start.episode_log(ws, solution)
        report = warm_start.reflection_report(ws)
        text = templates.format_reflection_report(report)
        assert r3l_trial.reflection_context(turns, episode) == warm_start_context(
            tok, templates.reflection_request(problem.question,
                                              warm_start.episode_log(ws, solution)), text)
        assert r3l_trial.verdict(text, 3) == (report, r3l_trial.RETRY)
        # The guided retry's context.
        guided = templates.insert_guidance(warm_start.r3l_replay(ws, root), report)
        assert r3l_trial.guided_head(turns, episode, root, report) == warm_start_context(
            tok, guided, solution)


# ------------------------------------------------------------------- advantages, loss

def test_positive_amplification_by_hand(tok):
    method = R3L(config(), tok)
    groups, rewards = ["g", "g", "g", "s"], np.array([1, 0, 0, 1], np.float32)
    # b = 1/3 in g: the solved member 1 (maximal), the others -1/3; alone: 1.
    np.testing.assert_allclose(method.advantages(groups, rewards), [1, -1 / 3, -1 / 3, 1],
                               atol=1e-6)
    method = R3L(config("no_amplification"), tok)
    np.testing.assert_allclose(method.advantages(groups, rewards), [2 / 3, -1 / 3, -1 / 3, 1],
                               atol=1e-6)


def test_loss_is_reinforce_with_k2_by_hand(tok):
    config_ = R3L(config(), tok).loss_config()
    assert config_ == LossConfig(loss_type="reinforce", pg_scale=0.5, kl_coef=0.001,
                                 kl_estimator="k2", aggregation="token-mean")
    # Two rows; mask 0 on the prompt and on a feedback token (row 0, t=2), which must not
    # count in the mean, the KL or the gradient.
    logp = jnp.array([[-9.0, -1.0, -5.0, -2.0], [-9.0, -9.0, -0.5, -1.5]])
    ref = jnp.array([[-9.0, -1.5, -1.0, -2.0], [-9.0, -9.0, -0.5, -0.5]])
    mask = jnp.array([[0, 1, 0, 1], [0, 0, 1, 1]], jnp.float32)
    advantages = jnp.array([1.0, -0.5])
    # Policy term per trained token: -A*logp = 1, 2 (row 0); -0.25, -0.75 (row 1):
    # token-mean 2/4 = 0.5, times 1/(1+tau) = 0.25. k2 = 0.5 (logp - ref)^2 = 0.125, 0,
    # 0, 0.5: mean 0.15625, times 0.001. Total 0.25015625.
    loss, metrics = policy_loss(logp, None, advantages, mask, config_, ref_logp_BT=ref)
    np.testing.assert_allclose(loss, 0.25015625, rtol=1e-6)
    np.testing.assert_allclose(metrics["kl"], 0.15625, rtol=1e-6)
    # d loss / d logp = (0.5 * -A + 0.001 * (logp - ref)) / 4 on trained tokens, else 0.
    grad = jax.grad(lambda l: policy_loss(l, None, advantages, mask, config_,
                                          ref_logp_BT=ref)[0])(logp)
    np.testing.assert_allclose(grad, np.array([
        [0, (-0.5 + 0.0005) / 4, 0, -0.5 / 4],
        [0, 0, 0.25 / 4, (0.25 - 0.001) / 4]]), rtol=1e-5, atol=1e-8)


def test_settings_are_checked_before_compute():
    check(config(), num_devices=1)
    for method, message in [(dict(max_attempts=0), "max_attempts=0"),
                            (dict(objective="ppo"), "objective='ppo'"),
                            (dict(objective="grpo"), "amplification is R3L's"),
                            (dict(retry_mode="resume"), "retry_mode='resume'"),
                            (dict(alpha=0.0), "alpha=0.0")]:
        with pytest.raises(ConfigError, match=message):
            check(config(**method), num_devices=1)
    c = config()
    c.method.attempts = 3
    with pytest.raises(ConfigError, match=r"unknown r3l keys \['attempts'\]"):
        check(c, num_devices=1)
    c = config()
    c.rollout.group_size = 3
    with pytest.raises(ConfigError, match="group_size=3"):
        check(c, num_devices=1)
    c = config()
    c.reward.overlong_buffer = 8
    with pytest.raises(ConfigError, match="overlong_buffer"):
        check(c, num_devices=1)
    assert R3LSettings.from_config(config()).reflection_max_new_tokens == 200


# ---------------------------------------------------------------- through the trainer

@pytest.fixture(scope="module")
def long_tiny_policy(tiny_policy, tmp_path_factory):
    """The tiny test policy with 1024 positions (rotary: no weights change), so that a
    reflection request on its garbage attempts fits (about 500-800 tokens)."""
    import shutil

    path = str(tmp_path_factory.mktemp("long") / "policy")
    shutil.copytree(tiny_policy, path)
    with open(os.path.join(path, "config.json")) as f:
        hf_config = json.load(f)
    hf_config["max_position_embeddings"] = 1024
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf_config, f)
    return path


def tiny_run_config(policy, **train_):
    c = r3l_config.get_config("tiny")
    c.unlock()
    c.model.checkpoint = policy
    c.rollout.update(prompts_per_step=2, group_size=4)
    c.method.max_reflection_prompt_len = 1000
    c.train.update(export_hf=True, eval_every=0, **train_)
    c.eval.update(max_problems=2, num_samples=1, ks=(1,))
    c.optim.update(learning_rate=1e-3, warmup_steps=0)
    c.loss.entropy_coef = 0.01     # a gradient even when a random policy earns nothing
    c.verifier.num_workers = 1
    return c


def test_tiny_run_through_the_trainer(long_tiny_policy, tmp_path, monkeypatch):
    # A random policy writes no valid report: read every one as "retry from the last
    # attempt", so retries and their rows go through the trainer too.
    def always_retry(text, num_steps):
        return templates.ReflectionReport(
            summary="s", root_cause="r", outcome="failure", suggestion="x",
            retry_from_step=num_steps - 1), r3l_trial.RETRY
    monkeypatch.setattr(r3l_trial, "verdict", always_retry)
    workdir = str(tmp_path / "run")
    train.run(tiny_run_config(long_tiny_policy, num_steps=1), workdir)
    lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    steps = [m for m in lines if "loss" in m]
    assert len(steps) == 1
    for m in steps:
        # Headline metrics count the 2 x 2 base episodes; each is reflected on and retried.
        assert m["samples"] == m["r3l/base_episodes"] == 4
        assert m["rollout/reflection/samples"] == m["r3l/reports/retry"] == 4
        assert m["r3l/retries"] == 4 and m["rollout/retry/samples"] >= 4
        assert m["rows"] == 8 + m["r3l/positive_experiences"]
        assert m["update_applied"] == 1.0
    # Evaluated with up to 3 attempts (verifier feedback) before and after training.
    assert "eval/attempts@3" in lines[0] and "eval/attempts@3" in lines[-1]
    start = models.load(long_tiny_policy).params
    end = models.load(os.path.join(workdir, "hf")).params
    moved = jax.tree.map(lambda x, y: float(np.abs(np.asarray(x) - np.asarray(y)).max()),
                         start, end)
    assert max(jax.tree.leaves(moved)) > 0


@pytest.mark.slow
def test_tiny_run_resumes_exactly(long_tiny_policy, tmp_path):
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    train.run(tiny_run_config(long_tiny_policy, num_steps=2), straight)
    train.run(tiny_run_config(long_tiny_policy, num_steps=1), resumed)
    train.run(tiny_run_config(long_tiny_policy, num_steps=2), resumed)
    a, b = (models.load(os.path.join(w, "hf")).params for w in (straight, resumed))
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)
    keep = ("reward_mean", "loss", "r3l/reports/valid", "r3l/retries")
    rows = lambda w: [{k: m.get(k) for k in keep} for m in map(
        json.loads, open(os.path.join(w, "metrics.jsonl"))) if "loss" in m]
    assert rows(straight) == rows(resumed)
