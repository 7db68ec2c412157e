import subprocess
import sys

import jax  # noqa: F401 - the pool must keep JAX out of workers even when the parent has it
import psutil
import pytest

from rl_reason.verifiers import WorkerPool

TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def pool():
    with WorkerPool("verifier_test_tasks:pid_after", num_workers=2, timeout_s=TIMEOUT_S) as shared:
        shared.wait_ready()
        yield shared


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_package_and_worker_modules_do_not_import_jax():
    code = (
        "import sys, rl_reason.verifiers, rl_reason.verifiers.worker, rl_reason.verifiers.math_task\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax')))"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


def test_workers_are_fresh_interpreters_without_jax():
    with WorkerPool("verifier_test_tasks:jax_modules", num_workers=1, timeout_s=30.0) as jax_pool:
        [outcome] = jax_pool.map([()])
        assert outcome.status == "ok" and outcome.value == []
        [pid] = jax_pool.pids
        assert "rl_reason.verifiers.worker" in psutil.Process(pid).cmdline()


def test_batch_runs_in_parallel_on_persistent_workers(pool):
    pids_before = set(pool.pids)
    outcomes = pool.map([(0.3,)] * 6)
    assert [outcome.status for outcome in outcomes] == ["ok"] * 6
    # Both workers took items, and they are the same processes as before the batch.
    assert {outcome.value for outcome in outcomes} == pids_before
    assert set(pool.pids) == pids_before


def test_stuck_item_is_killed_and_worker_replaced():
    with WorkerPool("verifier_test_tasks:deaf_sleep", num_workers=1, timeout_s=TIMEOUT_S) as deaf_pool:
        deaf_pool.wait_ready()
        [old_pid] = deaf_pool.pids
        outcomes = deaf_pool.map([(60.0,), (0.0,)])
        assert outcomes[0].status == "timeout"
        assert TIMEOUT_S <= outcomes[0].elapsed_s < TIMEOUT_S + 1.0
        # The batch went on: the next item ran on the replacement worker.
        assert outcomes[1].status == "ok" and outcomes[1].value != old_pid
        assert not _alive(old_pid)


def test_interruptible_overrun_keeps_the_worker():
    with WorkerPool("verifier_test_tasks:busy_python", num_workers=1, timeout_s=TIMEOUT_S) as busy_pool:
        busy_pool.wait_ready()
        pids = busy_pool.pids
        outcomes = busy_pool.map([(60.0,), (0.01,)])
        assert [outcome.status for outcome in outcomes] == ["timeout", "ok"]
        assert outcomes[0].elapsed_s < TIMEOUT_S + 1.0
        assert busy_pool.pids == pids


def test_crashes_and_exceptions_are_errors_not_failures():
    with WorkerPool("verifier_test_tasks:die", num_workers=1, timeout_s=10.0) as dying:
        outcomes = dying.map([(3,), (4,)])
        assert [outcome.status for outcome in outcomes] == ["error", "error"]
        assert "exit code 3" in outcomes[0].error
    with WorkerPool("verifier_test_tasks:fail", num_workers=1, timeout_s=10.0) as failing:
        [outcome] = failing.map([("bad input",)])
        assert outcome.status == "error" and outcome.error == "ValueError: bad input"


def test_strings_round_trip_exactly():
    texts = ["plain", "\ud800 lone surrogate", b"\xff\xfe".decode("utf-8", "surrogateescape"), "x" * 1_000_000]
    with WorkerPool("verifier_test_tasks:echo", num_workers=1, timeout_s=30.0) as echo_pool:
        outcomes = echo_pool.map([(text,) for text in texts])
    assert [outcome.value for outcome in outcomes] == texts


def test_close_leaves_no_process_and_is_final():
    pool = WorkerPool("verifier_test_tasks:pid_after", num_workers=2, timeout_s=TIMEOUT_S)
    pool.map([(0.0,)] * 2)
    pids = pool.pids
    pool.close()
    pool.close()
    assert not any(_alive(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="after close"):
        pool.map([(0.0,)])


def test_startup_failure_is_a_clear_error():
    with WorkerPool("no_such_module_anywhere:task", num_workers=1, timeout_s=TIMEOUT_S) as broken:
        with pytest.raises(RuntimeError, match="during startup"):
            broken.map([()])


@pytest.mark.parametrize("kwargs, message", [({"num_workers": 0}, "num_workers"), ({"timeout_s": 0}, "timeout_s")])
def test_rejects_bad_settings(kwargs, message):
    settings = {"num_workers": 1, "timeout_s": 1.0} | kwargs
    with pytest.raises(ValueError, match=message):
        WorkerPool("verifier_test_tasks:echo", **settings)
