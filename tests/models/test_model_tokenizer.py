"""Tokenizer folders, stop and pad ids, chat formatting (no network: tokenizers are built here)."""

import pytest
import tokenizers
import transformers

from rl_reason import models
from rl_reason.errors import CheckpointFolderError, UserError
from rl_reason.models import tokenizer as tokenizer_lib

WORDS = ["what", "is", "2", "+", "?", "User:", "Assistant:", "System:", "be", "brief"]
TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def build_tokenizer(chat_template=None) -> transformers.PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(["<unk>", "<eos>", *WORDS])}
    core = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>",
                                               eos_token="<eos>")
    if chat_template:
        tok.chat_template = chat_template
    return tok


MESSAGES = [{"role": "system", "content": "be brief"},
            {"role": "user", "content": "what is 2 + 2 ?"}]


def test_saved_tokenizer_loads_back_with_the_same_ids(tmp_path):
    tok = build_tokenizer()
    models.save_tokenizer(tok, str(tmp_path))
    loaded = models.load_tokenizer(str(tmp_path))
    text = "what is 2 + 2 ? Assistant:"
    assert loaded.encode(text) == tok.encode(text) == [2, 3, 4, 5, 4, 6, 8]
    assert loaded.eos_token_id == 1


def test_plain_fallback_without_a_chat_template():
    prompt = models.apply_chat(build_tokenizer(), MESSAGES)
    assert prompt == "System: be brief\n\nUser: what is 2 + 2 ?\n\nAssistant:"
    no_prompt = models.apply_chat(build_tokenizer(), MESSAGES, add_generation_prompt=False)
    assert no_prompt == "System: be brief\n\nUser: what is 2 + 2 ?\n\n"


def test_chat_template_is_used_and_survives_save_and_load(tmp_path):
    models.save_tokenizer(build_tokenizer(TEMPLATE), str(tmp_path))
    loaded = models.load_tokenizer(str(tmp_path))
    assert models.apply_chat(loaded, MESSAGES) == (
        "<|system|>be brief<|end|><|user|>what is 2 + 2 ?<|end|><|assistant|>")
    assert models.apply_chat(loaded, MESSAGES[1:], add_generation_prompt=False) == (
        "<|user|>what is 2 + 2 ?<|end|>")


@pytest.mark.parametrize("messages", [[], [{"role": "robot", "content": "hi"}],
                                      [{"role": "user", "content": 3}], "hello"])
def test_bad_messages_are_refused(messages):
    with pytest.raises(ValueError, match="tokenizer.apply_chat"):
        models.apply_chat(build_tokenizer(), messages)


def test_missing_or_empty_tokenizer_folder(tmp_path):
    # The user's to fix (the checkpoint folder), and still a ValueError for callers.
    with pytest.raises(CheckpointFolderError, match="does not exist") as info:
        models.load_tokenizer(str(tmp_path / "nowhere"))
    assert isinstance(info.value, (UserError, ValueError))
    with pytest.raises(ValueError, match="no loadable tokenizer files"):
        tokenizer_lib.load_tokenizer(str(tmp_path))


def word_tokenizer(words, **special) -> transformers.PreTrainedTokenizerFast:
    """A word-level tokenizer over `words` (ids in order) with the given special tokens."""
    core = tokenizers.Tokenizer(tokenizers.models.WordLevel(
        {w: i for i, w in enumerate(words)}, unk_token=special.get("unk_token")))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=core, **special)


def test_stop_ids_are_the_config_and_tokenizer_eos_and_the_end_of_turn_tokens():
    tok = build_tokenizer()   # <eos> = 1; no end-of-turn tokens (they map to <unk>)
    assert models.stop_token_ids(tok) == (1,)
    config = models.get_preset("tiny-qwen3", vocab_size=16, eos_token_id=(9, 4))
    assert models.stop_token_ids(tok, config) == (1, 4, 9)
    # A chat vocabulary without an unk token: the end-of-turn tokens present are stops.
    chat = word_tokenizer(["a", "<|eot_id|>", "<|im_end|>", "<|endoftext|>"],
                          eos_token="<|endoftext|>")
    assert models.stop_token_ids(chat) == (1, 2, 3)


def test_embedded_tokenizer_stops_at_end_of_turn_and_end_of_text(tmp_path):
    from rl_reason.data import tokenizer_builder
    tok = tokenizer_builder.build_tokenizer(["What is 2+3? \\boxed{5}"] * 4, str(tmp_path),
                                            vocab_size=280)
    im_end, eos = tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    assert models.stop_token_ids(tok) == tuple(sorted((im_end, eos)))
    assert models.pad_token_id(tok) == tok.convert_tokens_to_ids("<|pad|>")


def test_no_stop_token_at_all_is_refused():
    bare = word_tokenizer(["a", "b"])
    with pytest.raises(CheckpointFolderError, match="generation would never stop"):
        models.stop_token_ids(bare)
    config = models.get_preset("tiny-qwen3", vocab_size=16, eos_token_id=None)
    with pytest.raises(ValueError, match="names an end-of-sequence token"):
        models.stop_token_ids(bare, config)


def test_pad_id_is_the_pad_token_else_eos_else_zero():
    assert models.pad_token_id(word_tokenizer(["a", "<p>", "<e>"], pad_token="<p>",
                                              eos_token="<e>")) == 1
    assert models.pad_token_id(build_tokenizer()) == 1   # no pad token: <eos>
    assert models.pad_token_id(word_tokenizer(["a", "b"])) == 0
