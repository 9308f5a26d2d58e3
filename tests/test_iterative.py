"""Broadcast handles (read once per worker process, counted by the Redis server) and iterate()
with checkpoints (resumed after the client process is killed)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import redis

from lambdaexec import Broadcast, BroadcastMissingError, LambdaExecutor


def row_sum(X: Broadcast, i: int) -> float:
    return float(X.value[i].sum())


def sent_by(server_url: str) -> int:
    """Bytes the Redis server has sent to its clients so far (its own count)."""
    return redis.Redis.from_url(server_url).info("stats")["total_net_output_bytes"]


def test_broadcast_is_read_once_per_worker_process(redis_server):
    ex = LambdaExecutor(max_workers=2, storage="redis", redis_url=redis_server.url)
    try:
        X = np.random.default_rng(0).random((1000, 1000))  # 8 MB
        handle = ex.broadcast(X)
        assert len(pickle.dumps(handle)) < 1000  # what travels with each call
        before = sent_by(redis_server.url)
        as_argument = ex.map_futures(row_sum, [handle] * 40, range(40))
        in_closure = ex.map_futures(lambda i: float(handle.value[i].sum()), range(40, 80))
        futures = as_argument + in_closure
        assert [f.result() for f in futures] == [float(X[i].sum()) for i in range(80)]
        workers = {f.stats["worker"] for f in futures}
        moved = sent_by(redis_server.url) - before
        # each worker process read the 8 MB once: not once per call (80 x 8 MB)
        assert len(workers) * X.nbytes <= moved < (len(workers) + 0.5) * X.nbytes
        # a later round reuses what the workers hold
        before = sent_by(redis_server.url)
        assert list(ex.map(row_sum, [handle] * 20, range(20))) == [float(X[i].sum()) for i in range(20)]
        assert sent_by(redis_server.url) - before < X.nbytes / 2
    finally:
        ex.shutdown()


def test_broadcast_stored_once_by_content_and_cleaned_up(executor):
    a = executor.broadcast({"w": np.arange(10)})
    b = executor.broadcast({"w": np.arange(10)})
    c = executor.broadcast({"w": np.arange(11)})
    stored = executor.storage.list(f"{executor.prefix}/broadcast/")
    assert a.key == b.key != c.key and sorted(stored) == sorted({a.key, c.key})
    assert a.value["w"].tolist() == list(range(10))  # on the client: the object itself
    remote = pickle.loads(pickle.dumps(c))  # what a worker gets: read from storage
    assert remote.value["w"].tolist() == list(range(11))
    assert executor.submit(lambda h: h.value["w"].sum(), c).result() == 55
    prefix, storage = executor.prefix, executor.storage
    executor.shutdown()
    assert storage.list(f"{prefix}/broadcast/") == []


def test_unpersist_deletes_and_later_reads_fail_clearly(executor):
    h = executor.broadcast(np.ones(5))
    h.unpersist()
    assert executor.storage.list(f"{executor.prefix}/broadcast/") == []
    with pytest.raises(BroadcastMissingError, match="no longer in storage: it was unpersisted"):
        executor.submit(lambda h: h.value.sum(), h).result()


def test_iterate_runs_rounds_uses_the_executor_and_stops_when_told(tmp_path):
    with LambdaExecutor(max_workers=2, storage_path=str(tmp_path / "store")) as ex:
        seen = []

        def step(state, r):
            seen.append(r)
            return state + sum(ex.map(abs, [-r] * 3))

        assert ex.iterate(step, 0, 5) == 3 * (0 + 1 + 2 + 3 + 4)
        assert seen == [0, 1, 2, 3, 4]
        seen.clear()
        assert ex.iterate(step, 0, 100, until=lambda s, r: s >= 10) == 3 * (0 + 1 + 2 + 3)
        assert seen == [0, 1, 2, 3]
        assert ex.storage.list(f"{ex.config.prefix}/iterate/") == []  # checkpoints gone once done


CLIENT = textwrap.dedent("""
    import sys, time
    from lambdaexec import LambdaExecutor

    def square(x):
        return x * x

    log, store, hang_at = sys.argv[1], sys.argv[2], int(sys.argv[3])

    def note(text):
        with open(log, "a") as f:
            f.write(text + "\\n")

    with LambdaExecutor(max_workers=2, storage_path=store) as ex:
        def step(state, r):
            note(f"start {r}")
            if r == hang_at:
                note("hanging")
                time.sleep(600)
            return state + sum(ex.map(square, range(r + 2)))

        print(ex.iterate(step, 0, 8, resume="killed-run"))
""")


def test_resume_after_the_client_is_killed_runs_only_the_remaining_rounds(tmp_path):
    script, log, store = tmp_path / "client.py", tmp_path / "log", str(tmp_path / "store")
    script.write_text(CLIENT)
    first = subprocess.Popen([sys.executable, str(script), str(log), store, "5"])
    try:
        deadline = time.monotonic() + 120
        while not (log.exists() and "hanging" in log.read_text()):
            assert first.poll() is None and time.monotonic() < deadline, "the client did not reach round 5"
            time.sleep(0.1)
    finally:
        first.kill()  # SIGKILL: no clean-up of any kind runs
        first.wait()
    assert log.read_text().split("\n")[:-2] == [f"start {r}" for r in range(6)]
    log.unlink()
    second = subprocess.run([sys.executable, str(script), str(log), store, "-1"], capture_output=True,
                            text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert log.read_text().split() == ["start", "5", "start", "6", "start", "7"]
    expected = sum(sum(x * x for x in range(r + 2)) for r in range(8))
    assert int(second.stdout) == expected
    assert not [k for k in os.listdir(store) if k != "lambdaexec"] and not os.path.exists(
        os.path.join(store, "lambdaexec", "iterate", "killed-run"))


def test_a_process_keeps_at_most_its_cache_budget_dropping_the_least_recently_used(tmp_path):
    from lambdaexec.iterative.broadcast import _Cache

    with LambdaExecutor(max_workers=1, storage_path=str(tmp_path / "store")) as ex:
        a, b, c = (pickle.loads(pickle.dumps(ex.broadcast(np.full(1000, v)))) for v in (1.0, 2.0, 3.0))
        cache = _Cache(limit=int(a.size * 2.5))  # room for two of them
        assert cache.get(a)[0] == 1 and cache.get(b)[0] == 2 and cache.get(a)[0] == 1
        assert cache.loads == 2  # the second read of a came from memory
        assert cache.get(c)[0] == 3  # over budget: b, the least recently used, goes
        assert cache.get(a)[0] == 1 and cache.loads == 3
        assert cache.get(b)[0] == 2 and cache.loads == 4
