"""Pins: which finished jobs' objects must stay in storage, and until when. One per monitor.

The monitor deletes a job's objects once all of its results are in (:mod:`lambdaexec.runtime.sweeper`),
unless its :class:`Pins` keeps them, for one of two readers::

    reader                          pinned by                        kept until
    a reduce's worker, reading      Monitor.pin(futures)             Monitor.unpin(futures): its
      its inputs' result objects      (dataflow/reduce.py)             job is then deleted
    another process, which            CallHome.reduce: a future        for good: the executor leaves
      unpickled an unfinished future    pickled while its call runs      the job and its functions
                                        (runtime/handles.py)             (the bucket's lifecycle expires them)

Both ask the same question when a job ends (:meth:`Pins.keeps`) and when the executor closes
(:meth:`Pins.holds_any`), so one answer decides what is deleted. Its lock is taken after the
monitor's, never before.
"""

from __future__ import annotations

import threading
from typing import Any


class Pins:
    """The jobs kept in storage past their end; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: id(future) -> [future, pins, its job's prefix and result key once finished]
        self._readers: dict[int, list] = {}
        #: job prefix -> ids of its finished, pinned futures: the job's objects stay until unpinned
        self._kept: dict[str, set[int]] = {}
        #: job prefixes kept for good (a future of theirs was pickled unfinished)
        self._held: set[str] = set()

    def pin(self, futures: list) -> None:
        """Keep the result objects of ``futures`` once they finish, until :meth:`unpin`."""
        with self._lock:
            for f in futures:
                self._readers.setdefault(id(f), [f, 0, None, ""])[1] += 1

    def unpin(self, futures: list) -> list[str]:
        """Release :meth:`pin`; return the prefixes of finished jobs no longer kept at all."""
        free = []
        with self._lock:
            for f in futures:
                entry = self._readers.get(id(f))
                if entry is None:
                    continue
                entry[1] -= 1
                if entry[1] > 0:
                    continue
                del self._readers[id(f)]
                kept = self._kept.get(entry[2])
                if kept is not None:
                    kept.discard(id(f))
                    if not kept:
                        del self._kept[entry[2]]
                        if entry[2] not in self._held:
                            free.append(entry[2])
        return free

    def finished(self, future: Any, job_prefix: str, key: str) -> None:
        """``future``'s call finished, its result in the object ``key`` of job ``job_prefix``:
        if it is pinned, its job's objects stay (:meth:`keeps`)."""
        if not self._readers:  # the usual case: nothing pinned, no lock
            return
        with self._lock:
            entry = self._readers.get(id(future))
            if entry is not None:
                entry[2], entry[3] = job_prefix, key
                self._kept.setdefault(job_prefix, set()).add(id(future))

    def result_key(self, future: Any) -> tuple[str, str] | None:
        """``(job prefix, result object key or "")`` of a pinned, finished future, else None."""
        with self._lock:
            entry = self._readers.get(id(future))
            return (entry[2], entry[3]) if entry and entry[2] else None

    def hold(self, job_prefix: str) -> None:
        """Keep the objects of job ``job_prefix`` for good (and its executor's functions)."""
        with self._lock:
            self._held.add(job_prefix)

    def keeps(self, job_prefix: str) -> bool:
        """Whether the objects of the finished job ``job_prefix`` must stay for now."""
        with self._lock:
            return job_prefix in self._held or bool(self._kept.get(job_prefix))

    def holds_any(self) -> bool:
        """Whether a job is kept for good: the executor's objects then outlive it."""
        with self._lock:
            return bool(self._held)
