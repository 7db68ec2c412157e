"""The premise dial table: one column per measured setting, read from the JSON that
`python -m rl_reason.premises --json` writes."""

import json

import pytest

from rl_reason import premises


def _estimate(mean, se=0.01):
    return {"mean": mean, "se": se, "questions": 10, "n": 10}


def _measured(hint, plain, second, independent, guided, restart):
    return {
        "lte": {"hinted": _estimate(hint), "plain": _estimate(plain),
                "ratio": round(hint / plain, 2)},
        "multi_attempt": {"second_attempt": _estimate(second),
                          "independent": _estimate(independent),
                          "ratio": round(second / independent, 2),
                          "repeat_rate": _estimate(0.3)},
        "r3l": {"guided_retry": _estimate(guided), "restart": _estimate(restart),
                "ratio": round(guided / restart, 2), "names_first_error": _estimate(0.5)},
        "failure_prefix": {"recovery_by_cut": {"0.2": _estimate(0.4), "0.8": _estimate(0.05)}},
        "exgrpo": {"mixed": _estimate(0.9)},
    }


def test_dial_table_has_a_column_per_setting_with_each_ratio():
    table = premises.dial_table({"0": _measured(0.1, 0.1, 0.2, 0.25, 0.1, 0.2),
                                 "1": _measured(0.4, 0.1, 0.6, 0.3, 0.5, 0.25)})
    lines = table.splitlines()
    assert lines[0] == "| premise | skill 0 | skill 1 |"
    lte = next(line for line in lines if line.startswith("| LTE"))
    assert "0.100 ± 0.010 vs 0.100 ± 0.010 (1.00x)" in lte
    assert "0.400 ± 0.010 vs 0.100 ± 0.010 (4.00x)" in lte
    r3l = next(line for line in lines if line.startswith("| R3L: guided"))
    assert "(0.50x)" in r3l and "(2.00x)" in r3l
    cut = next(line for line in lines if line.startswith("| failure-prefix"))
    assert "0.400 ± 0.010 / 0.050 ± 0.010" in cut


def test_summary_reads_the_json_of_each_setting(tmp_path, capsys):
    path = tmp_path / "s0.json"
    path.write_text(json.dumps(_measured(0.3, 0.1, 0.5, 0.25, 0.2, 0.2)))
    never = lambda *a: pytest.fail("--summary measured a policy")
    premises.main(["--summary", f"0={path}"], base_policy=never)
    out = capsys.readouterr().out
    assert out.startswith("| premise | skill 0 |") and "(3.00x)" in out and "(2.00x)" in out
    for bad in (["--summary", "0"], ["--summary", f"0={tmp_path / 'missing.json'}"]):
        with pytest.raises(SystemExit) as exit_info:
            premises.main(bad, base_policy=never)
        assert exit_info.value.code == 2
