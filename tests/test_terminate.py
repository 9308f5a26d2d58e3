"""``terminate_workers()`` / ``kill_workers()`` (Python 3.14's, on every Python) and Ctrl-C in the client."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures.process import BrokenProcessPool

import pytest
from test_aws_lambda import emulator, lambda_package, lambda_settings  # noqa: F401  (fixtures)

import lambdaexec
from lambdaexec import LambdaExecutor
from lambdaexec.storage import open_storage


def gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie has)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True


def wait_gone(pids, seconds=5.0) -> list[int]:
    """The pids still alive after up to ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and not all(gone(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if not gone(p)]


def sleep_and_report(path, seconds):
    """Write this worker's pid and a child's to ``path``, then sleep (the child too)."""
    child = subprocess.Popen(["sleep", str(seconds)])
    with open(path, "w") as f:
        f.write(f"{os.getpid()} {child.pid}")
    time.sleep(seconds)
    return "finished"


def ignore_sigterm_and_sleep(path, seconds):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(seconds)


def wait_for_files(paths, seconds=30.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end and not all(os.path.exists(p) and os.path.getsize(p) for p in paths):
        time.sleep(0.02)
    return [open(p).read() for p in paths]


@pytest.mark.parametrize("method", ["terminate_workers", "kill_workers"])
def test_running_and_queued_calls_all_end_and_no_process_is_left(tmp_path, method):
    ex = LambdaExecutor(max_workers=2, storage_path=str(tmp_path / "store"))
    marks = [str(tmp_path / f"running-{i}") for i in range(2)]
    running = [ex.submit(sleep_and_report, m, 60) for m in marks]
    queued = [ex.submit(sleep_and_report, str(tmp_path / f"queued-{i}"), 60) for i in range(5)]
    pids = [int(p) for text in wait_for_files(marks) for p in text.split()]  # two workers, two children
    getattr(ex, method)()
    assert all(f.done() for f in running + queued)  # none pending when it returns
    assert all(f.cancelled() for f in queued)
    for f in running:
        with pytest.raises(BrokenProcessPool, match="was running when " + method):
            f.result(timeout=0)
        assert isinstance(f.exception(), lambdaexec.CallStoppedError)
    assert wait_gone(pids) == []
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.submit(abs, 1)
    assert not any(os.path.exists(tmp_path / f"queued-{i}") for i in range(5))  # never started
    assert not list((tmp_path / "store").rglob("args*"))  # the job data is deleted


def test_terminate_kills_a_worker_that_ignores_sigterm(tmp_path):
    ex = LambdaExecutor(max_workers=1, storage_path=str(tmp_path / "store"))
    f = ex.submit(ignore_sigterm_and_sleep, str(tmp_path / "pid"), 60)
    (pid,) = [int(t) for t in wait_for_files([str(tmp_path / "pid")])]
    ex.terminate_workers()
    assert isinstance(f.exception(timeout=0), lambdaexec.CallStoppedError)
    assert wait_gone([pid]) == []


@pytest.mark.parametrize("method", ["terminate_workers", "kill_workers"])
def test_harmless_on_an_idle_or_shut_down_executor(tmp_path, method):
    ex = LambdaExecutor(max_workers=1, storage_path=str(tmp_path / "store"))
    getattr(ex, method)()
    getattr(ex, method)()
    with pytest.raises(RuntimeError):
        ex.submit(abs, 1)
    with LambdaExecutor(max_workers=1, storage_path=str(tmp_path / "store2")) as ex2:
        assert ex2.submit(abs, -3).result(timeout=30) == 3
    getattr(ex2, method)()  # after shutdown: nothing to do


def test_terminate_inside_with_then_leaving_it(tmp_path):
    with LambdaExecutor(max_workers=1, storage_path=str(tmp_path / "store")) as ex:
        f = ex.submit(time.sleep, 60)
        time.sleep(0.5)
        ex.terminate_workers()
    assert f.done() and (f.cancelled() or isinstance(f.exception(), lambdaexec.CallStoppedError))


def test_terminate_after_shutdown_without_wait_stops_the_running_calls(tmp_path):
    ex = LambdaExecutor(max_workers=1, storage_path=str(tmp_path / "store"))
    f = ex.submit(sleep_and_report, str(tmp_path / "pid"), 60)
    pids = [int(p) for p in wait_for_files([str(tmp_path / "pid")])[0].split()]
    ex.shutdown(wait=False)
    ex.kill_workers()
    assert isinstance(f.exception(timeout=0), lambdaexec.CallStoppedError)
    assert wait_gone(pids) == []


def test_force_shutdown_refuses_an_unknown_operation(tmp_path):
    with LambdaExecutor(max_workers=1, storage_path=str(tmp_path / "store")) as ex:
        with pytest.raises(ValueError, match="Unsupported operation"):
            ex._force_shutdown(operation="invalid operation")


def test_lambda_backend_abandons_running_calls_with_a_typed_error(lambda_settings):  # noqa: F811
    ex = LambdaExecutor(max_workers=2, **lambda_settings)
    running = [ex.submit(time.sleep, 20) for _ in range(2)]
    queued = [ex.submit(time.sleep, 20) for _ in range(4)]
    end = time.monotonic() + 30
    while not all(f.running() for f in running) and time.monotonic() < end:
        time.sleep(0.05)
    ex.terminate_workers()
    assert all(f.done() for f in running + queued)
    assert all(f.cancelled() for f in queued)
    for f in running:
        err = f.exception(timeout=0)
        assert isinstance(err, lambdaexec.CallAbandonedError) and isinstance(err, BrokenProcessPool)
        assert "cannot be stopped from outside" in str(err)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(abs, 1)
    storage = open_storage(ex.config.storage_spec())
    assert not [k for k in storage.list(ex.prefix + "/") if "/args" in k]  # the job's data is deleted


_CTRL_C = """
import os, sys, time
from lambdaexec import LambdaExecutor

def slow(i):
    time.sleep(60)
    return i

if __name__ == "__main__":
    with LambdaExecutor(max_workers=2, storage_path=sys.argv[1]) as ex:
        results = ex.map(slow, range(20){buffersize})
        time.sleep(1.5)
        workers = [w.popen.pid for w in ex._monitor.invoker._workers]
        print(" ".join(map(str, workers)), flush=True)
        list(results)
"""


@pytest.mark.parametrize("buffersize", ["", ", buffersize=4"])
def test_ctrl_c_ends_a_running_map_at_once_with_no_process_left(tmp_path, buffersize):
    script = tmp_path / "interrupted.py"
    script.write_text(textwrap.dedent(_CTRL_C.format(buffersize=buffersize)))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "store")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    workers = [int(p) for p in proc.stdout.readline().split()]
    assert len(workers) == 2
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)  # the calls would take 60 s each
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert "KeyboardInterrupt" in err
    assert "lambdaexec: interrupted:" in err and "running call(s) stopped" in err
    assert wait_gone(workers) == []
    assert not list((tmp_path / "store").rglob("args*"))


def test_ctrl_c_reply_names_what_was_cancelled(tmp_path):
    script = tmp_path / "interrupted.py"
    script.write_text(textwrap.dedent(_CTRL_C.format(buffersize="")))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "store")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert "18 queued call(s) cancelled, 2 running call(s) stopped" in err


def test_terminate_fails_futures_with_a_broken_process_pool_as_3_14_does(tmp_path):
    with LambdaExecutor(max_workers=1, storage_path=str(tmp_path / "store")) as ex:
        f = ex.submit(time.sleep, 60)
        end = time.monotonic() + 30
        while not f.running() and time.monotonic() < end:
            time.sleep(0.02)
        ex.kill_workers()
        with pytest.raises(BrokenProcessPool):
            f.result()
        assert not isinstance(f.exception(), cf.CancelledError)
