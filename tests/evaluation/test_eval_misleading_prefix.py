"""Misleading prefixes: the cut, building from given generations, the file, scoring
across the cut, and the trainer's held-out evaluation mining once and reusing."""

import json
import os

import jax
import pytest

from configs import grpo
from rl_reason import evaluate, models
from rl_reason.data import record as record_lib
from rl_reason.data import synthetic
from rl_reason.evaluation import misleading_prefix as mp
from rl_reason.evaluation.settings import EvalSettings
from rl_reason.verifiers import ExactIntVerifier, VerifyResult

KEY = jax.random.PRNGKey(0)


def records(*pairs):
    return [record_lib.Record(problem=q, answer=a, id=record_lib.problem_id(q), source="test")
            for q, a in pairs]


class CharTokenizer:
    """One token per character (id = code point); id 1 is the stop token."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids if not (skip_special_tokens and i == 1))


def char_ids(text, stop=True):
    return [ord(c) for c in text] + ([1] if stop else [])


@pytest.mark.parametrize("n, fraction, kept", [(10, 0.5, 5), (11, 0.5, 5), (10, 0.25, 2),
                                               (3, 0.1, 1), (3, 0.99, 2), (2, 0.5, 1)])
def test_cut_length(n, fraction, kept):
    assert mp.prefix_length(n, fraction) == kept


def test_cut_length_needs_two_tokens():
    with pytest.raises(ValueError, match="cannot be cut"):
        mp.prefix_length(1, 0.5)


def test_build_keeps_the_first_wrong_response_per_problem_cut_at_the_fraction():
    a, b, c = records(("What is 4*8?", "32"), ("What is 2+3?", "5"), ("What is 1+1?", "2"))
    responses = [
        [char_ids("4*8=32. \\boxed{32}"), char_ids("4*8=31. \\boxed{31}"),
         char_ids("4*8=30. \\boxed{30}")],
        [char_ids("2+3=5. \\boxed{5}"), char_ids("I give up")],
        [char_ids("3")],                         # wrong, but one token: cannot be cut
    ]
    statuses = [["correct", "wrong", "wrong"], ["correct", "no_answer"], ["wrong"]]
    extracted = [["32", "31", "30"], ["5", None], ["3"]]
    mined = mp.build_misleading_prefixes([a, b, c], responses, statuses, extracted,
                                         CharTokenizer(), fraction=0.5, stop_token_ids=(1,))
    assert mined[b.id] is None and mined[c.id] is None
    prefix = mined[a.id]
    # "4*8=31. \boxed{31}" has 18 characters (the stop token is not counted): 9 kept.
    assert prefix.prefix_text == "4*8=31. \\"
    assert prefix.prefix_ids == tuple(ord(ch) for ch in "4*8=31. \\")
    assert prefix.source_response == "4*8=31. \\boxed{31}" and prefix.source_answer == "31"
    assert (prefix.problem_id, prefix.fraction) == (a.id, 0.5)


def test_file_round_trip(tmp_path):
    prefix = mp.MisleadingPrefix(problem_id="p1", prefix_ids=(5, 6), prefix_text="a\ud800é",
                                 source_response="a\ud800é \\boxed{3}", source_answer="3",
                                 fraction=0.5)
    path = str(tmp_path / "sub" / mp.PREFIXES_FILE)
    mp.save_prefixes(path, {"p1": prefix, "p2": None})
    assert mp.load_prefixes(path) == {"p1": prefix, "p2": None}
    assert os.listdir(tmp_path / "sub") == [mp.PREFIXES_FILE]   # no temporary file left
    (tmp_path / "bad.jsonl").write_text('{"problem_id": "p"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: not a misleading-prefix row"):
        mp.load_prefixes(str(tmp_path / "bad.jsonl"))


def test_prefix_and_continuation_are_scored_as_one_response(scripted_session, tiny_tokenizer):
    problems = records(("What is 4*8?", "32"), ("What is 6+6?", "12"), ("What is 9-1?", "8"))
    settings = EvalSettings(num_samples=0, max_new_tokens=40)
    # The cut falls inside the box: the continuation alone holds no answer.
    cut_in_box = tiny_tokenizer.encode("4*8=32. \\boxed{3", add_special_tokens=False)
    misleading = tiny_tokenizer.encode("6+6=13. \\boxed{1", add_special_tokens=False)
    prefixes = [mp.MisleadingPrefix(problems[0].id, tuple(cut_in_box), "", "", None, 0.5),
                mp.MisleadingPrefix(problems[1].id, tuple(misleading), "", "", None, 0.5)]
    session = scripted_session(problems, settings, ["2}", "3}"])
    assert ExactIntVerifier().verify_batch(["2}"], ["32"])[0].status == "no_answer"
    metrics = mp.misleading_prefix_metrics(session, prefixes, plain_correct=[True, True, False])
    assert metrics == {"misleading_prefix_problems": 2, "misleading_prefix_accuracy": 0.5,
                       "misleading_prefix_plain_accuracy": 1.0}
    [call] = session.calls
    assert call["temperature"] == 0.0 and call["prefixes"] == [cut_in_box, misleading]
    # Prefix + continuation share the plain response budget.
    assert call["budgets"] == [40 - len(cut_in_box), 40 - len(misleading)]
    assert all(p.endswith("Please reason step by step, and put your final answer within "
                          "\\boxed{}.<|im_end|>\n<|im_start|>assistant\n") for p in call["prompts"])
    rows = session.generations
    assert [(r["mode"], r["problem"], r["response"], r["status"], r["prefix_tokens"]) for r in rows] == [
        ("misleading_prefix", 0, "4*8=32. \\boxed{32}", "correct", len(cut_in_box)),
        ("misleading_prefix", 1, "6+6=13. \\boxed{13}", "wrong", len(misleading))]


def test_no_prefix_means_no_accuracy(scripted_session):
    session = scripted_session(records(("What is 1+1?", "2")), EvalSettings(num_samples=0), [])
    assert mp.misleading_prefix_metrics(session, [], [True]) == {"misleading_prefix_problems": 0}
    assert session.calls == []


def test_prefixes_are_mined_once_per_problem_and_then_reused(scripted_session, tmp_path):
    a, b, c = records(("What is 4*8?", "32"), ("What is 2+3?", "5"), ("What is 7-2?", "5"))
    settings = EvalSettings(num_samples=0, prefix_samples=2, prefix_fraction=0.5, temperature=0.7)
    path = str(tmp_path / mp.PREFIXES_FILE)
    first = scripted_session([a, b], settings, ["4*8=31. \\boxed{31}", "4*8=32. \\boxed{32}",
                                                "2+3=5. \\boxed{5}", "no idea"])
    [prefix] = mp.load_or_mine_prefixes(path, first, KEY)
    assert [len(call["prompts"]) for call in first.calls] == [4]
    assert first.calls[0]["temperature"] == 0.7
    assert prefix.problem_id == a.id and prefix.source_answer == "31"
    assert set(mp.load_prefixes(path)) == {a.id, b.id}     # b: mined, nothing wrong
    assert first.generations == []                          # mining is not an evaluation
    written = open(path).read()

    again = scripted_session([b, a], settings, [])          # nothing left to mine
    assert mp.load_or_mine_prefixes(path, again, KEY) == [prefix]
    assert again.calls == [] and open(path).read() == written

    more = scripted_session([a, b, c], settings, ["7-2=4. \\boxed{4}", "7-2=5. \\boxed{5}"])
    assert [p.problem_id for p in mp.load_or_mine_prefixes(path, more, KEY)] == [a.id, c.id]
    assert [len(call["prompts"]) for call in more.calls] == [2]   # only c was mined
    assert open(path).read().startswith(written)


class ParityVerifier:
    """Odd-length responses are wrong (so a random policy has wrong responses to mine)."""

    def verify_batch(self, responses, answers):
        return [VerifyResult(1.0, "correct", "1") if len(t) % 2 == 0 else
                VerifyResult(0.0, "wrong", str(len(t))) for t in responses]


def test_trainer_evaluation_mines_at_the_first_evaluation_and_reuses_after(
        tiny_policy, tmp_path, monkeypatch):
    config = grpo.get_config("tiny")
    config.unlock()
    config.eval.update(misleading_prefix=True, prefix_samples=4, num_samples=2, ks=(1, 2),
                       max_new_tokens=12)
    model, tokenizer = models.load(tiny_policy), models.load_tokenizer(tiny_policy)
    held_out = synthetic.held_out_records(4, levels=(2, 3))
    eval_dir = str(tmp_path / "eval")
    common = dict(mesh=None, verifier=ParityVerifier(), pad=tokenizer.pad_token_id,
                  stop_ids=models.stop_token_ids(tokenizer), eval_dir=eval_dir)
    first = evaluate.held_out_metrics(model, tokenizer, held_out, config, rng=KEY, step=0, **common)
    prefixes_file = os.path.join(eval_dir, mp.PREFIXES_FILE)
    written = open(prefixes_file).read()
    mined = mp.load_prefixes(prefixes_file)
    assert set(mined) == {r.id for r in held_out}
    found = sum(p is not None for p in mined.values())
    assert first["eval/misleading_prefix_problems"] == found >= 1
    for key in ("greedy_accuracy", "misleading_prefix_accuracy", "misleading_prefix_plain_accuracy"):
        assert 0.0 <= first[f"eval/{key}"] <= 1.0

    def no_mining(*args, **kwargs):
        raise AssertionError("the prefixes of a later evaluation must come from the file")

    monkeypatch.setattr(mp, "mine_misleading_prefixes", no_mining)
    later = evaluate.held_out_metrics(model, tokenizer, held_out, config,
                                      rng=jax.random.PRNGKey(7), step=5, **common)
    assert open(prefixes_file).read() == written
    assert later["eval/misleading_prefix_problems"] == found
    with open(os.path.join(eval_dir, "step_5.jsonl")) as f:
        rows = [json.loads(line) for line in f if '"misleading_prefix"' in line]
    by_id = {p.problem_id: p for p in mined.values() if p is not None}
    assert len(rows) == found
    for row in rows:
        prefix = by_id[row["id"]]
        assert row["prefix_tokens"] == len(prefix.prefix_ids)
        # Scored as one response: the prefix text, then the continuation (a character
        # the cut split in two decodes as U+FFFD in the prefix alone).
        assert row["response"].startswith(prefix.prefix_text.rstrip("\ufffd"))
        assert row["num_tokens"] + row["prefix_tokens"] <= 12
    assert sorted(os.listdir(eval_dir)) == [mp.PREFIXES_FILE, "step_0.jsonl", "step_5.jsonl"]
