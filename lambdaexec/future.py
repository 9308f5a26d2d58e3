"""The future type lambdaexec returns: a real ``concurrent.futures.Future`` with call details."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Any

from lambdaexec.errors import RemoteTraceback

_UPLOAD_WAIT = 120.0  # seconds pickling an unfinished future waits for its job's upload


class _Condition:
    """What ``Future`` needs of ``threading.Condition`` (lock, ``wait``, ``notify_all``) in a few
    dozen bytes. ``threading.Condition`` keeps five bound methods in a per-instance dict, about
    0.8 KB and eight objects for the garbage collector per future: a 100,000-call map holds
    100,000 futures. The lock is re-entrant, as ``Condition``'s default: ``concurrent.futures.wait``
    holds every future's lock while it calls their ``cancelled()`` and ``exception()``, which take
    it again; ``wait`` releases it however many times it is held, as ``Condition.wait`` does."""

    __slots__ = ("_lock", "_waiters")

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._waiters: list | None = None

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, wait for ``notify_all`` or ``timeout``, re-acquire (as Condition)."""
        waiter = threading.Lock()
        waiter.acquire()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        held = self._lock._release_save()  # type: ignore[attr-defined]  # (what Condition.wait uses)
        got = False
        try:
            got = waiter.acquire() if timeout is None else waiter.acquire(True, timeout) if timeout > 0 \
                else waiter.acquire(False)
            return got
        finally:
            self._lock._acquire_restore(held)  # type: ignore[attr-defined]
            if not got:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass

    def notify_all(self) -> None:
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            waiter.release()


class LambdaFuture(concurrent.futures.Future):
    """A ``concurrent.futures.Future`` that also tells where and how its call ran.

    Attributes (filled in as the call progresses):

    - ``call_id``: ``"<job>/<call>"``, the call's name in storage
    - ``stats``: timestamps (``submitted``, ``invoked``, ``received``, ``func_start``,
      ``func_end``, ``result_written``, ``seen``; seconds since the epoch), ``worker``,
      ``bytes_in``, ``bytes_out``, ``attempt``
    - ``stdout``, ``stderr``: what the call printed (Python-level writes, up to 1 MiB each)
    - ``attempts``: how many times the call was started
    - ``remote_traceback``: the worker-side traceback text when the call raised

    As PyWren's futures, it also answers :meth:`succeeded` and :meth:`errored`, and it can be
    pickled: it unpickles in another process as a handle on the same call, completed from
    storage (see :mod:`lambdaexec.runtime.handles`)::

        blob = pickle.dumps(ex.submit(pow, 2, 10))
        # in another process with access to the same storage:
        pickle.loads(blob).result()  # 1024
    """

    # class-level defaults: a map of 100,000 calls holds 100,000 of these, so no per-instance copies
    call_id = ""
    stdout = ""
    stderr = ""
    attempts = 0
    remote_traceback: str | None = None
    _stats: dict[str, Any] | None = None
    _home: Any = None  # the job's :class:`~lambdaexec.runtime.handles.CallHome`, once uploaded
    #: the serialized call (function blob, argument chunks), kept until it succeeds so that
    #: :func:`lambdaexec.runtime.ledger.retry_failed` can run it again
    _recipe: tuple[bytes, list] | None = None

    def __init__(self, submitted: float = 0.0) -> None:
        super().__init__()
        self._condition = _Condition()  # type: ignore[assignment]
        self._submitted = submitted

    def __repr__(self) -> str:
        # ``Future.__repr__`` takes the condition's lock, and ``set_result``/``set_exception`` on a
        # finished future call it while holding that lock: with a plain lock, a deadlock. The
        # state is read without the lock instead (one attribute read each, atomic under the GIL).
        state, exc, result = self._state, self._exception, self._result
        where = f"{type(self).__name__} {self.call_id} at {id(self):#x}" if self.call_id \
            else f"{type(self).__name__} at {id(self):#x}"
        if state == concurrent.futures._base.FINISHED:
            if exc is not None:
                return f"<{where} state=finished raised {type(exc).__name__}>"
            return f"<{where} state=finished returned {type(result).__name__}>"
        return f"<{where} state={state.lower()}>"

    def set_result(self, result: Any) -> None:
        """As ``Future.set_result``; the call's inputs are let go (nothing to retry)."""
        self._recipe = None
        super().set_result(result)

    def cancel(self) -> bool:
        """As ``Future.cancel``; a cancelled call's inputs are let go."""
        cancelled = super().cancel()
        if cancelled:
            self._recipe = None
        return cancelled

    @property
    def stats(self) -> dict[str, Any]:
        """The call's timestamps and sizes (see the class docstring), made on first use."""
        if self._stats is None:
            self._stats = {"submitted": self._submitted} if self._submitted else {}
        return self._stats

    def succeeded(self) -> bool:
        """Whether the call finished and returned a value (PyWren's; never waits).

        False while it runs, when it raised and when it was cancelled."""
        return self.done() and not self.cancelled() and self.exception() is None

    def errored(self) -> bool:
        """Whether the call finished by raising (PyWren's; never waits). False if cancelled."""
        return self.done() and not self.cancelled() and self.exception() is not None

    def __reduce__(self) -> tuple:
        """Pickle as the outcome when finished, else as a handle on the call in storage (its
        job's ``CallHome``: :mod:`lambdaexec.runtime.handles`)."""
        end = time.monotonic() + _UPLOAD_WAIT
        while self._home is None and not self.done() and time.monotonic() < end:
            time.sleep(0.005)  # its job is being uploaded (a submit returns before that)
        details = {"call_id": self.call_id, "stdout": self.stdout, "stderr": self.stderr,
                   "attempts": self.attempts, "remote_traceback": self.remote_traceback,
                   "_stats": dict(self.stats)}
        if self.done():
            if self.cancelled():
                return _finished, (details, "cancelled", None)
            exc = self.exception()
            return _finished, (details, "ok", self.result()) if exc is None else (details, "raised", exc)
        if self._home is None:
            raise TypeError(f"cannot pickle call {self.call_id or '(new)'}'s future: its inputs were not uploaded "
                            f"within {_UPLOAD_WAIT:g} s (is storage reachable?); pickle it once the call has started")
        return self._home.reduce(self, details)


def _finished(details: dict[str, Any], how: str, outcome: Any) -> LambdaFuture:
    """A finished future, unpickled: its outcome, output and stats as they were."""
    future = LambdaFuture()
    for name, value in details.items():
        setattr(future, name, value)
    if how == "cancelled":
        future.cancel()
        return future
    future.set_running_or_notify_cancel()
    if how == "ok":
        future.set_result(outcome)
        return future
    if details.get("remote_traceback") and outcome.__cause__ is None:
        outcome.__cause__ = RemoteTraceback(details["remote_traceback"])
    future.set_exception(outcome)
    return future
