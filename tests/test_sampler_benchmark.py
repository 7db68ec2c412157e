"""benchmarks/sampler.py --ceiling: the matmul-only ceiling is timed in the same rounds
as the sampler, on the same model shape and batch, and its fraction comes out."""

import json
import sys

import pytest

from rl_reason import models


def test_ceiling_is_timed_side_by_side_and_its_fraction_reported(
        load_benchmark, monkeypatch, tmp_path, capsys):
    bench = load_benchmark("sampler")
    # A tiny model whose vocabulary covers the character-level tokenizer (258 ids).
    tiny = models.get_preset("tiny-qwen3").replace(vocab_size=512)
    monkeypatch.setattr(bench.models, "get_preset", lambda name, **kw: tiny.replace(**kw))
    monkeypatch.setattr(bench, "matmul_peak", lambda dtype, n: 1e10)
    monkeypatch.setattr(bench, "copy_bandwidth", lambda num_bytes: 1e10)
    ceiling_calls = []
    from benchmarks import decode_ceiling
    original = decode_ceiling.xla_runner

    def counting_runner(config, weights, batch, steps, dtype="float32"):
        assert (config.hidden_size, config.num_layers, batch, steps, dtype) == (
            tiny.hidden_size, tiny.num_layers, 3, 5, "float32")
        run = original(config, weights, batch, steps, dtype=dtype)
        return lambda: ceiling_calls.append(run())

    monkeypatch.setattr(decode_ceiling, "xla_runner", counting_runner)
    out_json = tmp_path / "out.json"
    monkeypatch.setattr(sys, "argv", [
        "sampler.py", "--batches", "3", "--new-tokens", "5", "--prompt-len", "4",
        "--repeats", "2", "--skip-transformers", "--skip-tunix", "--ceiling",
        "--json", str(out_json)])
    bench.main()
    out = capsys.readouterr().out
    assert "ceiling tok/s" in out and "of ceiling" in out
    assert len(ceiling_calls) == 1 + 2  # one warm-up, then one per round
    row, = json.loads(out_json.read_text())["rows"]
    assert row["batch"] == 3
    assert row["of_ceiling"] == pytest.approx(row["rl_reason_tok_s"] / row["ceiling_tok_s"])
    assert row["ceiling_tok_s"] == pytest.approx(3 * 5 / row["ceiling_s"])
