"""Reading JSONL / JSON / Parquet (incl. verl's schema) / TFDS into Records, and the errors."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rl_reason.data import Record, load_records, problem_id, read_jsonl, read_parquet, sources


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# ---- JSONL / JSON -----------------------------------------------------------------


def test_jsonl_aliases_numbers_ids_source_and_meta(tmp_path):
    path = write_jsonl(
        tmp_path / "gsm.jsonl",
        [
            {"question": "What is 2+3?", "answer": 5, "level": 1},
            {"question": "Half of 3?", "answer": 1.5},
            {"question": "Three point zero?", "answer": 3.0},
        ],
    )
    records = load_records(path)
    assert [r.problem for r in records] == ["What is 2+3?", "Half of 3?", "Three point zero?"]
    assert [r.answer for r in records] == ["5", "1.5", "3"]
    assert records[0].id == problem_id("What is 2+3?") and len(records[0].id) == 16
    assert records[0].id != records[1].id
    assert {r.source for r in records} == {"gsm.jsonl"}
    assert records[0].meta == {"level": 1}
    # Ids come from the problem text alone, so they survive reformatting and reordering.
    assert problem_id("What  is\n2+3?") == records[0].id


def test_explicit_keys_win_and_nested_keys(tmp_path):
    path = write_jsonl(
        tmp_path / "x.jsonl",
        [{"problem": "templated", "question": "raw q", "answer": "x", "gt": {"final": {"value": 7}}, "n": 3}],
    )
    (record,) = read_jsonl(path, problem_key="question", answer_key="gt.final.value", id_key="n")
    assert (record.problem, record.answer, record.id) == ("raw q", "7", "3")
    # Top-level fields the record consumed leave meta; the parent of a nested key stays.
    assert set(record.meta) == {"problem", "answer", "gt"}


def test_literal_dotted_field_is_tried_before_nesting(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"q": "p", "a.b": "flat", "a": {"b": "nested"}}])
    assert read_jsonl(path, problem_key="q", answer_key="a.b")[0].answer == "flat"


def test_answer_alias_order_prefers_short_answer_over_solution(tmp_path):
    both = write_jsonl(tmp_path / "both.jsonl", [{"problem": "p", "solution": "derivation", "answer": "4"}])
    only_solution = write_jsonl(tmp_path / "sol.jsonl", [{"problem": "p", "solution": "\\boxed{4}"}])
    assert load_records(both)[0].answer == "4"
    assert load_records(only_solution)[0].answer == "\\boxed{4}"


def test_json_array_file(tmp_path):
    path = tmp_path / "aime.json"
    path.write_text(json.dumps([{"problem": "a", "answer": 1}, {"problem": "b", "answer": "2"}]))
    assert [(r.problem, r.answer) for r in load_records(path)] == [("a", "1"), ("b", "2")]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"problem": "a", "answer": 1}, {"problem": "b"}]))
    with pytest.raises(ValueError, match=r"bad\.json: item 2: missing answer"):
        load_records(bad)


def test_missing_problem_names_file_and_physical_line(tmp_path):
    # The blank line still counts, so the message points at the line an editor shows.
    path = write_jsonl(tmp_path / "train.jsonl", [{"problem": "a", "answer": "1"}, "", {"answer": "2"}])
    with pytest.raises(ValueError) as info:
        load_records(path)
    message = str(info.value)
    assert str(path) in message and "line 3" in message and "missing problem" in message


@pytest.mark.parametrize("answer", [None, "", "   "])
def test_missing_answer_names_file_and_line(tmp_path, answer):
    rows = [{"problem": "a", "answer": "1"}, {"problem": "b", "answer": answer}]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(ValueError, match=r"train\.jsonl: line 2: missing answer \(field 'answer'\)"):
        load_records(path)


def test_answer_that_is_not_text_or_number(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"problem": "a", "answer": True}])
    with pytest.raises(ValueError, match=r"t\.jsonl: line 1: answer .* boolean"):
        load_records(path)
    path = write_jsonl(tmp_path / "u.jsonl", [{"problem": "a", "answer": [1, 2]}])
    with pytest.raises(ValueError, match=r"u\.jsonl: line 1: answer .* must be text or a number, got list"):
        load_records(path)


def test_invalid_json_line(tmp_path):
    rows = [{"problem": "a", "answer": "1"}, '{"problem": "b", "answer":']
    path = write_jsonl(tmp_path / "broken.jsonl", rows)
    with pytest.raises(ValueError, match=r"broken\.jsonl: line 2: invalid JSON"):
        load_records(path)


def test_line_that_is_not_an_object(tmp_path):
    path = write_jsonl(tmp_path / "list.jsonl", [{"problem": "a", "answer": "1"}, [1, 2]])
    with pytest.raises(ValueError, match=r"list\.jsonl: line 2: expected an object"):
        load_records(path)


def test_missing_id_when_id_key_given(tmp_path):
    rows = [{"problem": "a", "answer": "1", "id": 0}, {"problem": "b", "answer": "2"}]
    path = write_jsonl(tmp_path / "ids.jsonl", rows)
    with pytest.raises(ValueError, match=r"ids\.jsonl: line 2: missing id \(field 'id'\)"):
        load_records(path, id_key="id")
    # Without id_key an "id" column is not guessed as the id (per-file numbering collides
    # across files); it stays in meta and the problem hash is the id.
    first = load_records(path)[0]
    assert first.id == problem_id("a") and first.meta == {"id": 0}


def test_no_detectable_fields_lists_what_was_tried(tmp_path):
    path = write_jsonl(tmp_path / "odd.jsonl", [{"text": "a", "answer": "1"}])
    with pytest.raises(ValueError) as info:
        load_records(path)
    message = str(info.value)
    assert "odd.jsonl: line 1: no problem field" in message
    assert "problem, question, prompt" in message and "['answer', 'text']" in message
    assert "problem_key" in message


def test_missing_file_unknown_suffix_empty_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl: no such file"):
        load_records(tmp_path / "nope.jsonl")
    csv = tmp_path / "data.csv"
    csv.write_text("problem,answer\n")
    with pytest.raises(ValueError, match=r"data\.csv: unsupported file type '\.csv'"):
        load_records(csv)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match=r"empty\.jsonl: no records"):
        load_records(empty)


def test_not_utf8_line(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"problem": "a", "answer": "1"}\n{"problem": "caf\xe9", "answer": "2"}\n')
    with pytest.raises(ValueError, match=r"latin\.jsonl: line 2: not UTF-8"):
        load_records(path)


# ---- The math benchmarks as they are usually distributed ---------------------------

BENCHMARK_ROWS = {
    # name: (row as distributed, expected problem, expected answer)
    "math500": ({"problem": "Compute $\\dbinom{8}{4}$.", "solution": "... $\\boxed{70}$.",
                 "answer": "70", "subject": "Counting", "level": 2, "unique_id": "test/c/1.json"},
                "Compute $\\dbinom{8}{4}$.", "70"),
    "aime24": ({"id": 60, "problem": "Find $m+n$.", "solution": "...", "answer": "204",
                "url": "https://..."}, "Find $m+n$.", "204"),
    "aime25": ({"problem": "Find the sum.", "answer": 70, "id": "0"}, "Find the sum.", "70"),
    "amc23": ({"id": 0, "question": "How many miles?", "answer": 27.0, "url": "..."},
              "How many miles?", "27"),
    "minerva": ({"question": "Compute the rate.", "answer": "2.5e-3", "type": "x"},
                "Compute the rate.", "2.5e-3"),
    "olympiadbench": ({"id": 1606, "question": "Find $x$.", "solution": ["..."],
                       "final_answer": ["$\\frac{1}{2}$"], "is_multiple_answer": False,
                       "unit": None, "answer_type": "Numerical"},
                      "Find $x$.", "$\\frac{1}{2}$"),
    "gsm8k": ({"question": "How many clips?",
               "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72"},
              "How many clips?", "72"),
}


@pytest.mark.parametrize("name", sorted(BENCHMARK_ROWS))
@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_benchmark_files_load_as_distributed(name, suffix, tmp_path):
    row, problem, answer = BENCHMARK_ROWS[name]
    path = tmp_path / f"{name}{suffix}"
    if suffix == ".jsonl":
        write_jsonl(path, [row])
    else:
        pq.write_table(pa.Table.from_pylist([row]), path)
    (record,) = load_records(path)
    assert (record.problem, record.answer, record.source) == (problem, answer, path.name)


def test_gsm8k_final_answer_and_its_errors(tmp_path):
    rows = [{"question": "a", "answer": "Work.\n#### 1,234"},
            {"question": "b", "answer": "Work.\n####-5"},
            {"question": "c", "answer": "#### 3/4 "},
            {"question": "d", "answer": "1,234"}]  # no ####: left as written
    records = load_records(write_jsonl(tmp_path / "gsm8k.jsonl", rows))
    assert [r.answer for r in records] == ["1234", "-5", "3/4", "1,234"]
    path = write_jsonl(tmp_path / "cut.jsonl", [{"question": "a", "answer": "Work.\n####  "}])
    with pytest.raises(ValueError, match=r"cut\.jsonl: line 1: missing answer after '####'"):
        load_records(path)


def test_answer_lists_of_one_are_unwrapped_longer_ones_refused(tmp_path):
    path = write_jsonl(tmp_path / "ob.jsonl", [{"question": "a", "final_answer": [3]}])
    assert load_records(path)[0].answer == "3"
    path = write_jsonl(tmp_path / "two.jsonl", [{"question": "a", "final_answer": ["1", "2"]}])
    with pytest.raises(ValueError, match=r"two\.jsonl: line 1: answer .* must be text or a number, got list"):
        load_records(path)


def test_custom_keys_for_files_with_other_names(tmp_path):
    path = write_jsonl(tmp_path / "custom.jsonl", [{"input": "What is 1+1?", "target": {"value": 2}}])
    (record,) = load_records(path, problem_key="input", answer_key="target.value")
    assert (record.problem, record.answer) == ("What is 1+1?", "2")


# ---- Parquet, verl's schema -------------------------------------------------------

VERL_SCHEMA = pa.schema(
    [
        ("data_source", pa.string()),
        ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        ("extra_info", pa.struct([("split", pa.string()), ("index", pa.int64()), ("question", pa.string())])),
    ]
)


def verl_row(source, question, ground_truth, index, system=True):
    chat = [{"role": "user", "content": question + " Let's think step by step."}]
    if system:
        chat.insert(0, {"role": "system", "content": "You are a helpful assistant."})
    return {
        "data_source": source,
        "prompt": chat,
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": ground_truth},
        "extra_info": {"split": "train", "index": index, "question": question},
    }


def write_verl(path, rows):
    pq.write_table(pa.Table.from_pylist(rows, schema=VERL_SCHEMA), path)
    return path


def test_verl_parquet_read_as_is(tmp_path):
    path = write_verl(
        tmp_path / "train.parquet",
        [
            verl_row("openai/gsm8k", "What is 6*7?", "42", 0),
            verl_row("lighteval/MATH", "Solve x+1=3.", "2", 1, system=False),
        ],
    )
    records = load_records(path)
    suffix = " Let's think step by step."
    assert [r.problem for r in records] == ["What is 6*7?" + suffix, "Solve x+1=3." + suffix]
    assert [r.answer for r in records] == ["42", "2"]
    assert [r.source for r in records] == ["openai/gsm8k", "lighteval/MATH"]
    first = records[0]
    assert [m["role"] for m in first.meta["chat"]] == ["system", "user"]
    assert first.meta["reward_model"] == {"style": "rule", "ground_truth": "42"}
    assert first.meta["extra_info"]["index"] == 0 and first.meta["ability"] == "math"
    assert "prompt" not in first.meta and "data_source" not in first.meta
    # The raw question, without verl's instruction suffix, is one nested key away.
    raw = read_parquet(path, problem_key="extra_info.question")
    assert [r.problem for r in raw] == ["What is 6*7?", "Solve x+1=3."]
    assert "chat" not in raw[0].meta and "prompt" in raw[0].meta


def test_verl_wins_over_aliases_unless_keys_are_explicit(tmp_path):
    row = verl_row("src", "q", "9", 0)
    row["answer"] = "not the ground truth"
    table = pa.Table.from_pylist([row])
    path = tmp_path / "mixed.parquet"
    pq.write_table(table, path)
    assert load_records(path)[0].answer == "9"
    assert load_records(path, answer_key="answer")[0].answer == "not the ground truth"


def test_verl_missing_ground_truth_names_row(tmp_path):
    path = write_verl(tmp_path / "gaps.parquet", [verl_row("s", "a", "1", 0), verl_row("s", "b", None, 1)])
    expected = r"gaps\.parquet: row 2: missing answer \(field 'reward_model\.ground_truth'\)"
    with pytest.raises(ValueError, match=expected):
        load_records(path)


def test_chat_without_user_message(tmp_path):
    row = verl_row("s", "a", "1", 0)
    row["prompt"] = [{"role": "system", "content": "only a system prompt"}]
    path = write_verl(tmp_path / "nouser.parquet", [verl_row("s", "b", "2", 0), row])
    expected = r"nouser\.parquet: row 2: the chat in field 'prompt' has no user message"
    with pytest.raises(ValueError, match=expected):
        load_records(path)


def test_flat_parquet_with_numeric_answers(tmp_path):
    path = tmp_path / "flat.parquet"
    pq.write_table(pa.table({"problem": ["a", "b"], "answer": pa.array([3, 10], pa.int64())}), path)
    records = load_records(path)
    assert [r.answer for r in records] == ["3", "10"] and records[0].source == "flat.parquet"
    floats = tmp_path / "floats.parquet"
    pq.write_table(pa.table({"problem": ["a", "b"], "answer": [4.0, float("nan")]}), floats)
    with pytest.raises(ValueError, match=r"floats\.parquet: row 2: missing answer"):
        load_records(floats)


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "fake.parquet"
    path.write_text("not parquet")
    with pytest.raises(ValueError, match=r"fake\.parquet: not a readable Parquet file"):
        load_records(path)


# ---- TFDS (random-access data source, no TensorFlow) ------------------------------


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """A tiny array_record dataset built with tfds' own builder APIs, no TensorFlow.

    The builder class is not registered, so reading goes through the prepared files
    alone, as it does for a dataset prepared on another machine.
    """
    import tensorflow_datasets as tfds

    with tfds.core.registered.skip_registration():

        class RlReasonTinyMath(tfds.core.GeneratorBasedBuilder):
            VERSION = tfds.core.Version("1.0.0")

            def _info(self):
                features = tfds.features.FeaturesDict(
                    {
                        "question": tfds.features.Text(),
                        "answer": np.int64,
                        "extra": {"solution": tfds.features.Text()},
                    }
                )
                return tfds.core.DatasetInfo(builder=self, features=features)

            def _split_generators(self, dl_manager):
                return {"train": self._generate_examples(6), "test": self._generate_examples(2)}

            def _generate_examples(self, n):
                for i in range(n):
                    solution = f"\\boxed{{{2 * i}}}"
                    question = f"What is {i} + {i}? ≈"
                    yield i, {"question": question, "answer": 2 * i, "extra": {"solution": solution}}

    data_dir = tmp_path_factory.mktemp("tfds")
    RlReasonTinyMath(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    return data_dir


def test_tfds_reads_and_decodes(tfds_dir):
    records = load_records("tfds:rl_reason_tiny_math/train", data_dir=tfds_dir)
    assert len(records) == 6
    by_problem = {r.problem: r for r in records}
    assert set(by_problem) == {f"What is {i} + {i}? ≈" for i in range(6)}
    assert by_problem["What is 3 + 3? ≈"].answer == "6"
    assert by_problem["What is 3 + 3? ≈"].meta == {"extra": {"solution": "\\boxed{6}"}}
    assert {r.source for r in records} == {"rl_reason_tiny_math"}
    spec = "tfds:rl_reason_tiny_math:1.0.0/test"
    nested = load_records(spec, data_dir=tfds_dir, answer_key="extra.solution")
    assert sorted(r.answer for r in nested) == ["\\boxed{0}", "\\boxed{2}"]
    assert len(load_records("tfds:rl_reason_tiny_math/train[:2]", data_dir=tfds_dir)) == 2


def test_tfds_rows_are_numbered_across_read_chunks():
    class FakeDataSource:
        examples = [{"q": b"a"}, {"q": b"b"}, {"q": b"c"}, {"q": b"\xff"}, {"q": b"e"}]

        def __len__(self):
            return len(self.examples)

        def __getitems__(self, indices):
            return [self.examples[i] for i in indices]

    rows = sources._tfds_rows(FakeDataSource(), "tfds:fake/train", chunk=2)
    expected = [(f"tfds:fake/train: row {i + 1}", {"q": q}) for i, q in enumerate("abc")]
    assert [next(rows) for _ in range(3)] == expected
    with pytest.raises(ValueError, match="tfds:fake/train: row 4: a text feature is not UTF-8"):
        next(rows)


def test_tfds_errors(tfds_dir, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"tfds:no_such_set/train: no dataset 'no_such_set'"):
        load_records("tfds:no_such_set/train", data_dir=tfds_dir)
    with pytest.raises(ValueError, match=r"tfds:rl_reason_tiny_math/validation: .*Unknown split"):
        load_records("tfds:rl_reason_tiny_math/validation", data_dir=tfds_dir)
    with pytest.raises(ValueError, match=r"'tfds:rl_reason_tiny_math': TFDS specs are 'tfds:NAME/SPLIT'"):
        load_records("tfds:rl_reason_tiny_math", data_dir=tfds_dir)
    with pytest.raises(ValueError, match="data_dir applies to 'tfds:' specs only"):
        load_records(tfds_dir / "x.jsonl", data_dir=tfds_dir)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match=r"tfds:rl_reason_tiny_math/train: .*needs tensorflow_datasets"):
        load_records("tfds:rl_reason_tiny_math/train", data_dir=tfds_dir)


def test_tfds_reading_never_imports_tensorflow(tfds_dir):
    # A fresh interpreter: in this one another test could have imported TensorFlow.
    script = textwrap.dedent(
        f"""
        import sys
        from rl_reason.data import load_records
        records = load_records("tfds:rl_reason_tiny_math/train", data_dir={str(tfds_dir)!r})
        assert len(records) == 6, records
        assert "tensorflow" not in sys.modules, "TensorFlow was imported"
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-c", script]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_record_rejects_wrong_types():
    with pytest.raises(TypeError, match="Record.answer must be str, got int"):
        Record(problem="p", answer=3, id="i", source="s")
    record = Record(problem="p", answer="3", id="i", source="s", meta={"k": [1]})
    assert hash(record) == hash(Record(problem="p", answer="3", id="i", source="s"))
