"""``lambda_get``: real dask collections, results identical to the sync scheduler, local and S3."""

from __future__ import annotations

import copy
import functools
import inspect
import operator
import time

import dask
import dask.array as da
import dask.bag as db
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from dask._task_spec import DataNode, Task, TaskRef, convert_legacy_graph
from dask.local import start_state_from_dask
from dask.order import order
from dask.utils_test import GetFunctionTestMixin

import lambdaexec
from lambdaexec import LambdaExecutor
from lambdaexec.errors import RemoteTraceback
from lambdaexec_dask import lambda_get

#: newer dask.local takes the keys to compute; the oldest dask we support
#: (2025.1, .ci/oldest.txt) has neither that nor expressions that carry optimize_graph=False
DASK_LOCAL_TAKES_KEYS = "keys" in inspect.signature(start_state_from_dask).parameters
try:
    from dask._expr import HLGExpr  # noqa: F401
    DASK_EXPRESSIONS = True
except ImportError:
    DASK_EXPRESSIONS = False


class CountingStorage:
    """The executor's real storage, counting what the client reads and writes through it."""

    def __init__(self, inner):
        self.inner = inner
        self.reset()

    def reset(self):
        self.got, self.put_keys, self.bytes_got, self.bytes_put = [], [], 0, 0

    def get(self, key, start=None, end=None):
        data = self.inner.get(key, start, end)
        self.got.append(key)
        self.bytes_got += len(data)
        return data

    def put(self, key, data):
        size = self.inner.put(key, data)
        self.put_keys.append(key)
        self.bytes_put += size
        return size

    def __getattr__(self, name):
        return getattr(self.inner, name)


class CountingExecutor(LambdaExecutor):
    """A real executor that counts its calls and sees every storage access of the client."""

    def __init__(self, **settings):
        super().__init__(**settings)
        self.calls = 0
        self.storage = self._monitor.storage = CountingStorage(self.storage)

    def submit(self, fn, /, *args, **kwargs):
        self.calls += 1
        return super().submit(fn, *args, **kwargs)


@pytest.fixture(scope="module", params=["local", "s3"])
def ex(request, tmp_path_factory):
    if request.param == "local":
        settings = {"storage": "local", "storage_path": str(tmp_path_factory.mktemp("store"))}
    else:
        settings = request.getfixturevalue("s3_settings")
    executor = CountingExecutor(max_workers=2, **settings)
    yield executor
    executor.shutdown()


def same_as_sync(*collections, executor):
    ours = dask.compute(*collections, scheduler=lambda_get, executor=executor)
    theirs = dask.compute(*collections, scheduler="sync")
    assert len(ours) == len(theirs)
    return ours, theirs


def test_array_reductions(ex):
    x = da.random.random((300, 400), chunks=(100, 100))
    ours, theirs = same_as_sync(x.mean(), x.sum(axis=0), x.std(), x.max(axis=1), executor=ex)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)


def test_array_transposes(ex):
    y = da.from_array(np.arange(160_000.0).reshape(400, 400), chunks=100)
    z = da.random.random((200, 300), chunks=(50, 100))
    ours, theirs = same_as_sync((y + y.T).sum(axis=0), (y.T @ y)[::7], z.T.mean(axis=1), z.T, executor=ex)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)


def test_bag_frequencies(ex):
    words = "the quick brown fox jumps over the lazy dog and the dog sleeps".split() * 20
    bag = db.from_sequence(words, npartitions=5)
    ours, theirs = same_as_sync(bag.frequencies(), bag.map(len).frequencies(), bag.distinct().count(), executor=ex)
    assert sorted(ours[0]) == sorted(theirs[0])
    assert sorted(ours[1]) == sorted(theirs[1])
    assert ours[2] == theirs[2] == 10


def test_dataframe_groupby(ex):
    rng = np.random.default_rng(0)
    pdf = pd.DataFrame({"k": rng.integers(0, 7, 1000), "v": rng.random(1000), "w": rng.integers(0, 100, 1000)})
    df = dd.from_pandas(pdf, npartitions=4)
    ours, theirs = same_as_sync(df.groupby("k").v.sum(), df.groupby("k").agg({"v": "mean", "w": "max"}),
                                df[df.w > 50].groupby("k").size(), executor=ex)
    for a, b in zip(ours, theirs):
        pd.testing.assert_frame_equal(pd.DataFrame(a).sort_index(), pd.DataFrame(b).sort_index())
    pd.testing.assert_series_equal(ours[0].sort_index(), pdf.groupby("k").v.sum(), check_exact=False)


def test_intermediates_stay_in_storage(ex):
    x = da.random.random((1000, 1000), chunks=(250, 250))  # 8 MB, 16 chunks
    y = x + x.T  # each chunk of x is read by two tasks: it must be stored, not recomputed or shipped
    ex.storage.reset()
    calls = ex.calls
    (total,) = dask.compute(y.sum(), scheduler=lambda_get, executor=ex)
    assert total == dask.compute(y.sum(), scheduler="sync")[0]
    assert ex.calls - calls < 40
    assert not [k for k in ex.storage.got if "/dask/" in k], "the client downloaded an intermediate"
    assert not [k for k in ex.storage.put_keys if "/dask/" in k], "the client uploaded an intermediate"
    assert ex.storage.bytes_got < 1_000_000 and ex.storage.bytes_put < 1_000_000
    assert ex.storage.list(ex.prefix + "/dask/") == []


def test_large_literals_are_stored_once(ex):
    data = np.arange(1_000_000.0).reshape(1000, 1000)
    y = da.from_array(data, chunks=250)  # 16 literal chunks of 500 kB, each read by two tasks
    ex.storage.reset()
    (ours,) = dask.compute((y + y.T).sum(axis=0), scheduler=lambda_get, executor=ex)
    np.testing.assert_array_equal(ours, (data + data.T).sum(axis=0))
    # the 12 off-diagonal chunks are stored once each; a diagonal chunk has one reader and is
    # fused into it; either way no literal is uploaded twice
    literal_puts = [k for k in ex.storage.put_keys if "/dask/" in k]
    assert len(literal_puts) == len(set(literal_puts)) >= 12
    assert ex.storage.bytes_put < data.nbytes * 1.1


def inc(x):
    return x + 1


def test_linear_chain_is_one_call(ex):
    chain = {"x0": 1, **{f"x{i}": (inc, f"x{i - 1}") for i in range(1, 11)}}
    calls = ex.calls
    assert lambda_get(chain, "x10", executor=ex) == 11
    assert ex.calls - calls == 1

    diamond = {"a": (inc, 1), "b": (inc, "a"), "c": (operator.mul, "a", 10), "d": (operator.add, "b", "c")}
    calls = ex.calls
    assert lambda_get(diamond, ["d", "a"], executor=ex) == (2 + 1 + 20, 2)
    assert ex.calls - calls == 4


def test_outputs_are_deleted_once_read(ex):
    # a chain whose every link is read twice (by the next link and by a side task), so nothing
    # fuses: 40 outputs are stored, but each is needed only until its two readers have run
    graph = {"a0": (inc, 0)}
    for i in range(1, 41):
        graph[f"a{i}"] = (inc, f"a{i - 1}")
        graph[f"b{i}"] = (operator.neg, f"a{i - 1}")
    stored = []

    def count_stored(key, result, dsk, state, worker_id):
        stored.append(len(ex.storage.list(ex.prefix + "/dask/")))

    with dask.callbacks.Callback(posttask=count_stored):
        got = lambda_get(graph, ["a40", [f"b{i}" for i in range(1, 41)]], executor=ex)
    assert got == (41, tuple(-i for i in range(1, 41)))
    assert len(stored) == 81 and max(stored) <= 10  # without the release it climbs to 40
    assert ex.storage.list(ex.prefix + "/dask/") == []


def test_requested_key_also_feeding_another(ex):
    x = da.arange(100, chunks=10)
    s = x.sum()
    assert dask.compute(s, s * 2, x, scheduler=lambda_get, executor=ex)[:2] == (4950, 9900)
    np.testing.assert_array_equal(dask.compute(x, scheduler=lambda_get, executor=ex)[0], np.arange(100))


def fail_on_three(i):
    if i == 3:
        raise ZeroDivisionError(f"partition {i} failed")
    return i


def test_task_exception_is_raised_with_remote_traceback(ex):
    bag = db.from_sequence(range(8), npartitions=8).map(fail_on_three)
    with pytest.raises(ZeroDivisionError, match="partition 3 failed") as info:
        bag.sum().compute(scheduler=lambda_get, executor=ex)
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "fail_on_three" in info.value.__cause__.tb
    # partitions still running when the error came are awaited in the background, then deleted
    deadline = time.monotonic() + 30
    while ex.storage.list(ex.prefix + "/dask/") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ex.storage.list(ex.prefix + "/dask/") == []


def test_config_set_and_default_executor():
    x = da.random.random((200, 200), chunks=(50, 50))
    expected = x.sum(axis=1).compute(scheduler="sync")
    try:
        with dask.config.set(scheduler=lambda_get):
            np.testing.assert_array_equal(x.sum(axis=1).compute(), expected)
        with dask.config.set(scheduler=functools.partial(lambda_get, num_workers=1)):
            np.testing.assert_array_equal(x.sum(axis=1).compute(), expected)
    finally:
        lambdaexec.default_executor().shutdown()
        from lambdaexec_dask.scheduler import _executors

        for executor in _executors.values():
            executor.shutdown()


def test_progress_bar(ex, capsys):
    from dask.diagnostics import ProgressBar

    x = da.random.random((200, 200), chunks=(50, 50))
    expected = x.sum(axis=0).compute(scheduler="sync")
    capsys.readouterr()
    with ProgressBar(minimum=0, dt=0.01):
        ours = x.sum(axis=0).compute(scheduler=lambda_get, executor=ex)
    np.testing.assert_array_equal(ours, expected)
    assert "100%" in capsys.readouterr().out



# --- dask's get protocol, as dask.local keeps it ---------------------------------------------


def identity(x):
    return x


def must_not_run(x):
    raise AssertionError("a key given in cache= was computed again")


def test_malformed_graph_is_a_missing_dependency_unless_the_cache_has_it(ex):
    dsk = {"y": Task("y", identity, TaskRef("x"))}
    calls = ex.calls
    with pytest.raises(ValueError, match=r"Missing dependency x for dependents \{'y'\}"):
        lambda_get(dsk, "y", executor=ex)
    assert ex.calls == calls, "nothing runs for a malformed graph"
    assert lambda_get(dsk, "y", executor=ex, cache={"x": 1}) == 1


def test_cache_holds_precomputed_results_and_is_filled_as_dask_local_fills_it(ex):
    graph = {"a": DataNode("a", 1), "c": Task("c", inc, TaskRef("b")), "d": Task("d", operator.add, TaskRef("c"),
                                                                                 TaskRef("a"))}
    ours, theirs = {"b": 10}, {"b": 10}
    assert lambda_get(graph, "d", executor=ex, cache=ours) == 12
    assert ours == {"d": 12}  # inputs released, the requested key's value kept
    if DASK_LOCAL_TAKES_KEYS:  # as dask.local does (dask 2025.1's cannot run a graph whose input is in the cache)
        assert dask.local.get_sync(graph, "d", cache=theirs) == 12 and theirs == ours
    # a key both in the graph and in the cache is taken from the cache (dask.local computes it again)
    graph["b"] = Task("b", must_not_run, TaskRef("a"))
    assert lambda_get(graph, "d", executor=ex, cache={"b": 10}) == 12

    # dask.config's cache too, with literals in it before any task runs (dask's test_cache_options)
    seen = {}

    def check(x):
        assert "y" in seen, "literals are in the cache before tasks run"
        return x + 1

    with dask.config.set(cache=seen):
        assert lambda_get({"x": (check, "y"), "y": 1}, "x", executor=ex) == 2
    assert seen == {"x": 2}


def test_optimize_graph_false_runs_every_task_as_its_own_call(ex):
    chain = {"x0": 1, **{f"x{i}": (inc, f"x{i - 1}") for i in range(1, 6)}}
    calls = ex.calls
    assert lambda_get(chain, "x5", executor=ex, optimize_graph=False) == 6
    assert ex.calls - calls == 5
    calls = ex.calls
    assert lambda_get(chain, "x5", executor=ex) == 6
    assert ex.calls - calls == 1

    if not DASK_EXPRESSIONS:  # dask 2025.1 neither passes the flag on nor marks its graph (docs/dask.md)
        return
    # dask.compute(optimize_graph=False) does not pass the flag on: lambda_get reads it from the graph
    value = dask.delayed(0)
    for _ in range(5):
        value = dask.delayed(inc)(value)
    calls = ex.calls
    assert dask.compute(value, scheduler=lambda_get, executor=ex, optimize_graph=False) == (5,)
    assert ex.calls - calls == 5
    calls = ex.calls
    assert dask.compute(value, scheduler=lambda_get, executor=ex) == (5,)
    assert ex.calls - calls == 1


@pytest.mark.skipif(not DASK_LOCAL_TAKES_KEYS, reason="dask 2025.1's dask.local cannot build the reference state "
                    "(start_state_from_dask has no keys=); lambda_get's fallback for it is in lambdaexec_dask/state.py")
def test_callbacks_get_the_graph_and_dask_locals_state(ex):
    graph = {"x": 1, "z": (inc, "x"), "w": (operator.mul, "z", 2), "v": (operator.neg, "w")}
    converted = convert_legacy_graph(graph)
    expected = start_state_from_dask(dict(converted), keys={"v"}, sortkey=order(converted).get)
    got, pretasks, posttasks, finished = {}, [], [], {}

    def start_state(dsk, state):
        got["dsk"], got["state"] = dsk, copy.deepcopy(state)

    def finish(dsk, state, errored):
        finished.update(state=copy.deepcopy(state), errored=errored)

    with dask.callbacks.Callback(start_state=start_state, finish=finish,
                                 pretask=lambda key, dsk, state: pretasks.append(key in dsk),
                                 posttask=lambda key, result, *_: posttasks.append((key, result))):
        assert lambda_get(graph, "v", executor=ex) == -4
    assert got["dsk"].keys() == graph.keys() and got["dsk"]["x"]() == 1
    assert set(got["state"]) == {"cache", "dependencies", "dependents", "waiting", "waiting_data", "ready",
                                 "running", "finished", "released"}
    assert got["state"] == expected
    # z -> w -> v is fused into one call, named by its last key; every key it ran is finished
    assert pretasks == [True] and posttasks == [("v", -4)]
    state = finished["state"]
    assert finished["errored"] is False and state["finished"] == {"z", "w", "v"}
    assert state["ready"] == [] and state["waiting"] == {} and state["running"] == set()
    assert state["cache"] == {"v": -4} and state["released"] == {"x", "z", "w"}

    # what ProgressBar counts (ready + waiting + running + finished) stays the number of tasks
    x = da.random.random((200, 200), chunks=(50, 50))
    totals = []

    def count(key, result, dsk, state, worker):
        totals.append((sum(len(state[k]) for k in ("ready", "waiting", "running", "finished")),
                       len(state["finished"])))

    with dask.callbacks.Callback(posttask=count):
        (x + x.T).sum(axis=0).compute(scheduler=lambda_get, executor=ex)
    assert len({total for total, _ in totals}) == 1 and totals[-1][1] == totals[-1][0]


@pytest.fixture(scope="class")
def lambda_get_as_get(request, tmp_path_factory):
    """Gives the test class ``get = lambda_get`` on a local executor of its own."""
    with LambdaExecutor(max_workers=2, storage="local", storage_path=str(tmp_path_factory.mktemp("store"))) as executor:
        request.cls.get = staticmethod(functools.partial(lambda_get, executor=executor))
        yield


@pytest.mark.usefixtures("lambda_get_as_get")
class TestDaskGetFunctionContract(GetFunctionTestMixin):
    """dask's own checks for a foreign ``get`` function (``dask.utils_test``, written by dask's
    authors "to enforce all known expectations of get functions"), run on ``lambda_get``: bad
    keys raise ``KeyError``, nested key lists give nested tuples, literals and unhashable
    values pass through, a 10,000-task chain does not overflow the stack, HighLevelGraphs."""
