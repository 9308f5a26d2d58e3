"""``LambdaExecutor``: a ``concurrent.futures.Executor`` whose calls run on stateless workers.

This module is the public face: it serializes each call at ``submit`` (so a bad argument is
refused there) and hands it to its :mod:`~lambdaexec.runtime.engine`, which uploads calls as jobs and
owns the threads; the monitor and the invoker do the rest.
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures
import concurrent.futures.process
import concurrent.futures.thread  # noqa: F401  (registers its exit hook before ours: see the end)
import functools
import threading
import time
import uuid
import weakref
from typing import Any, Callable, Iterable, Iterator, Sequence

from lambdaexec import dataflow, iterative
from lambdaexec.config import Config, load_config
from lambdaexec.errors import ConfigError
from lambdaexec.future import LambdaFuture
from lambdaexec.invokers.base import Invoker
from lambdaexec.observe import watchers_for
from lambdaexec.runtime import buffered_map, ledger
from lambdaexec.runtime.engine import Engine, shutdown_all
from lambdaexec.runtime.monitor import Monitor
from lambdaexec.storage import Storage, open_storage, signed
from lambdaexec.wire import serialize
from lambdaexec.wire.function_pickles import FunctionPickles

#: the operations of :meth:`LambdaExecutor._force_shutdown`, named as CPython 3.14's ``concurrent.futures.process``
_TERMINATE = getattr(concurrent.futures.process, "_TERMINATE", "terminate")
_KILL = getattr(concurrent.futures.process, "_KILL", "kill")


def _make_invoker(config: Config, max_tasks_per_child: int | None, storage: Storage) -> Invoker:
    if config.backend == "lambda":
        from lambdaexec.aws.invoker import LambdaInvoker

        return LambdaInvoker(config, storage=storage)
    from lambdaexec.invokers.environment import worker_environment
    from lambdaexec.invokers.local import LocalInvoker

    env = worker_environment({config.storage, config.shuffle_storage or config.storage}, config.worker_env)
    return LocalInvoker(config.resolved_workers(), config.timeout, max_tasks_per_child, config.memory, env)


def _no_workers(max_workers: Any) -> None:
    raise ConfigError(f"max_workers must be greater than 0, got {max_workers!r}: leave it out (or None) "
                      "for one worker per core")


def _run_chunk(fn: Callable, chunk: list[tuple]) -> list:
    return [fn(*args) for args in chunk]


_run_chunk.lambdaexec_wraps = 0  # type: ignore[attr-defined]  # the job record names ``fn``, not this


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
        if initializer is not None and not callable(initializer):  # as the standard library's executors
            raise TypeError(f"initializer must be a callable, got {initializer!r}")
        if max_tasks_per_child is not None and (
                isinstance(max_tasks_per_child, bool) or not isinstance(max_tasks_per_child, int)
                or max_tasks_per_child < 1):
            raise ConfigError(f"keyword argument: max_tasks_per_child must be >= 1 (an int; or None: never "
                              f"replace workers), got {max_tasks_per_child!r}")
        if isinstance(max_workers, (int, float)) and not isinstance(max_workers, bool) and max_workers <= 0:
            _no_workers(max_workers)  # as ProcessPoolExecutor (the setting's 0 means one per core)
        # keywords are checked as the same settings from the environment are (ConfigError naming the key)
        self.config = load_config({"max_workers": max_workers, **settings})
        if max_workers is not None and self.config.max_workers <= 0:
            _no_workers(max_workers)
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

    def _submit_many(self, fn: Callable, items: Sequence[tuple]) -> list[LambdaFuture]:
        """Submit ``fn(*args)`` for each ``args`` of ``items`` at once (one job); their futures."""
        if not items:
            return []
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        blob = self._function_blob(fn)
        now = time.time()
        futures = [LambdaFuture(now) for _ in items]
        self._engine.enqueue([(blob, serialize.dumps_call(args, {}), f) for args, f in zip(items, futures)])
        return futures

    def map_futures(self, fn: Callable, *iterables: Iterable, chunksize: int = 1,
                    buffersize: int | None = None) -> list[LambdaFuture] | Iterator[LambdaFuture]:
        """Like :meth:`map`, but give each item's future, in order.

        Without ``buffersize``: every call is submitted now and the list of futures returned.
        With ``buffersize`` (an int > 0): an iterator that submits the first ``buffersize`` calls
        now and one more each time it yields a future, as :meth:`map` does with results;
        closing it cancels the calls it submitted and has not yielded.

        >>> with LambdaExecutor() as ex:  # doctest: +SKIP
        ...     futures = ex.map_futures(abs, [-1, -2])
        ...     [f.result() for f in futures]
        [1, 2]
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        buffered_map.check_buffersize(buffersize)
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if chunksize == 1:
            window = buffered_map.Window(self, fn, iter(zip(*iterables)), buffersize, self._submit_many)
            return list(window.fs) if buffersize is None else buffered_map.Lazy(
                buffered_map.futures_in_order(window), window)
        sizes: collections.deque[int] = collections.deque()  # each chunk's length, in submit order
        chunks = (sizes.append(len(c)) or (list(c),) for c in buffered_map.batched(zip(*iterables), chunksize))
        window = buffered_map.Window(self, functools.partial(_run_chunk, fn), chunks, buffersize, self._submit_many)
        spread = _spread_chunks(buffered_map.futures_in_order(window), sizes)
        return list(spread) if buffersize is None else buffered_map.Lazy(spread, window)

    def map(self, fn: Callable, *iterables: Iterable, timeout: float | None = None,
            chunksize: int = 1, buffersize: int | None = None) -> Iterator:
        """``fn`` over ``zip(*iterables)``, results in order, as ``Executor.map`` defines it.

        ``timeout`` counts from this call; ``chunksize`` items run in one worker call. Without
        ``buffersize`` every call is submitted before ``map`` returns. With ``buffersize`` (an
        int > 0, Python 3.14's argument, on every Python), inputs are taken lazily: at most
        ``buffersize`` calls (of ``chunksize`` items) are submitted beyond the results yielded,
        so an endless or huge iterable maps in bounded memory; closing the iterator cancels the
        calls it submitted and has not yielded (:mod:`lambdaexec.runtime.buffered_map`).
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        buffered_map.check_buffersize(buffersize)
        end_time = None if timeout is None else timeout + time.monotonic()
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if chunksize == 1:
            window = buffered_map.Window(self, fn, iter(zip(*iterables)), buffersize, self._submit_many)
            results = buffered_map.results_in_order(window, end_time)
            return results if buffersize is None else buffered_map.Lazy(results, window)
        chunks = ((list(c),) for c in buffered_map.batched(zip(*iterables), chunksize))
        window = buffered_map.Window(self, functools.partial(_run_chunk, fn), chunks, buffersize, self._submit_many)
        flat = _flatten(buffered_map.results_in_order(window, end_time))
        return flat if buffersize is None else buffered_map.Lazy(flat, window)

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

    def terminate_workers(self) -> None:
        """Stop everything now, as Python 3.14's ``ProcessPoolExecutor.terminate_workers``: the
        executor shuts down (no more ``submit``), queued calls are cancelled, and running calls
        are stopped: local workers (and what their calls started) get SIGTERM, then SIGKILL after
        2 s if still alive. On AWS Lambda a call cannot be stopped from outside: running calls'
        futures fail at once with :class:`~lambdaexec.errors.CallAbandonedError`, their results
        are discarded, and the job's data is deleted. When it returns, no future of this
        executor is pending (running ones fail with :class:`~lambdaexec.errors.CallStoppedError`,
        a ``BrokenProcessPool``). Harmless on an idle or shut-down executor."""
        self._force_shutdown(operation=_TERMINATE)

    def kill_workers(self) -> None:
        """As :meth:`terminate_workers`, with SIGKILL instead of SIGTERM (3.14's ``kill_workers``)."""
        self._force_shutdown(operation=_KILL)

    def _force_shutdown(self, operation: str) -> None:
        """terminate_workers / kill_workers, by ``operation`` (as CPython 3.14's private method)."""
        if operation not in (_TERMINATE, _KILL):
            raise ValueError(f"Unsupported operation: {operation!r}")
        self._finalizer.detach()
        self._engine.terminate(kill=operation == _KILL, why=f"{operation}_workers()")

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> bool:
        """Leave ``with``: :meth:`shutdown` (waiting for the calls), except on Ctrl-C
        (``KeyboardInterrupt``), which cancels what is queued, kills the running calls' workers,
        deletes the data and says so on stderr, so that the program ends at once."""
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self._finalizer.detach()
            self._engine.interrupted()
            return False
        self.shutdown(wait=True)
        return False


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


def _spread_chunks(chunk_futures: Iterator[LambdaFuture], sizes: collections.deque) -> Iterator[LambdaFuture]:
    """One future per item of each chunk's future, completed from it (see :func:`_spread`);
    closing this cancels the chunks not yielded and the items of the chunk being yielded."""
    inner: list[LambdaFuture] = []
    try:
        for chunk_future in chunk_futures:
            now = time.time()
            items = [LambdaFuture(now) for _ in range(sizes.popleft())]
            chunk_future.add_done_callback(functools.partial(_spread, items))
            del chunk_future
            inner = items[::-1]  # a copy: _spread completes ``items`` in order
            while inner:
                yield inner.pop()
    finally:
        for f in inner:
            f.cancel()
        chunk_futures.close()


def _flatten(chunk_results: Iterator[list]) -> Iterator:
    """The items of each chunk's results, in order; closing this closes ``chunk_results``
    (which cancels the chunks not yielded)."""
    try:
        for values in chunk_results:
            values.reverse()
            while values:
                yield values.pop()
    finally:
        chunk_results.close()


# As the stdlib executors do, finish before the interpreter refuses new threads: a plain
# ``atexit`` hook runs too late. Registered after ``ThreadPoolExecutor``'s own hook so that it
# runs before it (they run in reverse), while the monitor's and boto3's thread pools still work.
getattr(threading, "_register_atexit", atexit.register)(shutdown_all)
