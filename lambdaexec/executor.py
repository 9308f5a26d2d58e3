"""``LambdaExecutor``: a ``concurrent.futures.Executor`` whose calls run on stateless workers.

This module is the public face: it serializes each call at ``submit`` (so a bad argument is
refused there) and hands it to its :mod:`~lambdaexec.runtime.engine`, which uploads calls as jobs and
owns the threads; the monitor and the invoker do the rest.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import concurrent.futures.thread  # noqa: F401  (registers its exit hook before ours: see the end)
import functools
import itertools
import threading
import time
import uuid
import weakref
from typing import Any, Callable, Iterable, Iterator

from lambdaexec import dataflow, iterative
from lambdaexec.config import Config, load_config
from lambdaexec.errors import ConfigError
from lambdaexec.future import LambdaFuture
from lambdaexec.invokers.base import Invoker
from lambdaexec.observe import watchers_for
from lambdaexec.runtime import ledger
from lambdaexec.runtime.engine import Engine, shutdown_all
from lambdaexec.runtime.monitor import Monitor
from lambdaexec.storage import Storage, open_storage, signed
from lambdaexec.wire import serialize
from lambdaexec.wire.function_pickles import FunctionPickles


def _make_invoker(config: Config, max_tasks_per_child: int | None, storage: Storage) -> Invoker:
    if config.backend == "lambda":
        from lambdaexec.aws.invoker import LambdaInvoker

        return LambdaInvoker(config, storage=storage)
    from lambdaexec.invokers.environment import worker_environment
    from lambdaexec.invokers.local import LocalInvoker

    env = worker_environment({config.storage, config.shuffle_storage or config.storage}, config.worker_env)
    return LocalInvoker(config.resolved_workers(), config.timeout, max_tasks_per_child, config.memory, env)


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
        if max_workers is not None and max_workers <= 0:  # as ProcessPoolExecutor (the setting's 0: one per core)
            raise ConfigError(f"max_workers must be greater than 0, got {max_workers}: leave it out (or None) "
                              "for one worker per core")
        if initializer is not None and not callable(initializer):  # as the standard library's executors
            raise TypeError(f"initializer must be a callable, got {initializer!r}")
        if max_tasks_per_child is not None and max_tasks_per_child < 1:
            raise ValueError("max_tasks_per_child must be >= 1")
        self.config = load_config({"max_workers": max_workers, **settings})
        unsigned = open_storage(self.config.storage_spec())
        unsigned.check()
        self.executor_id = uuid.uuid4().hex[:12]
        secret = signed.new_secret()  # to workers in the events, never to storage: storage/signed.py
        signed.save(self.executor_id, secret)
        self.storage = signed.SignedStorage(unsigned, secret)
        self.prefix = f"{self.config.prefix}/{self.executor_id}"
        self._init_key = ""
        if initializer is not None:
            self._init_key = f"{self.prefix}/init"
            init = serialize.dumps_function((initializer, tuple(initargs)))
            self.storage.put(self._init_key, init)
        self._monitor = Monitor(self.storage, _make_invoker(self.config, max_tasks_per_child, self.storage),
                                self.config, watchers_for(self.config, unsigned, self.executor_id))
        if self._init_key:  # uploaded again should the store lose it (runtime/recovery.py)
            self._monitor.recovery.keep_init(self._init_key, init)
        self._engine = Engine(self.config, self.prefix, self._init_key, self._monitor)
        self._pickles = FunctionPickles()  # a function submitted again, unchanged: not pickled again
        # dropped without shutdown: the engine finishes the submitted calls, then stops the workers
        self._finalizer = weakref.finalize(self, self._engine.shutdown, False)
        self._finalizer.atexit = False  # the exit hook below waits for every engine instead

    # --- submitting -----------------------------------------------------------------------
    def _function_blob(self, fn: Callable) -> bytes:
        memo = self._engine.memo
        if memo is not None and memo[0] is fn:
            return memo[1]
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        blob = self._pickles.get(fn)
        if blob is None:
            blob = serialize.dumps_function(fn)
            self._pickles.put(fn, blob)
        self._engine.memo = (fn, blob)
        self._engine.name(blob, fn)
        return blob

    @property
    def _shutdown(self) -> bool:
        return self._engine.closing

    @property
    def _broken(self) -> str | bool:
        """Why this executor can run no more calls (its initializer failed), else False: as the
        standard library's executors' ``_broken``."""
        broken = self._monitor.broken
        return False if broken is None else str(broken)

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> LambdaFuture:
        """Schedule ``fn(*args, **kwargs)``; return its future.

        Raises :class:`~lambdaexec.errors.UnpicklableError` at once, naming the offending
        object, if the function or an argument cannot be serialized.
        """
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        blob = self._function_blob(fn)
        future = LambdaFuture(time.time())
        self._engine.enqueue([(blob, serialize.dumps_call(args, kwargs), future)])
        return future

    def call_async(self, fn: Callable, data: Any) -> LambdaFuture:
        """``fn(data)``'s future: PyWren's ``call_async``, one-argument :meth:`submit`."""
        return self.submit(fn, data)

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
            self._engine.enqueue(batch)
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

    # --- operators (each a function of the executor, in its own module) -------------------
    def broadcast(self, obj: Any) -> iterative.Broadcast:
        """Store ``obj`` once; calls read ``handle.value`` once per worker (:func:`~lambdaexec.iterative.broadcast`)."""
        return iterative.broadcast(self, obj)

    def iterate(self, step: Callable[[Any, int], Any], state: Any, rounds: int, *,
                until: Callable[[Any, int], bool] | None = None, resume: str | None = None) -> Any:
        """``state = step(state, r)`` per round, each checkpointed (:func:`~lambdaexec.iterative.iterate`)."""
        return iterative.iterate(self, step, state, rounds, until=until, resume=resume)

    def retry_failed(self, futures: Iterable[concurrent.futures.Future]) -> list[concurrent.futures.Future]:
        """Run the failed calls among ``futures`` again; see :func:`lambdaexec.runtime.ledger.retry_failed`."""
        return ledger.retry_failed(self, futures)

    def reduce(self, fn: Callable[[list], Any], futures: Iterable[concurrent.futures.Future]) -> LambdaFuture:
        """``fn(results)`` on one worker once ``futures`` are done: :func:`lambdaexec.dataflow.reduce`."""
        return dataflow.reduce(self, fn, futures)

    def map_reduce(self, map_fn: Callable, iterable: Iterable, reduce_fn: Callable, *, reducers: int = 1,
                   combine: Callable | None = None, partition: Callable | None = None) -> LambdaFuture:
        """MapReduce with a shuffle through storage: :func:`lambdaexec.dataflow.map_reduce`."""
        return dataflow.map_reduce(self, map_fn, iterable, reduce_fn, reducers=reducers, combine=combine,
                                   partition=partition)

    def sort(self, chunks: Iterable, output: str, *, key: Callable | None = None, record_size: int | None = None,
             partitions: int | None = None) -> list[str]:
        """Terasort-shaped sort of ``chunks`` into objects under ``output``: :func:`lambdaexec.dataflow.sort`."""
        return dataflow.sort(self, chunks, output, key=key, record_size=record_size, partitions=partitions)

    # --- shutting down --------------------------------------------------------------------
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work; with ``wait``, return once every call has finished.

        ``cancel_futures`` cancels every call that has not started. Without ``wait`` the
        executor finishes its calls and releases its workers in the background.
        """
        self._finalizer.detach()
        self._engine.shutdown(wait, cancel_futures)


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
    """Yield results in order; on a timeout or when closed early, cancel what is left.

    As the standard library's, it keeps no reference to a result it has yielded."""
    try:
        futures.reverse()
        while futures:
            yield _result_or_cancel(futures.pop(), None if end_time is None else end_time - time.monotonic())
    finally:
        for f in futures:
            f.cancel()


def _result_or_cancel(future: concurrent.futures.Future, timeout: float | None) -> Any:
    try:
        try:
            return future.result(timeout)
        finally:
            future.cancel()
    finally:
        del future  # the frame of a raised exception must not hold the future (and its result)


# As the stdlib executors do, finish before the interpreter refuses new threads: a plain
# ``atexit`` hook runs too late. Registered after ``ThreadPoolExecutor``'s own hook so that it
# runs before it (they run in reverse), while the monitor's and boto3's thread pools still work.
getattr(threading, "_register_atexit", atexit.register)(shutdown_all)
