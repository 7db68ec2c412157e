"""The trainer loop end to end on a tiny policy: metrics, checkpoints, resume, export,
sharding, every method hook, and the skipped-update guard."""

import json
import os

import jax
import numpy as np
import pytest

from configs import grpo
from rl_reason import models, train
from rl_reason.methods import METHODS
from rl_reason.methods.base import Request, Row
from rl_reason.methods.grpo import GRPO


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
    report = "Held-out accuracy, step 0 -> step 3:\n  greedy_accuracy"
    assert report in capsys.readouterr().out
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


class EveryHook(GRPO):
    """A test method touching every hook: a second, longer rollout round for groups
    with no correct answer (as LTE does), off-policy rows with per-token advantages,
    and state that must survive a checkpoint."""

    name = "every_hook_test"

    def __init__(self, config, tokenizer):
        super().__init__(config, tokenizer)
        self.calls = {"prepare": 0, "follow_up": 0, "build_batch": 0, "after_step": 0}
        self.seen_ids: list[str] = []

    def prepare(self, records, ctx):
        self.calls["prepare"] += 1
        return super().prepare(records, ctx)

    def follow_up(self, samples, ctx):
        self.calls["follow_up"] += 1
        if any(s.request.tag == "extra" for s in samples):
            return []
        first = samples[0].request
        return [Request(record=first.record, context=first.context, num_samples=2,
                        group=first.group, tag="extra", max_new_tokens=8)]

    def build_batch(self, samples, ctx):
        self.calls["build_batch"] += 1
        extra = [s for s in samples if s.request.tag == "extra"]
        assert len(extra) == 2 and all(len(s.response) <= 8 for s in extra)
        rows = super().build_batch([s for s in samples if s.request.tag != "extra"], ctx)
        for s in extra:
            n_ctx, n = len(s.request.context), len(s.request.context) + len(s.response)
            rows.append(Row(tokens=s.request.context + s.response,
                            loss_mask=np.r_[np.zeros(n_ctx), np.ones(len(s.response))],
                            advantage=np.linspace(0, 1, n).astype(np.float32),
                            off_policy=np.ones(n, bool),
                            behaviour_logp=np.r_[np.zeros(n_ctx), s.logprobs].astype(np.float32)))
        ctx.metrics["every_hook/rows"] = len(rows)
        return rows

    def after_step(self, samples, ctx):
        self.calls["after_step"] += 1
        self.seen_ids.append(samples[0].request.record.id)

    def state(self):
        return {"seen_ids": list(self.seen_ids)}

    def restore(self, state):
        self.seen_ids = list(state["seen_ids"])


def test_a_method_using_every_hook_runs_and_resumes(tiny_policy, tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS, EveryHook.name, EveryHook)
    workdir = str(tmp_path / "hooks")
    c = tiny_config(tiny_policy, **{"train.num_steps": 2, "train.eval_every": 0})
    c.method_name = EveryHook.name
    trainer = train.Trainer(c, workdir)
    trainer.train()
    assert trainer.method.calls == {"prepare": 2, "follow_up": 4, "build_batch": 2,
                                    "after_step": 2}
    seen = list(trainer.method.seen_ids)
    trainer.close()
    # rows: 4 prompts x 4 samples + 2 extra off-policy rows
    assert [m["every_hook/rows"] for m in read_metrics(workdir) if "every_hook/rows" in m] == [18, 18]
    assert all(m["off_policy_fraction"] > 0 for m in read_metrics(workdir) if "loss" in m)

    c = tiny_config(tiny_policy, **{"train.num_steps": 3, "train.eval_every": 0})
    c.method_name = EveryHook.name
    resumed = train.Trainer(c, workdir)
    assert resumed.step == 2 and resumed.method.seen_ids == seen
    resumed.close()


def test_non_finite_update_is_skipped_and_counted(tiny_policy):
    from rl_reason import sharding, train_step
    from rl_reason.methods.base import loss_config_from

    model = models.load(tiny_policy)
    mesh = sharding.make_mesh(devices=jax.devices()[:1])
    c = tiny_config(tiny_policy)
    optimizer = train_step.make_optimizer(c.optim)
    sh = train_step.state_shardings(sharding.param_shardings(model.config, mesh), optimizer,
                                    jax.eval_shape(lambda p: p, model.params), mesh)
    state = train_step.init_state(model.params, optimizer, sh)
    before = jax.tree.map(np.asarray, state.params)
    fns = train_step.build_step_functions(model.config, loss_config_from(c), optimizer, sh,
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


def test_bad_checkpoint_path_and_unwritable_workdir_fail_clearly(tiny_policy, tmp_path):
    with pytest.raises(FileNotFoundError, match="model.checkpoint='/no/such/dir'"):
        train.run(tiny_config("/no/such/dir"), str(tmp_path / "a"))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match="not writable"):
        train.run(tiny_config(tiny_policy), str(blocker / "run"))
