"""The embedded task's tokenizer: build, save, load back, round trip, special tokens, errors."""

import json
import os

import pytest
import transformers

from rl_reason import models, pretrain
from rl_reason.data import synthetic, templates, tokenizer_builder

VOCAB = 320


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tok"))
    # Warm-start texts of every kind: enough distinct words to fill the vocabulary.
    tok = tokenizer_builder.build_tokenizer(pretrain.tokenizer_corpus(100, seed=0), path,
                                            vocab_size=VOCAB)
    return path, tok


def task_texts():
    record = synthetic.held_out_records(1, seed=0, levels=(8,))[0]
    return [record.problem, record.meta["solution"],
            templates.hint_prompt(record.problem, ["123", "4,567"])[0]["content"],
            "Summary: naïve step; root cause → 12×3 ≠ 35 😅 (中文)\n\n  trailing  spaces ",
            ""]


def test_saved_folder_loads_with_transformers_and_models(built):
    path, tok = built
    assert {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} <= set(os.listdir(path))
    with open(os.path.join(path, "tokenizer_config.json")) as f:
        assert json.load(f)["chat_template"] == tokenizer_builder.CHAT_TEMPLATE
    for loaded in (transformers.AutoTokenizer.from_pretrained(path, local_files_only=True),
                   models.load_tokenizer(path)):
        assert len(loaded) == len(tok)
        assert loaded.get_vocab() == tok.get_vocab()
        assert loaded.chat_template == tokenizer_builder.CHAT_TEMPLATE
        for text in task_texts():
            assert loaded.encode(text, add_special_tokens=False) == tok.encode(text, add_special_tokens=False)


def test_round_trip_of_task_text_and_unseen_characters(built):
    _, tok = built
    for text in task_texts():
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text
    # No BOS/EOS is added to plain text (prompts carry their own markup).
    assert tok.encode("What is 2+3?") == tok.encode("What is 2+3?", add_special_tokens=False)
    # Every digit is a token of its own, so numbers are learnable digit by digit.
    ids = tok.encode("1234567890", add_special_tokens=False)
    assert [tok.decode([i]) for i in ids] == list("1234567890")


def test_special_and_stop_tokens(built):
    _, tok = built
    expected = {"<|pad|>": 0, "<|endoftext|>": 1, "<|im_start|>": 2, "<|im_end|>": 3}
    assert {t: tok.convert_tokens_to_ids(t) for t in expected} == expected
    assert set(tok.all_special_tokens) == set(expected)
    assert tok.pad_token == "<|pad|>" and tok.pad_token_id == 0
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id == 1
    # A response ends at the end of the assistant turn or at end of text.
    assert models.stop_token_ids(tok) == (1, 3) and models.pad_token_id(tok) == 0
    # The chat markup encodes as single special tokens, and decoding can drop them.
    rendered = templates.render_prompt(tok, templates.plain_prompt("What is 2+3?"))
    ids = tok.encode(rendered + "\\boxed{5}<|im_end|>", add_special_tokens=False)
    assert ids[0] == 2 and ids[-1] == 3
    assert tok.decode(ids, skip_special_tokens=True).startswith("user\nWhat is 2+3?")


def test_vocab_size_is_honoured(built, tmp_path):
    _, tok = built
    assert len(tok) == VOCAB
    # An upper bound: a corpus with few repeated pairs yields fewer merges, never more.
    small = tokenizer_builder.build_tokenizer(["What is 12+345?"] * 3, str(tmp_path / "s"), vocab_size=400)
    assert 260 < len(small) < 400
    # A generator is fine as the corpus.
    again = tokenizer_builder.build_tokenizer((t for t in ["ab ab ab"] * 2), str(tmp_path / "g"),
                                              vocab_size=261)
    assert len(again) == 261


@pytest.mark.parametrize("vocab_size, message", [
    (260, "vocab_size=260 leaves no room for merges; it must exceed 260"),
    (0, "vocab_size=0 leaves no room"),
    (300.0, "vocab_size must be an integer, got 300.0"),
    ("512", "vocab_size must be an integer, got '512'"),
    (True, "vocab_size must be an integer, got True"),
])
def test_bad_vocab_size_is_a_clear_error(vocab_size, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        tokenizer_builder.build_tokenizer(["What is 2+3?"] * 4, str(tmp_path), vocab_size=vocab_size)
    assert not os.listdir(tmp_path)  # checked before anything is written


@pytest.mark.parametrize("corpus", [[], [""], ["  ", "\n"], iter([])])
def test_empty_corpus_is_a_clear_error(corpus, tmp_path):
    with pytest.raises(ValueError, match="the corpus is empty"):
        tokenizer_builder.build_tokenizer(corpus, str(tmp_path), vocab_size=300)


def test_corpus_of_non_text_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="corpus item 1 is bytes, expected str"):
        tokenizer_builder.build_tokenizer(["ok", b"bytes"], str(tmp_path), vocab_size=300)
