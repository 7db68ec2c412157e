"""Hugging Face `config.json` <-> ModelConfig for Llama, Qwen2 and Qwen3 causal LMs.

Reading accepts both RoPE spellings: the transformers 4 form (top-level `rope_theta`
and `rope_scaling`) and the transformers 5 form (`rope_parameters` holding
`rope_type`, `rope_theta` and the scaling fields). Writing emits the transformers 5
form that transformers 5.23 writes itself, plus the two legacy keys so that
transformers 4 readers (and servers built on them) load the same model.

Anything the transformer here does not implement (another architecture, biased MLPs,
sliding-window attention, a RoPE type other than default/llama3, a non-SiLU MLP) is
refused with an error naming the file and the field, rather than loaded wrongly.
"""

from __future__ import annotations

from typing import Any

from rl_reason.models.config import DTYPES, ModelConfig, RopeScaling

ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
}
_ARCHITECTURE_OF_FAMILY = {family: arch for arch, family in ARCHITECTURES.items()}

# transformers' own defaults for fields a config.json may leave out.
_DEFAULT_MAX_POSITIONS = {"llama": 2048, "qwen2": 32768, "qwen3": 32768}


def _family(raw: dict, source: str) -> str:
    architectures = raw.get("architectures")
    if architectures:
        if not isinstance(architectures, list) or len(architectures) != 1:
            raise ValueError(f"{source}: field 'architectures'={architectures!r} must list "
                             f"exactly one of {sorted(ARCHITECTURES)}")
        if architectures[0] not in ARCHITECTURES:
            raise ValueError(f"{source}: field 'architectures'={architectures!r} is not supported; "
                             f"supported: {sorted(ARCHITECTURES)}")
        return ARCHITECTURES[architectures[0]]
    # Configs saved from a bare config object carry only model_type.
    model_type = raw.get("model_type")
    if model_type in _DEFAULT_MAX_POSITIONS:
        return model_type
    raise ValueError(f"{source}: no 'architectures' field and field 'model_type'={model_type!r} "
                     f"is not one of {sorted(_DEFAULT_MAX_POSITIONS)}")


def _require_false(raw: dict, source: str, field: str):
    if raw.get(field):
        raise ValueError(f"{source}: field {field!r}={raw[field]!r} is not supported by "
                         f"rl_reason's transformer (it must be false or absent)")


def _rope(raw: dict, source: str) -> tuple[float, RopeScaling | None]:
    params = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
    field = "rope_parameters" if raw.get("rope_parameters") else "rope_scaling"
    if not isinstance(params, dict):
        raise ValueError(f"{source}: field {field!r} must be an object, got {params!r}")
    if any(isinstance(v, dict) for v in params.values()):
        raise ValueError(f"{source}: field {field!r} is nested per layer type, which is not "
                         f"supported")
    theta = float(params.get("rope_theta", raw.get("rope_theta", 10000.0)))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type == "default":
        return theta, None
    if rope_type != "llama3":
        raise ValueError(f"{source}: field '{field}.rope_type'={rope_type!r} is not supported; "
                         f"supported: 'default', 'llama3'")
    missing = [k for k in ("factor", "low_freq_factor", "high_freq_factor",
                           "original_max_position_embeddings") if k not in params]
    if missing:
        raise ValueError(f"{source}: field {field!r} with rope_type 'llama3' lacks {missing}")
    return theta, RopeScaling(
        factor=float(params["factor"]),
        low_freq_factor=float(params["low_freq_factor"]),
        high_freq_factor=float(params["high_freq_factor"]),
        original_max_position_embeddings=int(params["original_max_position_embeddings"]))


def checkpoint_dtype(raw: dict) -> str | None:
    """The parameter dtype a config.json declares (`dtype`, or the older `torch_dtype`)."""
    dtype = raw.get("dtype", raw.get("torch_dtype"))
    return dtype if dtype in DTYPES else None


def from_hf_config(raw: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """A ModelConfig from a parsed config.json; `source` names the file in errors."""
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(raw).__name__}")
    family = _family(raw, source)
    required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads")
    missing = [k for k in required if k not in raw]
    if missing:
        raise ValueError(f"{source}: missing required field(s) {missing}")
    if raw.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{source}: field 'hidden_act'={raw['hidden_act']!r} is not supported; "
                         f"only 'silu'")
    _require_false(raw, source, "mlp_bias")
    if family in ("llama", "qwen3"):
        # Qwen2 always has q/k/v biases; the other two only have them as an option we lack.
        _require_false(raw, source, "attention_bias")
    if family in ("qwen2", "qwen3"):
        _require_false(raw, source, "use_sliding_window")
    num_heads = int(raw["num_attention_heads"])
    head_dim = raw.get("head_dim")
    if head_dim is None:
        # Qwen3Config defaults head_dim to 128; Llama and Qwen2 derive it from the width.
        head_dim = 128 if family == "qwen3" else int(raw["hidden_size"]) // num_heads
    theta, scaling = _rope(raw, source)
    eos = raw.get("eos_token_id")
    try:
        return ModelConfig(
            family=family,
            vocab_size=int(raw["vocab_size"]),
            hidden_size=int(raw["hidden_size"]),
            intermediate_size=int(raw["intermediate_size"]),
            num_layers=int(raw["num_hidden_layers"]),
            num_heads=num_heads,
            num_kv_heads=int(raw.get("num_key_value_heads") or num_heads),
            head_dim=int(head_dim),
            rope_theta=theta,
            rope_scaling=scaling,
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(raw.get("tie_word_embeddings", False)),
            max_position_embeddings=int(raw.get("max_position_embeddings",
                                                _DEFAULT_MAX_POSITIONS[family])),
            bos_token_id=raw.get("bos_token_id"),
            eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
            pad_token_id=raw.get("pad_token_id"),
        )
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from e


def to_hf_config(config: ModelConfig, dtype: str | None = None) -> dict[str, Any]:
    """The config.json object for `config`; `dtype` is the stored parameter dtype."""
    c = config
    rope_parameters: dict[str, Any] = {"rope_type": "default", "rope_theta": c.rope_theta}
    legacy_scaling = None
    if c.rope_scaling is not None:
        s = c.rope_scaling
        legacy_scaling = {
            "rope_type": "llama3", "factor": s.factor, "low_freq_factor": s.low_freq_factor,
            "high_freq_factor": s.high_freq_factor,
            "original_max_position_embeddings": s.original_max_position_embeddings,
        }
        rope_parameters = {**legacy_scaling, "rope_theta": c.rope_theta}
    eos = list(c.eos_token_id) if isinstance(c.eos_token_id, tuple) else c.eos_token_id
    out: dict[str, Any] = {
        "architectures": [_ARCHITECTURE_OF_FAMILY[c.family]],
        "model_type": c.family,
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": c.max_position_embeddings,
        "rms_norm_eps": c.rms_norm_eps,
        "tie_word_embeddings": c.tie_embeddings,
        "rope_parameters": rope_parameters,
        "rope_theta": c.rope_theta,
        "rope_scaling": legacy_scaling,
        "bos_token_id": c.bos_token_id,
        "eos_token_id": eos,
        "pad_token_id": c.pad_token_id,
        "attention_dropout": 0.0,
        "use_cache": True,
        "dtype": dtype or c.param_dtype,
    }
    if c.family == "llama":
        out.update(attention_bias=False, mlp_bias=False)
    else:
        out.update(use_sliding_window=False, sliding_window=None)
        if c.family == "qwen3":
            out["attention_bias"] = False
    return out
