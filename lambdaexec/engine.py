"""The engine behind a ``LambdaExecutor``: its queue of submitted calls, the flusher thread
that uploads them as jobs, and the orderly close.

Submits go to a pending list; the flusher takes everything pending at once and uploads it as
one job per function (the function once, by content hash; all inputs in one object with byte
ranges), so the many one-at-a-time submits of joblib or dask cost a few uploads, not one
each. When the flusher is idle the first submit goes out at once: there is no batching delay.

The engine and its threads hold no reference to the executor, so an executor dropped without
``shutdown`` is garbage-collected, and then its engine finishes the calls already submitted and
releases its workers, as ``ProcessPoolExecutor`` does.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import itertools
import threading
from typing import Any

from lambdaexec import serialize
from lambdaexec.config import Config
from lambdaexec.future import LambdaFuture
from lambdaexec.monitor import Job, Monitor

#: a submitted call: (its function's blob, its serialized arguments, its future)
Call = tuple[bytes, list[memoryview], LambdaFuture]

#: engines not yet closed (strong references: an engine outlives its dropped executor)
_live: set[Engine] = set()


class Engine:
    """Uploads submitted calls as jobs and hands them to ``monitor``; see the module docstring."""

    def __init__(self, config: Config, prefix: str, init_key: str, monitor: Monitor):
        self.config, self.prefix, self.init_key, self.monitor = config, prefix, init_key, monitor
        self.closing = False  # no more submits
        #: the last function submitted and its blob, while its burst is pending (saves pickling it per call)
        self.memo: tuple[Any, bytes] | None = None
        self._jobs = itertools.count()
        self._funcs_uploaded: set[str] = set()
        self._names: dict[bytes, str] = {}  # function blob -> its name, for the job record
        self._pending: list[Call] = []
        self._flushing: list[Call] = []  # taken by the flusher, not yet the monitor's
        self._cond = threading.Condition()
        self._closed = False
        self._flusher = threading.Thread(target=self._flush_loop, name="lambdaexec-flush", daemon=True)
        self._flusher.start()
        _live.add(self)

    def name(self, blob: bytes, fn: Any) -> None:
        """Remember ``fn``'s name for the jobs that run ``blob`` (the job record shows it)."""
        inner = getattr(fn, "func", fn)  # functools.partial
        name = getattr(inner, "__qualname__", None) or type(inner).__qualname__
        if len(self._names) > 1000:
            self._names.clear()
        self._names[blob] = f"{getattr(inner, '__module__', None) or '?'}.{name}"

    def enqueue(self, calls: list[Call]) -> None:
        """Queue ``calls`` for the flusher. Raises ``RuntimeError`` after :meth:`shutdown`."""
        with self._cond:
            if self.closing:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._pending.extend(calls)
            self._cond.notify()

    # --- the flusher thread ---------------------------------------------------------------
    def _flush_loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self.closing:
                    self._cond.wait()
                batch, self._pending, self.memo = self._pending, [], None
                if not batch:
                    return
                self._flushing = batch  # so shutdown(cancel_futures=True) sees these calls too
            for blob, group in itertools.groupby(batch, key=lambda item: item[0]):
                self._start_job(blob, [(chunks, f) for _, chunks, f in group])
            with self._cond:
                self._flushing = []  # every call is now the monitor's
            del batch, group  # uploaded: do not hold every call's inputs while waiting

    def _start_job(self, blob: bytes, calls: list[tuple[list[memoryview], LambdaFuture]]) -> None:
        storage = self.monitor.storage
        job_id = f"{next(self._jobs):06d}"
        prefix = f"{self.prefix}/{job_id}"
        try:
            func_key = f"{self.prefix}/funcs/{hashlib.sha256(blob).hexdigest()[:32]}"
            if func_key not in self._funcs_uploaded:
                storage.put(func_key, blob)
                self._funcs_uploaded.add(func_key)
            ranges, chunks, offset = [], [], 0
            for call_chunks, _ in calls:
                size = serialize.size_of(call_chunks)
                ranges.append((offset, offset + size))
                chunks.extend(call_chunks)
                offset = serialize.pad(chunks, offset + size)  # each call's inputs start aligned
            args_key = f"{prefix}/args"
            storage.put(args_key, chunks)
        except Exception as err:
            for _, f in calls:
                if f.set_running_or_notify_cancel():
                    f.set_exception(err)
            return
        futures = [f for _, f in calls]
        for i, f in enumerate(futures):
            f.call_id = f"{job_id}/{i}"
        self.monitor.add(Job(prefix, func_key, args_key, ranges, futures, init_key=self.init_key,
                             name=self._names.get(blob, "")))

    # --- closing --------------------------------------------------------------------------
    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Refuse new calls; cancel those not started if asked; close once the rest are done
        (here with ``wait``, else in the background)."""
        with self._cond:
            self.closing = True
            pending = [f for _, _, f in self._pending + self._flushing]
            self._cond.notify()
        if cancel_futures:
            for f in pending + self.monitor.outstanding():
                f.cancel()
        if wait:
            self._finish()
        else:
            threading.Thread(target=self._finish, name="lambdaexec-shutdown", daemon=True).start()

    def _finish(self) -> None:
        self._flusher.join()
        while True:
            outstanding = self.monitor.outstanding()
            if not outstanding:
                break
            concurrent.futures.wait(outstanding)
        with self._cond:
            if self._closed:
                return
            self._closed = True
        storage = self.monitor.storage
        self.monitor.stop()
        self.monitor.invoker.close()
        if not self.config.keep_data:
            storage.delete(self.prefix + "/")
        storage.close()
        _live.discard(self)


def shutdown_all() -> None:
    """Let every engine finish its calls (at interpreter exit, as ``ProcessPoolExecutor`` does)."""
    for engine in list(_live):
        engine.shutdown(wait=True)
