"""The three points where observers hook into the monitor, as one small base class.

The monitor calls every watcher of its executor (none unless a setting asks for one)::

    Engine ── Monitor.add(job) ──────────────► added(job)          a job's calls were submitted
    Invoker ── Monitor._make_event(calls) ───► invoking(job, calls) about to start: may refuse
    Monitor._complete(job, call) ────────────► finished(job, call, future, exc)  it completes

Progress bars, the budget and the job record are watchers (see :func:`lambdaexec.observe.watchers_for`).
"""

from __future__ import annotations

from lambdaexec.future import LambdaFuture
from lambdaexec.runtime.job import Job


class Watcher:
    """Does nothing at each hook; subclasses override what they need. Hooks run on the
    executor's threads (flusher, invoker, monitor, fetchers), so they must be quick and safe."""

    def added(self, job: Job) -> None:
        """``job``'s calls were submitted (before any is invoked)."""

    def invoking(self, job: Job, calls: list[int], attempt: int) -> BaseException | None:
        """``calls`` of ``job`` are about to be invoked; return an exception to fail them instead."""
        return None

    def finished(self, job: Job, call: int, future: LambdaFuture, exc: BaseException | None) -> None:
        """Call ``call`` of ``job`` finished, with ``exc`` (``CancelledError`` if it was cancelled)
        or None for a result; ``future`` is completed right after every watcher has heard. The
        job no longer holds the future (finished futures leave their job, so that results are not
        retained): a watcher keeps what it needs of it, never the future itself."""

    def closed(self) -> None:
        """The executor is shutting down (its calls are all finished)."""
