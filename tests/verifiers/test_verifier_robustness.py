"""Pathological responses cost at most the time limit and leave the stage working."""

import time

import psutil
import pytest

from rl_reason.verifiers import MathVerifier

TIMEOUT_S = 2.0
# The bound the stage promises: its time limit, plus a second for dispatch and the kill.
BOUND_S = TIMEOUT_S + 1.0

PATHOLOGICAL = {
    "1MB-then-box": "x" * 1_000_000 + " \\boxed{5}",
    "1MB-unclosed": "\\boxed{" + "y" * 1_000_000,
    "nested-braces": "\\boxed" + "{" * 50_000 + "1" + "}" * 50_000,
    "open-braces": "\\boxed" + "{" * 1_000_000,
    "tower-4": "\\boxed{10^{10^{10^{10}}}}",
    "tower-3": "\\boxed{9^{9^{9}}}",
    "factorial": "\\boxed{(10^{10})!}",
    "long-sum": "\\boxed{" + "+".join(f"x_{{{i}}}^{{{i}}}" for i in range(3000)) + "}",
    "unbalanced-frac": "\\boxed{\\frac{1}{2",
    "unbalanced-left": "\\boxed{\\left( \\frac{1}{2}}",
    "unbalanced-env": "\\boxed{\\begin{pmatrix} 1 & 2}",
    "surrogates": b"\xff\xfe\x80 \\boxed{5}".decode("utf-8", "surrogateescape") + "\ud800",
    "replacement-chars": "\ufffd" * 1000 + "\\boxed{5}\x00",
}


@pytest.fixture(scope="module")
def verifier():
    stage = MathVerifier(num_workers=2, timeout_s=TIMEOUT_S)
    stage.wait_ready()
    yield stage
    stage.close()


def _worker_processes() -> list[psutil.Process]:
    return [
        child
        for child in psutil.Process().children(recursive=True)
        if child.status() != psutil.STATUS_ZOMBIE and "rl_reason.verifiers.worker" in child.cmdline()
    ]


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_each_pathological_item_is_bounded(verifier, name):
    # A normal item first waits for an idle, ready worker (a previous kill may have
    # left a replacement starting), so the timed call measures only this item.
    assert verifier.verify_batch(["\\boxed{2}"], ["2"])[0].status == "correct"
    start = time.monotonic()
    [result] = verifier.verify_batch([PATHOLOGICAL[name]], ["5"])
    assert time.monotonic() - start <= BOUND_S
    assert result.elapsed_s <= BOUND_S
    assert result.reward == (1.0 if result.status == "correct" else 0.0)
    if name in ("1MB-then-box", "surrogates", "replacement-chars"):
        assert result.status == "correct"
    if name in ("1MB-unclosed", "open-braces", "unbalanced-frac"):
        assert result.status == "no_answer"


def test_pathological_batch_goes_on_and_stage_still_works(verifier):
    responses = list(PATHOLOGICAL.values()) + ["\\boxed{\\frac{1}{2}}"]
    answers = ["5"] * len(PATHOLOGICAL) + ["0.5"]
    start = time.monotonic()
    results = verifier.verify_batch(responses, answers)
    # Two workers: at worst every item runs to its limit one after another, plus
    # replacement workers starting (a few seconds each on a loaded machine).
    assert time.monotonic() - start <= len(responses) * BOUND_S + 60.0
    assert all(result.elapsed_s <= BOUND_S for result in results)
    assert results[-1].status == "correct"
    assert any(result.status == "timeout" for result in results)
    after = verifier.verify_batch(["\\boxed{\\dfrac{3}{4}}", "\\boxed{1}"], ["0.75", "2"])
    assert [result.status for result in after] == ["correct", "wrong"]


def test_close_leaves_no_worker_process():
    stage = MathVerifier(num_workers=2, timeout_s=TIMEOUT_S)
    results = stage.verify_batch(["\\boxed{9^{9^{9}}}", "\\boxed{10^{10^{10^{10}}}}", "\\boxed{3}"], ["1", "1", "3"])
    assert results[-1].status == "correct"
    pids = stage.worker_pids
    stage.close()
    assert not [process for process in _worker_processes() if process.pid in pids]
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)
