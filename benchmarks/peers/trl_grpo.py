"""TRL's GRPO step (GRPOTrainer, transformers generation, CPU torch) as a lock-step
benchmark worker.

Run by benchmarks/grpo_step.py with the TRL virtual environment's Python:

    python trl_grpo.py --checkpoint DIR --job JOB.json

The policy is the Hugging Face checkpoint (AutoModelForCausalLM, float32), the
tokenizer the checkpoint's; the trainer is TRL's GRPOTrainer with one prompt batch per
optimizer step (steps_per_generation 1, num_iterations 1, no gradient accumulation), no
KL (beta 0, so no reference model), AdamW at a constant rate after global-norm
clipping, torch.set_num_threads(usable cores). A step runs from the trainer's
on_step_begin callback (where the worker waits for the orchestrator) to on_step_end
(after the optimizer step). Phases: sampling (the transformers generate call inside
GRPOTrainer._generate), scoring (the rest of _generate_and_score_completions:
rewards, advantages, batching), update (the loss, backward and optimizer step, i.e.
the rest of the step).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import protocol  # noqa: E402


def main() -> None:
    checkpoint, job = protocol.worker_args()

    import datasets
    import torch
    import transformers
    import trl

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    transformers.utils.logging.set_verbosity_error()
    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint,
                                                              dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint)
    prompts, answers = job["prompts"], job["answers"]
    rows = len(prompts) * job["group"]
    steps = job["warmup_steps"] + 10**4
    # TRL draws prompts from the dataset (each repeated num_generations times in one
    # batch); the same prompts, in order, at every step.
    dataset = datasets.Dataset.from_dict({"prompt": prompts * steps, "answer": answers * steps})

    def reward(completions, answer, **_):
        return [float(f"\\boxed{{{a}}}" in c) for c, a in zip(completions, answer)]

    config = trl.GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl_grpo_"), use_cpu=True, report_to="none",
        per_device_train_batch_size=rows, num_generations=job["group"],
        gradient_accumulation_steps=1, steps_per_generation=1, num_iterations=1,
        max_completion_length=job["new_tokens"], temperature=job["temperature"], top_p=1.0,
        top_k=0, beta=0.0, epsilon=job["clip"], learning_rate=job["learning_rate"],
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=job["grad_clip"], max_steps=steps, save_strategy="no",
        logging_steps=10**6, disable_tqdm=True, shuffle_dataset=False, seed=0,
        dataloader_num_workers=0, bf16=False, fp16=False,
        # Recomputing activations saves memory a 19M model does not need on CPU; off,
        # as in the other two frameworks.
        gradient_checkpointing=False)

    clock = protocol.StepClock()
    state = {"step": 0, "warmups": []}

    class LockStep(transformers.TrainerCallback):
        def on_step_begin(self, args, state_, control, **kwargs):
            if state["step"] == job["warmup_steps"]:
                protocol.emit("ready", {"warmup_seconds": state["warmups"]})
            if state["step"] >= job["warmup_steps"] and not protocol.wait_for_step():
                control.should_training_stop = True
                raise StopTraining
            clock.begin()

        def on_step_end(self, args, state_, control, **kwargs):
            result = clock.result()
            # What is left of the step: the loss, backward pass and optimizer step.
            result["phases"]["update"] = result["phases"].pop("other")
            if state["step"] < job["warmup_steps"]:
                state["warmups"].append(result["seconds"])
            else:
                protocol.emit("step", result)
            state["step"] += 1

    trainer = trl.GRPOTrainer(model=model, reward_funcs=reward, args=config,
                              train_dataset=dataset, processing_class=tokenizer,
                              callbacks=[LockStep()])

    generate_and_score = trainer._generate_and_score_completions
    generate = trainer._generate

    def timed_generate(*a, **k):
        return clock.timed("sampling", generate)(*a, **k)

    def timed_generate_and_score(*a, **k):
        before = clock.phases.get("sampling", 0.0)
        t0 = time.perf_counter()
        out = generate_and_score(*a, **k)
        sampling = clock.phases.get("sampling", 0.0) - before
        clock.add("scoring", time.perf_counter() - t0 - sampling)
        ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
        real = float(out["prompt_mask"].sum() + out["completion_mask"].sum()) / ids.shape[0]
        clock.extra.update(update_shape=list(ids.shape), real_tokens_per_row=real)
        return out

    trainer._generate = timed_generate
    trainer._generate_and_score_completions = timed_generate_and_score
    try:
        trainer.train()
    except StopTraining:
        pass


class StopTraining(Exception):
    """The orchestrator said quit."""


if __name__ == "__main__":
    main()
