"""The engine behind a ``LambdaExecutor``: its queue of submitted calls, the flusher thread
that uploads them as jobs, and the orderly close.

Submits go to a pending list; the flusher takes everything pending at once and uploads it as
one job per function (the function once, by content hash; all inputs in one object with byte
ranges), so the many one-at-a-time submits of joblib or dask cost a few uploads, not one
each. There is no batching delay: a submit to an idle executor (nothing pending, uploading or
running) is uploaded and invoked by the submitting thread itself, which spares a warm round
trip two thread hand-offs (caller -> flusher -> monitor); submits that arrive while calls are
in flight queue for the flusher and so batch.

The engine and its threads hold no reference to the executor, so an executor dropped without
``shutdown`` is garbage-collected, and then its engine finishes the calls already submitted and
releases its workers, as ``ProcessPoolExecutor`` does.

An engine belongs to the process that made it. A child forked by the user's code (a
``multiprocessing`` ``Pool`` or ``Manager`` with the fork start method) inherits a copy of it,
and of the exit hook; in the child both do nothing, so the child's exit neither deletes the
parent's job data nor stops the parent's workers.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import itertools
import os
import sys
import threading
from typing import Any, Callable

from lambdaexec.config import Config
from lambdaexec.errors import CallAbandonedError, CallStoppedError, StorageError
from lambdaexec.future import LambdaFuture
from lambdaexec.runtime import extras, handles
from lambdaexec.runtime.job import Job
from lambdaexec.runtime.monitor import Monitor
from lambdaexec.storage import signed
from lambdaexec.wire import serialize

#: a submitted call: (its function's blob, its serialized arguments, its future)
Call = tuple[bytes, list[memoryview], LambdaFuture]

#: a job of more calls than this stores its inputs in parts (see :func:`parts`)
FIRST_PART = 64
#: a part holds at most this many bytes of inputs (unless one call's alone are more)
PART_BYTES = 8 << 20


def parts(n: int, sizes: list[int] | None = None) -> list[tuple[int, int]]:
    """The parts ``[(first call, end), ...]`` in which a job of ``n`` calls stores its inputs:
    one object for up to ``2 * FIRST_PART`` calls; else ``FIRST_PART`` calls first, each next
    part four times the last. The workers start on the first part while the client still
    hashes and writes the rest (a 100,000-call map no longer idles them for its whole upload),
    and a job stays one job, with a few objects more (``log4(n / FIRST_PART)``).

    With the calls' input ``sizes``, a part also ends before it would exceed
    :data:`PART_BYTES`: a store with a memory limit (a Redis with ``maxmemory``) holds each
    object, and one it loses is uploaded again whole (:mod:`lambdaexec.runtime.recovery`).

    >>> parts(1000)
    [(0, 64), (64, 320), (320, 1000)]
    >>> parts(4, [5 << 20] * 4)
    [(0, 1), (1, 2), (2, 3), (3, 4)]
    """
    if n <= 2 * FIRST_PART:
        out = [(0, n)]
    else:
        out, lo, size = [], 0, FIRST_PART
        while lo < n:
            hi = n if n - lo < 2 * size else lo + size
            out.append((lo, hi))
            lo, size = hi, size * 4
    if sizes is None or sum(sizes) <= PART_BYTES:
        return out
    split = []
    for lo, hi in out:
        start, total = lo, 0
        for i in range(lo, hi):
            if total and total + sizes[i] > PART_BYTES:
                split.append((start, i))
                start, total = i, 0
            total += sizes[i]
        split.append((start, hi))
    return split


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
        self._last_func: tuple[bytes, str] = (b"", "")  # the last function blob started and its key
        self._names: dict[bytes, str] = {}  # function blob -> its name, for the job record
        self._pending: list[Call] = []
        self._uploading: list[list[Call]] = []  # taken by the flusher or a caller, not yet the monitor's
        self._cond = threading.Condition()
        self._closed = False
        self._pid = os.getpid()  # the owner: a forked child's copy never closes anything
        self._holds = 0  # operators' results (reduce, map_reduce) that may still submit calls
        #: the result cache (``cache=True``), large arguments stored once, failed calls kept for replay
        self.cache, self.blobs = extras.attach(config, monitor, prefix)
        self._flusher = threading.Thread(target=self._flush_loop, name="lambdaexec-flush", daemon=True)
        self._flusher.start()
        _live.add(self)

    def name(self, blob: bytes, fn: Any) -> None:
        """Remember ``fn``'s name for the jobs that run ``blob`` (the job record shows it)."""
        inner = getattr(fn, "func", fn)  # functools.partial
        for _ in range(4):  # a partial of a wrapper of ours (map(chunksize=), an operator's stage):
            at = getattr(inner, "lambdaexec_wraps", None)  # the position of the user's function in it
            args = getattr(fn, "args", ())
            if not isinstance(at, int) or isinstance(at, bool) or at >= len(args):
                break
            fn = args[at]
            inner = getattr(fn, "func", fn)
        name = getattr(inner, "__qualname__", None) or type(inner).__qualname__
        if len(self._names) > 1000:
            self._names.clear()
        self._names[blob] = f"{getattr(inner, '__module__', None) or '?'}.{name}"
        if self.cache is not None:
            self.cache.note(blob, fn)

    def enqueue(self, calls: list[Call], follow_up: bool = False) -> None:
        """Queue ``calls`` for the flusher. Raises the monitor's ``BrokenExecutor`` once it is
        broken, and ``RuntimeError`` after :meth:`shutdown`, unless they are an operator's
        ``follow_up`` calls while it is held (see :meth:`hold`)."""
        broken = self.monitor.broken
        if broken is not None:  # as ProcessPoolExecutor.submit once its pool is broken
            raise type(broken)(f"cannot schedule new futures, this executor is broken: {broken}")
        with self._cond:
            if self.closing and not (follow_up and self._holds):
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self._pending or self._uploading or self.monitor.jobs:
                self._pending.extend(calls)
                self._cond.notify()
                return
            self._uploading.append(calls)  # idle: this thread uploads them (module docstring)
            self.memo = None
        self._upload(calls)

    def _upload(self, batch: list[Call]) -> None:
        """Start ``batch`` as one job per function, then hand it over (it is in ``_uploading``)."""
        try:
            for blob, group in itertools.groupby(batch, key=lambda item: item[0]):
                self._start_job(blob, [(chunks, f) for _, chunks, f in group])
        finally:
            with self._cond:
                self._uploading.remove(batch)  # every call is now the monitor's
                self._cond.notify_all()

    def hold(self, future: concurrent.futures.Future) -> None:
        """Keep accepting follow-up calls until ``future`` is done: an operator whose later calls
        wait on earlier ones (a reduce, a shuffle's reducers) finishes even if ``shutdown``
        starts meanwhile, and ``shutdown(wait=True)`` waits for it, as for any pending future."""
        with self._cond:
            self._holds += 1
        future.add_done_callback(self._release)

    def _release(self, _: concurrent.futures.Future) -> None:
        with self._cond:
            self._holds -= 1
            self._cond.notify_all()

    # --- the flusher thread ---------------------------------------------------------------
    def _flush_loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not (self.closing and not self._holds):
                    self._cond.wait()
                batch, self._pending, self.memo = self._pending, [], None
                if not batch:
                    return
                self._uploading.append(batch)  # so shutdown(cancel_futures=True) sees these calls too
            self._upload(batch)
            del batch  # uploaded: do not hold every call's inputs while waiting

    def _start_job(self, blob: bytes, calls: list[tuple[list[memoryview], LambdaFuture]]) -> None:
        """Upload ``calls`` of the function ``blob`` as one job, its inputs in parts (see
        :func:`parts`): the monitor starts each part's calls as soon as that part is stored."""
        storage = self.monitor.storage
        job_id = f"{next(self._jobs):06d}"
        for call_chunks, f in calls:
            f._recipe = (blob, call_chunks)  # until it succeeds: lambdaexec.retry_failed reruns it
        calls, cache_keys = extras.prepare(self, blob, calls)  # large arguments, cached results
        if not calls:
            return
        prefix = f"{self.prefix}/{job_id}"
        futures = [f for _, f in calls]
        for i, f in enumerate(futures):
            f.call_id = f"{self.prefix.rsplit('/', 1)[-1]}-{job_id}/{i}"  # <executor>-<job>/<call>: replay finds it
        job = Job(prefix, "", [], [(0, 0, 0)] * len(calls), futures, init_key=self.init_key,
                  name=self._names.get(blob, ""), digests=[""] * len(calls), cache_keys=cache_keys)
        home = handles.CallHome(storage.spec, prefix, handles.patience(self.config), self.monitor.pins)
        sizes = [c[0].nbytes if len(c) == 1 else serialize.size_of(c) for c, _ in calls]  # 0.13 us a call
        for part, (lo, hi) in enumerate(parts(len(calls), sizes)):
            try:
                if part == 0:
                    job.func_key = self._upload_function(blob)
                job.args_keys.append(self._upload_args(job, part, calls, lo, hi))
            except Exception as err:
                if part == 0:
                    for _, f in calls:
                        if f.set_running_or_notify_cancel():
                            f.set_exception(err)
                else:
                    self.monitor.fail(job, range(lo, len(calls)), err)
                return
            for i in range(lo, hi):
                futures[i]._home = home  # stored: a pickled future of these calls can wait for them
            if part == 0:
                self.monitor.add(job, range(lo, hi))
            else:
                self.monitor.release(job, range(lo, hi))

    def _upload_function(self, blob: bytes) -> str:
        """The key of the function ``blob``, uploaded once per executor, and again if the store
        lost it (a Redis restarted without persistence): one existence check per job."""
        storage = self.monitor.storage
        last = self._last_func  # (the flusher and a caller may both be here)
        if blob != last[0]:  # else a function pickled again, unchanged: no new hash
            last = self._last_func = (blob, f"{self.prefix}/funcs/{hashlib.sha256(blob).hexdigest()[:32]}")
        func_key = last[1]
        if func_key not in self._funcs_uploaded or not storage.exists(func_key):
            storage.put(func_key, blob)
            self._funcs_uploaded.add(func_key)
        return func_key

    def _upload_args(self, job: Job, part: int, calls: list[tuple[list[memoryview], LambdaFuture]],
                     lo: int, hi: int) -> str:
        """Store the inputs of calls ``lo`` to ``hi`` as the job's ``part``; note each call's
        byte range and digest in ``job``; return the object's key."""
        key = f"{job.prefix}/args" + (f".{part}" if part else "")
        chunks: list[memoryview] = []
        offset = 0
        for i in range(lo, hi):
            call_chunks = calls[i][0]
            size = serialize.size_of(call_chunks)
            job.ranges[i] = (part, offset, offset + size)
            # the worker reads only its calls' slices: each is checked against its digest in the event
            job.digests[i] = signed.digest(call_chunks)
            chunks.extend(call_chunks)
            offset = serialize.pad(chunks, offset + size)  # each call's inputs start aligned
        self.monitor.storage.put(key, chunks)
        return key

    # --- closing --------------------------------------------------------------------------
    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Refuse new calls; cancel those not started if asked; close once the rest are done
        (here with ``wait``, else in the background). A no-op in a forked child, and once
        closed (after :meth:`abort`). With ``wait`` inside a done callback of this executor's
        futures, it closes in the background and raises ``RuntimeError``, as the standard
        library's executors do there."""
        if os.getpid() != self._pid or self._closed:
            return
        with self._cond:
            self.closing = True
            pending = self._not_handed_over()
            self._cond.notify()
        if cancel_futures:
            for f in pending + self.monitor.outstanding():
                f.cancel()
        if wait and not self.monitor.in_callback():
            self._finish()
            return
        threading.Thread(target=self._finish, name="lambdaexec-shutdown", daemon=True).start()
        if wait:  # as the standard library's executors: a callback's thread cannot wait for itself
            raise RuntimeError("shutdown(wait=True) inside a done callback would wait forever for the thread "
                               "running that callback: call shutdown(wait=False) there (the calls still finish)")

    def abort(self) -> None:
        """Stop now, killing the workers (a joblib ``Parallel`` call was aborted): :meth:`terminate`."""
        self.terminate(kill=True, why="an abort")

    def terminate(self, kill: bool, why: str) -> tuple[int, int] | None:
        """Stop now (``terminate_workers``, ``kill_workers``, Ctrl-C): refuse new calls, cancel
        those not started, stop the workers running the rest (local: SIGTERM, or SIGKILL with
        ``kill``, to each worker's process group; Lambda: abandoned, as a Lambda call cannot be
        stopped from outside), fail their futures at once with
        :class:`~lambdaexec.errors.CallStoppedError` (:class:`~lambdaexec.errors.CallAbandonedError`
        on Lambda), so none is left pending, and delete the data. ``why`` names the cause in
        their messages. Returns ``(cancelled, stopped)`` call counts, or None when there was
        nothing to stop (already closed, or a forked child's copy)."""
        if os.getpid() != self._pid or self._closed:
            return None
        with self._cond:
            self.closing = True
            pending = self._not_handed_over()
            self._pending = []
            self._cond.notify()
        # not finished, or cancelled before their call started (by the map whose iteration Ctrl-C ended)
        waiting = {id(f): f for f in pending + self.monitor.outstanding() if f.cancelled() or not f.done()}
        cancelled = sum(f.cancelled() or f.cancel() for f in waiting.values())
        self._flusher.join(5)
        running = [f for f in self.monitor.outstanding() if not f.done()]
        invoker = self.monitor.invoker
        can_stop = getattr(invoker, "can_stop_calls", True)
        self._teardown(functools.partial(invoker.terminate, kill) if hasattr(invoker, "terminate") else None)
        signal_name = "SIGKILL" if kill else "SIGTERM"
        stopped = 0
        for f in running:
            if can_stop:
                err: CallStoppedError = CallStoppedError(
                    f"call {f.call_id} was running when {why} stopped the executor: its worker process "
                    f"got {signal_name}", attempts=f.attempts)
            else:
                err = CallAbandonedError(
                    f"call {f.call_id} was running on AWS Lambda when {why} stopped the executor: a Lambda "
                    f"call cannot be stopped from outside, so it may run on to its end (timeout "
                    f"{self.config.timeout:g} s at most); its result is discarded and the job's data deleted",
                    attempts=f.attempts)
            try:
                f.set_exception(err)
                stopped += 1
            except concurrent.futures.InvalidStateError:
                pass  # finished or cancelled meanwhile
        return cancelled, stopped

    def interrupted(self) -> None:
        """Ctrl-C reached the program (KeyboardInterrupt): :meth:`terminate` with SIGKILL, then
        say on stderr what was cancelled and stopped (the user should know what did not run)."""
        counts = self.terminate(kill=True, why="Ctrl-C (KeyboardInterrupt)")
        if counts is None or not any(counts):
            return
        lambda_ = not getattr(self.monitor.invoker, "can_stop_calls", True)
        stopped = (f"{counts[1]} running call(s) abandoned on AWS Lambda (a Lambda call cannot be stopped from "
                   "outside: their results will be discarded)" if lambda_
                   else f"{counts[1]} running call(s) stopped (their workers killed)")
        try:
            sys.stderr.write(f"lambdaexec: interrupted: {counts[0]} queued call(s) cancelled, {stopped}; "
                             f"the job data of executor {self.prefix.rsplit('/', 1)[-1]} is deleted\n")
            sys.stderr.flush()
        except (OSError, ValueError, AttributeError):
            pass

    def _not_handed_over(self) -> list[LambdaFuture]:
        """Futures of calls pending or being uploaded (lock held)."""
        return [f for batch in (self._pending, *self._uploading) for _, _, f in batch]

    def _finish(self) -> None:
        self._flusher.join()
        with self._cond:
            while self._uploading:  # a caller's own upload (see enqueue) ends with monitor.add
                self._cond.wait()
        while True:
            outstanding = self.monitor.outstanding()
            if not outstanding or self._closed:  # closed: terminate() failed these futures itself
                break
            concurrent.futures.wait(outstanding)
        self._teardown()

    def _teardown(self, stop: Callable[[], None] | None = None) -> None:
        """Once: stop the monitor and the workers (with ``stop``, else the invoker's orderly
        ``close``), then delete the
        executor's data (unless ``keep_data``) and close the store. The data goes best effort:
        the calls are over, and a store that is down must not fail the shutdown."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
        storage, invoker = self.monitor.storage, self.monitor.invoker
        self.monitor.stop()
        (stop or invoker.close)()
        _live.discard(self)
        try:
            if not self.config.keep_data and not self.monitor.pins.holds_any():  # else a pickled future needs them
                storage.delete(self.prefix + "/")
                signed.forget(self.prefix.rsplit("/", 1)[1])  # its data is gone: so goes its secret
        except StorageError:
            pass  # left behind: local files are private to the user, S3 data expires (lifecycle_days)
        finally:
            storage.close()


def shutdown_all() -> None:
    """Let every engine finish its calls (at interpreter exit, as ``ProcessPoolExecutor`` does);
    if the program is ending on Ctrl-C, stop them instead, as a user who presses it expects."""
    interrupted = isinstance(getattr(sys, "last_value", None), KeyboardInterrupt)
    for engine in list(_live):
        if interrupted:
            engine.interrupted()
        else:
            engine.shutdown(wait=True)


# a forked child inherits the parent's engines, whose threads did not survive the fork: forget them
os.register_at_fork(after_in_child=_live.clear)
