"""End to end on a tiny random model: structure of the outputs and the metric math,
every mode through the real sampler, and the command line with a run config."""

import json
import os
import subprocess
import sys

import pytest

from configs import grpo
from rl_reason import evaluate, evaluation_metrics, models, run_setup
from rl_reason.data import sources, tokenizer_builder, worlds
from rl_reason.evaluation import misleading_prefix
from rl_reason.verifiers import VerifyResult

PROBLEMS = [("What is 2+3?", "5"), ("What is 7*6?", "42"), ("What is 9-4?", "5")]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tiny_ckpt"))
    corpus = [f"{q}\nPlease reason step by step. \\boxed{{{a}}}" for q, a in PROBLEMS] * 20
    tokenizer = tokenizer_builder.build_tokenizer(corpus, path, vocab_size=300)
    config = models.get_preset("tiny-qwen3", vocab_size=len(tokenizer),
                               eos_token_id=models.stop_token_ids(tokenizer),
                               pad_token_id=tokenizer.pad_token_id)
    models.save(models.init(config, seed=0), path)
    return path


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny_bench.jsonl"
    path.write_text("".join(json.dumps({"problem": q, "answer": a}) + "\n" for q, a in PROBLEMS))
    return str(path)


class LengthParityVerifier:
    """Deterministic, non-trivial correctness (even-length responses are "correct")."""

    def verify_batch(self, responses, answers):
        return [VerifyResult(1.0, "correct", text[-3:]) if len(text) % 2 == 0 else
                VerifyResult(0.0, "wrong", text[-3:]) for text in responses]


def _read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_run_writes_results_generations_and_table(checkpoint, data_file, tmp_path, capsys):
    # The same shapes as the next test (one compilation each for greedy and sampled
    # decoding), with a batch split across two sampler calls.
    settings = evaluate.EvalSettings(num_samples=4, ks=(1, 2, 4), max_new_tokens=12, temperature=1.0,
                                     attempts=2, misleading_prefix=True, prefix_samples=4,
                                     batch_size=6)
    [summary] = evaluate.run(checkpoint, [data_file], settings, out_dir=str(tmp_path),
                             verifier_name="exact_int")
    metrics = summary["metrics"]
    assert summary["settings"]["temperature"] == 1.0 and summary["settings"]["ks"] == (1, 2, 4)
    assert summary["verifier"]["name"] == "exact_int"
    for key in ("greedy_accuracy", "avg@4", "pass@1", "pass@2", "pass@4", "avg@2", "maj@4",
                "attempts@1", "attempts@2", "attempts_answer_repeat_rate", "verifier_no_answer",
                "truncation_rate"):
        assert 0.0 <= metrics[key] <= max(1.0, metrics[key]), key
    assert metrics["num_problems"] == 3 and metrics["attempts_context_overflow"] == 0
    assert metrics["attempts@1"] <= metrics["attempts@2"]
    # One row per mined problem (a random policy rarely boxes a wrong answer).
    prefixes_file = tmp_path / misleading_prefix.PREFIXES_FILE
    assert summary["misleading_prefixes"] == str(prefixes_file)
    mined = misleading_prefix.load_prefixes(str(prefixes_file))
    assert len(mined) == 3
    assert metrics["misleading_prefix_problems"] == sum(p is not None for p in mined.values())
    with open(tmp_path / "tiny_bench.json") as f:
        assert json.load(f)["metrics"] == pytest.approx(metrics)
    with open(tmp_path / "results.json") as f:
        assert [s["benchmark"] for s in json.load(f)] == ["tiny_bench"]
    rows = _read_jsonl(tmp_path / "tiny_bench.generations.jsonl")
    modes = [row["mode"] for row in rows]
    assert modes.count("greedy") == 3 and modes.count("sample") == 12
    # A second attempt follows an unsolved first one that left budget (one budget of 12
    # tokens per episode).
    unsolved_first = sum(1 for row in rows if row["mode"] == "attempts" and row["attempt"] == 1
                         and row["status"] != "correct" and row["num_tokens"] < 12)
    assert modes.count("attempts") == 3 + unsolved_first
    assert modes.count("misleading_prefix") == metrics["misleading_prefix_problems"]
    assert all(row["num_tokens"] <= 12 for row in rows)
    statuses = sum(metrics[f"verifier_{s}"] for s in ("correct", "wrong", "no_answer", "timeout", "error"))
    assert statuses == len(rows)
    table = capsys.readouterr().out
    assert "tiny_bench" in table and "pass@4" in table and "attempts@2" in table


def test_metrics_match_the_written_generations(checkpoint, data_file):
    model, tokenizer = models.load(checkpoint), models.load_tokenizer(checkpoint)
    records = sources.load_records(data_file)
    settings = evaluate.EvalSettings(num_samples=4, ks=(1, 2, 4), max_new_tokens=12, temperature=1.0,
                                     batch_size=6)
    result = evaluate.evaluate_model(model, tokenizer, records, settings, verifier=LengthParityVerifier(),
                                     stop_token_ids=models.stop_token_ids(tokenizer),
                                     pad_id=models.pad_token_id(tokenizer), rng=3)
    samples = [row for row in result.generations if row["mode"] == "sample"]
    correct = [[False] * 4 for _ in records]
    answers = [[None] * 4 for _ in records]
    for row in samples:
        correct[row["problem"]][row["sample"]] = row["status"] == "correct"
        answers[row["problem"]][row["sample"]] = row["extracted"]
    expected = evaluation_metrics.sample_metrics(answers, correct, (1, 2, 4))
    assert {k: result.metrics[k] for k in expected} == pytest.approx(expected)
    for k in (1, 2, 4):
        by_hand = sum(evaluation_metrics.pass_at_k(4, sum(c), k) for c in correct) / len(records)
        assert result.metrics[f"pass@{k}"] == pytest.approx(by_hand)
    greedy = [row["status"] == "correct" for row in result.generations if row["mode"] == "greedy"]
    assert result.metrics["greedy_accuracy"] == pytest.approx(sum(greedy) / 3)
    # The parity verifier makes some samples right and some wrong, so the check has teeth.
    assert 0 < sum(map(sum, correct)) < 12
    # Same seed, same samples.
    again = evaluate.evaluate_model(model, tokenizer, records, settings, verifier=LengthParityVerifier(),
                                    stop_token_ids=models.stop_token_ids(tokenizer),
                                    pad_id=models.pad_token_id(tokenizer), rng=3)
    assert [r["response"] for r in again.generations] == [r["response"] for r in result.generations]


def test_settings_validation_and_checkpoint_resolution(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="every k must be in 1..num_samples=4"):
        evaluate.EvalSettings(num_samples=4, ks=(1, 8))
    with pytest.raises(ValueError, match="temperature > 0"):
        evaluate.EvalSettings(temperature=0.0)
    with pytest.raises(ValueError, match="temperature > 0"):
        evaluate.EvalSettings(num_samples=0, misleading_prefix=True, temperature=0.0)
    with pytest.raises(ValueError, match="attempt_feedback='system'"):
        evaluate.EvalSettings(attempts=2, attempt_feedback="system")
    with pytest.raises(ValueError, match="prefix_fraction=1.0"):
        evaluate.EvalSettings(misleading_prefix=True, prefix_fraction=1.0)
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate.EvalSettings(num_samples=0, greedy=False)
    assert evaluate.EvalSettings(num_samples=0, greedy=False, attempts=3).attempts == 3
    workdir = tmp_path / "workdir"
    os.symlink(checkpoint, workdir / "hf") if workdir.mkdir() is None else None
    assert evaluate.resolve_checkpoint(str(workdir)) == str(workdir / "hf")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        evaluate.resolve_checkpoint(str(tmp_path))
    assert evaluate.benchmark_name("tfds:gsm8k/main/test") == "gsm8k_main_test"
    assert evaluate.benchmark_name("/data/math500.jsonl") == "math500"


def test_context_overflow_is_a_clear_error(checkpoint, data_file):
    model, tokenizer = models.load(checkpoint), models.load_tokenizer(checkpoint)
    settings = evaluate.EvalSettings(num_samples=0, max_new_tokens=100_000)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        evaluate.evaluate_model(model, tokenizer, sources.load_records(data_file), settings,
                                verifier=LengthParityVerifier(), stop_token_ids=(1,), pad_id=0)


def test_run_reads_benchmark_formats_with_detected_or_given_keys(checkpoint, tmp_path, monkeypatch):
    """GSM8K's "#### 42" answers and OlympiadBench's final_answer lists load as is; other
    field names need --problem_key/--answer_key. The model is stubbed: loading is the point."""
    gsm8k = tmp_path / "gsm8k_test.jsonl"
    gsm8k.write_text(json.dumps({"question": "What is 6*7?", "answer": "6*7=42.\n#### 42"}) + "\n")
    olympiad = tmp_path / "olympiadbench.jsonl"
    olympiad.write_text(json.dumps({"question": "What is 9-4?", "final_answer": ["5"]}) + "\n")
    custom = tmp_path / "custom.jsonl"
    custom.write_text(json.dumps({"input": "What is 2+3?", "target": {"value": 5}}) + "\n")
    seen = []

    def fake_evaluate_model(model, tokenizer, records, settings, **kwargs):
        seen.append([(r.problem, r.answer) for r in records])
        return evaluate.EvalResults({"num_problems": len(records), "greedy_accuracy": 1.0}, [])

    monkeypatch.setattr(evaluate, "evaluate_model", fake_evaluate_model)
    settings = evaluate.EvalSettings(num_samples=0)
    summaries = evaluate.run(checkpoint, [str(gsm8k), str(olympiad)], settings, out_dir=str(tmp_path / "a"),
                             verifier_name="exact_int")
    assert seen == [[("What is 6*7?", "42")], [("What is 9-4?", "5")]]
    assert [s["benchmark"] for s in summaries] == ["gsm8k_test", "olympiadbench"]
    assert summaries[0]["data_keys"] == {"problem_key": None, "answer_key": None}
    with pytest.raises(ValueError, match="no problem field"):
        evaluate.run(checkpoint, [str(custom)], settings, out_dir=str(tmp_path / "b"), verifier_name="exact_int")
    [summary] = evaluate.run(checkpoint, [str(custom)], settings, out_dir=str(tmp_path / "c"),
                             verifier_name="exact_int", problem_key="input", answer_key="target.value")
    assert seen[-1] == [("What is 2+3?", "5")]
    with open(tmp_path / "c" / "custom.json") as f:
        assert json.load(f)["data_keys"] == {"problem_key": "input", "answer_key": "target.value"}


@pytest.mark.slow
def test_command_line(checkpoint, data_file, tmp_path):
    command = [sys.executable, "-m", "rl_reason.evaluate", f"--checkpoint={checkpoint}", f"--data={data_file}",
               "--num_samples=2", "--k=1,2", "--max_new_tokens=4", "--verifier=exact_int", f"--out={tmp_path}"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    assert "tiny_bench" in output and "pass@2" in output
    with open(tmp_path / "tiny_bench.json") as f:
        assert set(json.load(f)["metrics"]) >= {"greedy_accuracy", "avg@2", "pass@1", "pass@2", "maj@2"}
    # Files with other field names, via --problem_key / --answer_key.
    custom = tmp_path / "custom.jsonl"
    custom.write_text("".join(json.dumps({"input": q, "target": {"value": a}}) + "\n" for q, a in PROBLEMS))
    command = [sys.executable, "-m", "rl_reason.evaluate", f"--checkpoint={checkpoint}", f"--data={custom}",
               "--num_samples=0", "--max_new_tokens=4", "--verifier=exact_int", f"--out={tmp_path}",
               "--problem_key=input", "--answer_key=target.value"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    with open(tmp_path / "custom.json") as f:
        summary = json.load(f)
    assert summary["data_keys"] == {"problem_key": "input", "answer_key": "target.value"}
    assert summary["metrics"]["num_problems"] == 3


class AlwaysSevenVerifier:
    """Every response is wrong with the answer 7: each later attempt repeats a rejected one."""

    def verify_batch(self, responses, answers):
        return [VerifyResult(0.0, "wrong", "7") for _ in responses]


def test_attempts_with_verifier_feedback_through_the_sampler(checkpoint, data_file):
    """A random policy rarely ends its turn, and the episode's attempts share one budget
    of 12 tokens: here every token ends the turn, so each attempt is one token long and
    all three fit."""
    model, tokenizer = models.load(checkpoint), models.load_tokenizer(checkpoint)
    settings = evaluate.EvalSettings(num_samples=0, greedy=False, attempts=3,
                                     attempt_feedback="verifier", attempt_temperature=0.4,
                                     max_new_tokens=12, batch_size=6)
    result = evaluate.evaluate_model(model, tokenizer, sources.load_records(data_file), settings,
                                     verifier=AlwaysSevenVerifier(), rng=0,
                                     stop_token_ids=range(1, len(tokenizer)),
                                     pad_id=tokenizer.pad_token_id)
    m = result.metrics
    assert (m["attempts@1"], m["attempts@2"], m["attempts@3"]) == (0.0, 0.0, 0.0)
    assert m["attempts_answer_repeat_rate"] == 1.0 and m["attempts_later_answers"] == 6
    assert "greedy_accuracy" not in m and m["verifier_wrong"] == 9
    assert sorted((r["problem"], r["attempt"]) for r in result.generations) == [
        (p, a) for p in range(3) for a in (1, 2, 3)]
    assert {(r["num_tokens"], r["truncated"]) for r in result.generations} == {(1, False)}


def test_held_out_records_follow_the_config():
    config = grpo.get_config("")
    config.unlock()
    config.data.update(embedded_levels=(2, 3), embedded_eval_size=10)
    config.eval.max_problems = 6
    records = run_setup.held_out_records(config)
    task = worlds.get(config.world.name).task     # the config's world sets the records
    assert records == task.held_out_records(10, levels=(2, 3))[:6]
    assert {r.meta["level"] for r in records} <= {2, 3}
    config.data.train = "train.jsonl"     # a training file and no eval files: no held-out set
    assert run_setup.held_out_records(config) == []


def test_command_line_evaluates_the_config_held_out_records(tiny_policy, tmp_path):
    """With --config and no --data: the trainer's held-out records (levels and size from
    the config), its verifier, and the mode flags."""
    command = [sys.executable, "-m", "rl_reason.evaluate", "--config=configs/grpo.py",
               "--config.data.embedded_levels=(2,)", "--config.data.embedded_eval_size=5",
               f"--checkpoint={tiny_policy}", "--num_samples=0", "--max_new_tokens=4",
               "--attempts=2", "--attempt_feedback=verifier", "--attempt_temperature=0.4",
               "--misleading_prefix", "--prefix_samples=2", "--temperature=1.0",
               f"--out={tmp_path}"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    output = subprocess.run(command, capture_output=True, text=True, check=True, cwd=root).stdout
    assert evaluate.EMBEDDED_NAME in output and "attempts@2" in output
    with open(tmp_path / f"{evaluate.EMBEDDED_NAME}.json") as f:
        summary = json.load(f)
    assert summary["verifier"]["name"] == "exact_int"          # the config's
    assert summary["metrics"]["num_problems"] == 5
    settings = summary["settings"]
    assert (settings["attempts"], settings["attempt_feedback"], settings["attempt_temperature"],
            settings["misleading_prefix"], settings["prefix_samples"]) == (2, "verifier", 0.4, True, 2)
    rows = _read_jsonl(tmp_path / f"{evaluate.EMBEDDED_NAME}.generations.jsonl")
    expected = worlds.get(grpo.get_config("").world.name).task.held_out_records(5, levels=(2,))
    assert [row["id"] for row in rows if row["mode"] == "greedy"] == [r.id for r in expected]
    assert os.path.exists(tmp_path / misleading_prefix.PREFIXES_FILE)
