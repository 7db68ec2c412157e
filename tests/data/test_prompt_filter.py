"""rollout.max_prompt_len is enforced when the training records are loaded."""

import json

import pytest
import tokenizers
import transformers

from configs import grpo
from rl_reason import run_setup
from rl_reason.data import DataError, Record, problem_id
from rl_reason.data.prompt_filter import drop_long_prompts
from rl_reason.data.templates import encode_prompt, plain_prompt
from rl_reason.errors import UserError


@pytest.fixture(scope="module")
def tok():
    """One token per word: 'a' is itself, every other word is <unk>."""
    core = tokenizers.Tokenizer(tokenizers.models.WordLevel({"<unk>": 0, "a": 1},
                                                            unk_token="<unk>"))
    core.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>")


def record(problem: str) -> Record:
    return Record(problem=problem, answer="1", id=problem_id(problem), source="test")


# Plain prompts of n, n + 2 and n + 5 tokens.
RECORDS = [record("a"), record("a a a"), record("a a a a a a")]


def test_prompts_over_the_limit_are_dropped_with_a_warning(tok, capsys):
    n = len(encode_prompt(tok, plain_prompt("a")))
    kept, dropped = drop_long_prompts(RECORDS, tok, max_len=n + 2)
    assert kept == RECORDS[:2] and dropped == 1
    assert capsys.readouterr().out == (
        f"Warning: dropped 1 of 3 training prompts longer than rollout.max_prompt_len={n + 2} "
        f"tokens (the longest has {n + 5}).\n")
    assert drop_long_prompts(RECORDS, tok, max_len=n + 5) == (RECORDS, 0)
    assert capsys.readouterr().out == ""


def test_no_prompt_within_the_limit_is_a_user_error(tok):
    n = len(encode_prompt(tok, plain_prompt("a")))
    with pytest.raises(DataError, match=f"all 3 training prompts are longer than "
                       f"rollout.max_prompt_len={n - 1} tokens .*shortest has {n}") as info:
        drop_long_prompts(RECORDS, tok, max_len=n - 1)
    assert isinstance(info.value, UserError)


def test_make_data_streams_only_the_prompts_that_fit(tok, tmp_path, capsys):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"problem": r.problem, "answer": r.answer}) + "\n"
                            for r in RECORDS))
    c = grpo.get_config("tiny")
    c.unlock()
    c.data.train = str(path)
    c.rollout.prompts_per_step = 1
    c.rollout.max_prompt_len = len(encode_prompt(tok, plain_prompt("a"))) + 2
    stream, held_out = run_setup.make_data(c, tok)
    assert sorted(r.problem for r in stream.records) == ["a", "a a a"]
    assert held_out == []
    assert "dropped 1 of 3 training prompts" in capsys.readouterr().out
