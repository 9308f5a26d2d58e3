"""Regressions of issue 12: nothing lost, nothing hung, nobody else's code runs.

Each test names the numbered failure it guards against; each failed on the code before its fix.
"""

from __future__ import annotations

import concurrent.futures as cf
import gc
import importlib
import multiprocessing
import os
import pathlib
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import weakref
from concurrent.futures.process import BrokenProcessPool

import joblib
import pytest
from servers import RedisServer, redis_server_binary, stop_process
from workloads import die_once as die_once_marker
from workloads import exit_via_kill, hang

import lambdaexec
import lambdaexec_joblib  # noqa: F401  (registers the joblib backend "lambda")
from lambdaexec import LambdaExecutor, LambdaFuture


def _in_thread(fn, timeout=10):
    """Run ``fn`` in a thread; return what it returned or raised, or fail if it hangs."""
    out: list = []

    def run():
        try:
            out.append(("ok", fn()))
        except BaseException as err:  # noqa: BLE001 (the test looks at what came out)
            out.append(("raised", err))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"{fn} hung"
    return out[0]


# --- 2. set_result / set_exception on a finished future ----------------------------------------

@pytest.mark.parametrize("first", ["result", "exception", "cancel"])
def test_setting_a_finished_future_raises_invalid_state_not_deadlock(first):
    f = LambdaFuture()
    if first == "result":
        f.set_result(1)
    elif first == "exception":
        f.set_exception(ValueError("x"))
    else:
        f.cancel()
    kind, err = _in_thread(lambda: f.set_result(2))
    assert kind == "raised" and isinstance(err, cf.InvalidStateError)
    kind, err = _in_thread(lambda: f.set_exception(ValueError("y")))
    assert kind == "raised" and isinstance(err, cf.InvalidStateError)
    # the future's lock is free afterwards: its state can still be read and waited on
    assert _in_thread(lambda: f.done()) == ("ok", True)
    assert "state=" in repr(f)


def test_executor_future_repr_names_the_call(tmp_path):
    with LambdaExecutor(max_workers=1, storage_path=str(tmp_path / "store")) as ex:
        f = ex.submit(pow, 2, 3)
        assert f.result(timeout=60) == 8
    assert f.call_id in repr(f) and "finished" in repr(f)
    with pytest.raises(cf.InvalidStateError):
        f.set_result(9)
    assert f.result() == 8
    assert isinstance(lambdaexec.LambdaFuture(), cf.Future)


# --- 1. a child forked by the user's code runs the exit hook -----------------------------------

def _child_exits():
    return None


def test_forked_child_exit_leaves_the_parents_executor_alone(tmp_path):
    ctx = multiprocessing.get_context("fork")
    store = tmp_path / "store"
    with LambdaExecutor(max_workers=1, storage_path=str(store)) as ex:
        assert ex.submit(pow, 2, 3).result(timeout=60) == 8
        running = ex.submit(hang, 1.5)
        child = ctx.Process(target=_child_exits)
        child.start()
        child.join(30)
        assert child.exitcode == 0  # it ended, without waiting for the parent's calls
        assert running.result(timeout=60) == "woke up"
        # the parent's job data (its uploaded function) and workers are still there
        assert ex.submit(pow, 2, 5).result(timeout=60) == 32
        assert [f.result(timeout=60) for f in [ex.submit(pow, 3, i) for i in range(4)]] == [1, 3, 9, 27]


# --- 7. threads submitting the first calls of a user-module function at once ------------------

def test_threads_submitting_a_user_module_function_at_once_all_ship_it_by_value(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))  # the client sees the files; workers do not
    with LambdaExecutor(max_workers=2, storage_path=str(tmp_path / "store")) as ex:
        for round_ in range(4):
            (tmp_path / f"racemod{round_}.py").write_text("def triple(x):\n    return 3 * x\n")
            module = importlib.import_module(f"racemod{round_}")
            start = threading.Barrier(12)

            def submit(i, module=module, start=start):
                start.wait()
                return ex.submit(module.triple, i)

            with cf.ThreadPoolExecutor(12) as pool:
                futures = list(pool.map(submit, range(12)))
            assert [f.result(timeout=60) for f in futures] == [3 * i for i in range(12)]


# --- 3. globals set by the initializer are seen by the calls -----------------------------------

_MODEL_MODULE = '''
model = None
calls = 0

def load(name):
    global model
    model = "model " + name

def predict(x):
    global calls
    calls += 1
    return model, x, calls
'''


def test_initializer_globals_are_visible_to_calls_from_a_user_module(tmp_path, monkeypatch):
    (tmp_path / "initmod.py").write_text(_MODEL_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))  # the client sees the file; workers do not
    initmod = importlib.import_module("initmod")
    with LambdaExecutor(max_workers=1, initializer=initmod.load, initargs=("A",),
                        storage_path=str(tmp_path / "store")) as ex:
        first = ex.submit(initmod.predict, 1).result(timeout=60)
        second = ex.submit(initmod.predict, 2).result(timeout=60)
    assert first[:2] == ("model A", 1) and second[:2] == ("model A", 2)
    assert second[2] == first[2] + 1  # a warm worker keeps what its calls assigned, as a process would
    assert initmod.model is None  # the client's module is untouched


# --- 8a. joblib: a batch that cannot be sent fails Parallel instead of hanging it -------------

def test_joblib_unpicklable_later_batch_raises_instead_of_hanging(tmp_path):
    items = [*range(20), threading.Lock(), *range(5)]

    def run():
        with joblib.parallel_backend("lambda", max_workers=2, storage_path=str(tmp_path / "store")):
            return joblib.Parallel(n_jobs=2, batch_size=1)(joblib.delayed(repr)(x) for x in items)

    kind, err = _in_thread(run, timeout=120)
    assert kind == "raised", err
    assert isinstance(err, lambdaexec.UnpicklableError) and "lock" in str(err)


# --- 6. joblib: the initializer is honoured ------------------------------------------------------

def _mark_worker(value):
    os.environ["LAMBDAEXEC_TEST_INIT"] = value


def _read_mark(_):
    return os.environ.get("LAMBDAEXEC_TEST_INIT")


def test_joblib_parallel_initializer_runs_in_workers(tmp_path):
    with joblib.parallel_backend("lambda", max_workers=2, storage_path=str(tmp_path / "store")):
        got = joblib.Parallel(n_jobs=2, initializer=_mark_worker, initargs=("from Parallel",))(
            joblib.delayed(_read_mark)(i) for i in range(6))
    assert got == ["from Parallel"] * 6


def test_joblib_parallel_config_initializer_runs_in_workers(tmp_path):
    with joblib.parallel_config(backend="lambda", max_workers=2, storage_path=str(tmp_path / "store"),
                                initializer=_mark_worker, initargs=("from parallel_config",)):
        got = joblib.Parallel(n_jobs=2)(joblib.delayed(_read_mark)(i) for i in range(6))
    assert got == ["from parallel_config"] * 6


# --- 8b. dask: a later task gets the stored value, not the producer's live object -------------

def test_dask_task_returning_a_weakref_proxy_feeds_its_consumers(tmp_path):
    # dask's own test_use_of_weakref_proxy, on lambdaexec
    import dask.dataframe as dd
    import pandas as pd

    from lambdaexec_dask import lambda_get

    kept = []

    def f(x):
        kept.append(x)  # keep `x` alive while the task runs
        return weakref.proxy(x)

    d = pd.DataFrame({"g": [0, 0, 1] * 3, "b": [1, 2, 3] * 3})
    a = dd.from_pandas(d, npartitions=1).map_partitions(f, meta=d.iloc[:0])
    with LambdaExecutor(max_workers=1, storage_path=str(tmp_path / "store")) as ex:
        got = a["b"].groupby(a["g"]).sum().compute(scheduler=lambda_get, executor=ex)
    pd.testing.assert_series_equal(got, d["b"].groupby(d["g"]).sum())


def _append_one(values):
    values.append(1)
    return len(values)


def test_dask_tasks_sharing_an_input_each_get_their_own_copy(tmp_path):
    import dask

    from lambdaexec_dask import lambda_get

    shared = dask.delayed(list)([0, 0])
    readers = [dask.delayed(_append_one)(shared) for _ in range(4)]
    with LambdaExecutor(max_workers=1, storage_path=str(tmp_path / "store")) as ex:
        got = dask.compute(*readers, scheduler=lambda_get, executor=ex)
    assert got == (3, 3, 3, 3)  # as dask's processes scheduler gives: no task sees another's mutation


# --- 8. a broken runtime is a BrokenProcessPool; one replaced worker is not ---------------------

def test_workers_that_cannot_start_raise_broken_process_pool(tmp_path, monkeypatch):
    (tmp_path / "worker").mkdir()  # a `worker` package that cannot be imported shadows the real one
    (tmp_path / "worker" / "__init__.py").write_text("raise ImportError('this runtime is broken')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with LambdaExecutor(max_workers=1, storage_path=str(tmp_path / "store")) as ex:
        with pytest.raises(BrokenProcessPool, match="this runtime is broken") as info:
            ex.submit(pow, 2, 2).result(timeout=60)
    assert isinstance(info.value, lambdaexec.WorkerDiedError)  # still the type lambdaexec documented


def test_one_dead_worker_that_was_replaced_is_not_broken(tmp_path):
    with LambdaExecutor(max_workers=1, retries=0, storage_path=str(tmp_path / "store")) as ex:
        with pytest.raises(lambdaexec.WorkerDiedError) as info:
            ex.submit(exit_via_kill).result(timeout=60)
        # a BrokenProcessPool, as ProcessPoolExecutor raises when a worker dies (issue 23), so
        # code that catches that keeps working; but the executor is not broken: it goes on
        assert isinstance(info.value, BrokenProcessPool)
        assert ex.submit(pow, 2, 2).result(timeout=60) == 4


# --- 9. workers killed in quick succession are not a broken installation ----------------------

def test_workers_killed_before_they_are_ready_do_not_fail_the_calls(tmp_path):
    with LambdaExecutor(max_workers=2, retries=1000, storage_path=str(tmp_path / "store")) as ex:
        futures = [ex.submit(hang, 0.01) for _ in range(100)]
        killed = 0
        end = time.monotonic() + 2.0
        while time.monotonic() < end:  # SIGKILL every worker, replacements included, every 0.02 s
            for w in list(ex._monitor.invoker._workers):
                try:
                    os.kill(w.popen.pid, signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
            time.sleep(0.02)
        assert killed > 6
        assert [f.result(timeout=120) for f in futures] == ["woke up"] * 100


# --- 4. results are not retained once the caller lets go of them -------------------------------

class _Dummy:
    pass


def _make_dummy(_):
    return _Dummy()


def test_map_keeps_no_reference_to_results_it_yielded(executor):
    # CPython's test_free_reference (Lib/test/test_concurrent_futures/executor.py)
    for obj in executor.map(_make_dummy, range(10)):
        ref = weakref.ref(obj)
        del obj
        gc.collect()
        deadline = time.monotonic() + 10
        while ref() is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ref() is None


def test_finished_calls_of_an_unfinished_job_release_their_results(tmp_path):
    with LambdaExecutor(max_workers=2, storage_path=str(tmp_path / "store")) as ex:
        futures = ex.map_futures(hang, [0.0] * 6 + [3.0])  # one job; its last call is slow
        ref = weakref.ref(futures[0])
        assert futures[0].result(timeout=60) == "woke up"
        del futures[:6]
        gc.collect()
        deadline = time.monotonic() + 10
        while ref() is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ref() is None  # released while the job still runs
        assert futures[0].result(timeout=60) == "woke up"


# --- 5. short calls do not wait behind a long one while a worker is idle -----------------------

def test_short_calls_do_not_wait_behind_a_long_one(tmp_path):
    with LambdaExecutor(max_workers=2, storage_path=str(tmp_path / "store")) as ex:
        ex.submit(pow, 2, 2).result(timeout=60)  # both workers up
        long = ex.submit(hang, 4)
        short = [ex.submit(hang, 0.02) for _ in range(30)]
        order = [f for f in cf.as_completed([long, *short], timeout=120)]
    assert order[-1] is long  # every short call finished on the other worker first


# --- 12. children of calls, Ctrl-C, a storage_path that cannot be created ----------------------

def _start_sleeper():
    return subprocess.Popen(["sleep", "120"]).pid


def _gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1].startswith("Z")  # a zombie has ended
    except FileNotFoundError:
        return True


def test_children_started_by_calls_end_at_shutdown(tmp_path):
    ex = LambdaExecutor(max_workers=1, storage_path=str(tmp_path / "store"))
    pid = ex.submit(_start_sleeper).result(timeout=60)
    assert not _gone(pid)
    ex.shutdown(wait=True)
    deadline = time.monotonic() + 10
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid)


_INTERRUPTED = """
import sys, time
from lambdaexec import LambdaExecutor

def sleep_long():
    time.sleep(120)

ex = LambdaExecutor(max_workers=1, storage_path=sys.argv[1])
f = ex.submit(sleep_long)
time.sleep(1.0)
print(ex._monitor.invoker._workers[0].popen.pid, flush=True)
raise KeyboardInterrupt  # as Ctrl-C would, while a call runs
"""


def test_ctrl_c_in_the_client_stops_the_running_calls(tmp_path):
    script = tmp_path / "interrupted.py"
    script.write_text(_INTERRUPTED)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "store")],
                          capture_output=True, text=True, timeout=60)  # the call would take 120 s
    assert "KeyboardInterrupt" in proc.stderr
    worker = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 10
    while not _gone(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(worker)


def test_storage_path_that_cannot_be_created_is_a_config_error(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(lambdaexec.ConfigError, match="storage_path"):
        LambdaExecutor(storage_path=str(tmp_path / "a-file" / "store"))


# --- 11. a call that grows past `memory` fails at once, typed, naming the setting ---------------

def _grow(mb):
    return len(bytearray(mb << 20))


def test_call_past_the_memory_setting_gets_a_memory_error_naming_it(tmp_path):
    with LambdaExecutor(max_workers=1, memory=256, storage_path=str(tmp_path / "store")) as ex:
        with pytest.raises(MemoryError, match="memory size, 256 MB") as info:
            ex.submit(_grow, 1024).result(timeout=120)
        assert isinstance(info.value, lambdaexec.OutOfMemoryError)  # final: typed, not retried
        assert ex.submit(_grow, 16).result(timeout=60) == 16 << 20  # the worker is still fine
    assert "_grow" in str(info.value.__cause__)  # the remote traceback comes along


# --- 10. storage outages: retried within the deadline, lost objects uploaded again, typed errors --

def _restart(redis_srv, down):
    """Stop the redis-server (losing every key: no persistence) and start it again on its port."""
    stop_process(redis_srv.proc)
    time.sleep(down)
    with open(redis_srv.log, "a") as log:
        redis_srv.proc = subprocess.Popen(
            [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(redis_srv.port), "--save", "",
             "--appendonly", "no", "--dir", redis_srv.dir], stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)


def _slow_square(x):
    time.sleep(0.1)
    return x * x


@pytest.fixture
def own_redis():
    """A redis-server of this test's own (it is restarted)."""
    server = RedisServer()
    yield server
    server.stop()


def test_redis_restart_mid_map_ends_every_call_typed_and_the_function_is_uploaded_again(own_redis):
    with LambdaExecutor(max_workers=2, storage="redis", redis_url=own_redis.url) as ex:
        assert ex.submit(_slow_square, 3).result(timeout=60) == 9  # the function is now uploaded
        during = ex.map_futures(_slow_square, range(40))
        time.sleep(0.5)
        _restart(own_redis, 2.0)  # every key is lost, the server is gone for 2 s
        done, not_done = cf.wait(during, timeout=120)
        assert not not_done
        # nothing lost: what the store forgot is uploaded again from the client (issue 25)
        assert [f.result() for f in during] == [i * i for i in range(40)]
        # afterwards, the same function runs again: its lost object is uploaded anew
        assert list(ex.map(_slow_square, range(6), timeout=120)) == [i * i for i in range(6)]


def test_calls_submitted_while_the_store_is_down_wait_for_it(own_redis):
    with LambdaExecutor(max_workers=2, storage="redis", redis_url=own_redis.url) as ex:
        assert ex.submit(_slow_square, 2).result(timeout=60) == 4
        restarting = threading.Thread(target=_restart, args=(own_redis, 2.0))
        restarting.start()
        time.sleep(0.5)  # down now
        futures = [ex.submit(_slow_square, i) for i in range(10)]
        restarting.join()
        assert [f.result(timeout=120) for f in futures] == [i * i for i in range(10)]


def test_a_store_that_stays_down_is_a_storage_error_naming_it(tmp_path, monkeypatch):
    from lambdaexec.storage import base

    monkeypatch.setattr(base, "RETRY_SECONDS", 1.0)
    server = RedisServer()
    ex = LambdaExecutor(max_workers=1, storage="redis", redis_url=server.url)
    server.stop()
    with pytest.raises(lambdaexec.StorageError, match=f"Redis at {server.url}") as info:
        ex.submit(pow, 2, 2).result(timeout=60)
    assert not isinstance(info.value, lambdaexec.ConfigError)
    assert "attempts" in str(info.value)
    ex.shutdown(wait=False, cancel_futures=True)


# --- 13 (part). local storage private to its user -----------------------------------------------

def test_default_local_storage_is_per_user_and_private():
    from lambdaexec.config import default_storage_path

    path = default_storage_path()
    assert path.endswith(f"lambdaexec-{os.getuid()}")
    with LambdaExecutor(max_workers=1) as ex:
        assert ex.submit(pow, 2, 2).result(timeout=60) == 4
    st = os.stat(path)
    assert st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700


def test_storage_directory_writable_by_others_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # as another user could have made it in advance
    with pytest.raises(lambdaexec.ConfigError, match="chmod 700"):
        LambdaExecutor(storage_path=str(shared))


def test_storage_directory_of_another_user_is_refused(tmp_path):
    if os.getuid() == 0:
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o700)
        os.chown(theirs, 65534, 65534)
    else:
        theirs = pathlib.Path("/")  # root's, and never ours
    with pytest.raises(lambdaexec.ConfigError, match="belongs to user id"):
        LambdaExecutor(storage_path=str(theirs))


def test_new_storage_directory_is_0700_and_objects_0600(tmp_path):
    from lambdaexec.storage import open_storage

    store = open_storage({"kind": "local", "path": str(tmp_path / "new")})
    store.put("job/func", b"code")
    assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "new" / "job" / "func").st_mode) == 0o600


# --- the failure ledger: lambdaexec.failed, ex.retry_failed -------------------------------------

def _fails_first_time(folder, i):
    marker = pathlib.Path(folder) / str(i)
    if i % 3 == 0 and not marker.exists():
        marker.touch()
        raise RuntimeError(f"flaky {i}")
    return i * 10


def test_failed_lists_positions_and_exceptions_and_retry_failed_reruns_only_those(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    with LambdaExecutor(max_workers=2, storage_path=str(tmp_path / "store")) as ex:
        futures = ex.map_futures(_fails_first_time, [str(marks)] * 10, range(10))
        ledger = lambdaexec.failed(futures)
        assert [c.position for c in ledger] == [0, 3, 6, 9]
        assert all(isinstance(c.exception, RuntimeError) for c in ledger)
        assert str(ledger[1].exception) == "flaky 3"
        again = ex.retry_failed(futures)
        assert [a is f for a, f in zip(again, futures)] == [i % 3 != 0 for i in range(10)]
        assert lambdaexec.get_all_results(again, timeout=60) == [i * 10 for i in range(10)]
        assert lambdaexec.failed(again) == []
        assert sorted(p.name for p in marks.iterdir()) == ["0", "3", "6", "9"]  # each ran twice only


def test_retry_failed_of_a_lost_call_and_of_submitted_calls(tmp_path):
    with LambdaExecutor(max_workers=1, retries=0, storage_path=str(tmp_path / "store")) as ex:
        marker = tmp_path / "died"
        futures = [ex.submit(die_once_marker, str(marker)), ex.submit(pow, 2, 3)]
        [lost] = lambdaexec.failed(futures, timeout=60)
        assert lost.position == 0 and isinstance(lost.exception, lambdaexec.WorkerDiedError)
        assert [f.result(timeout=60) for f in ex.retry_failed(futures)] == ["second time lucky", 8]


# --- bad input classes of docs/errors.md not tested elsewhere ----------------------------------

class _NeedsTwo(Exception):
    def __init__(self, a, b):  # pickles as NeedsTwo("1-2"): cannot be rebuilt from its args
        super().__init__(f"{a}-{b}")


def _raise_needs_two():
    raise _NeedsTwo(1, 2)


def _call_sys_exit():
    sys.exit(3)


def _segfault():
    import ctypes

    ctypes.string_at(0)


def _recurse(n=0):
    return _recurse(n + 1)


def _huge_stdout():
    print("x" * (3 << 20))
    return "done"


def _nested_executor():
    with LambdaExecutor(max_workers=1) as inner:
        return inner.submit(pow, 2, 5).result(timeout=60)


def _returns_lock():
    return threading.Lock()


@pytest.fixture(scope="module")
def bad_ex(tmp_path_factory):
    ex = LambdaExecutor(max_workers=2, retries=0, storage_path=str(tmp_path_factory.mktemp("bad") / "store"))
    yield ex
    ex.shutdown(wait=True, cancel_futures=True)


def test_exception_that_cannot_be_unpickled_on_the_client_is_a_remote_error(bad_ex):
    with pytest.raises(lambdaexec.RemoteError, match="cannot be unpickled here") as info:
        bad_ex.submit(_raise_needs_two).result(timeout=60)
    assert "_NeedsTwo" in str(info.value.__cause__)  # the remote traceback still names it


def test_sys_exit_in_a_call_is_raised_as_system_exit(bad_ex):
    with pytest.raises(SystemExit) as info:  # as ProcessPoolExecutor does
        bad_ex.submit(_call_sys_exit).result(timeout=60)
    assert info.value.code == 3
    assert bad_ex.submit(pow, 2, 2).result(timeout=60) == 4  # the worker lives on


def test_segfault_in_a_call_is_a_worker_died_error(bad_ex):
    with pytest.raises(lambdaexec.WorkerDiedError, match="SIGSEGV"):
        bad_ex.submit(_segfault).result(timeout=60)


def test_runaway_recursion_is_a_recursion_error(bad_ex):
    with pytest.raises(RecursionError):
        bad_ex.submit(_recurse).result(timeout=60)


def test_huge_stdout_is_clipped_to_its_last_mib(bad_ex):
    f = bad_ex.submit(_huge_stdout)
    assert f.result(timeout=60) == "done"
    assert f.stdout.startswith("[... ") and "characters dropped" in f.stdout
    assert len(f.stdout) < (1 << 20) + 100


def test_nested_executor_in_a_call_works(bad_ex):
    assert bad_ex.submit(_nested_executor).result(timeout=120) == 32


def test_unpicklable_result_is_an_unpicklable_error(bad_ex):
    with pytest.raises(lambdaexec.UnpicklableError, match="result cannot be serialized.*lock"):
        bad_ex.submit(_returns_lock).result(timeout=60)


def test_not_callable_not_iterable_and_bad_chunksize(bad_ex):
    with pytest.raises(TypeError, match="not callable"):
        bad_ex.submit(42)
    with pytest.raises(TypeError, match="not iterable"):
        bad_ex.map(abs, 5)
    with pytest.raises(ValueError, match="chunksize must be >= 1"):
        bad_ex.map(abs, [1], chunksize=0)
    with pytest.raises(ValueError, match="max_tasks_per_child must be >= 1"):
        LambdaExecutor(max_tasks_per_child=0)


def test_unreachable_s3_endpoint_mid_job_is_a_storage_error_not_a_config_error(monkeypatch):
    # boto3 gives up with EndpointConnectionError, which the S3 store explains as a ConfigError
    # blaming endpoint_url; during a job that is an outage: retried, then a StorageError
    from lambdaexec.storage import base, open_storage

    monkeypatch.setattr(base, "RETRY_SECONDS", 4.0)  # boto3's own quick retry fits several times
    for var, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test")):
        monkeypatch.setenv(var, os.environ.get(var, value))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    store = open_storage({"kind": "s3", "bucket": "gone", "region": "us-east-1",
                          "endpoint_url": f"http://127.0.0.1:{port}"})
    with pytest.raises(lambdaexec.StorageError, match=f"S3 bucket 'gone' at http://127.0.0.1:{port}") as info:
        store.get("lambdaexec/job/func")
    assert not isinstance(info.value, lambdaexec.ConfigError)
    assert "attempts" in str(info.value)


def test_joblib_parallel_inside_a_managed_parallel_leaves_the_outer_working(tmp_path):
    # what GridSearchCV.fit inside a custom _run_search does (scikit-learn's test_custom_run_search)
    def run():
        with joblib.parallel_config(backend="lambda", max_workers=2, storage_path=str(tmp_path / "store")):
            outer = joblib.Parallel(n_jobs=2)  # batch_size="auto" asks the backend, as GridSearchCV does
            with outer:
                first = outer(joblib.delayed(abs)(-i) for i in range(10))
                inner = joblib.Parallel(n_jobs=2)(joblib.delayed(abs)(-i) for i in range(10))
                again = outer(joblib.delayed(abs)(-i) for i in range(10))
            return first, inner, again

    kind, got = _in_thread(run, timeout=120)
    assert kind == "ok", got
    assert got == (list(range(10)),) * 3
