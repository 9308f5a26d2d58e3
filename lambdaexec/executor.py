"""``LambdaExecutor``: a ``concurrent.futures.Executor`` whose calls run on stateless workers.

Submits go to a pending list; a flusher thread takes everything pending at once and uploads it
as one job per function (the function once, by content hash; all inputs in one object with byte
ranges), so the many one-at-a-time submits of joblib or dask cost a few uploads, not one each.
When the flusher is idle the first submit goes out at once: there is no batching delay.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import concurrent.futures.thread  # noqa: F401  (registers its exit hook before ours: see the end)
import functools
import hashlib
import itertools
import threading
import time
import uuid
import weakref
from typing import Any, Callable, Iterable, Iterator

from lambdaexec import serialize
from lambdaexec.config import Config, load_config
from lambdaexec.future import LambdaFuture
from lambdaexec.invokers.base import Invoker
from lambdaexec.monitor import Job, Monitor
from lambdaexec.storage import open_storage

_live: weakref.WeakSet = weakref.WeakSet()


def _make_invoker(config: Config, max_tasks_per_child: int | None) -> Invoker:
    if config.backend == "lambda":
        from lambdaexec.invokers.aws_lambda import LambdaInvoker

        return LambdaInvoker(config)
    from lambdaexec.invokers.local import LocalInvoker

    return LocalInvoker(config.resolved_workers(), config.timeout, max_tasks_per_child)


def _run_chunk(fn: Callable, chunk: list[tuple]) -> list:
    return [fn(*args) for args in chunk]


class LambdaExecutor(concurrent.futures.Executor):
    """Runs calls on local worker processes (the default) or AWS Lambda, through storage.

    A drop-in for ``ProcessPoolExecutor``::

        from lambdaexec import LambdaExecutor

        with LambdaExecutor() as ex:
            print(list(ex.map(pow, [2, 3, 4], [5, 5, 5])))  # [32, 243, 1024]

    ``max_workers``, ``backend``, ``storage`` and every other setting of
    :class:`lambdaexec.config.Config` may be given as keywords; what is not given comes from
    ``LAMBDAEXEC_*`` environment variables, then the config file, then defaults.
    ``initializer(*initargs)`` runs once in each worker before its first call; local workers
    are replaced after ``max_tasks_per_child`` calls when it is set (Lambda recycles its own).
    ``mp_context`` is accepted for compatibility and ignored: workers always start as fresh
    interpreters, as Lambda's do.
    """

    def __init__(self, max_workers: int | None = None, mp_context: Any = None,
                 initializer: Callable | None = None, initargs: tuple = (), *,
                 max_tasks_per_child: int | None = None, **settings: Any):
        if max_tasks_per_child is not None and max_tasks_per_child < 1:
            raise ValueError("max_tasks_per_child must be >= 1")
        self.config = load_config({"max_workers": max_workers, **settings})
        self.storage = open_storage(self.config.storage_spec())
        self.storage.check()
        self.executor_id = uuid.uuid4().hex[:12]
        self.prefix = f"{self.config.prefix}/{self.executor_id}"
        self._init_key = ""
        if initializer is not None:
            self._init_key = f"{self.prefix}/init"
            self.storage.put(self._init_key, serialize.dumps_function((initializer, tuple(initargs))))
        self._jobs = itertools.count()
        self._funcs_uploaded: set[str] = set()
        self._pending: list[tuple[bytes, list[memoryview], LambdaFuture]] = []
        self._flushing: list[tuple[bytes, list[memoryview], LambdaFuture]] = []  # being uploaded
        self._memo: tuple[Any, bytes] | None = None
        self._cond = threading.Condition()
        self._shutdown = False
        self._closed = threading.Event()
        self._monitor = Monitor(self.storage, _make_invoker(self.config, max_tasks_per_child), self.config)
        self._flusher = threading.Thread(target=self._flush_loop, name="lambdaexec-flush", daemon=True)
        self._flusher.start()
        _live.add(self)

    # --- submitting -----------------------------------------------------------------------
    def _function_blob(self, fn: Callable) -> bytes:
        memo = self._memo
        if memo is not None and memo[0] is fn:
            return memo[1]
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        blob = serialize.dumps_function(fn)
        self._memo = (fn, blob)
        return blob

    def _enqueue(self, items: list[tuple[bytes, list[memoryview], LambdaFuture]]) -> None:
        with self._cond:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._pending.extend(items)
            self._cond.notify()

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> LambdaFuture:
        """Schedule ``fn(*args, **kwargs)``; return its future.

        Raises :class:`~lambdaexec.errors.UnpicklableError` at once, naming the offending
        object, if the function or an argument cannot be serialized.
        """
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        blob = self._function_blob(fn)
        future = LambdaFuture(time.time())
        self._enqueue([(blob, serialize.dumps_call(args, kwargs), future)])
        return future

    def map_futures(self, fn: Callable, *iterables: Iterable, chunksize: int = 1) -> list[LambdaFuture]:
        """Like :meth:`map`, but return every item's future at once, in order.

        >>> with LambdaExecutor() as ex:  # doctest: +SKIP
        ...     futures = ex.map_futures(abs, [-1, -2])
        ...     [f.result() for f in futures]
        [1, 2]
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        items = list(zip(*iterables))
        now = time.time()
        if chunksize == 1:
            blob = self._function_blob(fn)
            futures = [LambdaFuture(now) for _ in items]
            batch = []
            for args, f in zip(items, futures):
                batch.append((blob, serialize.dumps_call(args, {}), f))
            self._enqueue(batch)
            return futures
        chunks = [items[i : i + chunksize] for i in range(0, len(items), chunksize)]
        outer = self.map_futures(functools.partial(_run_chunk, fn), chunks)
        futures = []
        for chunk_future, chunk in zip(outer, chunks):
            inner = [LambdaFuture(now) for _ in chunk]
            chunk_future.add_done_callback(functools.partial(_spread, inner))
            futures.extend(inner)
        return futures

    def map(self, fn: Callable, *iterables: Iterable, timeout: float | None = None,
            chunksize: int = 1) -> Iterator:
        """``fn`` over ``zip(*iterables)``, results in order, as ``Executor.map`` defines it.

        ``timeout`` counts from this call; ``chunksize`` items run in one worker call.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        end_time = None if timeout is None else timeout + time.monotonic()
        if chunksize == 1:
            futures = self.map_futures(fn, *iterables)
        else:
            items = list(zip(*iterables))
            chunks = [items[i : i + chunksize] for i in range(0, len(items), chunksize)]
            futures = self.map_futures(functools.partial(_run_chunk, fn), chunks)
        results = _results_in_order(futures, end_time)
        return results if chunksize == 1 else itertools.chain.from_iterable(results)

    # --- the flusher thread ---------------------------------------------------------------
    def _flush_loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed_flag():
                    self._cond.wait()
                batch, self._pending, self._memo = self._pending, [], None
                if not batch:
                    return
                self._flushing = batch  # so shutdown(cancel_futures=True) sees these calls too
            for blob, group in itertools.groupby(batch, key=lambda item: item[0]):
                self._start_job(blob, [(chunks, f) for _, chunks, f in group])
            with self._cond:
                self._flushing = []  # every call is now the monitor's
            del batch, group  # uploaded: do not hold every call's inputs while waiting

    def _closed_flag(self) -> bool:
        return self._shutdown and not self._pending

    def _start_job(self, blob: bytes, calls: list[tuple[list[memoryview], LambdaFuture]]) -> None:
        job_id = f"{next(self._jobs):06d}"
        prefix = f"{self.prefix}/{job_id}"
        try:
            func_key = f"{self.prefix}/funcs/{hashlib.sha256(blob).hexdigest()[:32]}"
            if func_key not in self._funcs_uploaded:
                self.storage.put(func_key, blob)
                self._funcs_uploaded.add(func_key)
            ranges, chunks, offset = [], [], 0
            for call_chunks, _ in calls:
                size = serialize.size_of(call_chunks)
                ranges.append((offset, offset + size))
                chunks.extend(call_chunks)
                offset = serialize.pad(chunks, offset + size)  # each call's inputs start aligned
            args_key = f"{prefix}/args"
            self.storage.put(args_key, chunks)
        except Exception as err:
            for _, f in calls:
                if f.set_running_or_notify_cancel():
                    f.set_exception(err)
            return
        futures = [f for _, f in calls]
        for i, f in enumerate(futures):
            f.call_id = f"{job_id}/{i}"
        self._monitor.add(Job(prefix, func_key, args_key, ranges, futures, init_key=self._init_key))

    # --- shutting down --------------------------------------------------------------------
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work; with ``wait``, return once every call has finished.

        ``cancel_futures`` cancels every call that has not started. Without ``wait`` the
        executor finishes its calls and releases its workers in the background.
        """
        with self._cond:
            self._shutdown = True
            pending = [f for _, _, f in self._pending + self._flushing]
            self._cond.notify()
        if cancel_futures:
            for f in pending + self._monitor.outstanding():
                f.cancel()
        if wait:
            self._finish()
        else:
            threading.Thread(target=self._finish, name="lambdaexec-shutdown", daemon=True).start()

    def _finish(self) -> None:
        self._flusher.join()
        while True:
            outstanding = self._monitor.outstanding()
            if not outstanding:
                break
            concurrent.futures.wait(outstanding)
        with self._cond:
            if self._closed.is_set():
                return
            self._closed.set()
        self._monitor.stop()
        self._monitor.invoker.close()
        if not self.config.keep_data:
            self.storage.delete(self.prefix + "/")
        self.storage.close()
        _live.discard(self)


def _spread(inner: list[LambdaFuture], chunk_future: concurrent.futures.Future) -> None:
    """Complete each item's future from its chunk's future."""
    exc = None if chunk_future.cancelled() else chunk_future.exception()
    values = None if exc or chunk_future.cancelled() else chunk_future.result()
    for i, f in enumerate(inner):
        f.stats.update(getattr(chunk_future, "stats", {}))
        f.stdout, f.stderr = getattr(chunk_future, "stdout", ""), getattr(chunk_future, "stderr", "")
        if not f.set_running_or_notify_cancel():
            continue
        if chunk_future.cancelled():
            f.set_exception(concurrent.futures.CancelledError("its chunk was cancelled"))
        elif exc is not None:
            f.set_exception(exc)
        else:
            f.set_result(values[i])


def _results_in_order(futures: list, end_time: float | None) -> Iterator:
    """Yield results in order; on a timeout or when closed early, cancel what is left."""
    try:
        futures.reverse()
        while futures:
            f = futures.pop()
            try:
                if end_time is None:
                    yield f.result()
                else:
                    yield f.result(end_time - time.monotonic())
            finally:
                f.cancel()
    finally:
        for f in futures:
            f.cancel()


def _shutdown_all() -> None:
    """At exit, let every executor finish its calls, as ``ProcessPoolExecutor`` does."""
    for ex in list(_live):
        ex.shutdown(wait=True)


# As the stdlib executors do, finish before the interpreter refuses new threads: a plain
# ``atexit`` hook runs too late. Registered after ``ThreadPoolExecutor``'s own hook so that it
# runs before it (they run in reverse), while the monitor's and boto3's thread pools still work.
getattr(threading, "_register_atexit", atexit.register)(_shutdown_all)
