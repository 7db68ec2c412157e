"""Decoder-only transformers (Llama 3, Qwen2/2.5, Qwen3) as pure JAX functions.

    from rl_reason import models
    model = models.load("/ckpt/Qwen3-4B-Base")            # Hugging Face folder -> Model
    logits_BTV = models.logits(model, tokens_BT, valid_BT)
    models.save(model, "/out/export")                     # loadable by transformers
    config = models.read_config("/ckpt/Qwen3-4B-Base")    # config.json only, no weights
    tok = models.load_tokenizer("/ckpt/Qwen3-4B-Base")
    stops = models.stop_token_ids(tok, model.config)      # EOS + end-of-turn ids
    pad = models.pad_token_id(tok)

    config = models.get_preset("tiny-qwen3")              # or a ModelConfig(...)
    model = models.init(config, seed=0)

A `Model` is a pytree (parameter leaves, static ModelConfig), so it goes through jit,
grad and sharding as is. Lower-level pieces (the KV-cache forward, chat formatting,
config.json conversion) live in the submodules transformer, tokenizer and hf_config.
"""

from rl_reason.models.config import ModelConfig, RopeScaling
from rl_reason.models.hf import load, read_config, save
from rl_reason.models.model import Model, init, logits
from rl_reason.models.presets import get_preset
from rl_reason.models.tokenizer import (apply_chat, load_tokenizer, pad_token_id,
                                        save_tokenizer, stop_token_ids)

__all__ = [
    "ModelConfig", "RopeScaling", "Model", "init", "logits", "load", "read_config", "save",
    "get_preset",
    "load_tokenizer", "save_tokenizer", "apply_chat", "stop_token_ids", "pad_token_id",
]
