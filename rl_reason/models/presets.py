"""Named model configs: the published checkpoints the project targets, and small sizes.

    get_preset("qwen3-4b-base")                       # the architecture of Qwen/Qwen3-4B-Base
    get_preset("tiny-qwen3", vocab_size=300)          # any field can be overridden

Real-size presets copy the `config.json` published on the Hugging Face Hub for each
checkpoint (vocab, widths, heads, head_dim, RoPE, norm eps, tied embeddings, context,
bos/eos). They describe the architecture only; weights come from `models.load(path)`,
which reads the config from the checkpoint itself. They compute in bfloat16 and keep
float32 parameters (the usual mixed precision for RL training); override `dtype` /
`param_dtype` to change that.

Small presets (float32 throughout) are for tests, the embedded CPU default and
benchmarks:

    tiny-llama / tiny-qwen2 / tiny-qwen3   2 layers, width 64: one per family, for parity
                                           and unit tests (llama one has Llama 3.1 RoPE
                                           scaling so that code path is exercised).
    bench-19m                              Qwen3 family (q/k norm, like the Qwen3 targets),
                                           hidden 512, 8 layers, 8 heads, 4 KV heads,
                                           head_dim 64, MLP 1024, vocab 512, tied
                                           embeddings: 19.1M parameters.
    bench-qwen2-53m                        Qwen2.5-Math-1.5B's layers at half width:
                                           hidden 768, 6 heads and 1 KV head of 128 (GQA
                                           6:1), MLP 4480 (5.83x), q/k/v bias, tied; 4
                                           layers, vocab 8192: 53M parameters. The
                                           sampler benchmark's real-shaped small model.
"""

from __future__ import annotations

import dataclasses

from rl_reason.models.config import ModelConfig, RopeScaling

_QWEN_BOS_EOS = dict(bos_token_id=151643, eos_token_id=151643)  # <|endoftext|> in base models
_REAL_DTYPES = dict(dtype="bfloat16", param_dtype="float32")

PRESETS: dict[str, ModelConfig] = {
    # Qwen2.5-Math keeps a 4k context with rope_theta 1e4, unlike general Qwen2.5 (1e6, 32k).
    "qwen2.5-math-1.5b": ModelConfig(
        family="qwen2", vocab_size=151936, hidden_size=1536, intermediate_size=8960,
        num_layers=28, num_heads=12, num_kv_heads=2, head_dim=128, rope_theta=10000.0,
        rms_norm_eps=1e-6, tie_embeddings=True, max_position_embeddings=4096,
        **_QWEN_BOS_EOS, **_REAL_DTYPES),
    "qwen2.5-math-7b": ModelConfig(
        family="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944,
        num_layers=28, num_heads=28, num_kv_heads=4, head_dim=128, rope_theta=10000.0,
        rms_norm_eps=1e-6, tie_embeddings=False, max_position_embeddings=4096,
        **_QWEN_BOS_EOS, **_REAL_DTYPES),
    "qwen3-4b-base": ModelConfig(
        family="qwen3", vocab_size=151936, hidden_size=2560, intermediate_size=9728,
        num_layers=36, num_heads=32, num_kv_heads=8, head_dim=128, rope_theta=1000000.0,
        rms_norm_eps=1e-6, tie_embeddings=True, max_position_embeddings=32768,
        **_QWEN_BOS_EOS, **_REAL_DTYPES),
    "qwen3-8b-base": ModelConfig(
        family="qwen3", vocab_size=151936, hidden_size=4096, intermediate_size=12288,
        num_layers=36, num_heads=32, num_kv_heads=8, head_dim=128, rope_theta=1000000.0,
        rms_norm_eps=1e-6, tie_embeddings=False, max_position_embeddings=32768,
        **_QWEN_BOS_EOS, **_REAL_DTYPES),
    "llama-3.1-8b": ModelConfig(
        family="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336,
        num_layers=32, num_heads=32, num_kv_heads=8, head_dim=128, rope_theta=500000.0,
        rope_scaling=RopeScaling(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                 original_max_position_embeddings=8192),
        rms_norm_eps=1e-5, tie_embeddings=False, max_position_embeddings=131072,
        bos_token_id=128000, eos_token_id=128001, **_REAL_DTYPES),
    "tiny-llama": ModelConfig(
        family="llama", vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2,
        num_heads=4, num_kv_heads=2, head_dim=16, rope_theta=500000.0,
        rope_scaling=RopeScaling(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                 original_max_position_embeddings=64),
        rms_norm_eps=1e-5, tie_embeddings=False, max_position_embeddings=512),
    "tiny-qwen2": ModelConfig(
        family="qwen2", vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2,
        num_heads=4, num_kv_heads=2, head_dim=16, rope_theta=10000.0, rms_norm_eps=1e-6,
        tie_embeddings=True, max_position_embeddings=512),
    "tiny-qwen3": ModelConfig(
        family="qwen3", vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2,
        num_heads=4, num_kv_heads=2, head_dim=16, rope_theta=1000000.0, rms_norm_eps=1e-6,
        tie_embeddings=True, max_position_embeddings=512),
    "bench-19m": ModelConfig(
        family="qwen3", vocab_size=512, hidden_size=512, intermediate_size=1024, num_layers=8,
        num_heads=8, num_kv_heads=4, head_dim=64, rope_theta=1000000.0, rms_norm_eps=1e-6,
        tie_embeddings=True, max_position_embeddings=4096),
    "bench-qwen2-53m": ModelConfig(
        family="qwen2", vocab_size=8192, hidden_size=768, intermediate_size=4480, num_layers=4,
        num_heads=6, num_kv_heads=1, head_dim=128, rope_theta=10000.0, rms_norm_eps=1e-6,
        tie_embeddings=True, max_position_embeddings=4096),
}


def _normalise(name: str) -> str:
    # Config variants are Python identifiers (':qwen3_4b_base'), Hub names use dashes.
    return name.strip().lower().replace("_", "-")


def get_preset(name: str, **overrides) -> ModelConfig:
    """The named ModelConfig, with any fields replaced by `overrides`."""
    key = _normalise(name)
    if key not in PRESETS:
        raise ValueError(f"presets.get_preset: unknown model preset {name!r}; "
                         f"known presets: {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"presets.get_preset({name!r}): unknown ModelConfig field(s) {unknown}; "
                         f"fields are {sorted(fields)}")
    return PRESETS[key].replace(**overrides)
