"""The monitor: one background thread per executor that turns worker news into finished futures.

It hands jobs to the invoker, asks the invoker what happened, downloads each result object
announced (once, in its fetch pool: one object may hold a batch of calls' results, see
:mod:`lambdaexec.wire.protocol`), completes each call's future (re-raising user exceptions with the
remote traceback as their ``__cause__``), re-dispatches calls whose worker died or timed out
until ``retries`` are spent (and, with ``speculative``, backs up stragglers:
:mod:`lambdaexec.runtime.speculation`), and has a job's objects deleted once all of its results are in
(together with other finished jobs': :mod:`lambdaexec.runtime.sweeper`). Its watchers
(:mod:`lambdaexec.runtime.watcher`: progress, budget, job record) hear of each job added, each
call about to be invoked (and may refuse it) and each call finished.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import threading
import time
from typing import Any, Sequence

from lambdaexec import errors
from lambdaexec.config import Config
from lambdaexec.future import LambdaFuture
from lambdaexec.invokers.base import Dispatch, Done, Invoker, Lost
from lambdaexec.runtime import speculation
from lambdaexec.runtime.blame import Blame
from lambdaexec.runtime.job import FINISHED, PENDING, RUNNING, Job
from lambdaexec.runtime.outcome import decode_result, echo_output, record_status
from lambdaexec.runtime.pins import Pins
from lambdaexec.runtime.recovery import Recovery, forgotten
from lambdaexec.runtime.sweeper import SWEEP_SECONDS, Sweeper
from lambdaexec.runtime.watcher import Watcher
from lambdaexec.storage import Storage
from lambdaexec.wire import protocol

_LOGGER = logging.getLogger("concurrent.futures")  # where the standard library's executors log

class Monitor:
    """Owns the futures of every job in flight; see the module docstring."""

    def __init__(self, storage: Storage, invoker: Invoker, config: Config, watchers: Sequence[Watcher] = ()):
        self.storage, self.invoker, self.config = storage, invoker, config
        self.watchers = list(watchers)
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        self._stopping = False
        self._completing = threading.local()  # see in_callback
        #: finished jobs whose objects stay (a reduce reads them, a future of theirs travelled)
        self.pins = Pins()
        #: set when the monitor thread has failed: every call fails with it
        self.broken: concurrent.futures.BrokenExecutor | None = None
        self.speculator = speculation.Speculator() if config.speculative == "true" else None
        self.blame = Blame(config.retries)  # whether a call is the cause of its workers' deaths
        self.recovery = Recovery(storage)  # what the store forgot, uploaded again
        self._fetchers = (
            concurrent.futures.ThreadPoolExecutor(storage.concurrency, "lambdaexec-fetch")
            if storage.concurrency > 1 else None
        )
        self.sweeper = Sweeper(storage)
        self.cache: Any = None  # the result cache, if on (set by the engine: lambdaexec.runtime.cache)
        self.thread = threading.Thread(target=self._run, name="lambdaexec-monitor", daemon=True)
        self.thread.start()

    # --- called from the executor ---------------------------------------------------------
    def add(self, job: Job, calls: range | None = None) -> None:
        """Track ``job`` and start ``calls`` of it (default: all); the engine releases the
        others (:meth:`release`) as their inputs are stored."""
        with self.lock:
            self.jobs[job.prefix] = job
        for w in self.watchers:
            w.added(job)
        if self.broken is not None:
            self._break(self.broken)
            return
        self.release(job, range(len(job.futures)) if calls is None else calls)

    def release(self, job: Job, calls: range) -> None:
        """Start ``calls`` of ``job`` (their inputs are stored: all in one part)."""
        self.invoker.invoke(Dispatch(job.prefix, list(calls), 0, functools.partial(self._make_event, job)))

    def fail(self, job: Job, calls: range, err: BaseException) -> None:
        """Fail ``calls`` of ``job`` with ``err``: their inputs could not be stored."""
        for c in calls:
            self._complete(job, c, exc=err)

    def in_callback(self) -> bool:
        """Whether this thread is completing one of the monitor's futures (running its done
        callbacks): it cannot wait for the other calls, whose futures it would complete."""
        return getattr(self._completing, "active", False)

    def outstanding(self) -> list[LambdaFuture]:
        """Futures of calls not yet finished."""
        with self.lock:
            return [f for j in self.jobs.values() for f, s in zip(j.futures, j.state) if s != FINISHED]

    def pin(self, futures: list) -> None:
        """Keep the result objects of ``futures`` in storage (for a reduce's worker to read)
        until :meth:`unpin`; a job already cleaned up is not restored (:mod:`~lambdaexec.runtime.pins`)."""
        self.pins.pin(futures)

    def pinned_key(self, future: Any) -> tuple[str, int] | None:
        """``(key, call)``: the object holding a pinned, finished future's result (perhaps a
        batch of several calls') and its call's index, or ``None`` if it has none."""
        where = self.pins.result_key(future)
        if where is None:
            return None
        call = int(future.call_id.rsplit("/", 1)[1])
        return where[1] or protocol.result_key(where[0], call), call

    def unpin(self, futures: list) -> None:
        """Release :meth:`pin`; jobs no longer pinned are cleaned up as usual."""
        with self.lock:  # a job still running is deleted when it ends (_finish)
            free = [p for p in self.pins.unpin(futures) if p not in self.jobs]
        for p in free if not self.config.keep_data else ():
            self.sweeper.discard(p)

    def stop(self) -> None:
        """End the thread; calls still in flight are abandoned."""
        self._stopping = True
        self.invoker.wake()
        self.thread.join()
        if self._fetchers:
            self._fetchers.shutdown(wait=True)
        self.sweeper.close()
        for w in self.watchers:
            w.closed()

    # --- called from the invoker ----------------------------------------------------------
    def _make_event(self, job: Job, calls: list[int], attempt: int) -> protocol.Event | None:
        """Claim the calls still wanted (not cancelled) and build their invocation event."""
        keep, cancelled = [], []
        now = time.time()
        with self.lock:
            for c in calls:
                state = job.state[c]
                if state == PENDING:
                    if job.futures[c].set_running_or_notify_cancel():
                        job.state[c] = RUNNING
                    else:
                        cancelled.append((c, job.futures[c]))
                        self._finish(job, c)
                        continue
                elif state == FINISHED:
                    continue
                job.futures[c].stats.setdefault("invoked", now)
                keep.append(c)
        for w in self.watchers:
            for c, future in cancelled:
                w.finished(job, c, future, concurrent.futures.CancelledError())
        for w in self.watchers:
            refusal = w.invoking(job, keep, attempt) if keep else None
            if refusal is not None:  # e.g. over budget: these calls fail without running
                for c in keep:
                    self._complete(job, c, exc=refusal)
                return None
        if not keep:
            return None
        part = job.ranges[keep[0]][0]  # a dispatch's calls are of one part (see add and release)
        return {
            "storage": self.storage.spec, "job_prefix": job.prefix, "func_key": job.func_key,
            "args_key": job.args_key(part), "init_key": job.init_key,
            "calls": [[c, *job.ranges[c][1:]] for c in keep], "attempt": attempt,
            "secret": self.storage.secret.hex(), "args_digests": [job.digests[c] for c in keep],
            "versions": protocol.versions(), "max_result_size": self.config.max_result_size,
            "mark_start": getattr(self.invoker, "mark_start", False),
        }

    # --- the thread -----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._watch()
        except BaseException as err:  # a bug here must fail the calls, not leave them hanging
            self._break(err)
            raise

    def _break(self, err: BaseException) -> None:
        """Fail every call, now and from now on: nothing is left to finish them (the monitor
        thread failed), or nothing can run them (the initializer failed: logged, as the
        standard library's executors log it)."""
        if self.broken is None and isinstance(err, errors.InitializerError):
            self.broken = err
            _LOGGER.critical("Exception in initializer:\n%s", getattr(err.__cause__, "tb", err))
        elif self.broken is None:
            self.broken = concurrent.futures.BrokenExecutor(
                f"lambdaexec's monitor thread failed with {err!r}, so this executor cannot finish "
                "its calls; start a new one (and please report this as a bug)")
        with self.lock:
            stranded = [(job, c) for job in list(self.jobs.values())
                        for c, state in enumerate(job.state) if state != FINISHED]
        for job, c in stranded:
            self._complete(job, c, exc=self.broken)

    def _watch(self) -> None:
        while not self._stopping:
            self._handle(self.invoker.poll(SWEEP_SECONDS if self.sweeper.pending else 0.5))  # a method:
            # this frame keeps no job (nor its futures) alive
            self.sweeper.sweep_if_due()
            if self.speculator is not None and self.speculator.due(time.time()):
                self._speculate()

    def _speculate(self) -> None:
        """Start a backup copy of each straggler (see :mod:`lambdaexec.runtime.speculation`)."""
        with self.lock:
            jobs = [j for j in self.jobs.values() if self.speculator.near_end(j)]
        for job in jobs:
            now = time.time()
            with self.lock:
                running = {c: f.stats.get("invoked", now) for c, (f, s) in enumerate(zip(job.futures, job.state))
                           if s == RUNNING and f is not None}
            for c in self.speculator.stragglers(job, running, now):
                self.invoker.invoke(Dispatch(job.prefix, [c], job.lost[c], functools.partial(self._make_event, job)))

    def _handle(self, notices: list[Done | Lost]) -> None:
        """Fetch each result object announced once, for all of its calls; retry or fail lost calls."""
        objects: dict[str, tuple[Job, list[int]]] = {}
        for notice in notices:
            job = self.jobs.get(notice.job_prefix)
            if job is None or job.state[notice.call] == FINISHED:
                continue
            if isinstance(notice, Done):
                key = notice.key or protocol.result_key(job.prefix, notice.call)
                objects.setdefault(key, (job, []))[1].append(notice.call)
            elif isinstance(notice, Lost):
                self._lost(job, notice)
        for key, (job, calls) in objects.items():
            if self._fetchers:
                self._fetchers.submit(self._collect, job, key, calls)
            else:
                self._collect(job, key, calls)

    def _lost(self, job: Job, notice: Lost) -> None:
        """Re-dispatch a lost call, or fail it once its retries are spent (any thread)."""
        c = notice.call
        with self.lock:  # fetch threads report unreadable results here too
            if job.state[c] == FINISHED:
                return
            future = job.futures[c]
            if notice.started and not notice.fatal:
                job.lost[c] += 1
            tries = job.lost[c]
            verdict = None
            if notice.started and not notice.fatal and not notice.timed_out:
                verdict = self.blame.died(job.prefix, c, notice.cause)  # None: a bystander of the death
        if notice.fatal:
            exc: errors.CallLostError = errors.BrokenWorkersError(
                f"call {future.call_id} cannot run: {notice.reason}", attempts=tries)
        elif not notice.started or (tries <= self.config.retries if notice.timed_out else verdict is None):
            self.invoker.invoke(Dispatch(job.prefix, [c], tries, functools.partial(self._make_event, job)))
            return
        else:
            kind = errors.CallTimeoutError if notice.timed_out else errors.WorkerDiedError
            head, sep, output = notice.reason.partition("; its last output:")  # the verdict before the output
            reason = f"{head}; {verdict}{sep}{output}" if verdict else notice.reason
            exc = kind(f"call {future.call_id} failed after {tries} attempt(s): {reason}", attempts=tries)
        future.attempts = tries
        self._complete(job, c, exc=exc)

    def _collect(self, job: Job, key: str, calls: list[int]) -> None:
        """Read the object at ``key`` (whole) and complete ``calls`` from it (any thread)."""
        if all(job.futures[c] is None for c in calls):  # finished meanwhile (cancelled, failed)
            return
        try:
            results = protocol.unpack_results(key, self.storage.get(key))
        except errors.IntegrityError as err:  # forged or altered: never unpickled, not retried
            for c in calls:
                if job.futures[c] is not None:
                    self._complete(job, c, exc=err)
            return
        except errors.MissingObjectError as err:  # written, then lost by the store: computed again
            self._restore(job, calls, f"the result object vanished before it was read: {err}")
            return
        except Exception as err:  # the object is gone or unreadable: run its calls again
            for c in calls:
                self._lost(job, Lost(job.prefix, c, f"its result could not be read from {key}: {err!r}"))
            return
        missing, why = [], ""
        for c in calls:
            future = job.futures[c]
            if future is None:
                continue
            if c not in results:
                self._lost(job, Lost(job.prefix, c, f"its result object {key} does not hold it"))
                continue
            status, payload = results[c]
            if forgotten(status):  # the store lost an object the call needs: uploaded again below
                missing.append(c)
                why = why or status.get("message", "")
                continue
            record_status(future, status, key)
            if self.config.echo_output:
                echo_output(future)
            ok, outcome = decode_result(status, payload, future.call_id)
            if not ok and self.recovery.put_kept(outcome):  # a broadcast value the store lost: put again
                missing.append(c)
                why = why or str(outcome)
                continue
            if ok:
                if job.cache_keys is not None and self.cache is not None:  # runtime/cache.py
                    self.cache.store_result(job.cache_keys[c], payload)
                self._complete(job, c, value=outcome, key=key)
            else:
                self._complete(job, c, exc=outcome, key=key)
        if missing:
            self._restore(job, missing, why, key if len(missing) == len(results) else "")

    def _restore(self, job: Job, calls: list[int], why: str, stale: str = "") -> None:
        """Upload again what the store lost of ``calls`` and run them again, without counting
        an attempt; fail those it cannot restore (:mod:`lambdaexec.runtime.recovery`)."""
        redo, failed = self.recovery.restore(job, calls, self.lock, why, stale)
        for c, exc in failed:
            self._complete(job, c, exc=exc)
        groups: dict[tuple[int, int], list[int]] = {}  # a dispatch's calls share an attempt and a part
        with self.lock:
            for c in redo:
                groups.setdefault((job.lost[c], job.ranges[c][0]), []).append(c)
        for (attempt, _), group in groups.items():
            self.invoker.invoke(Dispatch(job.prefix, group, attempt, functools.partial(self._make_event, job)))

    def _complete(self, job: Job, c: int, value: Any = None, exc: BaseException | None = None,
                  key: str = "") -> None:
        with self.lock:
            if job.state[c] == FINISHED:
                return
            future = job.futures[c]
            if self.speculator is not None and exc is None:
                self.speculator.finished(job, time.time() - future.stats.get("invoked", time.time()))
            self._finish(job, c, key)
        self.blame.finished(job.prefix, c, not isinstance(exc, errors.CallLostError))
        if future.cancelled():
            exc = concurrent.futures.CancelledError()
        for w in self.watchers:  # before the future completes: a bar reads 100% when wait() returns
            w.finished(job, c, future, exc)
        if future.cancelled():
            return
        outer, self._completing.active = self.in_callback(), True  # its done callbacks run on this thread
        try:
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(value)
        finally:
            self._completing.active = outer
        if exc is not None and self.broken is None and isinstance(exc, errors.InitializerError):
            self._break(exc)

    def _finish(self, job: Job, c: int, key: str = "") -> None:
        """Mark call ``c`` finished (lock held), its result read from ``key``; drop and clean
        up the job after its last call."""
        job.state[c] = FINISHED
        self.pins.finished(job.futures[c], job.prefix, key)  # a reduce may read this result object
        job.futures[c] = None  # the caller holds it as long as it wants the result; we do not
        job.remaining -= 1
        if job.remaining == 0:
            del self.jobs[job.prefix]
            if self.speculator is not None:
                self.speculator.forget(job)
            if not self.config.keep_data and not self.pins.keeps(job.prefix):
                self.sweeper.discard(job.prefix)
            self.idle.notify_all()
