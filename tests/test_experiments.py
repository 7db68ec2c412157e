"""The ablation script runs its sweep and writes a table and curves."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))

import grpo_variants  # noqa: E402
import pytest  # noqa: E402


@pytest.mark.slow
def test_grpo_variants_sweep_writes_results(tiny_policy, tmp_path, capsys):
    out = str(tmp_path / "sweep")
    grpo_variants.main([
        "--variants=base,drgrpo", "--seeds=0", "--base_variant=tiny", f"--out={out}",
        f"--config.model.checkpoint={tiny_policy}", "--config.train.export_hf=false",
        "--config.train.num_steps=1", "--config.verifier.num_workers=1"])
    with open(os.path.join(out, "results.md")) as f:
        text = f.read()
    assert "| base | 0 |" in text and "| drgrpo | 0 |" in text
    assert os.path.getsize(os.path.join(out, "curves.png")) > 0
    assert os.path.exists(os.path.join(out, "drgrpo_seed0", "metrics.jsonl"))


def test_unknown_flag_is_rejected(capsys):
    with pytest.raises(SystemExit):
        grpo_variants.main(["--learning_rate=3"])
