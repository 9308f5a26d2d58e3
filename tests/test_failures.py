"""Workers that die or overrun: every future ends, with retries and a typed error."""

from __future__ import annotations

import concurrent.futures as cf
import json
import subprocess
import sys
import time

import pytest
from workloads import die_once, exit_now, exit_via_kill, hang

import lambdaexec
from lambdaexec import LambdaExecutor


def test_worker_calling_os_exit_fails_after_retries(executor):
    f = executor.submit(exit_now, 3)
    with pytest.raises(lambdaexec.WorkerDiedError, match="exited with status 3") as info:
        f.result(timeout=60)
    assert info.value.attempts == 3  # the first run and retries=2
    assert executor.submit(pow, 2, 5).result(timeout=30) == 32  # the pool recovered


def test_killed_worker_is_retried(executor, tmp_path):
    f = executor.submit(die_once, str(tmp_path / "died"))
    assert f.result(timeout=60) == "second time lucky"
    assert f.attempts == 2


def test_no_retries_means_one_attempt(storage_settings):
    with LambdaExecutor(max_workers=1, retries=0, **storage_settings) as ex:
        with pytest.raises(lambdaexec.WorkerDiedError, match="SIGKILL") as info:
            ex.submit(exit_via_kill).result(timeout=60)
        assert info.value.attempts == 1


def test_overrunning_call_times_out_and_others_finish(storage_settings):
    with LambdaExecutor(max_workers=2, timeout=3.0, retries=1, **storage_settings) as ex:
        stuck = ex.submit(hang, 60)
        fine = [ex.submit(pow, 3, i) for i in range(10)]
        start = time.monotonic()
        with pytest.raises(lambdaexec.CallTimeoutError, match="timeout of 3 s") as info:
            stuck.result(timeout=30)
        assert time.monotonic() - start < 20
        assert info.value.attempts == 2
        assert [f.result(timeout=30) for f in fine] == [3**i for i in range(10)]


def test_calls_queued_behind_a_dead_worker_still_run(storage_settings):
    with LambdaExecutor(max_workers=1, retries=0, **storage_settings) as ex:
        doomed = ex.submit(exit_now, 9)
        after = [ex.submit(pow, 2, i) for i in range(20)]
        with pytest.raises(lambdaexec.WorkerDiedError):
            doomed.result(timeout=60)
        assert [f.result(timeout=60) for f in after] == [2**i for i in range(20)]


def test_broken_worker_runtime_fails_calls_instead_of_hanging(tmp_path, monkeypatch):
    # a `worker` package that cannot be imported shadows the real one in new worker processes
    (tmp_path / "worker").mkdir()
    (tmp_path / "worker" / "__init__.py").write_text("raise ImportError('this runtime is broken')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with LambdaExecutor(max_workers=1, storage_path=str(tmp_path / "store")) as ex:
        with pytest.raises(lambdaexec.WorkerDiedError, match="before they were ready") as info:
            ex.submit(pow, 2, 2).result(timeout=60)
    assert "this runtime is broken" in str(info.value)


_LEAVE_WITHOUT_WAITING = """
import json, pathlib, sys, time
from lambdaexec import LambdaExecutor

def mark(path):
    time.sleep(0.3)
    pathlib.Path(path).touch()

settings, folder, crash = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3] == "crash"
ex = LambdaExecutor(max_workers=2, **settings)
for i in range(4):
    ex.submit(mark, f"{folder}/{i}")
if crash:
    raise SystemExit("the script failed")
"""


@pytest.mark.parametrize("ending", ["return", "crash"])
def test_script_leaving_without_waiting_still_finishes_its_calls(storage_settings, tmp_path, ending):
    # as with ProcessPoolExecutor, the interpreter's exit waits for the submitted calls
    script = tmp_path / "leave.py"
    script.write_text(_LEAVE_WITHOUT_WAITING)
    done = tmp_path / "done"
    done.mkdir()
    proc = subprocess.run([sys.executable, str(script), json.dumps(storage_settings), str(done), ending],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == (1 if ending == "crash" else 0), proc.stderr
    assert sorted(p.name for p in done.iterdir()) == ["0", "1", "2", "3"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the bug is printed
def test_a_broken_monitor_fails_calls_instead_of_hanging(storage_settings):
    ex = LambdaExecutor(max_workers=1, **storage_settings)
    running = ex.submit(hang, 2)

    def broken_poll(timeout):
        raise RuntimeError("simulated bug")

    ex._monitor.invoker.poll = broken_poll
    with pytest.raises(cf.BrokenExecutor, match="simulated bug"):
        running.result(timeout=30)
    with pytest.raises(cf.BrokenExecutor, match="start a new one"):
        ex.submit(pow, 2, 2).result(timeout=30)
    ex.shutdown(wait=True)
