"""The one trainer loop every method shares.

    setup        config check, mesh, policy (+ frozen reference), data, verifier,
                 method, checkpoint restore
    each step    prepare -> rollout rounds (sample, verify, follow_up)
                 -> build_batch -> log-prob pass -> update(s) -> after_step
                 -> metrics, evaluation, checkpoint
    end          final evaluation, checkpoint, Hugging Face export

Everything random is derived from (seed, step), and data position and method state
are checkpointed, so a run killed at any point and restarted with the same command
and workdir continues exactly as if it had not stopped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rl_reason import checkpoint as ckpt_lib
from rl_reason import config_check, metrics as metrics_lib, sharding, train_step
from rl_reason import models, plot, run_setup
from rl_reason.methods import make_method
from rl_reason.methods.base import StepContext
from rl_reason.models import Model
from rl_reason.rl import batch as batch_lib
from rl_reason.rl.advantages import group_pass_stats
from rl_reason.rollout import RolloutEngine


def run(config, workdir: str, devices=None) -> dict:
    """Train (or resume) the run in `workdir`; returns the last step's metrics.

    devices: the devices the mesh spans (default: all).
    """
    config_check.check(config, num_devices=len(devices) if devices else jax.device_count())
    if config.note and jax.process_index() == 0:
        print(f"NOTE: {config.note}", flush=True)
    trainer = Trainer(config, workdir, devices)
    try:
        return trainer.train()
    finally:
        trainer.close()


class Trainer:
    def __init__(self, config, workdir: str, devices=None):
        self.config = c = config
        self.workdir = run_setup.prepare_workdir(workdir, config)
        self.is_main = jax.process_index() == 0
        self.mesh = sharding.make_mesh(c.mesh.data, c.mesh.fsdp, c.mesh.tensor, devices=devices)
        self.timer = metrics_lib.PhaseTimer()

        # Policy and (when KL is on) the frozen reference: one function, two trees.
        self.model_path = run_setup.policy_path(c)
        model = run_setup.load_policy(self.model_path, c, self.mesh)
        self.model_config = model.config
        self.tokenizer = run_setup.load_tokenizer_for(self.model_path)
        self.ref_params = model.params if c.loss.kl_coef > 0 else None

        self.optimizer = train_step.make_optimizer(c.optim)
        params_sh = sharding.param_shardings(self.model_config, self.mesh)
        abstract_params = jax.eval_shape(lambda p: p, model.params)
        self.state_sh = train_step.state_shardings(params_sh, self.optimizer, abstract_params,
                                                   self.mesh)
        self.state = train_step.init_state(model.params, self.optimizer, self.state_sh)
        if self.ref_params is None:
            del model

        self.updates_per_batch = c.optim.ppo_epochs * c.optim.num_minibatches
        self.method = make_method(c.method_name, c, self.tokenizer)
        self.loss_config = self.method.loss_config()
        self.fns = train_step.build_step_functions(
            self.model_config, self.loss_config, self.optimizer, self.state_sh, self.mesh,
            temperature=c.rollout.temperature, logprob_chunk=c.model.logprob_chunk,
            remat=c.model.remat, skip_grad_norm_above=c.optim.skip_grad_norm_above)
        self.row_multiple = c.optim.num_minibatches * sharding.data_parallel_size(self.mesh)

        self.stream, self.eval_records = run_setup.make_data(c, self.tokenizer)
        self.verifier = run_setup.make_verifier(c.verifier)
        self.engine = RolloutEngine(
            self.tokenizer, self.verifier, c.rollout,
            stop_token_ids=models.stop_token_ids(self.tokenizer, self.model_config),
            pad_id=models.pad_token_id(self.tokenizer), mesh=self.mesh, timer=self.timer)
        self.base_rng = jax.random.PRNGKey(c.seed)

        self.checkpointer = ckpt_lib.Checkpointer(
            os.path.join(self.workdir, "checkpoints"), keep=c.train.keep_checkpoints,
            save_every=c.train.checkpoint_every)
        self.writer = metrics_lib.MetricsWriter(self.workdir)
        self.step = self._restore()

    # ---------------------------------------------------------------- checkpoints
    def _restore(self) -> int:
        abstract = jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
            self.state, self.state_sh)
        restored = self.checkpointer.restore(
            abstract_train_state=abstract,
            fallback_to_previous=self.config.train.checkpoint_fallback)
        if restored is None:
            return 0
        self.state, extra, method_state = restored
        step = int(extra["step"])
        self.stream.restore(extra["data"])
        self.method.restore(method_state or {})
        self.writer.truncate_after(step)
        if self.is_main:
            print(f"Resumed from {self.checkpointer.directory} at step {step}.", flush=True)
        return step

    def _save(self, force: bool = False) -> None:
        extra = {"data": self.stream.state(), "step": self.step,
                 "model_path": str(self.model_path)}
        self.checkpointer.save(self.step, self.state, extra, method_state=self.method.state(),
                               force=force)

    # ---------------------------------------------------------------- the loop
    def train(self) -> dict:
        c = self.config
        total = c.train.num_steps
        if self.step >= total:
            print(f"Nothing to do: the run in {self.workdir} finished {self.step} steps "
                  f"(train.num_steps={total}).", flush=True)
            self._print_held_out_report()
            return {}
        if self.step == 0:
            self._log(0, self.evaluate(), prefix_only=True)
        progress = metrics_lib.Progress(total, start_step=self.step)
        last: dict = {}
        try:
            while self.step < total:
                try:
                    last = self.train_step()
                except run_setup.DataExhausted as e:
                    print(f"\nTraining data exhausted after step {self.step}: {e}", flush=True)
                    break
                self.step += 1
                is_last = self.step == total
                if c.train.eval_every and self.step % c.train.eval_every == 0 and not is_last:
                    last.update(self.evaluate())
                if is_last:
                    last.update(self.evaluate())
                self._log(self.step, last)
                progress.update(self.step, last)
                if self.checkpointer.should_save(self.step) or is_last:
                    self._save(force=is_last)
        finally:
            progress.close()
        self._save(force=True)
        if c.train.export_hf:
            self.export()
        self._print_held_out_report()
        return last

    def _print_held_out_report(self) -> None:
        """Held-out accuracy at the first and last evaluations (from metrics.jsonl)."""
        if self.is_main:
            self.writer.flush()
            report = plot.held_out_report(self.workdir)
            if report:
                print(report, flush=True)

    def train_step(self) -> dict:
        c = self.config
        self.timer.reset()
        t0 = time.perf_counter()
        tokens_before = self.engine.generated_tokens
        self.engine.status_counts.clear()
        ctx = StepContext(step=self.step, config=c, tokenizer=self.tokenizer,
                          rng=np.random.default_rng([c.seed, self.step]))
        ctx.next_records = self.stream.next_records
        rng = jax.random.fold_in(self.base_rng, self.step)
        model = Model(self.state.params, self.model_config)

        with self.timer.phase("prepare"):
            requests = self.method.prepare(self.stream.next_records(c.rollout.prompts_per_step),
                                           ctx)
        samples = []
        for round_ in range(self.method.max_rollout_rounds):
            if not requests:
                break
            samples += self.engine.rollout(model, requests, jax.random.fold_in(rng, round_))
            with self.timer.phase("prepare"):
                requests = self.method.follow_up(samples, ctx)
        with self.timer.phase("build_batch"):
            rows = self.method.build_batch(samples, ctx)

        update_metrics = self._update(rows, ctx) if rows else {"update_applied": 0.0}
        self.method.after_step(samples, ctx)
        self.state = dataclasses.replace(
            self.state, step=jax.device_put(jnp.int32(self.step + 1), self.state_sh.step))

        m = rollout_metrics(samples)
        m.update(update_metrics)
        m.update(ctx.metrics)
        m["rows"] = len(rows)
        m["learning_rate"] = train_step.learning_rate(c.optim, self.step * self.updates_per_batch)
        m["skipped_updates"] = int(self.state.skipped)
        for status, n in self.engine.status_counts.items():
            m[f"verifier/{status}"] = n
        m.update({f"time/{k}": v for k, v in self.timer.totals().items()})
        m["time/step"] = time.perf_counter() - t0
        sampling_time = self.timer.totals().get("sampling", 0.0)
        generated = self.engine.generated_tokens - tokens_before
        m["tokens_per_s"] = generated / sampling_time if sampling_time else 0.0
        return m

    def _update(self, rows, ctx) -> dict:
        c = self.config
        rows_sh = sharding.batch_sharding(self.mesh)
        with self.timer.phase("build_batch"):
            batch = batch_lib.collate(rows, row_multiple=self.row_multiple,
                                      seq_bucket=c.train.seq_bucket,
                                      pad_id=self.engine.pad_id)
            minibatches = batch_lib.split_minibatches(
                batch, c.optim.num_minibatches, np.random.default_rng([c.seed, self.step]))
        with self.timer.phase("logprobs"):
            minibatches = [run_setup.to_device(mb, rows_sh) for mb in minibatches]
            # Behaviour and reference log-probs are taken before any update of this step.
            for mb in minibatches:
                if self.updates_per_batch > 1:
                    mb["old_logp"] = self.fns.logprobs(self.state.params, mb)
                if self.ref_params is not None:
                    mb["ref_logp"] = self.fns.logprobs(self.ref_params, mb)
            jax.block_until_ready(minibatches)
        sums: dict[str, float] = {}
        with self.timer.phase("update"):
            for _ in range(c.optim.ppo_epochs):
                for mb in minibatches:
                    self.state, metrics = self.fns.update(self.state, mb)
                    for k, v in jax.device_get(metrics).items():
                        sums[k] = sums.get(k, 0.0) + float(v)
        return {k: v / self.updates_per_batch for k, v in sums.items()}

    # ---------------------------------------------------------------- evaluation, export
    def evaluate(self) -> dict:
        if not self.eval_records or not self.config.eval.enabled:
            return {}
        with self.timer.phase("eval"):
            model = Model(self.state.params, self.model_config)
            return run_setup.evaluate(
                model, self.tokenizer, self.eval_records, self.config,
                rng=jax.random.fold_in(self.base_rng, 10**9 + self.step), mesh=self.mesh,
                verifier=self.verifier, stop_ids=self.engine.stop_token_ids,
                pad=self.engine.pad_id,
                out_path=os.path.join(self.workdir, "eval", f"step_{self.step}.jsonl"))

    def export(self) -> None:
        path = os.path.join(self.workdir, "hf")
        run_setup.export_hf(Model(self.state.params, self.model_config), self.tokenizer, path)
        if self.is_main:
            print(f"Exported the policy in Hugging Face format to {path}", flush=True)

    def _log(self, step: int, m: dict, prefix_only: bool = False) -> None:
        if not m:
            return
        self.writer.write(step, m)
        if prefix_only:
            summary = ", ".join(f"{k}={v:.3f}" for k, v in sorted(m.items())
                                if isinstance(v, float))
            print(f"Before training: {summary}", flush=True)

    def close(self) -> None:
        for closer in (getattr(self, "checkpointer", None), getattr(self, "writer", None),
                       getattr(self, "verifier", None)):
            if closer is not None and hasattr(closer, "close"):
                closer.close()


def rollout_metrics(samples) -> dict:
    if not samples:
        return {"samples": 0}
    rewards = np.array([s.reward for s in samples], np.float32)
    correct = np.array([s.correct for s in samples])
    names: dict[str, int] = {}
    ids = np.array([names.setdefault(s.request.group, len(names)) for s in samples])
    stats = group_pass_stats(correct, ids, num_groups=len(names))
    return {
        "samples": len(samples),
        "reward_mean": float(rewards.mean()),
        "accuracy": float(correct.mean()),
        "none_pass_fraction": float(stats["none_pass_fraction"]),
        "all_pass_fraction": float(stats["all_pass_fraction"]),
        "mixed_fraction": float(stats["mixed_fraction"]),
        "response_length_mean": float(np.mean([len(s.response) for s in samples])),
        "truncation_rate": float(np.mean([s.truncated for s in samples])),
    }
