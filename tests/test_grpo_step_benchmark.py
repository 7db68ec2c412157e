"""benchmarks/grpo_step.py without the peers' environments: the rl_reason worker
speaks the lock-step protocol, and the table and ratios come out right for fake peer
results."""

import io
import json
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks import grpo_step  # noqa: E402
from benchmarks.peers import protocol  # noqa: E402


def fake_step(seconds, sampling, update, shape, real):
    other = seconds - sampling - update
    return dict(seconds=seconds, phases=dict(sampling=sampling, update=update, other=other),
                update_shape=shape, real_tokens_per_row=real)


def test_summary_takes_medians_and_ratios_to_rl_reason():
    results = {
        "rl_reason": [fake_step(2.0, 1.0, 0.9, [64, 64], 56.0),
                      fake_step(3.0, 1.2, 1.5, [64, 64], 56.0),
                      fake_step(2.2, 1.1, 1.0, [64, 64], 56.0)],
        "tunix": [fake_step(4.0, 1.0, 2.9, [64, 56], 55.5),
                  fake_step(4.4, 1.5, 2.8, [64, 56], 55.5),
                  fake_step(9.0, 2.0, 6.0, [64, 56], 55.5)],
    }
    summary = grpo_step.summarize(results)
    assert summary["rl_reason"]["seconds"] == 2.2
    assert summary["rl_reason"]["phases"]["update"] == 1.0
    assert summary["tunix"]["seconds"] == 4.4
    assert summary["tunix"]["rl_reason_over_this"] == pytest.approx(0.5)
    assert summary["rl_reason"]["rl_reason_over_this"] == 1.0

    table = grpo_step.format_table("frame", summary).splitlines()
    assert table[1].startswith("| framework | s/step | sampling | update | other |")
    assert table[3] == "| rl_reason | 2.20 | 1.10 | 1.00 | 0.10 | [64, 64] | 56.0 | 1.00 |"
    assert table[4] == ("| tunix 0.1.7 GRPOLearner | 4.40 | 1.50 | 2.90 | 0.10 | [64, 56] | "
                        "55.5 | 0.50 |")
    # A shared-prefix update: prefix rows, then the rows.
    summary["rl_reason"]["update_shape"] = [[8, 32], [64, 32]]
    table = grpo_step.format_table("frame", summary).splitlines()
    assert table[3] == ("| rl_reason | 2.20 | 1.10 | 1.00 | 0.10 | [8, 32] + [64, 32] | 56.0 | "
                        "1.00 |")


def test_protocol_lines_round_trip(capsys):
    protocol.emit("step", {"seconds": 1.5})
    line = capsys.readouterr().out
    assert protocol.parse(line) == ("step", {"seconds": 1.5})
    assert protocol.parse("some library's log line\n") is None


def test_prompt_texts_are_the_issue_lengths(tmp_path):
    tok = grpo_step.build_char_tokenizer(str(tmp_path))
    plain, frame = (grpo_step.prompt_texts(t, tok) for t in ("plain", "frame"))
    assert frame[0] == "User: 12+34=\n\nAssistant:"
    assert plain[0].startswith("User: 12+34=\nPlease reason step by step")
    assert [len(tok.encode(p[0], add_special_tokens=False)) for p in (plain, frame)] == [95, 24]
    assert len(tok) == 512 and tok.eos_token_id == 1


@pytest.mark.slow
def test_rl_reason_worker_runs_trainer_steps_in_lock_step(tiny_policy, tmp_path, monkeypatch,
                                                         capsys):
    job = dict(grpo_step.JOB_DEFAULTS, text="frame", group=2, new_tokens=4, warmup_steps=1,
               prompts=[], answers=[])
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    monkeypatch.setattr(grpo_step, "PROBLEMS", grpo_step.PROBLEMS[:2])
    monkeypatch.setattr(sys, "stdin", io.StringIO("step\nquit\n"))
    grpo_step.rl_reason_worker(tiny_policy, str(path))
    lines = [protocol.parse(line) for line in capsys.readouterr().out.splitlines()]
    lines = [p for p in lines if p is not None]
    assert [kind for kind, _ in lines] == ["ready", "step"]
    step = lines[1][1]
    # 2 prompts x 2 samples, rows bucketed to a multiple of the mesh's data axis; the
    # prompts run once each (train.share_prefixes): prefix rows, then the rows.
    (prefix_rows, prefix_length), (rows, length) = step["update_shape"]
    assert rows >= 4 and prefix_rows >= 2
    assert prefix_length % 16 == 0 and length % 16 == 0
    assert 0 < step["real_tokens_per_row"] <= prefix_length + length
    assert step["phases"]["sampling"] > 0 and step["phases"]["update"] > 0
    assert step["seconds"] >= sum(v for k, v in step["phases"].items() if k != "other") - 1e-6
