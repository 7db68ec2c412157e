"""The one trainer loop every method shares.

    setup        config check, mesh, policy, data, verifier, method, checkpoint restore
                 (method state first: its loss settings and KL needs may depend on it),
                 then the frozen reference if the method's loss uses a KL
    each step    prepare -> rollout rounds (sample, verify, follow_up)
                 -> build_batch -> log-prob pass -> update(s) with this step's loss
                 settings -> after_step -> metrics, evaluation, checkpoint
    end          final evaluation, checkpoint, Hugging Face export

Everything random is derived from (seed, step), and data position, method state and
the generation budget are checkpointed, so a run killed at any point and restarted
with the same command and workdir continues exactly as if it had not stopped.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
import warnings
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rl_reason import checkpoint as ckpt_lib
from rl_reason import config_check, metrics as metrics_lib, sharding, update
from rl_reason import evaluate as evaluate_lib
from rl_reason.evaluation import initial as initial_eval
from rl_reason import models, plot, run_setup, wandb_sink
from rl_reason.methods.registry import make_method
from rl_reason.protocol import Outcome, Sample, StepContext, TokenScores
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

        self.model_path = run_setup.policy_path(c)
        world = run_setup.record_world(self.workdir, self.model_path)
        if world is not None and self.is_main:
            print(f"World: {run_setup.world_label(world)}", flush=True)
        model = run_setup.load_policy(self.model_path, c, self.mesh)
        self.model_config = model.config
        self.tokenizer = run_setup.load_tokenizer_for(self.model_path)

        self.optimizer = update.make_optimizer(c.optim)
        params_sh = sharding.param_shardings(self.model_config, self.mesh)
        abstract_params = jax.eval_shape(lambda p: p, model.params)
        self.state_sh = update.state_shardings(params_sh, self.optimizer, abstract_params,
                                                   self.mesh)
        self.state = update.init_state(model.params, self.optimizer, self.state_sh)
        self.updates_per_batch = c.optim.ppo_epochs * c.optim.num_minibatches
        self.row_multiple = (c.optim.num_minibatches * c.optim.micro_batches
                             * sharding.data_parallel_size(self.mesh))
        self.method = make_method(c.method_name, c, self.tokenizer)

        self.stream, self.eval_records = run_setup.make_data(c, self.tokenizer)
        self.verifier = run_setup.make_verifier(c.verifier)
        self.engine = RolloutEngine(
            self.tokenizer, self.verifier, c.rollout,
            stop_token_ids=models.stop_token_ids(self.tokenizer, self.model_config),
            pad_id=models.pad_token_id(self.tokenizer), mesh=self.mesh, timer=self.timer)
        self.base_rng = jax.random.PRNGKey(c.seed)
        self.held_out: dict = {}

        self.checkpointer = ckpt_lib.Checkpointer(
            os.path.join(self.workdir, "checkpoints"), keep=c.train.keep_checkpoints,
            save_every=c.train.checkpoint_every)
        sink = wandb_sink.WandbSink.from_config(c, self.workdir) if self.is_main else None
        self.writer = metrics_lib.MetricsWriter(self.workdir, sinks=[sink] if sink else [])
        # The order matters: the method's state is restored before it is asked about
        # its loss, and the reference (the starting policy) is kept only if needed.
        self.step = self._restore()
        self.ref_params = model.params if self.method.needs_reference() else None
        del model
        self._update_fns: dict = {}   # LossConfig -> StepFunctions, compiled on first use
        self._score_fn = update.build_scorer(
            self.model_config, self.mesh, temperature=c.rollout.temperature,
            logprob_chunk=c.model.logprob_chunk)

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
        self.engine.restore(extra.get("budget", {}))
        self.method.restore(method_state or {})
        self.writer.truncate_after(step)
        self.held_out = metrics_lib.last_evaluation(self.workdir, step)
        if self.is_main:
            print(f"Resumed from {self.checkpointer.directory} at step {step}.", flush=True)
        return step

    def _save(self, force: bool = False) -> None:
        extra = {"data": self.stream.state(), "step": self.step,
                 "model_path": str(self.model_path), "budget": self.engine.state()}
        self.checkpointer.save(self.step, self.state, extra, method_state=self.method.state(),
                               force=force)

    # ---------------------------------------------------------------- the loop
    def _budget_spent(self) -> bool:
        limit = self.config.train.max_generated_tokens
        return bool(limit) and self.engine.generated_tokens >= limit

    def train(self) -> dict:
        c = self.config
        total = c.train.num_steps
        if self.step >= total or self._budget_spent():
            print(f"Nothing to do: the run in {self.workdir} finished {self.step} steps "
                  f"(train.num_steps={total}, {self.engine.generated_tokens} tokens "
                  f"generated).", flush=True)
            self._print_held_out_report()
            return {}
        if self.step == 0:
            self._log(0, self.evaluate(), prefix_only=True)
        progress = metrics_lib.Progress(total, start_step=self.step,
                                        token_budget=c.train.max_generated_tokens,
                                        start_tokens=self.engine.generated_tokens)
        last: dict = {}
        evaluated_at = None
        try:
            while self.step < total:
                try:
                    last = self.train_step()
                except run_setup.DataExhausted as e:
                    print(f"\nTraining data exhausted after step {self.step}: {e}", flush=True)
                    break
                self.step += 1
                is_last = self.step == total or self._budget_spent()
                if is_last or (c.train.eval_every and self.step % c.train.eval_every == 0):
                    last.update(self.evaluate())
                    evaluated_at = self.step
                self._log(self.step, last)
                progress.update(self.step, last, tokens=self.engine.generated_tokens)
                if self.checkpointer.should_save(self.step) or is_last:
                    self._save(force=is_last)
                if is_last:
                    if self._budget_spent() and self.step < total:
                        print(f"\nGeneration budget spent: {self.engine.generated_tokens} "
                              f"tokens (train.max_generated_tokens="
                              f"{c.train.max_generated_tokens}).", flush=True)
                    break
        finally:
            progress.close()
        if evaluated_at != self.step and self.step > 0:   # stopped early: evaluate the end
            self._log(self.step, self.evaluate())
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
        tokens_before, calls_before = self.engine.generated_tokens, self.engine.sampler_calls
        self.engine.begin_step()
        rng = jax.random.fold_in(self.base_rng, self.step)
        model = Model(self.state.params, self.model_config)
        every_sample: list[Sample] = []   # rounds and ctx.rollout alike, for the metrics
        extra_calls = itertools.count(1)    # ctx.rollout calls this step: 1, 2, ...

        def rollout(requests, key):
            samples = self.engine.rollout(model, list(requests), key)
            every_sample.extend(samples)
            return samples

        def rollout_now(requests):
            return rollout(requests, jax.random.fold_in(jax.random.fold_in(rng, 1),
                                                        next(extra_calls)))

        ctx = StepContext(
            step=self.step, config=c, tokenizer=self.tokenizer,
            rng=np.random.default_rng([c.seed, self.step]), draw_records=self._draw_records,
            retire=self.stream.retire, rollout=rollout_now,
            score=lambda sequences: self.score(self.state.params, sequences),
            held_out=dict(self.held_out))
        # A step cut short by exhausted data leaves the stream where the step began.
        stream_state, budget_state = self.stream.state(), self.engine.state()
        try:
            with self.timer.phase("prepare"):
                requests = self.method.prepare(ctx)
            samples: list[Sample] = []
            for round_ in range(self.method.max_rollout_rounds):
                if not requests:
                    break
                samples += rollout(requests, jax.random.fold_in(jax.random.fold_in(rng, 0),
                                                                round_))
                with self.timer.phase("prepare"):
                    requests = self.method.follow_up(samples, ctx)
        except run_setup.DataExhausted:
            self.stream.restore(stream_state)
            self.engine.restore(budget_state)
            raise
        if requests:
            warnings.warn(f"step {self.step}: {len(requests)} requests still pending after "
                          f"max_rollout_rounds={self.method.max_rollout_rounds} of method "
                          f"{self.method.name!r}; they were not sampled")
        with self.timer.phase("build_batch"):
            rows = self.method.build_batch(samples, ctx)

        update_metrics = self._update(rows) if rows else {"update_applied": 0.0}
        self.method.after_step(samples, ctx)
        self.state = dataclasses.replace(
            self.state, step=jax.device_put(jnp.int32(self.step + 1), self.state_sh.step))

        m = outcome_metrics(self.method.outcomes(every_sample))
        m.update(tag_metrics(every_sample))
        m.update(update_metrics)
        m.update(ctx.metrics)
        m["rows"] = len(rows)
        m["rollout/pending_cut_off"] = len(requests)
        m["learning_rate"] = update.learning_rate(c.optim, self.step * self.updates_per_batch)
        m["skipped_updates"] = int(self.state.skipped)
        for status, n in self.engine.status_counts.items():
            m[f"verifier/{status}"] = n
        m.update({f"time/{k}": v for k, v in self.timer.totals().items()})
        m["time/step"] = time.perf_counter() - t0
        generated = self.engine.generated_tokens - tokens_before
        sampling_time = self.timer.totals().get("sampling", 0.0)
        m["tokens_per_s"] = generated / sampling_time if sampling_time else 0.0
        m["generated_tokens"] = generated
        m["sampler_calls"] = self.engine.sampler_calls - calls_before
        m["budget/generated_tokens"] = self.engine.generated_tokens
        m["budget/sampler_calls"] = self.engine.sampler_calls
        return m

    def _draw_records(self, count: int):
        """ctx.draw_records: what `data.when_exhausted` says when too few are left."""
        if count <= 0:
            return []
        active = self.stream.num_active
        if active < count and self.config.data.when_exhausted == "shrink" and active > 0:
            count = active
        return self.stream.next_records(count)

    def score(self, params, sequences: Sequence[tuple[Sequence[int], int]]) -> list[TokenScores]:
        """ctx.score: log-probs and mean entropy of each response under `params`."""
        if not sequences:
            return []
        for tokens, start in sequences:
            if not 1 <= start <= len(tokens):
                raise ValueError(f"score: response_start={start} must be in [1, {len(tokens)}] "
                                 "(position 0 has no prediction)")
        rows_sh = sharding.batch_sharding(self.mesh)
        chunk = self.config.rollout.max_sample_batch or len(sequences)
        results = []
        with self.timer.phase("score"):
            for begin in range(0, len(sequences), chunk):
                part = sequences[begin:begin + chunk]
                batch = batch_lib.pad_sequences(
                    [list(t) for t, _ in part], row_multiple=sharding.data_parallel_size(self.mesh),
                    seq_bucket=self.config.train.seq_bucket, pad_id=self.engine.pad_id)
                logp, entropy = jax.device_get(
                    self._score_fn(params, sharding.to_device(batch, rows_sh)))
                for i, (tokens, start) in enumerate(part):
                    end = len(tokens)
                    results.append(TokenScores(
                        logprobs=np.asarray(logp[i, start:end], np.float32),
                        mean_entropy=float(np.mean(entropy[i, start:end])) if end > start else 0.0))
        return results

    def _step_functions(self, loss_config):
        if loss_config.kl_coef > 0 and self.ref_params is None:
            raise RuntimeError(
                f"method {self.method.name!r} asks for a KL term (kl_coef={loss_config.kl_coef}) "
                f"at step {self.step}, but its needs_reference() was False at start, so no "
                "reference policy was kept")
        if loss_config not in self._update_fns:
            c = self.config
            self._update_fns[loss_config] = update.build_step_functions(
                self.model_config, loss_config, self.optimizer, self.state_sh, self.mesh,
                temperature=c.rollout.temperature, logprob_chunk=c.model.logprob_chunk,
                remat=c.model.remat, skip_grad_norm_above=c.optim.skip_grad_norm_above,
                micro_batches=c.optim.micro_batches)
        return self._update_fns[loss_config]

    def _update(self, rows) -> dict:
        c = self.config
        fns = self._step_functions(self.method.loss_config())
        rows_sh = sharding.batch_sharding(self.mesh)
        with self.timer.phase("build_batch"):
            shuffle = np.random.default_rng([c.seed, self.step])
            if c.train.share_prefixes:
                # One block per minibatch, data shard and micro-batch (row_multiple).
                batch = batch_lib.collate_shared(
                    rows, blocks=self.row_multiple, seq_bucket=c.train.shared_seq_bucket,
                    pad_id=self.engine.pad_id, rng=shuffle)
                minibatches = batch_lib.split_blocks(batch, c.optim.num_minibatches,
                                                     self.row_multiple)
            else:
                batch = batch_lib.collate(rows, row_multiple=self.row_multiple,
                                          seq_bucket=c.train.seq_bucket,
                                          pad_id=self.engine.pad_id)
                minibatches = batch_lib.split_minibatches(batch, c.optim.num_minibatches,
                                                          shuffle)
        with self.timer.phase("logprobs"):
            minibatches = [sharding.to_device(mb, rows_sh) for mb in minibatches]
            # Behaviour and reference log-probs are taken before any update of this step.
            for mb in minibatches:
                if self.updates_per_batch > 1:
                    mb["old_logp"] = fns.logprobs(self.state.params, mb)
                if self.ref_params is not None:
                    mb["ref_logp"] = fns.logprobs(self.ref_params, mb)
            jax.block_until_ready(minibatches)
        sums: dict[str, float] = {}
        with self.timer.phase("update"):
            for _ in range(c.optim.ppo_epochs):
                for mb in minibatches:
                    self.state, metrics = fns.update(self.state, mb)
                    for k, v in jax.device_get(metrics).items():
                        sums[k] = sums.get(k, 0.0) + float(v)
        return {k: v / self.updates_per_batch for k, v in sums.items()}

    # ---------------------------------------------------------------- evaluation, export
    def evaluate(self) -> dict:
        c = self.config
        if not self.eval_records or not c.eval.enabled:
            return {}
        eval_dir = os.path.join(self.workdir, "eval")
        # Runs that start alike share their step-0 evaluation (evaluation/initial.py).
        shared = self.step == 0 and c.eval.share_initial and jax.process_count() == 1
        started = time.monotonic()
        metrics = initial_eval.load(c, self.model_path, eval_dir) if shared else None
        if metrics is not None:
            # The stored seconds are the run that computed it; this run spent only the copy.
            metrics = dict(metrics, **{"eval/seconds": time.monotonic() - started,
                                       "eval/shared_initial": 1.0})
        else:
            with self.timer.phase("eval"):
                model = Model(self.state.params, self.model_config)
                metrics = evaluate_lib.held_out_metrics(
                    model, self.tokenizer, self.eval_records, c,
                    rng=jax.random.fold_in(self.base_rng, 10**9 + self.step), mesh=self.mesh,
                    verifier=self.verifier, stop_ids=self.engine.stop_token_ids,
                    pad=self.engine.pad_id, eval_dir=eval_dir, step=self.step)
            if shared:
                initial_eval.store(c, self.model_path, eval_dir, metrics)
        self.held_out = dict(metrics, step=self.step)
        return metrics

    def export(self) -> None:
        path = os.path.join(self.workdir, "hf")
        run_setup.export_hf(Model(self.state.params, self.model_config), self.tokenizer, path,
                            source=self.model_path)
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


def outcome_metrics(outcomes: Sequence[Outcome]) -> dict:
    """Headline rollout metrics over the step's on-policy outcomes."""
    if not outcomes:
        return {"samples": 0}
    rewards = np.array([o.reward for o in outcomes], np.float32)
    correct = np.array([o.correct for o in outcomes])
    names: dict[str, int] = {}
    ids = np.array([names.setdefault(o.group, len(names)) for o in outcomes])
    stats = group_pass_stats(correct, ids, num_groups=len(names))
    return {
        "samples": len(outcomes),
        "reward_mean": float(rewards.mean()),
        "accuracy": float(correct.mean()),
        "none_pass_fraction": float(stats["none_pass_fraction"]),
        "all_pass_fraction": float(stats["all_pass_fraction"]),
        "mixed_fraction": float(stats["mixed_fraction"]),
        "response_length_mean": float(np.mean([o.length for o in outcomes])),
        "truncation_rate": float(np.mean([o.truncated for o in outcomes])),
    }


def tag_metrics(samples: Sequence[Sample]) -> dict:
    """rollout/<tag>/... for every tag of the step's samples (fresh included)."""
    by_tag: dict[str, list[Sample]] = {}
    for s in samples:
        by_tag.setdefault(s.request.tag, []).append(s)
    m = {}
    for tag, group in sorted(by_tag.items()):
        m[f"rollout/{tag}/samples"] = len(group)
        m[f"rollout/{tag}/accuracy"] = float(np.mean([s.correct for s in group]))
        m[f"rollout/{tag}/reward_mean"] = float(np.mean([s.reward for s in group]))
        m[f"rollout/{tag}/generated_tokens"] = int(sum(len(s.response) for s in group))
        m[f"rollout/{tag}/truncation_rate"] = float(np.mean([s.truncated for s in group]))
    return m
