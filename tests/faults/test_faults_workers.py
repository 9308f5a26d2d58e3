"""Fault injection on the local workers: SIGKILL storms and a client killed mid-job. Real processes
and real signals: a killer thread SIGKILLs a random worker process (the replacements the pool
starts included) every 0.05 s and every 0.02 s, on a fixed schedule, while a map of 10,000 calls
runs (the figures of issues 12 and 25), under fire until the last call is in; a client process is
SIGKILLed while its calls run. What must hold, with the default ``retries`` (2): no call lost
(a call on a killed worker three times by chance is a bystander, not a poison call:
lambdaexec/runtime/blame.py), none hung, every result the one a plain loop computes, and the
calls hit by a kill run again (their ``attempts`` count it). Each rate takes about 20-40 s on 2
shared cores (each call sleeps 2 ms; 4 workers, each killed every 0.2 s or 0.08 s on average).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from lambdaexec import LambdaExecutor


def _hash(x):
    return hashlib.sha256(str(x).encode()).hexdigest()


def _digest(x):
    time.sleep(0.002)
    return _hash(x)


@pytest.mark.slow
@pytest.mark.parametrize("interval", [0.05, 0.02])
def test_random_worker_sigkilled_every_interval_loses_no_call(tmp_path, interval):
    n, limit = 10_000, 600.0  # a hang fails the test after `limit` seconds instead of blocking CI
    kills, tries = [], []
    stop = threading.Event()
    # the default retries: a bystander on a killed worker three times must not fail as a poison call
    with LambdaExecutor(max_workers=4, storage_path=str(tmp_path / "store")) as ex:
        futures = ex.map_futures(_digest, range(n))

        def killer():
            rng = random.Random(7)
            start = time.monotonic()
            while not stop.wait(max(0.0, start + interval * (len(tries) + 1) - time.monotonic())):
                tries.append(None)  # one kill every `interval` s, however long the last one took
                w = rng.choice(list(ex._monitor.invoker._workers))  # replacements included
                try:
                    os.kill(w.popen.pid, signal.SIGKILL)
                    kills.append(w.popen.pid)
                except ProcessLookupError:
                    pass

        thread = threading.Thread(target=killer)
        thread.start()
        try:
            done, not_done = cf.wait(futures, timeout=limit)
        finally:
            stop.set()
            thread.join()
        assert not not_done, f"{len(not_done)} of {n} calls hung"
        lost = [f.exception() for f in futures if f.exception() is not None]
        assert not lost, f"{len(lost)} of {n} calls lost, the first: {lost[0]!r}"
        assert [f.result() for f in futures] == [_hash(x) for x in range(n)]  # identical
        retried = [f for f in futures if f.attempts > 1]
    print(f"every {interval} s: {n} calls, {len(tries)} kill attempts, {len(kills)} workers killed, "
          f"{len(retried)} calls run again ({sum(f.attempts - 1 for f in retried)} retries, "
          f"at most {max((f.attempts for f in futures), default=0)} attempts)")
    assert len(kills) > 50
    assert retried, "no call was run again, yet workers were killed while calls ran"
    assert all(f.attempts <= len(kills) + 1 for f in retried)


_CLIENT = """
import sys, time
from lambdaexec import LambdaExecutor

def sleep_long(i):
    time.sleep(120)

ex = LambdaExecutor(max_workers=2, storage_path=sys.argv[1], keep_data=sys.argv[2] == "keep")
futures = ex.map_futures(sleep_long, range(6))
time.sleep(1.5)
print(ex.prefix, *(w.popen.pid for w in ex._monitor.invoker._workers), flush=True)
time.sleep(300)
"""


def _gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return True


@pytest.mark.slow
@pytest.mark.parametrize("keep", ["keep", "clean"])
def test_client_sigkilled_mid_job_leaves_no_worker_and_storage_per_keep_data(tmp_path, keep):
    script = tmp_path / "client.py"
    script.write_text(_CLIENT)
    store = tmp_path / "store"
    client = subprocess.Popen([sys.executable, str(script), str(store), keep], stdout=subprocess.PIPE, text=True)
    try:
        line = client.stdout.readline().split()
        assert line, "the client did not start its calls"
        prefix, workers = line[0], [int(p) for p in line[1:]]
        assert workers and not any(_gone(p) for p in workers)
        os.kill(client.pid, signal.SIGKILL)  # no exit hook, no finally: the client just ends
        client.wait(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        client.stdout.close()
    deadline = time.monotonic() + 20  # the calls would sleep 120 s
    while not all(_gone(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    orphans = [p for p in workers if not _gone(p)]
    for p in orphans:  # clean up after a failing test, by PID
        os.kill(p, signal.SIGKILL)
    assert not orphans, f"worker processes {orphans} outlived their killed client"
    # its job's data: what a killed client could not delete is kept with keep_data, and otherwise
    # removed by `lambdaexec clean`, which deletes what the jobs of old records left behind
    from lambdaexec.storage.local import LocalStorage

    job = [k for k in LocalStorage(str(store)).list(prefix + "/") if "/funcs/" not in k]
    assert any(k.endswith("/args") for k in job), job  # the client died before it could clean up
    if keep == "clean":
        env = {**os.environ, "LAMBDAEXEC_STORAGE_PATH": str(store)}
        time.sleep(1.1)
        subprocess.run([sys.executable, "-m", "lambdaexec.cli", "clean", "--older-than", "1s"], env=env,
                       check=True, capture_output=True, timeout=60)
        assert LocalStorage(str(store)).list(prefix + "/") == []  # its function objects too
