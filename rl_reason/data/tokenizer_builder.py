"""A small byte-level BPE tokenizer for the embedded task, saved in Hugging Face format.

    build_tokenizer(texts, "/ckpt/base_policy", vocab_size=512)
    tok = transformers.AutoTokenizer.from_pretrained("/ckpt/base_policy")

Design, Qwen-like so the same code paths serve it and a real Qwen tokenizer:
- pre-tokenization with Qwen2's split pattern, which puts every digit in a token of
  its own (numbers are learnable digit by digit, and BPE cannot glue "12" into one
  symbol that hides its digits), then byte-level mapping, so any text, including
  characters never seen in the corpus, encodes and decode(encode(x)) == x;
- special tokens <|pad|> (id 0, the sampler's default pad id), <|endoftext|> (eos),
  <|im_start|> and <|im_end|> (chat turns; <|im_end|> closes an assistant turn and is
  a stop token alongside <|endoftext|>: see models.stop_token_ids);
- a ChatML chat template as in Qwen, without Qwen's default system prompt (shorter
  prompts on CPU).
"""

from __future__ import annotations

import json
import os
from typing import Iterable

import tokenizers
import transformers
from tokenizers import decoders, models, pre_tokenizers, trainers

PAD = "<|pad|>"
EOS = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (PAD, EOS, IM_START, IM_END)  # ids 0..3 in this order

# Qwen2's pre-tokenizer pattern: contractions, words with one leading non-letter,
# single digits, punctuation runs, newlines, other whitespace.
SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}")


def _raw_tokenizer(corpus_texts: Iterable[str], vocab_size: int) -> tokenizers.Tokenizer:
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2)
    tok.train_from_iterator(corpus_texts, trainer)
    return tok


def build_tokenizer(corpus_texts: Iterable[str], path: str,
                    vocab_size: int = 512) -> transformers.PreTrainedTokenizerBase:
    """Trains the tokenizer on `corpus_texts`, saves it to `path` and returns it loaded
    back through transformers (so callers use exactly what a checkpoint user gets).

    vocab_size counts the 256 byte symbols and the 4 special tokens, so it must be
    above 260; it is an upper bound: the corpus decides how many merges fill the rest
    (a merge needs a pair seen at least twice).
    """
    minimum = 256 + len(SPECIAL_TOKENS)
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
        raise ValueError(f"tokenizer_builder.build_tokenizer: vocab_size must be an integer, "
                         f"got {vocab_size!r}")
    if vocab_size <= minimum:
        raise ValueError(f"tokenizer_builder.build_tokenizer: vocab_size={vocab_size} leaves no "
                         f"room for merges; it must exceed {minimum} (bytes + special tokens)")
    # A list, so it can be checked here and the caller may pass a generator.
    texts = list(corpus_texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"tokenizer_builder.build_tokenizer: corpus item {i} is "
                             f"{type(text).__name__}, expected str")
    # Without text the trainer silently returns a bytes-only tokenizer, which would make
    # every sequence several times longer; an empty corpus is a caller's bug.
    if not any(text.strip() for text in texts):
        raise ValueError("tokenizer_builder.build_tokenizer: the corpus is empty (no non-blank "
                         "text to learn merges from)")
    raw = _raw_tokenizer(texts, vocab_size)
    for i, token in enumerate(SPECIAL_TOKENS):
        if raw.token_to_id(token) != i:
            raise RuntimeError(f"tokenizer_builder: special token {token} got id "
                               f"{raw.token_to_id(token)}, expected {i}")
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, pad_token=PAD, eos_token=EOS,
        additional_special_tokens=[IM_START, IM_END], clean_up_tokenization_spaces=False,
        model_max_length=4096)
    fast.chat_template = CHAT_TEMPLATE
    os.makedirs(path, exist_ok=True)
    fast.save_pretrained(path)
    _write_legacy_files(path)
    return transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)


def _write_legacy_files(path: str) -> None:
    """Keeps the folder readable by older transformers versions too: they look for the
    chat template inside tokenizer_config.json and the special tokens in
    special_tokens_map.json, which transformers 5 no longer writes."""
    config_file = os.path.join(path, "tokenizer_config.json")
    with open(config_file) as f:
        config = json.load(f)
    config["chat_template"] = CHAT_TEMPLATE
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    with open(config_file, "w") as f:
        json.dump(config, f, indent=2)
    special = {"pad_token": PAD, "eos_token": EOS, "additional_special_tokens": [IM_START, IM_END]}
    with open(os.path.join(path, "special_tokens_map.json"), "w") as f:
        json.dump(special, f, indent=2)

