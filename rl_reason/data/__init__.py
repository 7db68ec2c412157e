"""Datasets: problem/answer records from files or TFDS, and the prompt stream the trainer draws from."""

from rl_reason.data.record import Record, normalize_problem, problem_id
from rl_reason.data.sources import DataError, load_records, read_jsonl, read_parquet, read_tfds
from rl_reason.data.stream import PromptStream, StreamExhausted
