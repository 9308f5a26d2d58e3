"""Issue 25: a store that forgets loses nothing the client holds, and a call is blamed for its
workers' deaths only when the evidence points at it.

Real Redis servers (one per test: they are flushed or evict), real worker processes and real
signals. The long versions (kill storms of 10,000 calls, a restart mid-map, a 64 MB
``allkeys-lru`` Redis) are in tests/faults, marked slow.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time

import pytest
from servers import RedisServer
from workloads import exit_now, exit_via_kill

import lambdaexec
from lambdaexec import LambdaExecutor, LambdaFuture
from lambdaexec.runtime.blame import MAX_DEATHS, Blame
from lambdaexec.runtime.job import RUNNING, Job
from lambdaexec.runtime.recovery import MAX_ROUNDS, Recovery
from lambdaexec.storage import open_storage


def _square_slowly(x):
    time.sleep(0.05)
    return x * x


def _size(data):
    return len(data)


def _segfault():
    import ctypes

    ctypes.string_at(0)


# --- the store forgets ------------------------------------------------------------------------

def test_redis_flushed_mid_map_loses_no_call_and_uses_no_attempt():
    server = RedisServer()
    try:
        import redis

        with LambdaExecutor(max_workers=2, storage="redis", redis_url=server.url) as ex:
            futures = ex.map_futures(_square_slowly, range(80))
            time.sleep(0.6)
            assert not all(f.done() for f in futures)
            redis.Redis.from_url(server.url).flushall()  # what a restart without persistence leaves
            done, not_done = cf.wait(futures, timeout=120)
            assert not not_done
            assert [f.result() for f in futures] == [i * i for i in range(80)]
            assert all(f.attempts == 1 for f in futures)  # uploading again is not an attempt
    finally:
        server.stop()


def test_inputs_that_redis_maxmemory_cannot_hold_fail_typed_naming_the_policy():
    server = RedisServer("--maxmemory", "8mb", "--maxmemory-policy", "allkeys-lru")
    try:
        with LambdaExecutor(max_workers=2, storage="redis", redis_url=server.url) as ex:
            futures = [ex.submit(_size, bytes(6 << 20)) for _ in range(2)]  # Redis refuses 6 MB in 8 MB
            done, not_done = cf.wait(futures, timeout=120)
            assert not not_done
            for f in futures:
                err = f.exception()
                assert isinstance(err, lambdaexec.StorageError), err
                assert f"Redis at {server.url}" in str(err) and "maxmemory-policy noeviction" in str(err)
            assert ex.submit(_size, b"small").result(timeout=60) == 5  # what fits still runs
    finally:
        server.stop()


def test_a_store_that_keeps_forgetting_fails_the_call_typed_after_a_few_rounds(tmp_path):
    store = open_storage({"kind": "local", "path": str(tmp_path / "store")})
    future = LambdaFuture(time.time())
    future.call_id = "000000/0"
    future._recipe = (b"the function", [memoryview(b"its inputs")])
    job = Job("p/000000", "p/funcs/f", ["p/000000/args"], [(0, 0, 10)], [future])
    job.state[0] = RUNNING
    lock = threading.Lock()
    for _ in range(MAX_ROUNDS):  # each time, the store has lost everything again
        redo, failed = Recovery(store).restore(job, [0], lock, "args missing")
        assert (redo, failed) == ([0], [])
        assert bytes(store.get("p/funcs/f")) == b"the function"
        assert bytes(store.get(job.args_key(job.ranges[0][0]), *job.ranges[0][1:])) == b"its inputs"
        store.delete("p/")
    redo, failed = Recovery(store).restore(job, [0], lock, "args missing")
    assert redo == [] and len(failed) == 1
    err = failed[0][1]
    assert isinstance(err, lambdaexec.MissingObjectError)
    assert f"local storage {tmp_path / 'store'}" in str(err) and "maxmemory-policy noeviction" in str(err)


def _total(handle):
    return int(handle.value.sum())


def test_a_broadcast_value_the_store_lost_is_stored_again_unless_unpersisted(tmp_path):
    import numpy as np

    with LambdaExecutor(max_workers=1, storage_path=str(tmp_path / "store")) as ex:
        handle = ex.broadcast(np.arange(100))
        ex.storage.delete_keys([handle.key])  # the store forgets it behind the client's back
        f = ex.submit(_total, handle)
        assert f.result(timeout=60) == 4950 and f.attempts == 1
        gone = ex.broadcast(np.arange(10))
        gone.unpersist()  # the user's own choice: not stored again
        with pytest.raises(lambdaexec.BroadcastMissingError, match="it was unpersisted"):
            ex.submit(_total, gone).result(timeout=60)


# --- a call that kills its worker -------------------------------------------------------------

def test_a_call_that_segfaults_every_time_is_named_as_repeating(tmp_path):
    with LambdaExecutor(max_workers=2, storage_path=str(tmp_path / "store")) as ex:
        fine = ex.map_futures(pow, [2] * 20, range(20))
        with pytest.raises(lambdaexec.WorkerDiedError) as info:
            ex.submit(_segfault).result(timeout=120)
        assert info.value.attempts == 3  # the first run and retries=2
        assert "killed by SIGSEGV" in str(info.value)
        assert "the same way (SIGSEGV) on 3 of its 3 attempts" in str(info.value)
        assert [f.result(timeout=60) for f in fine] == [2**i for i in range(20)]


def test_os_exit_every_time_is_named_with_its_status(tmp_path):
    with LambdaExecutor(max_workers=1, storage_path=str(tmp_path / "store")) as ex:
        with pytest.raises(lambdaexec.WorkerDiedError, match=r"the same way \(exit status 7\) on 3 of its 3") as info:
            ex.submit(exit_now, 7).result(timeout=120)
        assert info.value.attempts == 3


def test_a_call_killed_every_time_while_no_other_dies_is_blamed_after_its_retries(tmp_path):
    with LambdaExecutor(max_workers=1, storage_path=str(tmp_path / "store")) as ex:
        with pytest.raises(lambdaexec.WorkerDiedError, match="while no other call's worker died") as info:
            ex.submit(exit_via_kill).result(timeout=120)
        assert info.value.attempts == 3 and "SIGKILL" in str(info.value)


# --- the rule itself, death by death ------------------------------------------------------------

def _storm(blame: Blame, victims: int, retry_deaths: int, retry_survivals: int) -> None:
    """Other calls' workers died (``victims`` of them); their retries died or survived."""
    for v in range(victims):
        assert blame.died("other", v, "SIGKILL") is None
    for v in range(retry_deaths):
        assert blame.died("other", v, "SIGKILL") is None  # a retry that died (retried again)
    for v in range(retry_survivals):
        blame.finished("other", retry_deaths + v, survived=True)


def test_a_bystander_of_a_storm_is_retried_past_its_retries():
    blame = Blame(retries=2)
    _storm(blame, victims=200, retry_deaths=10, retry_survivals=190)  # 5% of retries die
    verdicts = [blame.died("job", 0, "SIGKILL") for _ in range(4)]
    assert verdicts[:3] == [None, None, None]  # three deaths are chance in a storm like this
    assert verdicts[3] is None or "too often to be chance" in verdicts[3]
    deaths = 4
    while blame.died("job", 0, "SIGKILL") is None:  # but not forever
        deaths += 1
    assert deaths < MAX_DEATHS


def test_a_call_whose_worker_ends_itself_is_blamed_even_in_a_storm():
    blame = Blame(retries=2)
    _storm(blame, victims=200, retry_deaths=10, retry_survivals=190)
    assert blame.died("job", 0, "SIGSEGV") is None
    assert blame.died("job", 0, "SIGSEGV") is None
    assert "ended itself the same way (SIGSEGV) on 3 of its 3 attempts" in blame.died("job", 0, "SIGSEGV")


def test_where_every_call_dies_a_call_still_fails_after_max_deaths():
    blame = Blame(retries=2)
    _storm(blame, victims=50, retry_deaths=50, retry_survivals=0)
    verdicts = [blame.died("job", 0, "SIGKILL") for _ in range(MAX_DEATHS)]
    assert verdicts[:-1] == [None] * (MAX_DEATHS - 1)
    assert "the most lambdaexec makes" in verdicts[-1]


def test_retries_zero_never_runs_a_call_twice_even_in_a_storm():
    blame = Blame(retries=0)
    _storm(blame, victims=0, retry_deaths=0, retry_survivals=0)
    assert blame.died("other", 1, "SIGKILL") is not None
    assert "retries=0" in blame.died("job", 0, "SIGKILL")
