"""The trainer loop end to end on a tiny policy: metrics, checkpoints, resume, export,
sharding, every method hook, and the skipped-update guard."""

import json
import os
import zlib

import jax
import numpy as np
import pytest

from configs import grpo
from rl_reason import models, train
from rl_reason.methods.registry import METHODS
from rl_reason.methods.components import common
from rl_reason.methods.base import Request, loss_config_from
from rl_reason.methods.grpo.method import GRPO


def tiny_config(policy, **overrides):
    c = grpo.get_config("tiny")
    c.unlock()
    c.model.checkpoint = policy
    c.train.export_hf = False
    # An entropy bonus gives a gradient even when a random policy earns no reward.
    c.loss.entropy_coef = 0.01
    c.optim.update(learning_rate=1e-3, warmup_steps=0)
    c.verifier.num_workers = 1
    for key, value in overrides.items():
        section, name = key.split(".")
        c[section][name] = value
    return c


def read_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def params_of(workdir, step):
    from rl_reason import checkpoint
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
    path = ckpt.directory / str(step)
    assert path.exists(), f"no checkpoint for step {step} in {ckpt.directory}"
    return path


def final_params(workdir):
    return models.load(os.path.join(workdir, "hf")).params


def test_grpo_run_writes_metrics_checkpoints_and_export(tiny_policy, tmp_path, capsys):
    workdir = str(tmp_path / "run")
    c = tiny_config(tiny_policy, **{"train.export_hf": True})
    train.run(c, workdir)
    # The run ends by reporting held-out accuracy before and after; so does a re-run of
    # the finished run, which does nothing else.
    out = capsys.readouterr().out
    report = out[out.index("Held-out accuracy, step 0 -> step 3"):]
    assert "\n  greedy_accuracy" in report and "±" in report
    train.run(c, workdir)
    again = capsys.readouterr().out
    assert "Nothing to do" in again and report in again

    lines = read_metrics(workdir)
    steps = [line["step"] for line in lines if "reward_mean" in line]
    assert steps == [1, 2, 3]
    last = [line for line in lines if line["step"] == 3][-1]
    for key in ("reward_mean", "none_pass_fraction", "all_pass_fraction", "mixed_fraction",
                "response_length_mean", "truncation_rate", "entropy", "grad_norm",
                "clip_fraction", "learning_rate", "time/sampling", "time/verify",
                "time/update", "tokens_per_s", "update_applied"):
        assert key in last, key
    assert any(k.startswith("eval/") for k in lines[0]), "no evaluation before training"
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1", "2", "3"]

    # The export loads in transformers' format and the parameters moved.
    start = models.load(tiny_policy).params
    end = final_params(workdir)
    moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                         start, end)
    assert max(jax.tree.leaves(moved)) > 0
    assert os.path.exists(os.path.join(workdir, "hf", "tokenizer.json"))


class ParityVerifier:
    """Correct iff the CRC-32 of the response text is even (about half of every group),
    or never: a random tiny policy gets mixed groups, or none."""

    def __init__(self, ever_correct=True):
        self.ever_correct = ever_correct

    def verify_batch(self, responses, answers):
        from rl_reason.verifiers import VerifyResult
        return [VerifyResult(1.0, "correct", "1")
                if self.ever_correct and zlib.crc32(r.encode()) % 2 == 0
                else VerifyResult(0.0, "wrong", "0") for r in responses]

    def close(self):
        pass


@pytest.mark.parametrize("ever_correct", [True, False])
def test_the_weights_move_through_the_advantages(tiny_policy, tmp_path, monkeypatch,
                                                 ever_correct):
    """No entropy bonus and no KL: only the advantages move the weights. With mixed
    groups they move; when every reward is 0 every advantage is 0, the gradient is 0
    and (no weight decay) the weights stay exactly where they were, although each
    update is applied. So a trainer whose advantages were all zero fails here."""
    from rl_reason import run_setup
    monkeypatch.setattr(run_setup, "make_verifier", lambda _: ParityVerifier(ever_correct))
    workdir = str(tmp_path / "run")
    c = tiny_config(tiny_policy, **{"loss.entropy_coef": 0.0, "train.num_steps": 2,
                                    "train.export_hf": True, "eval.enabled": False})
    assert c.loss.kl_coef == 0 and c.optim.weight_decay == 0
    train.run(c, workdir)
    steps = [line for line in read_metrics(workdir) if "loss" in line]
    assert [m["update_applied"] for m in steps] == [1.0, 1.0]
    assert all((m["mixed_fraction"] > 0) == ever_correct for m in steps)
    moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                         models.load(tiny_policy).params, final_params(workdir))
    assert (max(jax.tree.leaves(moved)) > 0) == ever_correct


def test_resumed_run_matches_uninterrupted(tiny_policy, tmp_path):
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    train.run(tiny_config(tiny_policy, **{"train.export_hf": True}), straight)
    train.run(tiny_config(tiny_policy, **{"train.num_steps": 2}), resumed)
    train.run(tiny_config(tiny_policy, **{"train.export_hf": True}), resumed)

    a, b = final_params(straight), final_params(resumed)
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)
    keep = ("reward_mean", "loss", "grad_norm", "entropy")
    rows = lambda w: [{k: line.get(k) for k in keep} for line in read_metrics(w)
                      if "loss" in line]
    assert rows(straight) == rows(resumed)


def test_eight_devices_match_one(tiny_policy, tmp_path):
    results = {}
    for n in (1, 8):
        workdir = str(tmp_path / f"dev{n}")
        c = tiny_config(tiny_policy, **{"train.num_steps": 2, "train.export_hf": True,
                                        "train.eval_every": 0})
        c.mesh.update(data=-1, fsdp=2 if n == 8 else 1, tensor=1)
        train.run(c, workdir, devices=jax.devices()[:n])
        results[n] = (read_metrics(workdir), final_params(workdir))
    loss = lambda lines: [line["loss"] for line in lines if "loss" in line]
    np.testing.assert_allclose(loss(results[1][0]), loss(results[8][0]), rtol=1e-4, atol=1e-6)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y),
                                                         rtol=1e-4, atol=1e-6),
                 results[1][1], results[8][1])


def test_shared_prefixes_train_as_the_whole_rows(tiny_policy, tmp_path, monkeypatch):
    """train.share_prefixes runs each group's prompt once: the same losses, metrics and
    parameters as the rows run whole, on 8 devices with 2 micro-batches."""
    from rl_reason.rl import batch as batch_lib
    layouts = []
    real = batch_lib.collate_shared

    def collate_shared(rows, **kwargs):
        out = real(rows, **kwargs)
        layouts.append((len(rows), out["prefix_tokens"].shape, out["tokens"].shape))
        return out

    monkeypatch.setattr(batch_lib, "collate_shared", collate_shared)
    results = {}
    for share in (False, True):
        workdir = str(tmp_path / f"share{share}")
        c = tiny_config(tiny_policy, **{"train.num_steps": 2, "train.export_hf": True,
                                        "train.share_prefixes": share,
                                        "optim.micro_batches": 2})
        c.eval.enabled = False
        train.run(c, workdir)
        results[share] = (read_metrics(workdir), final_params(workdir))
    keep = ("loss", "pg_loss", "entropy", "grad_norm", "clip_fraction", "reward_mean",
            "num_tokens", "response_length_mean")
    lines = {share: [[line[k] for k in keep] for line in m if "loss" in line]
             for share, (m, _) in results.items()}
    assert len(lines[True]) == 2
    # The shared run's batches: 16 blocks (8 shards x 2 micro-batches), fewer prompt
    # rows than rows.
    assert len(layouts) == 2
    for rows, (prefix_rows, _), (batch_rows, _) in layouts:
        assert prefix_rows % 16 == 0 and batch_rows % 16 == 0 and rows <= batch_rows
    np.testing.assert_allclose(lines[True], lines[False], rtol=1e-4, atol=1e-6)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y),
                                                         rtol=1e-4, atol=1e-6),
                 results[True][1], results[False][1])


class EveryHook(GRPO):
    """A test method touching every hook and every StepContext service: it draws one
    record fewer than a batch, retires what it trained on, samples a second round with
    per-row budgets and a response prefix (trained as off-policy rows with per-token
    advantages), probes outside the rounds, scores sequences, reads the held-out
    metrics, switches its loss settings after step 1, and keeps state that must
    survive a checkpoint."""

    name = "every_hook_test"

    def __init__(self, config, tokenizer):
        super().__init__(config, tokenizer)
        self.calls = {"prepare": 0, "follow_up": 0, "build_batch": 0, "after_step": 0}
        self.seen_ids: list[str] = []
        self.held_out_steps: list[int] = []

    def prepare(self, ctx):
        self.calls["prepare"] += 1
        self.held_out_steps.append(ctx.held_out.get("step", -1))
        probe, = ctx.rollout([common.plain_request(self.tokenizer, ctx.draw_records(1)[0], 1,
                                                   tag="probe")])
        assert probe.request.tag == "probe"
        return self.requests_for(ctx.draw_records(self.config.rollout.prompts_per_step - 1))

    def follow_up(self, samples, ctx):
        self.calls["follow_up"] += 1
        if any(s.request.tag == "extra" for s in samples):
            return []
        first = samples[0]
        return [Request(record=first.request.record, context=first.request.context,
                        num_samples=1, group=first.request.group, tag="extra",
                        max_new_tokens=budget, prefix=first.response[:2])
                for budget in (8, 3)]

    def build_batch(self, samples, ctx):
        self.calls["build_batch"] += 1
        extra = [s for s in samples if s.request.tag == "extra"]
        assert [len(s.response) <= s.request.max_new_tokens for s in extra] == [True, True]
        assert all(s.full_response[:2] == s.request.prefix for s in extra)
        scores = ctx.score([(s.request.context + s.full_response, len(s.request.context))
                            for s in extra])
        assert [len(x.logprobs) for x in scores] == [len(s.full_response) for s in extra]
        ctx.metrics["every_hook/mean_entropy"] = float(np.mean([x.mean_entropy for x in scores]))
        rows = super().build_batch([s for s in samples if s.request.tag != "extra"], ctx)
        for s in extra:
            row = common.response_row(s, 0.0, off_policy=True)
            assert row.loss_mask[:len(s.request.context) + 2].sum() == 0   # prefix untrained
            row.advantage = np.linspace(0, 1, len(row.tokens)).astype(np.float32)
            rows.append(row)
        ctx.metrics["every_hook/rows"] = len(rows)
        return rows

    def loss_config(self):
        # After the first step the on-policy clip and the entropy bonus are dropped (as
        # ExGRPO drops the clip once mixing starts); restored state decides.
        first = not self.seen_ids
        return loss_config_from(self.config, clip_on_policy=first,
                                entropy_coef=self.config.loss.entropy_coef if first else 0.0)

    def after_step(self, samples, ctx):
        self.calls["after_step"] += 1
        self.seen_ids.append(samples[0].request.record.id)
        ctx.retire([s.request.record.id for s in samples])

    def state(self):
        return {"seen_ids": list(self.seen_ids)}

    def restore(self, state):
        self.seen_ids = list(state["seen_ids"])


def test_a_method_using_every_hook_runs_and_resumes(tiny_policy, tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS, EveryHook.name, EveryHook)
    workdir = str(tmp_path / "hooks")
    c = tiny_config(tiny_policy, **{"train.num_steps": 2, "train.eval_every": 1})
    c.method_name = EveryHook.name
    trainer = train.Trainer(c, workdir)
    trainer.train()
    assert trainer.method.calls == {"prepare": 2, "follow_up": 4, "build_batch": 2,
                                    "after_step": 2}
    assert trainer.method.held_out_steps == [0, 1]     # the latest evaluation is visible
    assert len(trainer._update_fns) == 2               # one compiled update per setting
    assert len(trainer.stream.retired) == 2 * 3        # 3 fresh records a step retired
    seen = list(trainer.method.seen_ids)
    trainer.close()
    lines = [m for m in read_metrics(workdir) if "loss" in m]
    # 3 fresh prompts x 4 samples + 2 extra off-policy rows; 1 probe outside the rounds
    assert [m["every_hook/rows"] for m in lines] == [14, 14]
    assert all(m["off_policy_fraction"] > 0 for m in lines)
    assert [m["samples"] for m in lines] == [12, 12]   # headline: fresh samples only
    assert [m["rollout/probe/samples"] for m in lines] == [1, 1]
    assert [m["rollout/extra/samples"] for m in lines] == [2, 2]
    assert all(m["generated_tokens"] == m["rollout/fresh/generated_tokens"]
               + m["rollout/extra/generated_tokens"] + m["rollout/probe/generated_tokens"]
               for m in lines)
    assert lines[1]["budget/generated_tokens"] == sum(m["generated_tokens"] for m in lines)
    # The entropy bonus is in the first step's loss and gone from the second's.
    assert lines[0]["loss"] == pytest.approx(lines[0]["pg_loss"] - 0.01 * lines[0]["entropy"])
    assert lines[0]["loss"] != pytest.approx(lines[0]["pg_loss"])
    assert lines[1]["loss"] == pytest.approx(lines[1]["pg_loss"])
    assert all(0 < m["every_hook/mean_entropy"] for m in lines)

    c = tiny_config(tiny_policy, **{"train.num_steps": 3, "train.eval_every": 1})
    c.method_name = EveryHook.name
    resumed = train.Trainer(c, workdir)
    assert resumed.step == 2 and resumed.method.seen_ids == seen
    assert resumed.held_out["step"] == 2 and "eval/greedy_accuracy" in resumed.held_out
    assert resumed.engine.generated_tokens == lines[1]["budget/generated_tokens"]
    assert len(resumed.stream.retired) == 6
    resumed.close()


class RetireEverything(GRPO):
    name = "retire_everything_test"

    def after_step(self, samples, ctx):
        ctx.retire({s.request.record.id for s in samples})


@pytest.mark.parametrize("when_exhausted, steps", [("stop", [1, 2]), ("shrink", [1, 2, 3])])
def test_retirement_that_exhausts_the_data_ends_the_run_cleanly(
        tiny_policy, tmp_path, monkeypatch, capsys, when_exhausted, steps):
    """10 records, 4 a step, all retired: 'stop' ends after 2 steps (2 left < 4);
    'shrink' trains a third step on the last 2, then stops."""
    monkeypatch.setitem(METHODS, RetireEverything.name, RetireEverything)
    workdir = str(tmp_path / when_exhausted)
    c = tiny_config(tiny_policy, **{"train.num_steps": 6, "train.eval_every": 0})
    c.method_name = RetireEverything.name
    c.data.update(embedded_train_size=10, when_exhausted=when_exhausted)
    train.run(c, workdir)
    assert "Training data exhausted after step" in capsys.readouterr().out
    lines = read_metrics(workdir)
    assert [m["step"] for m in lines if "loss" in m] == steps
    assert [m["samples"] for m in lines if "loss" in m][-1] == (8 if when_exhausted == "shrink"
                                                                  else 16)
    # The end is evaluated and checkpointed like a finished run.
    assert any("eval/greedy_accuracy" in m and m["step"] == steps[-1] for m in lines)
    assert str(steps[-1]) in os.listdir(os.path.join(workdir, "checkpoints"))


class EndlessFollowUp(GRPO):
    name = "endless_follow_up_test"
    max_rollout_rounds = 2

    def follow_up(self, samples, ctx):
        return [Request(record=samples[0].request.record, context=samples[0].request.context,
                        num_samples=1, tag="more", max_new_tokens=2)]

    def build_batch(self, samples, ctx):
        return super().build_batch([s for s in samples if s.request.tag == "fresh"], ctx)


def test_requests_cut_off_by_max_rollout_rounds_warn_and_count(tiny_policy, tmp_path,
                                                              monkeypatch):
    monkeypatch.setitem(METHODS, EndlessFollowUp.name, EndlessFollowUp)
    c = tiny_config(tiny_policy, **{"train.num_steps": 1, "train.eval_every": 0})
    c.method_name = EndlessFollowUp.name
    with pytest.warns(UserWarning, match="still pending after max_rollout_rounds=2"):
        train.run(c, str(tmp_path / "cut"))
    line, = [m for m in read_metrics(str(tmp_path / "cut")) if "loss" in m]
    assert line["rollout/pending_cut_off"] == 1 and line["rollout/more/samples"] == 1


def test_generation_budget_ends_the_run(tiny_policy, tmp_path):
    workdir = str(tmp_path / "budget")
    c = tiny_config(tiny_policy, **{"train.num_steps": 10, "train.eval_every": 0,
                                    "train.max_generated_tokens": 1})
    train.run(c, workdir)
    lines = read_metrics(workdir)
    assert [m["step"] for m in lines if "loss" in m] == [1]
    assert any("eval/greedy_accuracy" in m and m["step"] == 1 for m in lines)


def test_scores_do_not_depend_on_padding_or_batch_company(tiny_policy, tmp_path):
    """ctx.score's mean entropy averages over the response's own tokens: the same
    sequence scored alone, next to a much longer one (more padding), or with pads
    appended to its row gives the same numbers, equal to a direct computation."""
    import jax.numpy as jnp
    from rl_reason.rl.logprobs import token_logprobs

    c = tiny_config(tiny_policy, **{"train.eval_every": 0})
    trainer = train.Trainer(c, str(tmp_path / "score"))
    params = trainer.state.params
    seq, start = list(range(5, 25)), 8
    long = list(range(5, 200))
    alone, = trainer.score(params, [(seq, start)])
    _, with_long = trainer.score(params, [(long, 3), (seq, start)])
    np.testing.assert_allclose(alone.logprobs, with_long.logprobs, rtol=1e-5, atol=1e-6)
    assert abs(alone.mean_entropy - with_long.mean_entropy) < 1e-5
    logp, entropy = token_logprobs(params, trainer.model_config, jnp.array([seq]),
                                   jnp.ones((1, len(seq)), bool), with_entropy=True)
    np.testing.assert_allclose(alone.logprobs, np.asarray(logp)[0, start:], rtol=1e-5, atol=1e-6)
    assert abs(alone.mean_entropy - float(np.asarray(entropy)[0, start:].mean())) < 1e-5
    # Averaging over the padded row instead (the released ExGRPO bug) differs.
    padded_mean = float(np.asarray(entropy)[0, start:].sum()) / (64 - start)
    assert abs(padded_mean - alone.mean_entropy) > 1e-3
    with pytest.raises(ValueError, match="response_start=0"):
        trainer.score(params, [(seq, 0)])
    trainer.close()


def test_non_finite_update_is_skipped_and_counted(tiny_policy):
    from rl_reason import sharding, update
    model = models.load(tiny_policy)
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    c = tiny_config(tiny_policy)
    optimizer = update.make_optimizer(c.optim)
    sh = update.state_shardings(sharding.param_shardings(model.config, mesh), optimizer,
                                    jax.eval_shape(lambda p: p, model.params), mesh)
    state = update.init_state(model.params, optimizer, sh)
    before = jax.tree.map(np.asarray, state.params)
    fns = update.build_step_functions(model.config, loss_config_from(c), optimizer, sh,
                                          mesh, temperature=1.0, logprob_chunk=0,
                                          remat=False, skip_grad_norm_above=0.0)
    B, T = 2, 8
    batch = dict(tokens=np.ones((B, T), np.int32), valid=np.ones((B, T), bool),
                 loss_mask=np.ones((B, T), np.float32),
                 advantages=np.full((B, T), np.nan, np.float32),
                 off_policy=np.zeros((B, T), bool), behaviour_logp=np.zeros((B, T), np.float32))
    state, metrics = fns.update(state, batch)
    assert int(state.skipped) == 1 and float(metrics["update_applied"]) == 0.0
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, np.asarray(b)), before,
                 state.params)
    batch["advantages"] = np.ones((B, T), np.float32)
    state, metrics = fns.update(state, batch)
    assert int(state.skipped) == 1 and float(metrics["update_applied"]) == 1.0


def test_an_update_over_the_grad_norm_limit_is_skipped(tiny_policy):
    """optim.skip_grad_norm_above (ExGRPO's 500): an update whose gradient norm exceeds
    it leaves parameters and optimizer moments exactly as they were and is counted; one
    under it is applied."""
    from rl_reason import sharding, update
    model = models.load(tiny_policy)
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    c = tiny_config(tiny_policy, **{"loss.entropy_coef": 0.0})
    optimizer = update.make_optimizer(c.optim)
    sh = update.state_shardings(sharding.param_shardings(model.config, mesh), optimizer,
                                    jax.eval_shape(lambda p: p, model.params), mesh)
    state = update.init_state(model.params, optimizer, sh)
    fns = update.build_step_functions(model.config, loss_config_from(c), optimizer, sh,
                                          mesh, temperature=1.0, logprob_chunk=0,
                                          remat=False, skip_grad_norm_above=500.0)
    B, T = 2, 8
    rng = np.random.default_rng(0)

    def batch(advantage):
        # The gradient is linear in the advantages: 1e5 takes its norm far over 500.
        return dict(tokens=rng.integers(2, 100, (B, T)).astype(np.int32),
                    valid=np.ones((B, T), bool), loss_mask=np.ones((B, T), np.float32),
                    advantages=np.full((B, T), advantage, np.float32),
                    off_policy=np.zeros((B, T), bool),
                    behaviour_logp=np.zeros((B, T), np.float32))

    state, _ = fns.update(state, batch(1.0))     # moments no longer zero
    before = jax.tree.map(np.asarray, (state.params, state.opt_state))
    state, metrics = fns.update(state, batch(1e5))
    assert float(metrics["grad_norm"]) > 500 and np.isfinite(float(metrics["loss"]))
    assert int(state.skipped) == 1 and float(metrics["update_applied"]) == 0.0
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, np.asarray(b)), before,
                 (state.params, state.opt_state))
    state, metrics = fns.update(state, batch(1.0))
    assert float(metrics["grad_norm"]) <= 500 and float(metrics["update_applied"]) == 1.0
    assert int(state.skipped) == 1
    moved = jax.tree.map(lambda a, b: float(np.abs(a - np.asarray(b)).max()), before[0],
                         state.params)
    assert max(jax.tree.leaves(moved)) > 0


def test_the_trainer_logs_skipped_updates_and_keeps_the_weights(tiny_policy, tmp_path):
    """A limit every update exceeds: each step is counted in skipped_updates and
    update_applied is 0, and the exported policy is the starting one."""
    workdir = str(tmp_path / "run")
    train.run(tiny_config(tiny_policy, **{"optim.skip_grad_norm_above": 1e-9,
                                          "train.num_steps": 2, "train.export_hf": True,
                                          "eval.enabled": False}), workdir)
    steps = [line for line in read_metrics(workdir) if "loss" in line]
    assert [(m["step"], m["skipped_updates"], m["update_applied"]) for m in steps] == [
        (1, 1, 0.0), (2, 2, 0.0)]
    assert all(m["grad_norm"] > 1e-9 for m in steps)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 models.load(tiny_policy).params, final_params(workdir))


def test_bad_checkpoint_path_and_unwritable_workdir_fail_clearly(tiny_policy, tmp_path):
    with pytest.raises(FileNotFoundError, match="model.checkpoint='/no/such/dir'"):
        train.run(tiny_config("/no/such/dir"), str(tmp_path / "a"))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match="not writable"):
        train.run(tiny_config(tiny_policy), str(blocker / "run"))


def test_runs_that_start_alike_share_their_step0_evaluation(tiny_policy, tmp_path, monkeypatch):
    from rl_reason import evaluate as evaluate_lib
    monkeypatch.setenv("RL_REASON_CACHE", str(tmp_path / "cache"))
    calls = []
    real = evaluate_lib.held_out_metrics
    monkeypatch.setattr(evaluate_lib, "held_out_metrics",
                        lambda *a, **k: calls.append(k["step"]) or real(*a, **k))
    runs = {}
    for name, overrides in (("a", {}), ("b", {"optim.learning_rate": 5e-3}),
                            ("other_seed", {})):
        c = tiny_config(tiny_policy, **{"train.num_steps": 1, "train.eval_every": 0,
                                        **overrides})
        c.seed = 1 if name == "other_seed" else 0
        train.run(c, str(tmp_path / name))
        runs[name] = [m for m in read_metrics(str(tmp_path / name)) if m["step"] == 0][0]
    # a computes step 0 and 1; b (another learning rate) reuses a's step 0; another
    # seed samples differently, so it evaluates its start itself.
    assert calls == [0, 1, 1, 0, 1]
    strip = lambda m: {k: v for k, v in m.items() if k.startswith("eval/") and "seconds" not in k
                           and k != "eval/shared_initial"}
    assert strip(runs["a"]) == strip(runs["b"])
    # b logs the seconds it spent copying, not a's evaluation time, and says it shared.
    assert runs["b"]["eval/shared_initial"] == 1.0 and "eval/shared_initial" not in runs["a"]
    assert runs["b"]["eval/seconds"] < runs["a"]["eval/seconds"]
    assert (tmp_path / "b" / "eval" / "step_0.jsonl").read_text() == \
        (tmp_path / "a" / "eval" / "step_0.jsonl").read_text()
