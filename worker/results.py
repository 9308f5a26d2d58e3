"""How a worker writes its calls' results: several calls' results as one batch object.

::

    handler ── add(call, status, value) ──► Writer ── one put per batch ──► calls/<runs>
            └─ running(marker) ──────────────►  │ │ └─ one notice per batch ──► context.calls_done
                                                │ └─ the running call's marker ──► started/<call>.<attempt>
    timer thread ── batch older than BATCH_SECONDS? flush;
                    call running for MARK_SECONDS? its marker ──┘

The handler hands each finished call to its event's :class:`Writer`, which keeps it until the
batch is flushed (the rules, and the object layout, are in :mod:`lambdaexec.wire.protocol`): at the
end of the event (:meth:`Writer.close`), when the batch is big or numerous enough, or when its
oldest result has waited :data:`~lambdaexec.wire.protocol.BATCH_SECONDS`, which the process's one
timer thread sees to while the handler's thread runs the next (long) call. A result too large
to share an object is written alone at once. The same thread writes the start marker of a call
that is still running :data:`~lambdaexec.wire.protocol.MARK_SECONDS` after the handler announced it
(:meth:`Writer.running`; the marker of an event's first call the handler writes itself).

Each flushed object is announced once with ``context.calls_done(calls, key, busy)`` (``busy``:
seconds its calls' user code ran, which the pool uses to size events) when the context has it
(the local pool); on Lambda the client finds the object by listing ``calls/``.

If a batch cannot be written, the writer tries to write, in its place, a failure status for each
of its calls (small, so it may still fit where the results did not); if that fails too, the
error is raised from the handler's next ``add`` or ``close`` (the timer thread has no caller).
"""

from __future__ import annotations

import math
import os
import threading
import time
import traceback
from typing import Any, Callable

from lambdaexec.storage import Storage
from lambdaexec.wire import protocol, serialize
from worker import memory

#: ``notify(calls, key, busy)``: the object at ``key`` holds ``calls``, which ran ``busy`` seconds
Notify = Callable[[list[int], str, float], None]


class Writer:
    """Collects one event's results and writes them in batches; see the module docstring."""

    def __init__(self, store: Storage, job_prefix: str, notify: Notify | None = None):
        self.store, self.job_prefix, self.notify = store, job_prefix, notify
        self._lock = threading.Lock()
        self._entries: list[tuple[int, list[memoryview]]] = []
        self._bytes = 0
        self._busy = 0.0  # seconds the waiting calls ran
        self._runs = _Runs()  # the waiting calls, as the batch's key will name them
        self._batch_due = 0.0  # time.monotonic() at which the waiting batch must be written
        self._mark: tuple[str, float] | None = None  # the running call's start marker and when it is due
        self.due = 0.0  # the earlier of the two, for the timer thread
        self._error: BaseException | None = None

    def add(self, call: int, status: dict[str, Any], value: list[memoryview], last: bool = False) -> None:
        """Take call ``call``'s ``status`` and serialized ``value``; written now or with its batch.

        ``last``: the event has no more calls, so the batch is written now (and the timer
        thread, which a one-call event would wake and wait for, is left alone)."""
        chunks = protocol.pack_result(status, value)
        size = serialize.size_of(chunks)
        busy = status["func_end"] - status["func_start"] if "func_end" in status else 0.0
        with self._lock:
            self._mark = None  # the call is over: its marker is not needed
            self._raise_pending()
            if size >= protocol.BATCH_BYTES:  # too big to share an object: alone, now
                self._write([(call, chunks)], busy)
                return
            if self._entries and not self._runs.fits_with(call, self._entries):
                self._flush_locked()
            if not self._entries:
                self._batch_due = time.monotonic() + protocol.BATCH_SECONDS
            # copied (unless written now): the value's buffers may belong to an object the next
            # call changes in place
            self._entries.append((call, chunks if last else [memoryview(b"".join(chunks))]))
            self._runs.add(call)
            self._bytes += size
            self._busy += busy
            if last or self._bytes >= protocol.BATCH_BYTES:
                self._flush_locked()
            elif len(self._entries) == 1:  # a new batch: the timer writes it when due
                self._watch()

    def running(self, marker: str) -> None:
        """The handler started a call whose start marker is ``marker``: it is written if the
        call is still running (no :meth:`add` for it) :data:`~lambdaexec.wire.protocol.MARK_SECONDS`
        from now."""
        with self._lock:
            self._mark = (marker, time.monotonic() + protocol.MARK_SECONDS)
            self._watch()

    def _watch(self) -> None:
        """Have the timer thread look at this writer when its batch or marker is due (lock held)."""
        self.due = min(self._batch_due if self._entries else math.inf, self._mark[1] if self._mark else math.inf)
        _timer().watch(self)

    def _write_due(self) -> bool:
        """Write the batch and the marker that are due (lock held, by the timer thread); whether
        anything is left waiting."""
        now = time.monotonic()
        if self._entries and self._batch_due <= now:
            self._flush_locked()
        if self._mark and self._mark[1] <= now:
            marker, self._mark = self._mark[0], None
            try:
                self.store.put(marker, b"")
            except Exception:  # the call goes on: without its marker, a crash of it counts as a miss
                pass
        if not self._entries and not self._mark:
            return False
        self._watch()
        return True

    def close(self) -> None:
        """Write what is waiting; raise what could not be written. The event is over."""
        _timer().forget(self)
        with self._lock:
            self._mark = None
            self._flush_locked()
            self._raise_pending()

    def _raise_pending(self) -> None:
        err, self._error = self._error, None
        if err is not None:
            raise err

    def _flush_locked(self) -> None:
        entries, self._entries, self._bytes = self._entries, [], 0
        busy, self._busy, self._runs = self._busy, 0.0, _Runs()
        if not entries:
            return
        try:
            self._write(entries, busy)
        except BaseException as err:  # the timer thread has no caller: keep it for the handler
            if self._error is None:
                self._error = err

    def _write(self, entries: list[tuple[int, list[memoryview]]], busy: float) -> None:
        """Write ``entries`` as one object (lock held) and announce it; on failure, a failure
        status for each call instead (raising if that cannot be written either)."""
        entries.sort(key=lambda e: e[0])
        calls = [c for c, _ in entries]
        try:
            key = self._put(entries)
        except Exception as exc:
            failed = {**(memory.out_of_memory_loading(exc, "the call's result") or {
                "ok": False, "error_type": type(exc).__name__, "traceback": traceback.format_exc(),
                "message": f"the worker failed to store the result: {exc}"}), "result_written": time.time()}
            key = self._put([(c, protocol.pack_result(failed, [])) for c in calls])
        if self.notify is not None:
            self.notify(calls, key, busy)

    def _put(self, entries: list[tuple[int, list[memoryview]]]) -> str:
        if len(entries) == 1:
            key = protocol.result_key(self.job_prefix, entries[0][0])
            self.store.put(key, entries[0][1])
        else:
            key = protocol.batch_key(self.job_prefix, [c for c, _ in entries])
            self.store.put(key, protocol.pack_batch(entries))
        return key


class _Runs:
    """The length of the key part naming a batch's calls, kept as calls are added (in O(1) when
    they come in ascending order, as an event's do), so a batch is cut before its key is too long."""

    def __init__(self) -> None:
        self.count, self.last, self.first = 0, -2, -2
        self.closed = 0  # characters of the runs before the current one, commas included
        self.ascending = True

    def add(self, call: int) -> None:
        if self.count and call == self.last + 1:
            self.last = call
        else:
            if self.count:
                self.closed += self._current() + 1
            self.ascending = self.ascending and call > self.last
            self.first = self.last = call
        self.count += 1

    def _current(self) -> int:
        return len(str(self.first)) + (len(str(self.last)) + 1 if self.last != self.first else 0)

    def fits_with(self, call: int, entries: list[tuple[int, Any]]) -> bool:
        """Whether the batch still fits as one object with ``call`` added (``entries``: its calls')."""
        if self.count + 1 > protocol.BATCH_CALLS:
            return False
        if self.ascending and call > self.last:  # at most one more run of its digits and a dash
            if self.closed + self._current() + 2 * len(str(call)) + 2 <= protocol.MAX_RUNS_CHARS:
                return True
        return protocol.fits(sorted([*(c for c, _ in entries), call]))


class _Timer:
    """The thread that writes batches whose oldest result has waited long enough, and the
    markers of calls running long enough."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.writers: set[Writer] = set()
        self.pid = os.getpid()
        self.wake_at = math.inf  # when the thread, asleep, wakes next (0: it is awake)
        threading.Thread(target=self._run, name="lambdaexec-results", daemon=True).start()

    def watch(self, writer: Writer) -> None:
        """Look at ``writer`` at its ``due`` time (sooner if something else is due first)."""
        with self.cond:
            self.writers.add(writer)
            if writer.due < self.wake_at:
                self.cond.notify()

    def forget(self, writer: Writer) -> None:
        with self.cond:
            self.writers.discard(writer)

    def _run(self) -> None:
        while True:
            with self.cond:
                while True:
                    now = time.monotonic()
                    due = [w for w in self.writers if w.due <= now]
                    if due:
                        break
                    self.wake_at = min((w.due for w in self.writers), default=math.inf)
                    self.cond.wait(None if self.wake_at == math.inf else self.wake_at - now)
                self.wake_at = 0.0
            for w in due:
                # a writer is watched while it has a batch or a marker waiting: write what is due
                if w._lock.acquire(blocking=False):
                    try:
                        if not w._write_due():
                            self.forget(w)
                    finally:
                        w._lock.release()
                else:  # the handler is writing it right now: look again shortly
                    time.sleep(0.0005)


_the_timer: _Timer | None = None
_timer_lock = threading.Lock()


def _timer() -> _Timer:
    """This process's timer thread (a worker forked from the template starts its own)."""
    global _the_timer
    with _timer_lock:
        if _the_timer is None or _the_timer.pid != os.getpid():
            _the_timer = _Timer()
        return _the_timer
