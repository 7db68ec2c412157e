"""config.json <-> ModelConfig, and the named presets."""

import json

import pytest
import transformers

from rl_reason import models
from rl_reason.models import hf_config, presets

# As published on the Hub (transformers 4 style: top-level rope_theta / rope_scaling).
LLAMA_31_8B = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "silu", "hidden_size": 4096,
    "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 131072,
    "mlp_bias": False, "model_type": "llama", "num_attention_heads": 32,
    "num_hidden_layers": 32, "num_key_value_heads": 8, "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.0.dev0", "use_cache": True, "vocab_size": 128256,
}
QWEN25_MATH_15B = {
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 1536,
    "initializer_range": 0.02, "intermediate_size": 8960, "max_position_embeddings": 4096,
    "max_window_layers": 21, "model_type": "qwen2", "num_attention_heads": 12,
    "num_hidden_layers": 28, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
    "rope_theta": 10000, "sliding_window": 4096, "tie_word_embeddings": True,
    "torch_dtype": "bfloat16", "transformers_version": "4.37.0", "use_cache": True,
    "use_sliding_window": False, "vocab_size": 151936,
}
REAL = ["qwen2.5-math-1.5b", "qwen2.5-math-7b", "qwen3-4b-base", "qwen3-8b-base", "llama-3.1-8b"]


@pytest.mark.parametrize("raw,preset", [(LLAMA_31_8B, "llama-3.1-8b"),
                                        (QWEN25_MATH_15B, "qwen2.5-math-1.5b")])
def test_published_configs_read_as_the_presets(raw, preset):
    config = hf_config.from_hf_config(raw)
    assert config == models.get_preset(preset, dtype="float32", param_dtype="float32")
    assert hf_config.checkpoint_dtype(raw) == "bfloat16"


def test_old_and_new_rope_spellings_read_the_same():
    new = {k: v for k, v in LLAMA_31_8B.items() if k not in ("rope_theta", "rope_scaling")}
    new["rope_parameters"] = {**LLAMA_31_8B["rope_scaling"], "rope_theta": 500000.0}
    assert hf_config.from_hf_config(new) == hf_config.from_hf_config(LLAMA_31_8B)


@pytest.mark.parametrize("name", REAL + ["tiny-llama", "bench-19m", "bench-qwen2-53m"])
def test_written_config_is_read_back_by_us_and_transformers(tmp_path, name):
    config = models.get_preset(name)
    raw = hf_config.to_hf_config(config)
    assert hf_config.from_hf_config(raw) == config.replace(dtype="float32")
    (tmp_path / "config.json").write_text(json.dumps(raw))
    theirs = transformers.AutoConfig.from_pretrained(str(tmp_path))
    assert type(theirs).__name__.lower().startswith(config.family)
    assert (theirs.hidden_size, theirs.num_hidden_layers, theirs.num_key_value_heads,
            theirs.head_dim, theirs.vocab_size, theirs.tie_word_embeddings) == (
        config.hidden_size, config.num_layers, config.num_kv_heads, config.head_dim,
        config.vocab_size, config.tie_embeddings)
    rope = theirs.rope_parameters
    assert rope["rope_theta"] == config.rope_theta
    if config.rope_scaling is None:
        assert rope["rope_type"] == "default"
    else:
        assert rope["rope_type"] == "llama3"
        assert rope["factor"] == config.rope_scaling.factor
        assert (rope["original_max_position_embeddings"]
                == config.rope_scaling.original_max_position_embeddings)


@pytest.mark.parametrize("change,field", [
    ({"architectures": ["MistralForCausalLM"]}, "'architectures'"),
    ({"architectures": None, "model_type": "gemma"}, "'model_type'"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "'rope_scaling.rope_type'"),
    ({"hidden_act": "gelu"}, "'hidden_act'"),
    ({"mlp_bias": True}, "'mlp_bias'"),
])
def test_unsupported_configs_name_the_field(change, field):
    with pytest.raises(ValueError, match=f"my/config.json: .*{field}"):
        hf_config.from_hf_config({**LLAMA_31_8B, **change}, source="my/config.json")


def test_qwen2_sliding_window_is_refused():
    with pytest.raises(ValueError, match="'use_sliding_window'"):
        hf_config.from_hf_config({**QWEN25_MATH_15B, "use_sliding_window": True})


def test_missing_required_field_and_invalid_value():
    raw = {k: v for k, v in QWEN25_MATH_15B.items() if k != "hidden_size"}
    with pytest.raises(ValueError, match=r"missing required field\(s\) \['hidden_size'\]"):
        hf_config.from_hf_config(raw)
    with pytest.raises(ValueError, match="config.json: .*num_kv_heads"):
        hf_config.from_hf_config({**QWEN25_MATH_15B, "num_key_value_heads": 5})


def test_preset_sizes_match_the_published_parameter_counts():
    billions = {name: round(models.get_preset(name).num_params() / 1e9, 2) for name in REAL}
    assert billions == {"qwen2.5-math-1.5b": 1.54, "qwen2.5-math-7b": 7.62,
                        "qwen3-4b-base": 4.02, "qwen3-8b-base": 8.19, "llama-3.1-8b": 8.03}
    assert round(models.get_preset("bench-19m").num_params() / 1e6, 1) == 19.1
    assert round(models.get_preset("bench-qwen2-53m").num_params() / 1e6, 1) == 53.1


def test_get_preset_overrides_and_errors():
    config = models.get_preset("Qwen3_4B_Base", max_position_embeddings=4096)
    assert config.family == "qwen3" and config.max_position_embeddings == 4096
    with pytest.raises(ValueError, match="unknown model preset 'qwen9'.*tiny-qwen3"):
        models.get_preset("qwen9")
    with pytest.raises(ValueError, match=r"unknown ModelConfig field\(s\) \['layers'\]"):
        models.get_preset("tiny-llama", layers=3)
    assert set(presets.PRESETS) >= set(REAL) | {"tiny-llama", "tiny-qwen2", "tiny-qwen3",
                                                "bench-19m", "bench-qwen2-53m"}
