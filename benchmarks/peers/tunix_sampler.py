"""tunix's sampler (tunix.generate.sampler.Sampler, the vanilla rollout engine's) as a
lock-step worker of benchmarks/sampler.py.

    python tunix_sampler.py --checkpoint DIR --job JOB.json

JOB: {"prompts": {name: [prompt strings]}, "new_tokens": n, "prompt_len": p}. The
checkpoint (Qwen2 or Qwen3 in Hugging Face format, with its tokenizer) is loaded with
tunix's own loader. Commands on standard input, one per line: `warm NAME` runs one
untimed call on the prompts named NAME (compilation), `time NAME` one timed call,
printed as `@@step {"seconds": s}`; `quit` ends. Every call samples exactly new_tokens tokens per row at
temperature 1 with top-p 1 and no top-k (the only stop id is -1, which is never drawn).
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import protocol  # noqa: E402


def load(checkpoint: str):
    import jax
    from tunix.models.qwen2 import model as qwen2_model
    from tunix.models.qwen2 import params as qwen2_params
    from tunix.models.qwen3 import model as qwen3_model
    from tunix.models.qwen3 import params as qwen3_params

    with open(os.path.join(checkpoint, "config.json")) as f:
        hf = json.load(f)
    family = {"qwen2": (qwen2_model, qwen2_params), "qwen3": (qwen3_model, qwen3_params)}
    model_lib, params_lib = family[hf["model_type"]]
    config = model_lib.ModelConfig(
        num_layers=hf["num_hidden_layers"], vocab_size=hf["vocab_size"],
        embed_dim=hf["hidden_size"], hidden_dim=hf["intermediate_size"],
        num_heads=hf["num_attention_heads"],
        head_dim=hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"],
        num_kv_heads=hf["num_key_value_heads"], rope_theta=int(hf["rope_theta"]),
        norm_eps=hf["rms_norm_eps"], use_tied_embedding=hf["tie_word_embeddings"])
    mesh = jax.make_mesh((1, 1), ("fsdp", "tp"), devices=jax.devices()[:1],
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)
    with jax.set_mesh(mesh):
        model = params_lib.create_model_from_safe_tensors(checkpoint, config, mesh)
    return model, config, mesh


def main() -> None:
    checkpoint, job = protocol.worker_args()

    import jax
    import transformers
    from tunix.generate import sampler as sampler_lib

    model, config, mesh = load(checkpoint)
    tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint)
    sampler = sampler_lib.Sampler(
        model, tokenizer,
        sampler_lib.CacheConfig(cache_size=job["prompt_len"] + job["new_tokens"],
                                num_layers=config.num_layers, num_kv_heads=config.num_kv_heads,
                                head_dim=config.head_dim))
    seed = [0]

    def call(name: str) -> float:
        seed[0] += 1
        start = time.perf_counter()
        with jax.set_mesh(mesh):
            out = sampler(input_strings=job["prompts"][name],
                          max_generation_steps=job["new_tokens"],
                          max_prompt_length=job["prompt_len"], temperature=1.0, top_p=1.0,
                          top_k=None, eos_tokens=[-1], seed=seed[0], echo=False)
        seconds = time.perf_counter() - start
        lengths = {len(t) for t in out.tokens}
        assert lengths == {job["new_tokens"]}, lengths
        return seconds

    protocol.emit("ready", {})
    for line in sys.stdin:
        command, _, name = line.strip().partition(" ")
        if command == "warm":
            call(name)
            protocol.emit("step", {"seconds": None})
        elif command == "time":
            protocol.emit("step", {"seconds": call(name)})
        else:
            break


if __name__ == "__main__":
    main()
