"""The peers of benchmarks/sampler.py as callables: tunix's sampler (in its own
environment, through benchmarks/peers/tunix_sampler.py) and transformers' generate.

Both are static batches: every row runs to the budget (the call's one length), so a
workload whose rows stop earlier costs them the same time; benchmarks/sampler.py counts
their useful tokens (each row's up to its stop point) over that time.
"""

from __future__ import annotations

import json
import os

from benchmarks.timing import usable_cores


class TunixSampler:
    """benchmarks/peers/tunix_sampler.py in the tunix environment, one call per command;
    `prompts` names each set of prompt strings a call may take."""

    def __init__(self, envs: str, checkpoint: str, prompts: dict, new_tokens: int,
                 prompt_len: int, workdir: str):
        from benchmarks.grpo_step import PEERS_DIR, Worker, ensure_env
        job = os.path.join(workdir, "tunix_sampler_job.json")
        with open(job, "w") as f:
            json.dump(dict(prompts=prompts,
                           new_tokens=new_tokens, prompt_len=prompt_len), f)
        self.worker = Worker("tunix", [ensure_env("tunix", envs),
                                       os.path.join(PEERS_DIR, "tunix_sampler.py"),
                                       "--checkpoint", checkpoint, "--job", job],
                             os.path.join(workdir, "tunix_sampler.log"))
        self.worker.read("ready")

    def call(self, command: str, name: str):
        self.worker.proc.stdin.write(f"{command} {name}\n")
        self.worker.proc.stdin.flush()
        return self.worker.read("step")["seconds"]

    def close(self):
        self.worker.close()


def run_transformers(path: str, prompts: np.ndarray, new_tokens: int, eos: int, device: str,
                     dtype: str):
    """A callable running one transformers generate over the batch."""
    import torch
    import transformers

    torch.set_num_threads(usable_cores())
    transformers.utils.logging.disable_progress_bar()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path, dtype=getattr(torch, dtype)).to(device).eval()
    input_ids = torch.tensor(prompts, dtype=torch.long, device=device)
    attention_mask = torch.ones_like(input_ids)

    def call():
        with torch.inference_mode():
            out = model.generate(
                input_ids, attention_mask=attention_mask, do_sample=True, temperature=1.0,
                top_k=0, top_p=1.0, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                use_cache=True, eos_token_id=eos, pad_token_id=eos)
        if device != "cpu":
            torch.cuda.synchronize()
        assert out.shape == (len(prompts), prompts.shape[1] + new_tokens), out.shape
        return out

    return call


