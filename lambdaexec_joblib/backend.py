"""``LambdaBackend``: a joblib parallel backend that runs batches of tasks on a ``LambdaExecutor``.

One executor is created when the backend is first configured, reused by every ``Parallel`` call
made under the same ``parallel_backend("lambda", ...)`` block (so workers start only once), and
shut down when that block's backend object is released. A ``Parallel`` call made inside a task
runs in that task's worker, never on other workers: on threads at the first nesting level and
sequentially deeper (joblib's ``ParallelBackendBase.get_nested_backend``, as loky does), and
``parallel_backend("lambda")`` entered inside a task runs sequentially.
"""

from __future__ import annotations

import concurrent.futures
import copy
import functools
import os
import threading
import weakref
from typing import Any, Callable

from joblib._parallel_backends import (
    AutoBatchingMixin,
    FallbackToBackend,
    ParallelBackendBase,
    SequentialBackend,
)

from lambdaexec import LambdaExecutor, load_config
from lambdaexec.future import LambdaFuture


def in_worker() -> bool:
    """Whether this process is a lambdaexec worker (the worker handler sets the variable)."""
    return os.environ.get("LAMBDAEXEC_IN_WORKER") == "1"


def _run_batch(batch: Callable[[], list]) -> list:
    """Run one of joblib's ``BatchedCalls`` in a worker.

    It is submitted as the argument of this one module-level function (pickled by reference),
    so the batches submitted together travel as one job with one upload.
    """
    return batch()


def _gathered(parts: list[concurrent.futures.Future]) -> concurrent.futures.Future:
    """One future for a batch run as one call per task: the tasks' results in order, or the
    first task's exception (a cancelled task's ``CancelledError``)."""
    out: concurrent.futures.Future = concurrent.futures.Future()
    out.set_running_or_notify_cancel()
    left = [len(parts)]
    lock = threading.Lock()

    def done(part: concurrent.futures.Future) -> None:
        exc = concurrent.futures.CancelledError() if part.cancelled() else part.exception()
        with lock:
            left[0] -= 1
            last = left[0] == 0
            if out.done():
                return
            if exc is not None:
                out.set_exception(exc)
            elif last:
                out.set_result([p.result() for p in parts])

    for part in parts:
        part.add_done_callback(done)
    if not parts:
        out.set_result([])
    return out


def _release(executor: LambdaExecutor) -> None:
    executor.shutdown(wait=False)


def _detached(exc: BaseException) -> BaseException:
    """A copy of ``exc`` (same type, args and remote cause) for joblib to raise.

    Raising adds the raiser's frames to an exception's traceback; raising a copy keeps the
    executor's future from holding those frames (and the ``Parallel`` call in them) alive.
    """
    try:
        twin = copy.copy(exc)
    except Exception:
        return exc
    if type(twin) is not type(exc):
        return exc
    twin.__cause__, twin.__traceback__ = exc.__cause__, None
    return twin


def _relay(proxy_ref: weakref.ref, inner: concurrent.futures.Future) -> None:
    """Copy the outcome of the executor's future to joblib's proxy future, if joblib still wants it."""
    proxy = proxy_ref()
    if proxy is None or not proxy.set_running_or_notify_cancel():
        return
    if inner.cancelled():
        proxy.set_exception(concurrent.futures.CancelledError("the batch was cancelled"))
    elif inner.exception() is not None:
        proxy.set_exception(_detached(inner.exception()))
    else:
        proxy.set_result(inner.result())


class LambdaBackend(AutoBatchingMixin, ParallelBackendBase):
    """joblib backend ``"lambda"``: each batch of tasks is one call on a :class:`LambdaExecutor`.

    Keywords given to ``parallel_backend("lambda", ...)`` are executor settings
    (``max_workers``, ``storage``, ``bucket``, ...), ``initializer``/``initargs`` (run once
    in each worker, as ``LambdaExecutor`` runs them; also accepted by ``Parallel(...)``, as
    loky accepts them), or ``executor=`` an existing executor, which is then used as is and
    never shut down by the backend.
    ``n_jobs=-1`` means the executor's concurrency (``max_workers``).
    """

    default_n_jobs = -1
    supports_retrieve_callback = True
    supports_sharedmem = False
    uses_threads = False

    def __init__(self, nesting_level: int | None = None, inner_max_num_threads: int | None = None,
                 executor: LambdaExecutor | None = None, initializer: Callable | None = None,
                 initargs: tuple = (), **executor_options: Any):
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads)
        if executor is not None and initializer is not None:
            raise ValueError("give the initializer to the LambdaExecutor passed as executor=, not to the backend")
        self._options = executor_options
        self._init: tuple[Callable | None, tuple] = (initializer, tuple(initargs))
        self._config = executor.config if executor is not None else load_config(executor_options)
        self._executor = executor
        self._owned = executor is None
        self._lock = threading.Lock()
        self._inflight: set[LambdaFuture] = set()
        self.parallel = None
        #: the ``Parallel`` calls using this backend, innermost last: a ``Parallel`` run inside
        #: another's dispatch (a nested ``GridSearchCV.fit`` in a custom ``_run_search``) shares
        #: the backend of ``parallel_config``, and must hand the outer call back when it ends
        self._parallels: list[Any] = []

    @property
    def executor(self) -> LambdaExecutor:
        """The executor batches run on (created on first use)."""
        with self._lock:
            if self._executor is None or (self._owned and self._executor._shutdown):
                self._executor = LambdaExecutor(initializer=self._init[0], initargs=self._init[1],
                                                **self._options)
                self._finalizer = weakref.finalize(self, _release, self._executor)
            return self._executor

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """``n_jobs`` as joblib means it, with -1 being the executor's ``max_workers``."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if in_worker():
            return 1
        if n_jobs is None:
            n_jobs = self.default_n_jobs
        if n_jobs < 0:
            return max(self._config.resolved_workers() + 1 + n_jobs, 1)
        return n_jobs

    def configure(self, n_jobs: int | None = 1, parallel: Any = None, prefer: str | None = None,
                  require: str | None = None, **backend_kwargs: Any) -> int:
        """Prepare for one ``Parallel`` call; return how many batches may run at once."""
        if in_worker() or n_jobs == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        self._use_initializer(backend_kwargs.get("initializer"), tuple(backend_kwargs.get("initargs") or ()))
        self._parallels.append(parallel)
        self.parallel = parallel
        n = self.effective_n_jobs(n_jobs)
        self.executor  # noqa: B018  (start the workers now, not on the first batch)
        return n

    def _use_initializer(self, initializer: Callable | None, initargs: tuple) -> None:
        """Make the executor's workers run ``initializer(*initargs)`` (``Parallel``'s keywords)."""
        current, args = self._init
        if initializer is None or (initializer is current and len(initargs) == len(args)
                                   and all(a is b for a, b in zip(initargs, args))):
            return
        if not self._owned:
            raise ValueError("Parallel(initializer=...) cannot change the initializer of the "
                             "LambdaExecutor given as executor=: give it to that executor")
        with self._lock:
            self._init = (initializer, initargs)
            old, self._executor = self._executor, None  # the next use starts workers with it
        if old is not None:
            old.shutdown(wait=False)

    def submit(self, func: Callable[[], list], callback: Callable | None = None) -> concurrent.futures.Future:
        """Run one batch remotely; ``callback(future)`` fires when it is done.

        joblib gets a proxy future that the executor's future completes through a weak
        reference: the executor may keep its futures a while, and they must not keep this
        backend (and so its workers) alive after the ``parallel_backend`` block has ended.
        """
        proxy: concurrent.futures.Future = concurrent.futures.Future()
        if callback is not None:
            proxy.add_done_callback(callback)
        tasks = getattr(func, "items", None) if self._config.cache else None
        try:
            if tasks is not None:  # cache=True: one call per task, so each task is found in the cache
                # however joblib batches them this time (its batch sizes adapt to timing)
                parts = [self.executor.submit(f, *args, **kwargs) for f, args, kwargs in tasks]
                inner = _gathered(parts)
            else:
                inner = self.executor.submit(_run_batch, func)
        except Exception as err:  # e.g. an argument that cannot be pickled
            # joblib may be submitting from a completion callback on the executor's thread,
            # where a raise would be logged and dropped (and Parallel would wait forever): the
            # error goes to Parallel through the batch's future instead, as loky's does
            proxy.set_running_or_notify_cancel()
            proxy.set_exception(err)
            return proxy
        inflight = self._inflight
        for part in parts if tasks is not None else (inner,):
            inflight.add(part)
            part.add_done_callback(inflight.discard)
        inner.add_done_callback(functools.partial(_relay, weakref.ref(proxy)))
        return proxy

    def retrieve_result_callback(self, future: concurrent.futures.Future) -> list:
        """The batch's results; a task's exception re-raises with the remote traceback as cause."""
        return future.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Stop the batches of a ``Parallel`` call that failed, timed out or was closed early.

        As joblib asks ("abort any running tasks ... to spare computation resources") and loky
        does, the workers running its batches are stopped and the next call gets new ones, on
        an executor the backend made, when no other ``Parallel`` call is using it. Otherwise
        (``executor=`` given, or an outer call's batches in flight) the batches that have not
        started are cancelled and the running ones finish.
        """
        inflight, self._inflight = self._inflight, set()
        with self._lock:
            executor = self._executor if self._owned and len(self._parallels) <= 1 else None
            if executor is not None:
                self._executor = None  # the next use starts a new one
        if executor is not None:
            self._finalizer.detach()  # the old executor is not kept alive until the backend goes
            executor._engine.abort()  # kills its workers; their futures fail, none waits forever
        else:
            for future in list(inflight):
                future.cancel()
        self.reset_batch_stats()

    def terminate(self) -> None:
        """End of one ``Parallel`` call: the executor stays up for the next one."""
        self.reset_batch_stats()
        if self._parallels:
            self._parallels.pop()
        # the outer Parallel again, if any; else None (no cycle: the backend is released as soon
        # as its block ends)
        self.parallel = self._parallels[-1] if self._parallels else None
