"""benchmarks/sampler.py --ceiling: the matmul-only ceiling is timed in the same rounds
as the sampler, on the same model shape and batch, and its fraction comes out."""

import json
import sys

import numpy as np
import pytest

from rl_reason import models



def test_ceiling_is_timed_side_by_side_and_its_fraction_reported(
        load_benchmark, monkeypatch, tmp_path, capsys):
    bench = load_benchmark("sampler")
    # A tiny model whose vocabulary covers the character-level tokenizer (258 ids).
    tiny = models.get_preset("tiny-qwen3").replace(vocab_size=512)
    monkeypatch.setattr(bench.models, "get_preset", lambda name, **kw: tiny.replace(**kw))
    monkeypatch.setattr(bench, "matmul_peak_flops", lambda n, repeats, dtype: 1e10)
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


# In the slow session: late in the default suite's one process (after ~650 tests) XLA
# aborted compiling this test's static chunked call, three runs in three (jax 0.10.2,
# CPU); the file alone, and this test alone, pass. Root cause not found yet.
@pytest.mark.slow
def test_longtail_credits_useful_tokens_to_every_runner(load_benchmark, monkeypatch, tmp_path,
                                                        capsys):
    bench = load_benchmark("sampler")
    from benchmarks import sampler_lengths
    tiny = models.get_preset("tiny-qwen3").replace(vocab_size=512)
    monkeypatch.setattr(bench.models, "get_preset", lambda name, **kw: tiny.replace(**kw))
    monkeypatch.setattr(bench, "matmul_peak_flops", lambda n, repeats, dtype: 1e10)
    monkeypatch.setattr(bench, "copy_bandwidth", lambda num_bytes: 1e10)
    budgets = []
    original = bench.sampling.generate

    def recording_generate(model, prompts, *, max_new_tokens, **kwargs):
        budgets.append((kwargs["continuous"], kwargs["max_slots"], list(max_new_tokens)))
        return original(model, prompts, max_new_tokens=max_new_tokens, **kwargs)

    monkeypatch.setattr(bench.sampling, "generate", recording_generate)
    out_json = tmp_path / "out.json"
    monkeypatch.setattr(sys, "argv", [
        "sampler.py", "--lengths", "longtail", "--batches", "20", "--new-tokens", "40",
        "--prompt-len", "4", "--slots", "8", "--repeats", "1", "--skip-transformers",
        "--skip-tunix", "--json", str(out_json)])
    bench.main()
    assert "vs static" in capsys.readouterr().out
    lengths = sampler_lengths.stop_points("longtail", 20, 40)
    # Both rl_reason paths get the stop points as per-row budgets, 8 rows at a time.
    assert {(c, s) for c, s, _ in budgets} == {(True, 8), (False, 8)}
    assert all(b == lengths.tolist() for _, _, b in budgets)
    row, = json.loads(out_json.read_text())["rows"]
    assert row["useful_tokens"] == lengths.sum() < 20 * 40
    assert row["static_tok_s"] == pytest.approx(row["useful_tokens"] / row["static_s"])
    assert row["vs_static"] == pytest.approx(row["static_s"] / row["rl_reason_s"])
    # Finished rows left their slots: the decode work is below 20 rows x 39 steps.
    assert 0.3 < row["slot_use"] <= 1


def test_longtail_lengths():
    from benchmarks import sampler_lengths
    for rows, budget in [(64, 512), (256, 2048)]:
        lengths = sampler_lengths.stop_points("longtail", rows, budget)
        assert lengths.min() >= 1 and lengths.max() == budget
        assert abs(np.median(lengths) / budget - 0.15) < 0.01
        assert abs((lengths == budget).mean() - 0.05) < 0.01
    assert (sampler_lengths.stop_points("uniform", 3, 7) == 7).all()
