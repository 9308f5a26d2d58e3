"""The concurrent.futures contract, held against LambdaExecutor on local and S3 storage."""

from __future__ import annotations

import concurrent.futures as cf
import gc
import os
import socket
import sys
import threading
import time
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest

import lambdaexec
from lambdaexec import LambdaExecutor


def square(x):
    return x * x


def slow(seconds, value=None):
    time.sleep(seconds)
    return value


def fail(message):
    raise ValueError(message)


def touch_and_sleep(path, seconds):
    open(path, "w").close()
    time.sleep(seconds)


def test_submit_returns_real_futures(executor):
    f = executor.submit(square, 7)
    assert isinstance(f, cf.Future)
    assert f.result(timeout=30) == 49
    assert f.done() and not f.running() and not f.cancelled()


def test_kwargs_and_builtins(executor):
    assert executor.submit(pow, 2, exp=10).result(timeout=30) == 1024
    assert executor.submit(sorted, [3, 1, 2], reverse=True).result(timeout=30) == [3, 2, 1]


def test_map_keeps_order_and_zip_semantics(executor):
    assert list(executor.map(pow, [2, 3, 4, 5], [2, 2, 2])) == [4, 9, 16]
    assert list(executor.map(square, range(50), chunksize=7)) == [x * x for x in range(50)]
    assert list(executor.map(square, [])) == []


def test_map_timeout_raises_timeout_error(executor):
    results = executor.map(slow, [0.0, 6.0], timeout=3)
    assert next(results) is None
    with pytest.raises(cf.TimeoutError):
        next(results)


def test_wait_as_completed_and_callbacks(executor):
    futures = [executor.submit(slow, 0.3 * (3 - i), i) for i in range(3)]
    seen, called = [], threading.Event()
    futures[0].add_done_callback(lambda f: (seen.append(f.result()), called.set()))
    done, not_done = cf.wait(futures, timeout=30)
    assert len(done) == 3 and not not_done
    assert called.wait(5) and seen == [0]
    assert sorted(f.result() for f in cf.as_completed(futures, timeout=30)) == [0, 1, 2]
    late = []
    futures[1].add_done_callback(lambda f: late.append(f.result()))  # already done: runs now
    assert late == [1]


def test_wait_first_exception_returns_when_futures_are_already_done(tmp_path):
    # concurrent.futures.wait holds each future's lock while calling its cancelled() and exception()
    with LambdaExecutor(max_workers=2, storage_path=str(tmp_path)) as ex:
        done_ok, done_failed = ex.submit(square, 2), ex.submit(fail, "boom")
        cf.wait([done_ok, done_failed])
        never = cf.Future()  # in a thread of its own: before the fix, the wait deadlocked on itself
        answer = []
        waiter = threading.Thread(target=lambda: answer.append(cf.wait(
            [done_ok, done_failed, never], timeout=30, return_when=cf.FIRST_EXCEPTION)), daemon=True)
        waiter.start()
        waiter.join(60)
        assert answer, "concurrent.futures.wait(return_when=FIRST_EXCEPTION) did not return"
        assert answer[0].done == {done_ok, done_failed} and answer[0].not_done == {never}


def test_first_exception_wait(executor):
    futures = [executor.submit(slow, 2.0), executor.submit(fail, "boom")]
    done, _ = cf.wait(futures, timeout=30, return_when=cf.FIRST_EXCEPTION)
    assert futures[1] in done


def test_user_exception_reraised_with_remote_traceback(executor):
    f = executor.submit(fail, "bad input 42")
    with pytest.raises(ValueError, match="bad input 42") as info:
        f.result(timeout=30)
    cause = info.value.__cause__
    assert isinstance(cause, lambdaexec.errors.RemoteTraceback)
    assert f'File "{__file__}", line' in cause.tb  # the user's real file, whatever cloudpickle does
    assert "in fail" in cause.tb and "raise ValueError(message)" in cause.tb
    assert isinstance(f.exception(), ValueError)


def test_cancel_pending_call_never_runs(executor, tmp_path):
    # two workers, each prefetches: keep them busy, then cancel the tail of the queue
    busy = [executor.submit(slow, 1.5) for _ in range(6)]
    marker = tmp_path / "ran"
    tail = executor.submit(touch_and_sleep, str(marker), 0)
    assert tail.cancel()
    assert tail.cancelled()
    with pytest.raises(cf.CancelledError):
        tail.result()
    cf.wait(busy, timeout=60)
    time.sleep(0.3)
    assert not marker.exists()
    assert all(f.result() is None for f in busy)


def test_closure_over_numpy_array(executor):
    data = np.arange(1000.0)

    def scaled_sum(k):
        return float(data.sum() * k)

    assert list(executor.map(scaled_sum, [1, 2, 3])) == [499500.0, 999000.0, 1498500.0]


def test_50_mb_argument_and_result(executor):
    big = np.random.default_rng(0).random(50 * 2**20 // 8)
    out = executor.submit(np.multiply, big, 2.0).result(timeout=120)
    assert out.nbytes == big.nbytes
    assert np.array_equal(out, big * 2.0)
    out[0] = 1.0  # results arrive writable, like ProcessPoolExecutor's


def test_2000_tiny_tasks(executor):
    futures = [executor.submit(square, i) for i in range(2000)]
    assert [f.result(timeout=120) for f in futures] == [i * i for i in range(2000)]


def test_stdout_and_stats_are_kept(executor):
    def chatty(x):
        print("working on", x)
        import sys

        print("warning!", file=sys.stderr)
        return x

    f = executor.submit(chatty, 5)
    assert f.result(timeout=30) == 5
    assert f.stdout == "working on 5\n" and f.stderr == "warning!\n"
    s = f.stats
    order = ["submitted", "invoked", "received", "func_start", "func_end", "result_written", "seen"]
    assert all(k in s for k in order)
    assert [s[k] for k in order] == sorted(s[k] for k in order)
    assert s["worker"] and s["bytes_in"] > 0 and s["bytes_out"] > 0
    assert f.attempts == 1


def chatty(x):
    print("working on", x)
    print("warning!", file=sys.stderr)
    return x


def test_what_a_call_prints_is_printed_by_the_client_as_it_finishes(tmp_path, capsys):
    # as ProcessPoolExecutor's workers print on the terminal (the echo_output setting)
    with LambdaExecutor(max_workers=2, storage_path=str(tmp_path / "s"), progress=False) as ex:
        assert ex.submit(chatty, 7).result(timeout=30) == 7
        out, err = capsys.readouterr()  # printed by the time its result is there
        assert out == "working on 7\n" and err == "warning!\n"
    with LambdaExecutor(max_workers=2, storage_path=str(tmp_path / "s"), progress=False, echo_output=False) as ex:
        f = ex.submit(chatty, 8)
        assert f.result(timeout=30) == 8 and f.stdout == "working on 8\n"
    assert capsys.readouterr() == ("", "")


def test_unpicklable_argument_refused_at_submit(executor):
    class Client:
        def __init__(self):
            self.conn = socket.socket()

    client = Client()
    try:
        with pytest.raises(lambdaexec.UnpicklableError, match=r"argument 0 -> attribute \.conn -> socket"):
            executor.submit(square, client)
    finally:
        client.conn.close()


def test_unpicklable_function_refused_at_submit(executor):
    lock = threading.Lock()

    def uses_lock(x):
        with lock:
            return x

    with pytest.raises(lambdaexec.UnpicklableError, match=r"closure variable 'lock' -> _thread.lock"):
        executor.submit(uses_lock, 1)


def test_shutdown_semantics(storage_settings):
    ex = LambdaExecutor(max_workers=1, **storage_settings)
    futures = [ex.submit(slow, 0.2, i) for i in range(3)]
    ex.shutdown(wait=True)
    assert [f.result(timeout=0) for f in futures] == [0, 1, 2]
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(square, 1)
    ex.shutdown()  # idempotent


def test_shutdown_cancel_futures(storage_settings):
    ex = LambdaExecutor(max_workers=1, **storage_settings)
    futures = [ex.submit(slow, 0.5, i) for i in range(8)]
    deadline = time.monotonic() + 60
    while not (futures[0].running() or futures[0].done()) and time.monotonic() < deadline:
        time.sleep(0.01)
    # a call whose inputs are still being uploaded when shutdown comes is cancelled too
    late = ex.submit(slow, 0, np.zeros(2_000_000))
    time.sleep(0.002)
    ex.shutdown(wait=True, cancel_futures=True)
    assert all(f.done() for f in futures)
    assert futures[0].result() == 0
    assert futures[-1].cancelled() and late.cancelled()


def test_executor_dropped_without_shutdown_finishes_and_stops_its_workers(storage_settings):
    # as with ProcessPoolExecutor: the calls already submitted still complete, then the
    # workers go away, without anyone calling shutdown
    ex = LambdaExecutor(max_workers=2, **storage_settings)
    futures = [ex.submit(slow, 0.3, i) for i in range(4)]
    processes = [w.popen for w in getattr(ex._monitor.invoker, "_workers", [])]
    del ex
    gc.collect()
    assert [f.result(timeout=60) for f in futures] == [0, 1, 2, 3]
    deadline = time.monotonic() + 30
    while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(p.poll() is not None for p in processes)


def test_shutdown_waiting_inside_a_done_callback_raises_instead_of_hanging(tmp_path):
    ex = LambdaExecutor(max_workers=2, storage_path=str(tmp_path))
    raised = []

    def shut_down(_):
        try:
            ex.shutdown(wait=True)
        except RuntimeError as err:  # as ThreadPoolExecutor and ProcessPoolExecutor raise there
            raised.append(err)

    first, second = ex.submit(slow, 0.5, 1), ex.submit(slow, 1.5, 2)
    first.add_done_callback(shut_down)
    assert second.result(timeout=30) == 2  # the other call still finishes
    assert len(raised) == 1 and "shutdown(wait=False)" in str(raised[0])
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(square, 1)


def test_context_manager_waits(storage_settings):
    with LambdaExecutor(max_workers=2, **storage_settings) as ex:
        f = ex.submit(slow, 0.3, "done")
    assert f.done() and f.result() == "done"


def test_job_data_deleted_after_results(executor):
    assert sum(executor.map(square, range(20))) == sum(x * x for x in range(20))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = [k for k in executor.storage.list(executor.prefix + "/") if "/funcs/" not in k]
        if not left:
            break
        time.sleep(0.1)
    assert left == []


def test_keep_data_keeps_results(storage_settings):
    with LambdaExecutor(max_workers=1, keep_data=True, **storage_settings) as ex:
        f = ex.submit(square, 3)
        assert f.result(timeout=30) == 9
        time.sleep(0.3)
        assert any(k.endswith("/calls/0") for k in ex.storage.list(ex.prefix + "/"))
        ex.storage.delete(ex.prefix + "/")


def test_a_large_job_stores_its_inputs_in_parts_and_stays_one_job(storage_settings):
    # the workers start on the first part while the client stores the rest
    with LambdaExecutor(max_workers=2, keep_data=True, **storage_settings) as ex:
        assert list(ex.map(square, range(1000))) == [x * x for x in range(1000)]
        keys = ex.storage.list(ex.prefix + "/")
        ex.storage.delete(ex.prefix + "/")
    args = sorted(k.rsplit("/", 2)[1:] for k in keys if "/args" in k)
    assert args == [["000000", "args"], ["000000", "args.1"], ["000000", "args.2"]]


def test_a_part_that_cannot_be_stored_fails_only_its_calls(tmp_path, monkeypatch):
    with LambdaExecutor(max_workers=2, storage_path=str(tmp_path)) as ex:
        put = ex.storage.put

        def put_failing_part_one(key, data):
            if key.endswith("/args.1"):
                raise lambdaexec.StorageError(f"injected: cannot store {key}")
            return put(key, data)

        monkeypatch.setattr(ex.storage, "put", put_failing_part_one)
        futures = ex.map_futures(square, range(1000))
        cf.wait(futures, timeout=60)
    assert [f.result() for f in futures[:64]] == [x * x for x in range(64)]
    for f in futures[64:]:  # parts 1 and 2: part 2 is not attempted once part 1 failed
        with pytest.raises(lambdaexec.StorageError, match="args.1"):
            f.result()


def test_map_futures_all_at_once(executor):
    futures = executor.map_futures(square, range(10), chunksize=3)
    assert len(futures) == 10 and all(isinstance(f, cf.Future) for f in futures)
    assert lambdaexec.get_all_results(futures, timeout=30) == [x * x for x in range(10)]


def test_result_too_large_is_a_clear_error(storage_settings):
    with LambdaExecutor(max_workers=1, max_result_size=1000, **storage_settings) as ex:
        with pytest.raises(lambdaexec.ResultTooLargeError, match="over max_result_size"):
            ex.submit(bytes, 5000).result(timeout=30)
        assert ex.submit(bytes, 10).result(timeout=30) == bytes(10)


def test_version_mismatch_names_both_versions(executor, monkeypatch):
    monkeypatch.setattr(lambdaexec.wire.serialize, "PYTHON_VERSION", "3.99")
    with pytest.raises(lambdaexec.WorkerEnvironmentError) as info:
        executor.submit(square, 2).result(timeout=30)
    ours = "Python {}.{}".format(*os.sys.version_info[:2])
    assert "Python 3.99" in str(info.value) and ours in str(info.value)


def test_protocol_mismatch_names_both_protocols(executor, monkeypatch):
    # a worker deployed from another lambdaexec release writes objects this client cannot read
    real = lambdaexec.wire.protocol.VERSION
    monkeypatch.setattr(lambdaexec.wire.protocol, "VERSION", "99")
    with pytest.raises(lambdaexec.WorkerEnvironmentError, match=rf"protocol 99\).*\(protocol {real}\)"):
        executor.submit(square, 2).result(timeout=30)


def test_initializer_runs_once_per_worker(storage_settings):
    def init(value):
        os.environ["LAMBDAEXEC_TEST_INIT"] = value

    def read_init():
        return os.environ.get("LAMBDAEXEC_TEST_INIT")

    with LambdaExecutor(max_workers=2, initializer=init, initargs=("ready",), **storage_settings) as ex:
        assert set(ex.map(lambda _: read_init(), range(6))) == {"ready"}


def test_failing_initializer_breaks_calls(storage_settings):
    with LambdaExecutor(max_workers=1, initializer=fail, initargs=("no init",), **storage_settings) as ex:
        with pytest.raises(cf.BrokenExecutor, match="no init"):
            ex.submit(square, 1).result(timeout=30)


def test_failing_initializer_breaks_the_executor_as_process_pool_does(tmp_path, caplog):
    # ProcessPoolExecutor's documented contract: the pending calls and every later submit raise
    # BrokenProcessPool, and the initializer's traceback is logged on "concurrent.futures"
    caplog.set_level("CRITICAL", logger="concurrent.futures")
    with LambdaExecutor(max_workers=1, initializer=fail, initargs=("no init",), storage_path=str(tmp_path)) as ex:
        futures = [ex.submit(slow, 0.2, i) for i in range(3)]
        for f in futures:
            with pytest.raises(BrokenProcessPool, match="no init"):
                f.result(timeout=60)
        with pytest.raises(BrokenProcessPool, match="no init"):
            ex.submit(square, 2)
        with pytest.raises(BrokenProcessPool):
            ex.map(square, [1, 2])
    assert any("Exception in initializer" in r.getMessage() and "ValueError: no init" in r.getMessage()
               for r in caplog.records)


class ExitsWhenUnpickled:
    def __reduce__(self):
        return sys.exit, (1,)


def test_a_result_that_exits_when_unpickled_fails_only_its_call(tmp_path):
    with LambdaExecutor(max_workers=1, storage_path=str(tmp_path)) as ex:
        with pytest.raises(lambdaexec.LambdaExecError, match="cannot be unpickled here: SystemExit"):
            ex.submit(ExitsWhenUnpickled).result(timeout=60)
        assert ex.submit(square, 3).result(timeout=60) == 9  # the executor still runs calls


def test_an_initializer_that_is_not_callable_is_refused_at_once(tmp_path):
    with pytest.raises(TypeError, match="initializer must be a callable"):
        LambdaExecutor(max_workers=1, initializer="setup", storage_path=str(tmp_path))


def test_max_workers_below_one_is_a_value_error(tmp_path):
    for number in (0, -1):  # as ProcessPoolExecutor's; only the max_workers *setting* 0 means "one per core"
        with pytest.raises(ValueError, match="max_workers must be greater than 0"):
            LambdaExecutor(max_workers=number, storage_path=str(tmp_path))


def test_unpicklable_exception_becomes_remote_error(executor):
    def raise_with_lock():
        err = RuntimeError("holds a lock")
        err.lock = threading.Lock()
        raise err

    with pytest.raises(lambdaexec.RemoteError, match="holds a lock"):
        executor.submit(raise_with_lock).result(timeout=30)


def test_default_executor_and_get_all_results():
    ex = lambdaexec.default_executor()
    assert ex is lambdaexec.default_executor()
    assert lambdaexec.get_all_results([ex.submit(square, i) for i in range(5)]) == [0, 1, 4, 9, 16]
    ex.shutdown()
    assert lambdaexec.default_executor() is not ex
    lambdaexec.default_executor().shutdown()


def test_max_workers_defaults_to_cores():
    assert LambdaExecutor.__init__.__defaults__[0] is None
    assert lambdaexec.load_config({}).resolved_workers() == (os.cpu_count() or 1)


def test_max_tasks_per_child_replaces_workers(storage_settings):
    with LambdaExecutor(max_workers=1, max_tasks_per_child=2, **storage_settings) as ex:
        pids = [ex.submit(os.getpid).result(timeout=30) for _ in range(6)]
    assert len(set(pids)) == 3
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4] == pids[5]


def sum_and_alignment(a):
    return a.sum(), a.ctypes.data % 16, a.flags.aligned


def test_arrays_arrive_aligned_and_reduce_bit_identically(executor):
    rng = np.random.default_rng(1)
    arrays = [rng.random(n) for n in (3, 1001, 250_000)]  # inputs of several sizes share one job
    futures = executor.map_futures(sum_and_alignment, arrays)
    for a, f in zip(arrays, futures):
        total, misalignment, aligned = f.result(timeout=60)
        assert aligned and misalignment == 0
        assert total == a.sum()  # bit for bit: same SIMD path, same summation order
    back = executor.submit(np.copy, arrays[2]).result(timeout=60)
    assert back.flags.aligned and back.ctypes.data % 16 == 0


def test_calls_spread_over_idle_workers(storage_settings):
    with LambdaExecutor(max_workers=2, **storage_settings) as ex:  # submitted while workers start
        futures = ex.map_futures(slow, [1.0, 1.0])
        cf.wait(futures, timeout=60)
    assert len({f.stats["worker"] for f in futures}) == 2  # side by side, not one after the other
