"""Fault injection on the servers: S3 (SeaweedFS) and Redis stopped mid-job and started again,
and the Lambda path throttling half of its invocations (the emulator).

Each test starts its own server (it is stopped and restarted; the session's are left alone),
by PID. What must hold: no call hangs; each completes, or fails with a typed
:class:`~lambdaexec.StorageError` naming the store, within its deadline. A Redis without
persistence restarted mid-map loses every object, yet no call: the client uploads again what it
holds (issue 25, lambdaexec/runtime/recovery.py); so does a Redis that evicts (``allkeys-lru``)
under a map whose inputs exceed its ``maxmemory``, or its calls fail naming ``maxmemory-policy``.
"""

from __future__ import annotations

import concurrent.futures as cf
import subprocess
import threading
import time

import pytest
from lambda_helpers import EmulatorProcess
from servers import RedisServer, SeaweedS3, stop_process

import lambdaexec
from lambdaexec import LambdaExecutor
from lambdaexec.aws.package import build_package


def _square_slowly(x):
    time.sleep(0.05)
    return x * x


def _outage(server, down: float, start) -> None:
    """Stop ``server`` by its PID, wait ``down`` seconds, start the same command again."""
    stop_process(server.proc)
    time.sleep(down)
    server.proc = start(server)


def _check_every_call(futures, deadline):
    done, not_done = cf.wait(futures, timeout=deadline)
    assert not not_done, f"{len(not_done)} of {len(futures)} calls hung through the outage"
    failed = 0
    for i, f in enumerate(futures):
        err = f.exception()
        if err is None:
            assert f.result() == i * i
        else:
            failed += 1
            assert isinstance(err, lambdaexec.StorageError) and not isinstance(err, lambdaexec.ConfigError), err
    return failed


def _restart_weed(server):
    with open(server.log, "a") as log:  # the same ports and data directory: the objects survive
        return subprocess.Popen(server.proc.args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _restart_redis(server):
    with open(server.log, "a") as log:  # no persistence: every key is lost
        return subprocess.Popen(server.proc.args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.slow
def test_s3_server_down_for_seconds_mid_map_every_call_ends(tmp_path):
    server = SeaweedS3()
    try:
        with LambdaExecutor(max_workers=2, **server.settings()) as ex:
            futures = ex.map_futures(_square_slowly, range(300))
            time.sleep(1.0)
            assert not all(f.done() for f in futures)  # the outage falls mid-map
            outage = threading.Thread(target=_outage, args=(server, 4.0, _restart_weed))
            outage.start()
            failed = _check_every_call(futures, 240)
            outage.join()
            assert failed < len(futures)
            # and the executor still works once the store is back
            assert list(ex.map(_square_slowly, range(8), timeout=120)) == [i * i for i in range(8)]
    finally:
        server.stop()


@pytest.mark.slow
def test_redis_restarted_without_persistence_mid_map_loses_no_call(tmp_path):
    server = RedisServer()
    try:
        with LambdaExecutor(max_workers=2, storage="redis", redis_url=server.url) as ex:
            futures = ex.map_futures(_square_slowly, range(300))
            time.sleep(1.0)
            assert not all(f.done() for f in futures)  # the outage falls mid-map
            outage = threading.Thread(target=_outage, args=(server, 3.0, _restart_redis))
            outage.start()
            failed = _check_every_call(futures, 240)
            outage.join()
            assert failed == 0, f"{failed} of {len(futures)} calls lost with the store's objects"
            assert list(ex.map(_square_slowly, range(8), timeout=120)) == [i * i for i in range(8)]
    finally:
        server.stop()


def _checksum(i, data):
    return i, len(data), data[i]


@pytest.mark.slow
def test_redis_evicting_under_maxmemory_completes_or_fails_naming_the_policy(tmp_path):
    server = RedisServer("--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru")
    n, size = 120, 1 << 20  # 120 MB of inputs in a 64 MB Redis that evicts
    try:
        with LambdaExecutor(max_workers=2, storage="redis", redis_url=server.url) as ex:
            futures = ex.map_futures(_checksum, range(n), [bytes([i]) * size for i in range(n)])
            done, not_done = cf.wait(futures, timeout=300)
            assert not not_done, f"{len(not_done)} of {n} calls hung"
            failed = [f.exception() for f in futures if f.exception() is not None]
            for err in failed:  # lost too often (MissingObjectError), or refused (over maxmemory)
                assert isinstance(err, lambdaexec.StorageError), err
                assert "maxmemory-policy noeviction" in str(err) and server.url in str(err)
            assert [f.result() for f in futures if f.exception() is None] == [
                (i, size, i) for i, f in enumerate(futures) if f.exception() is None]
            print(f"{n} calls of 1 MB inputs in a 64 MB allkeys-lru Redis: {n - len(failed)} completed, "
                  f"{len(failed)} failed typed")
    finally:
        server.stop()


@pytest.mark.slow
def test_lambda_half_throttled_many_calls_all_complete(tmp_path):
    package = str(tmp_path / "lambdaexec-worker.zip")
    build_package(package)
    s3 = SeaweedS3()
    emu = EmulatorProcess(package, concurrency=4, timeout=30, throttle_rate=0.5)
    try:
        with LambdaExecutor(backend="lambda", lambda_endpoint_url=emu.url, timeout=30, **s3.settings()) as ex:
            futures = ex.map_futures(_square_slowly, range(400))
            done, not_done = cf.wait(futures, timeout=240)
            assert not not_done
            assert [f.result() for f in futures] == [i * i for i in range(400)]
            invoker = ex._monitor.invoker
        # counted once the executor is shut down: a backup or late retry sent after the last
        # result is throttled too (the emulator counted 457 against 456 read before shutdown)
        throttled = invoker.stats["throttled"]
        assert throttled > 0 and emu.stats()["throttled"] == throttled
        assert emu.stats()["completed"] >= 400
    finally:
        emu.stop()
        s3.stop()
