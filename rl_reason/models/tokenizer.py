"""Tokenizers of checkpoint folders, and chat formatting.

    tok = load_tokenizer("/ckpt/Qwen3-4B-Base")
    prompt = apply_chat(tok, [{"role": "user", "content": "What is 2+2?"}])

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
