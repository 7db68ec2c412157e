"""Tokenizers of checkpoint folders, their stop and pad ids, and chat formatting.

    tok = load_tokenizer("/ckpt/Qwen3-4B-Base")
    prompt = apply_chat(tok, [{"role": "user", "content": "What is 2+2?"}])
    stops, pad = stop_token_ids(tok, model_config), pad_token_id(tok)

Loading never touches the network: the folder must hold the tokenizer files
(tokenizer.json / tokenizer_config.json, or a slow tokenizer's vocabulary files).

apply_chat uses the tokenizer's own chat template when it has one. Base models and
the project's small tokenizer have none; they get the plain fallback below, which
base models handle well in few-shot style and which the warm-start data can use:

    System: {system content}\n\n          (only if a system message is given)
    User: {content}\n\n
    Assistant: {content}\n\n
    ...
    Assistant:                              (when add_generation_prompt)
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from rl_reason.errors import CheckpointFolderError

if TYPE_CHECKING:  # transformers is imported on use: it costs seconds at import time
    import transformers

ROLES = ("system", "user", "assistant")


def load_tokenizer(path: str) -> transformers.PreTrainedTokenizerBase:
    """The tokenizer saved in a local folder (via transformers.AutoTokenizer)."""
    import transformers

    if not os.path.isdir(path):
        raise CheckpointFolderError(f"tokenizer.load_tokenizer: folder {path!r} does not exist")
    try:
        return transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        raise CheckpointFolderError(f"tokenizer.load_tokenizer: no loadable tokenizer files in "
                                    f"{path!r} ({e})") from e


# Tokens that close an assistant turn or a text in the supported families: ChatML's
# (Qwen, the embedded tokenizer), Llama 3 instruct's end of turn, end of text.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|endoftext|>")


def stop_token_ids(tokenizer: transformers.PreTrainedTokenizerBase,
                   model_config=None) -> tuple[int, ...]:
    """The ids that end a response, sorted: the EOS ids of `model_config` (a
    ModelConfig, when given), the tokenizer's EOS, and every END_OF_TURN_TOKENS entry
    the vocabulary has. A base model's config names only end of text, yet a chat
    prompt's answer ends at the end-of-turn token, so both stop generation."""
    ids = set(model_config.eos_token_ids) if model_config is not None else set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    for token in END_OF_TURN_TOKENS:
        token_id = tokenizer.convert_tokens_to_ids(token)
        # An unknown token maps to None or to the unk id, depending on the tokenizer.
        if isinstance(token_id, int) and token_id >= 0 and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    if not ids:
        raise CheckpointFolderError(
            "neither the model config nor the tokenizer names an end-of-sequence token, and "
            f"the vocabulary has none of {END_OF_TURN_TOKENS}: generation would never stop")
    return tuple(sorted(ids))


def pad_token_id(tokenizer: transformers.PreTrainedTokenizerBase) -> int:
    """The id that fills padding: the tokenizer's pad token, else its EOS, else 0.
    Padded positions are masked everywhere, so any id in the vocabulary serves."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def save_tokenizer(tokenizer: transformers.PreTrainedTokenizerBase, path: str) -> None:
    """Writes the tokenizer files next to a checkpoint's weights (same folder layout
    as `save_pretrained`, so transformers and load_tokenizer read them back)."""
    os.makedirs(path, exist_ok=True)
    tokenizer.save_pretrained(path)


def _check_messages(messages) -> None:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("tokenizer.apply_chat: messages must be a non-empty list of "
                         "{'role': ..., 'content': ...} dicts")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(
                m.get("content"), str):
            raise ValueError(f"tokenizer.apply_chat: messages[{i}]={m!r} must be a dict with "
                             f"'role' in {ROLES} and a string 'content'")


def plain_chat(messages, add_generation_prompt: bool = True) -> str:
    """The fallback format of the module docstring."""
    _check_messages(messages)
    text = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in messages)
    return text + "Assistant:" if add_generation_prompt else text


def apply_chat(tokenizer: transformers.PreTrainedTokenizerBase, messages,
               add_generation_prompt: bool = True) -> str:
    """The prompt string for `messages`: the tokenizer's chat template, else plain_chat."""
    _check_messages(messages)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    return plain_chat(messages, add_generation_prompt)
