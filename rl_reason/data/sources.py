"""Read problem/answer datasets into Records: JSON Lines, JSON arrays, Parquet, TFDS.

Entry point: `load_records(spec)`, where spec is a path ending in .jsonl / .json /
.parquet, or "tfds:NAME/SPLIT" (NAME may carry a config and version, e.g.
"tfds:gsm8k/main:1.0.0/train[:100]").

Which fields hold the problem and the answer is decided once per file, from its first
row; explicit keys always win over detection:

1. verl's schema (`prompt` a chat list [{role, content}, ...] and
   `reward_model.ground_truth`) is recognised as a whole.
2. Otherwise the first field present, in this order:
     problem: problem, question, prompt
     answer:  answer, ground_truth, reward_model.ground_truth, final_answer, solution
   (`solution` is last because it is usually a worked derivation, not the answer.)

This covers the usual copies of the math benchmarks as they are: MATH500 and AIME
(problem, answer), AMC23 / Minerva / AIME25 (question, answer), OlympiadBench
(question, final_answer) and GSM8K (question, answer).

Keys may be nested with dots ("reward_model.ground_truth", "extra_info.question"); a
field literally named with a dot is tried first. A problem that is a chat list becomes
the content of its last user message, and the full chat is kept in meta["chat"]. Note
that verl's user message usually already carries the dataset's instruction ("Let's
think step by step ..."); pass problem_key="extra_info.question" where the raw
question is stored there.

Record.source is the row's `data_source` field when present, else the file name (or
the TFDS name). Record.id is the `id_key` field when given, else a hash of the problem
text: ids are not guessed from columns such as "id", because per-file numbering
collides when files are combined; such columns stay in meta.

Answers that are numbers become strings (integral floats as integers: pandas stores
integer columns that have gaps as floats). A list holding one answer is that answer
(OlympiadBench's final_answer is ["..."]); longer lists are refused as ambiguous. An
answer holding GSM8K's "<worked solution>\n#### 1,234" is the text after the last
"####", with thousands separators of a number dropped ("1234"). An empty problem or
answer counts as missing.

A file that cannot be read this way raises DataError (a ValueError) naming the file
and the line, row or item; a missing file raises errors.MissingPathError.
"""

import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from rl_reason.data.record import Record, problem_id
from rl_reason.errors import MissingPathError, UserError

PROBLEM_ALIASES = ("problem", "question", "prompt")
ANSWER_ALIASES = ("answer", "ground_truth", "reward_model.ground_truth", "final_answer", "solution")
# GSM8K's answer field: the worked solution, then "#### <final answer>".
_GSM8K_MARK = "####"
_GROUPED_NUMBER = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
SOURCE_FIELD = "data_source"
_VERL_PROBLEM, _VERL_ANSWER = "prompt", "reward_model.ground_truth"

_MISSING = object()


class DataError(UserError, ValueError):
    """A data file (or spec) that cannot be read as problem/answer records; the message
    names the file and the line, row or item."""


def load_records(
    spec: str | os.PathLike,
    *,
    problem_key: str | None = None,
    answer_key: str | None = None,
    id_key: str | None = None,
    data_dir: str | os.PathLike | None = None,
) -> list[Record]:
    """Reads a dataset given by path or "tfds:NAME/SPLIT"; data_dir is for TFDS only."""
    keys = dict(problem_key=problem_key, answer_key=answer_key, id_key=id_key)
    spec_text = os.fspath(spec)
    if spec_text.startswith("tfds:"):
        name, sep, split = spec_text[len("tfds:"):].rpartition("/")
        if not sep or not name or not split:
            raise DataError(f"{spec_text!r}: TFDS specs are 'tfds:NAME/SPLIT', e.g. 'tfds:gsm8k/train'")
        return read_tfds(name, split, data_dir=data_dir, **keys)
    if data_dir is not None:
        raise DataError(f"{spec_text}: data_dir applies to 'tfds:' specs only")
    suffix = os.path.splitext(spec_text)[1].lower()
    if suffix in (".jsonl", ".json"):
        return read_jsonl(spec_text, **keys)
    if suffix == ".parquet":
        return read_parquet(spec_text, **keys)
    raise DataError(
        f"{spec_text}: unsupported file type {suffix!r}; use .jsonl, .json, .parquet or 'tfds:NAME/SPLIT'"
    )


def read_jsonl(
    path: str | os.PathLike,
    problem_key: str | None = None,
    answer_key: str | None = None,
    id_key: str | None = None,
) -> list[Record]:
    """JSON Lines (blank lines skipped), or a .json file holding one array of objects."""
    path = _existing_file(path)
    with open(path, "rb") as f:
        head = f.read(4096).lstrip()
    if path.lower().endswith(".json") and head.startswith(b"["):
        return _records_from_rows(_json_array_rows(path), path, problem_key, answer_key, id_key)
    return _records_from_rows(_jsonl_rows(path), path, problem_key, answer_key, id_key)


def read_parquet(
    path: str | os.PathLike,
    problem_key: str | None = None,
    answer_key: str | None = None,
    id_key: str | None = None,
) -> list[Record]:
    """A Parquet file, e.g. verl's (prompt, reward_model, data_source, ...) as is."""
    import pyarrow
    import pyarrow.parquet as pq

    path = _existing_file(path)
    try:
        table = pq.read_table(path)
    except pyarrow.ArrowException as e:
        raise DataError(f"{path}: not a readable Parquet file: {e}") from e
    rows = ((f"{path}: row {i}", row) for i, row in enumerate(table.to_pylist(), 1))
    return _records_from_rows(rows, path, problem_key, answer_key, id_key)


def read_tfds(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    problem_key: str | None = None,
    answer_key: str | None = None,
    id_key: str | None = None,
) -> list[Record]:
    """A prepared TFDS dataset through tfds' random-access data source (no TensorFlow).

    The dataset must already be prepared under data_dir with file_format
    "array_record" or "parquet"; nothing is downloaded. Text features arrive as bytes
    and are decoded as UTF-8.
    """
    where = f"tfds:{name}/{split}"
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            f"{where}: reading TFDS datasets needs tensorflow_datasets: pip install -e '.[tfds]'"
        ) from e
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        # tfds' own message lists every registered dataset; the useful part is where we looked.
        raise MissingPathError(
            f"{where}: no dataset {name!r} under data_dir={data_dir or 'the TFDS default'}"
        ) from None
    if not builder.is_prepared():
        raise MissingPathError(
            f"{where}: dataset not prepared under {builder.data_dir}; prepare it first with "
            "download_and_prepare(file_format='array_record') (nothing is downloaded at run time)"
        )
    try:
        data = builder.as_data_source(split=split)
    except (ValueError, KeyError, NotImplementedError) as e:
        raise DataError(f"{where}: {e}") from e
    rows = _tfds_rows(data, where)
    return _records_from_rows(rows, where, problem_key, answer_key, id_key, default_source=name)


def _tfds_rows(data: Any, where: str, chunk: int = 1024) -> Iterator[tuple[str, Any]]:
    # Reading in chunks (__getitems__) is about twice as fast as one example at a time.
    for start in range(0, len(data), chunk):
        examples = data.__getitems__(list(range(start, min(start + chunk, len(data)))))
        for i, example in enumerate(examples, start + 1):
            try:
                row = _plain(example)
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{where}: row {i}: a text feature is not UTF-8 ({e.reason} at byte {e.start})"
                ) from None
            yield f"{where}: row {i}", row


def _existing_file(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise MissingPathError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise DataError(f"{path}: not a file")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: not readable (permission denied)")
    return path


def _jsonl_rows(path: str) -> Iterator[tuple[str, Any]]:
    # Bytes per line so a decoding error can name its line.
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            where = f"{path}: line {line_no}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: invalid JSON ({e.msg}, column {e.colno})") from None
            yield where, row


def _json_array_rows(path: str) -> Iterator[tuple[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            items = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: line {e.lineno}: invalid JSON ({e.msg}, column {e.colno})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a JSON array of objects, got {type(items).__name__}")
    for i, row in enumerate(items, 1):
        yield f"{path}: item {i}", row


def _records_from_rows(
    rows: Iterable[tuple[str, Any]],
    path: str,
    problem_key: str | None,
    answer_key: str | None,
    id_key: str | None,
    default_source: str | None = None,
) -> list[Record]:
    default_source = default_source or os.path.basename(path)
    records, fields = [], None
    for where, row in rows:
        if not isinstance(row, Mapping):
            raise DataError(f"{where}: expected an object with named fields, got {type(row).__name__}")
        if fields is None:
            fields = _resolve_fields(row, problem_key, answer_key, where)
        records.append(_to_record(row, *fields, id_key, where, default_source))
    if not records:
        raise DataError(f"{path}: no records")
    return records


def _resolve_fields(
    row: Mapping, problem_key: str | None, answer_key: str | None, where: str
) -> tuple[str, str]:
    verl = _is_chat(_lookup(row, _VERL_PROBLEM)) and _lookup(row, _VERL_ANSWER) is not _MISSING
    problem = problem_key or (_VERL_PROBLEM if verl else _first_present(row, PROBLEM_ALIASES))
    answer = answer_key or (_VERL_ANSWER if verl else _first_present(row, ANSWER_ALIASES))
    for role, found, aliases, option in (
        ("problem", problem, PROBLEM_ALIASES, "problem_key"),
        ("answer", answer, ANSWER_ALIASES, "answer_key"),
    ):
        if found is None:
            raise DataError(
                f"{where}: no {role} field; looked for {', '.join(aliases)} among the row's fields "
                f"{sorted(row)}; pass {option}=... (dots for nested fields)"
            )
    return problem, answer


def _to_record(
    row: Mapping, problem_key: str, answer_key: str, id_key: str | None, where: str, default_source: str
) -> Record:
    raw_problem = _lookup(row, problem_key)
    chat = raw_problem if _is_chat(raw_problem) else None
    if chat is not None:
        users = [m for m in chat if m.get("role") == "user"]
        if not users:
            raise DataError(f"{where}: the chat in field {problem_key!r} has no user message")
        raw_problem = users[-1].get("content")
    if _is_blank(raw_problem):
        raise DataError(f"{where}: missing problem (field {problem_key!r})")
    if not isinstance(raw_problem, str):
        kind = type(raw_problem).__name__
        raise DataError(f"{where}: problem (field {problem_key!r}) must be text, got {kind}")

    answer = _answer_text(_lookup(row, answer_key), answer_key, where)

    if id_key is None:
        record_id = problem_id(raw_problem)
    else:
        raw_id = _lookup(row, id_key)
        if _is_blank(raw_id):
            raise DataError(f"{where}: missing id (field {id_key!r})")
        if not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool):
            raise DataError(f"{where}: id (field {id_key!r}) must be text or an integer, got {raw_id!r:.80}")
        record_id = str(raw_id)

    source = row.get(SOURCE_FIELD)
    if not isinstance(source, str) or not source:
        source = default_source
    # Nested keys consume nothing at top level: their parent (e.g. reward_model with its
    # style) stays in meta.
    consumed = {key for key in (problem_key, answer_key, id_key, SOURCE_FIELD) if key in row}
    meta = {k: v for k, v in row.items() if k not in consumed}
    if chat is not None:
        meta["chat"] = list(chat)
    return Record(problem=raw_problem, answer=answer, id=record_id, source=source, meta=meta)


def _answer_text(value: Any, key: str, where: str) -> str:
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool):
        raise DataError(f"{where}: answer (field {key!r}) is a boolean ({value}); expected text or a number")
    if isinstance(value, float):
        if math.isnan(value):
            value = None
        elif value.is_integer():
            value = int(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if _is_blank(value):
        raise DataError(f"{where}: missing answer (field {key!r})")
    if not isinstance(value, str):
        kind = type(value).__name__
        raise DataError(
            f"{where}: answer (field {key!r}) must be text or a number, got {kind}: {value!r:.80}"
        )
    if _GSM8K_MARK in value:
        value = value.rpartition(_GSM8K_MARK)[2].strip()
        if not value:
            raise DataError(f"{where}: missing answer after {_GSM8K_MARK!r} (field {key!r})")
        if _GROUPED_NUMBER.fullmatch(value):
            value = value.replace(",", "")
    return value.strip()


def _lookup(row: Mapping, key: str) -> Any:
    if key in row:
        return row[key]
    node: Any = row
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _is_blank(value: Any) -> bool:
    return value is _MISSING or value is None or (isinstance(value, str) and not value.strip())


def _first_present(row: Mapping, aliases: tuple[str, ...]) -> str | None:
    return next((key for key in aliases if _lookup(row, key) is not _MISSING), None)


def _is_chat(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(isinstance(m, Mapping) and "role" in m and "content" in m for m in value)
    )


def _plain(value: Any) -> Any:
    """TFDS examples to plain Python: bytes to str, numpy scalars and arrays to lists/numbers."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()] if value.ndim else _plain(value.item())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
