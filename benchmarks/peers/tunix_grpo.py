"""tunix's GRPO step (GRPOLearner, vanilla rollout) as a lock-step benchmark worker.

Run by benchmarks/grpo_step.py with the tunix virtual environment's Python:

    python tunix_grpo.py --checkpoint DIR --job JOB.json

The policy is the Hugging Face checkpoint loaded with tunix's own Qwen2 loader
(models.qwen2.params.create_model_from_safe_tensors), the tokenizer is the
checkpoint's (transformers.AutoTokenizer), and the learner is tunix's GRPOLearner on
one RLCluster with actor and rollout sharing one mesh, no reference model (beta 0),
one update per batch (num_iterations 1, no mini-batches), AdamW after global-norm
clipping. The data iterator hands tunix one batch of prompts per step and, from the
second step on, marks the previous step's end: tunix asks for the next batch only when
the previous step is done, so a step's time is everything tunix does for it. Phases:
sampling (RLCluster.generate), update (RLCluster.update_actor), other (rewards,
advantages, batching, tunix's bookkeeping).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import protocol  # noqa: E402
from tunix_sampler import load  # noqa: E402


def main() -> None:
    checkpoint, job = protocol.worker_args()

    import optax
    import transformers
    from tunix.rl import rl_cluster as rl_cluster_lib
    from tunix.rl.grpo import grpo_learner
    from tunix.rl.rollout import base_rollout

    model, _, mesh = load(checkpoint)
    tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint)

    prompts, answers = job["prompts"], job["answers"]
    prompt_len = max(len(tokenizer.encode(p, add_special_tokens=False)) for p in prompts)
    optimizer = optax.chain(
        optax.clip_by_global_norm(job["grad_clip"]),
        optax.adamw(job["learning_rate"], b1=0.9, b2=0.999, weight_decay=0.0))
    cluster_config = rl_cluster_lib.ClusterConfig(
        role_to_mesh={rl_cluster_lib.Role.ACTOR: mesh, rl_cluster_lib.Role.REFERENCE: mesh,
                      rl_cluster_lib.Role.ROLLOUT: mesh},
        rollout_engine="vanilla",
        offload_to_cpu=False,
        training_config=rl_cluster_lib.RLTrainingConfig(
            actor_optimizer=optimizer, eval_every_n_steps=10**9, max_steps=10**6),
        rollout_config=base_rollout.RolloutConfig(
            max_tokens_to_generate=job["new_tokens"], max_prompt_length=prompt_len,
            kv_cache_size=prompt_len + job["new_tokens"], temperature=job["temperature"],
            top_p=1.0, top_k=None),
    )
    cluster = rl_cluster_lib.RLCluster(actor=model, reference=None, tokenizer=tokenizer,
                                       cluster_config=cluster_config)
    learner = grpo_learner.GRPOLearner(
        rl_cluster=cluster,
        algo_config=grpo_learner.GRPOConfig(
            num_generations=job["group"], num_iterations=1, beta=0.0,
            epsilon=job["clip"], loss_agg_mode="token-mean"),
        reward_fns=[lambda prompts, completions, answer, **_: [
            float(f"\\boxed{{{a}}}" in c) for c, a in zip(completions, answer)]],
    )

    clock = protocol.StepClock()
    cluster.generate = clock.timed("sampling", cluster.generate)
    update_actor = cluster.update_actor

    def recording_update(train_ds, *rest, **kwargs):
        example = train_ds[0] if isinstance(train_ds, (list, tuple)) else train_ds
        rows = int(example.prompt_ids.shape[0])
        length = int(example.prompt_ids.shape[1] + example.completion_ids.shape[1])
        real = float(np.asarray(example.prompt_mask).sum()
                     + np.asarray(example.completion_mask).sum()) / rows
        clock.extra.update(update_shape=[rows, length], real_tokens_per_row=real)
        return clock.timed("update", update_actor)(train_ds, *rest, **kwargs)

    cluster.update_actor = recording_update

    batch = {"prompts": np.array(prompts), "answer": np.array(answers)}

    def batches():
        # train() peeks at the first batch, so warm-up step 1 is the first yield.
        warmups = []
        for i in range(job["warmup_steps"]):
            if i:
                warmups.append(clock.result()["seconds"])
            clock.begin()
            yield batch
        warmups.append(clock.result()["seconds"])
        protocol.emit("ready", {"warmup_seconds": warmups})
        while protocol.wait_for_step():
            clock.begin()
            yield batch
            protocol.emit("step", clock.result())

    with mesh:
        learner.train(batches())


if __name__ == "__main__":
    main()
