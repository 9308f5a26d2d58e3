"""ParameterServer against a real redis-server: atomic concurrent pushes, layout, errors, outages."""

from __future__ import annotations

import importlib.util
import os
import pickle
import signal
import time

import numpy as np
import pytest
from servers import RedisServer

from lambdaexec import (
    LambdaExecutor,
    ParameterMismatchError,
    ParameterServer,
    ParameterServerUnavailableError,
)


@pytest.fixture
def ps(redis_server, request):
    server = ParameterServer(redis_server.url, name=f"t-{request.node.name[:40]}")
    server.clear()
    yield server
    server.clear()


@pytest.fixture
def ex(tmp_path):
    executor = LambdaExecutor(max_workers=8, storage_path=str(tmp_path / "store"))
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


def pusher(ps: ParameterServer, n: int) -> int:
    for i in range(n):
        if i % 3 == 2:
            ps.push_many({"vec": np.ones(100), "big": np.ones(3000, dtype=np.float32)})
        else:
            ps.push("vec", np.ones(100))
            ps.push("big", np.ones(3000, dtype=np.float32))
        if i % 50 == 0:
            ps.pull_many(["vec", "big"])  # pulls fold pending deltas while others push
    return os.getpid()


def test_8_workers_x_1000_pushes_sum_exactly(ex, redis_server):
    ps = ParameterServer(redis_server.url, name="sum-test", shard_bytes=4096)  # "big" has 3 shards
    ps.init("vec", np.zeros(100))
    ps.init("big", np.full(3000, 0.5, dtype=np.float32))
    pids = list(ex.map(pusher, [ps] * 8, [1000] * 8))
    assert len(set(pids)) >= 2  # the pushes really came from several worker processes
    vec, big = ps.pull("vec"), ps.pull("big")
    assert vec.dtype == np.float64 and np.array_equal(vec, np.full(100, 8000.0))
    assert big.dtype == np.float32 and np.array_equal(big, np.full(3000, 8000.5, dtype=np.float32))
    ps.clear()


def test_shape_dtype_and_sharding_round_trip(ps):
    ps.shard_bytes = 1000
    w = np.arange(24 * 100, dtype=np.float32).reshape(24, 100)  # 9,600 bytes: 10 shards
    ps.init("w", w)
    ps.init("step", 7)
    ps.init("z", np.array([1 + 2j, 3j]))
    got = ps.pull("w")
    assert got.shape == (24, 100) and got.dtype == np.float32 and np.array_equal(got, w)
    ps.push("w", np.ones((24, 100)))  # float64 onto float32: same kind, cast
    ps.push_many({"step": 1, "z": np.array([1j, 1])})
    out = ps.pull_many(["w", "step", "z"])
    assert np.array_equal(out["w"], w + 1)
    assert out["step"].shape == () and out["step"] == 8 and out["step"].dtype == np.int64
    assert np.array_equal(out["z"], [1 + 3j, 1 + 3j])
    assert ps.names() == ["step", "w", "z"]


def test_pickled_handle_sees_the_same_arrays_and_reinit_replaces(ps):
    ps.init("w", np.zeros(3))
    other = pickle.loads(pickle.dumps(ps))
    other.push("w", np.ones(3))
    assert np.array_equal(ps.pull("w"), np.ones(3))
    other.init("w", np.zeros((2, 2), dtype=np.int32))  # re-init with another layout
    with pytest.raises(ParameterMismatchError, match=r"shape \(3,\) but the array has shape \(2, 2\)"):
        ps.push("w", np.ones(3))  # ps's cached layout is refreshed, then the push is refused
    assert np.array_equal(ps.pull("w"), np.zeros((2, 2)))


def test_bad_pushes_and_missing_arrays_are_clear_errors(ps):
    ps.init("w", np.zeros((4, 5)))
    ps.init("n", np.zeros(3, dtype=np.int64))
    with pytest.raises(ParameterMismatchError, match=r"shape \(5, 4\) but the array has shape \(4, 5\)"):
        ps.push("w", np.ones((5, 4)))
    with pytest.raises(ParameterMismatchError, match=r"float64 delta cannot be added to a int64 array"):
        ps.push("n", np.ones(3) * 0.5)
    with pytest.raises(KeyError, match=r"has no array 'nope': call ps.init\('nope'"):
        ps.pull("nope")
    with pytest.raises(KeyError, match="has no array 'nope'"):
        ps.push_many({"w": np.ones((4, 5)), "nope": 1})
    assert np.array_equal(ps.pull("w"), np.zeros((4, 5)))  # the refused push_many changed nothing
    with pytest.raises(TypeError, match="numeric"):
        ps.init("s", np.array(["a"]))


def test_clear_leaves_other_servers_alone(redis_server):
    a = ParameterServer(redis_server.url, name="clear-a")
    b = ParameterServer(redis_server.url, name="clear-b")
    a.init("w", np.ones(2))
    b.init("w", np.ones(2) * 2)
    a.clear()
    assert a.names() == [] and np.array_equal(b.pull("w"), [2, 2])
    with pytest.raises(KeyError):
        a.pull("w")
    b.clear()


def test_default_url_is_the_configured_redis_url(redis_server, monkeypatch):
    monkeypatch.setenv("LAMBDAEXEC_REDIS_URL", redis_server.url)
    ps = ParameterServer(name="default-url")
    assert ps.url == redis_server.url
    ps.init("w", np.ones(1))
    ps.clear()


def looper(ps: ParameterServer) -> None:
    while True:
        ps.push("w", np.ones(10))
        ps.pull("w")


def busy_calls(ex: LambdaExecutor, server: RedisServer, calls: int, timeout: float) -> list:
    """``calls`` calls pushing and pulling in a loop through ``server``, running once this returns."""
    ps = ParameterServer(server.url, name="outage", timeout=timeout)
    ps.init("w", np.zeros(10))
    futures = [ex.submit(looper, ps) for _ in range(calls)]
    while ps.pull("w")[0] < 100:
        time.sleep(0.05)
    return futures


def test_redis_going_away_fails_calls_with_a_typed_error_naming_the_url(ex):
    server = RedisServer()
    try:
        futures = busy_calls(ex, server, 4, timeout=5)
    finally:
        server.stop()
    for f in futures:
        with pytest.raises(ParameterServerUnavailableError, match=f"Redis at {server.url} is unreachable"):
            f.result(timeout=60)


@pytest.mark.slow
def test_a_redis_that_stops_answering_fails_calls_within_the_timeout(ex):
    server = RedisServer()
    try:
        futures = busy_calls(ex, server, 2, timeout=2)
        os.kill(server.proc.pid, signal.SIGSTOP)  # alive but silent: sockets stay open
        for f in futures:
            with pytest.raises(ParameterServerUnavailableError, match=f"Redis at {server.url}"):
                f.result(timeout=120)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()


def _example():
    path = os.path.join(os.path.dirname(__file__), "..", "examples", "hogwild_sgd.py")
    spec = importlib.util.spec_from_file_location("hogwild_sgd", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hogwild_sgd_matches_sklearn_sgdclassifier(ex, redis_server):
    demo = _example()
    Xtr, Xte, ytr, yte = demo.load_data()
    reference = demo.baseline(Xtr, Xte, ytr, yte)
    ps = ParameterServer(redis_server.url, name="hogwild-test")
    data = ex.broadcast((Xtr, ytr))
    W, steps = demo.train_hogwild(ex, ps, data, Xtr.shape[1], 10, workers=8, epochs=5)
    # every worker's pushes reached the weights (its barrier needed all 8 running at once)
    assert len(steps) == 8 and all(s > 0 for s in steps)
    assert ps.pull("started") == 8
    assert demo.accuracy(W, Xte, yte) >= reference - 0.02
    assert demo.accuracy(np.zeros_like(W), Xte, yte) < 0.2  # what untrained weights score
    ps.clear()


def test_bsp_sgd_through_broadcast_matches_sklearn(ex):
    demo = _example()
    Xtr, Xte, ytr, yte = demo.load_data()
    reference = demo.baseline(Xtr, Xte, ytr, yte)
    data = ex.broadcast((Xtr, ytr))
    W = demo.train_bsp(ex, data, Xtr.shape[1], 10, workers=8, rounds=30)
    assert demo.accuracy(W, Xte, yte) >= reference - 0.02


def test_large_arrays_fold_pending_deltas_early(ps, redis_server, monkeypatch):
    import redis

    from lambdaexec.iterative import params

    monkeypatch.setattr(params, "FOLD_BYTES", 4000)  # stands for 64 MB: every 8,000-byte delta is "large"
    ps.init("w", np.zeros(1000))
    for _ in range(50):
        ps.push("w", np.ones(1000))
    pending = redis.Redis.from_url(redis_server.url).llen(f"lambdaexec/ps/{ps.name}/w/deltas/0")
    assert pending < 4  # pushes folded as they went, instead of keeping 50 deltas in Redis
    assert np.array_equal(ps.pull("w"), np.full(1000, 50.0))
