"""GRPO, the baseline (docs/methods.md, "GRPO"), with the DAPO / Dr.GRPO switches.

Run (embedded task on CPU: base-policy warm-start on first use, then RL):
    python -m rl_reason.main --config=configs/grpo.py
Expect: held-out accuracy printed before and after training (measured figures: README,
"Quickstart"; docs/measurements.md, "Embedded GRPO default").

Variants (`--config=configs/grpo.py:<variant>`):
    tiny              a few steps, for tests and smoke runs
    dapo              clip-higher 0.28, dynamic sampling, overlong shaping, no KL
    drgrpo            no std normalisation, constant normaliser aggregation
    qwen25_math_1p5b  Qwen2.5-Math-1.5B on one GPU (give --config.model.checkpoint and
                      --config.data.train / eval files)
    qwen3_4b          Qwen3-4B-Base on a TPU v5e/v6e pod slice (fsdp over hosts)
"""

from configs import base
from rl_reason.errors import UnknownVariantError

VARIANTS = ("tiny", "dapo", "drgrpo", "qwen25_math_1p5b", "qwen3_4b")


def get_config(arg: str = ""):
    c = base.get_base_config()
    c.name = "grpo"
    c.method_name = "grpo"
    base.embedded_cpu_settings(c)
    apply_variant(c, arg)
    c.lock()
    return c


def apply_variant(c, arg: str) -> None:
    """Named variants shared by the method configs built on GRPO."""
    for part in filter(None, arg.split(",")):
        if part == "tiny":
            c.rollout.update(prompts_per_step=4, group_size=4, max_new_tokens=32)
            c.train.update(num_steps=3, eval_every=0, checkpoint_every=1)
            c.data.update(embedded_train_size=200, embedded_eval_size=16)
            c.eval.update(num_samples=2, ks=(1, 2), max_problems=16)
        elif part == "dapo":
            c.loss.update(clip_low=0.2, clip_high=0.28, kl_coef=0.0)
            c.rollout.dynamic_sampling = True
            c.reward.update(overlong_buffer=16, mask_truncated=False)
        elif part == "drgrpo":
            c.advantage.norm_by_std = False
            c.loss.aggregation = "constant"
        elif part == "qwen25_math_1p5b":
            real_math_run(c)
            c.model.update(dtype="bfloat16", param_dtype="float32", remat=True,
                           logprob_chunk=1024)
            c.rollout.update(prompts_per_step=64, group_size=8, max_prompt_len=1024,
                             max_new_tokens=3072, max_sample_batch=128)
            c.mesh.update(data=1, fsdp=-1, tensor=1)
        elif part == "qwen3_4b":
            real_math_run(c)
            c.model.update(dtype="bfloat16", param_dtype="float32", remat=True,
                           logprob_chunk=1024)
            c.rollout.update(prompts_per_step=128, group_size=16, max_prompt_len=1024,
                             max_new_tokens=8192, max_sample_batch=256)
            # TPU pod slice: parameters and optimizer state fully sharded over every
            # chip, heads split 4 ways inside a host.
            c.mesh.update(data=1, fsdp=-1, tensor=4)
            c.optim.num_minibatches = 4
        else:
            raise UnknownVariantError(part, VARIANTS)


def real_math_run(c) -> None:
    """verl DAPO-recipe defaults for a real checkpoint on math data (docs/methods.md,
    "GRPO")."""
    c.verifier.update(name="math", num_workers=16, timeout_s=5.0)
    c.optim.update(learning_rate=1e-6, warmup_steps=10, weight_decay=0.1, grad_clip=1.0)
    c.train.update(num_steps=500, eval_every=25, checkpoint_every=25, keep_checkpoints=3)
    c.eval.update(num_samples=16, temperature=0.6, ks=(1, 8, 16), max_new_tokens=0)
