"""Deleting finished jobs' objects: together, on a thread of their own.

The monitor hands over each finished job's prefix (:meth:`Sweeper.discard`); the prefixes
handed over within ``SWEEP_SECONDS`` of the first are deleted together, on the cleanup thread,
when the monitor's loop next calls :meth:`Sweeper.sweep_if_due`. A thread woken and a delete
per job would sit on a warm round trip's path, and a burst of one-call jobs from joblib or dask
would pay them call by call. Deletes are best effort: a store that is down leaves the objects
(local files are private to the user, S3 data expires: ``lifecycle_days``).
"""

from __future__ import annotations

import concurrent.futures
import threading
import time

from lambdaexec.storage import Storage

#: finished jobs' objects wait at most about this long to be deleted together
SWEEP_SECONDS = 0.2


class Sweeper:
    """Deletes the prefixes of finished jobs in batches; see the module docstring."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self._lock = threading.Lock()
        self._prefixes: list[str] = []  # discarded since the last sweep
        self._since = 0.0  # time.monotonic() of the first of them
        self._thread = concurrent.futures.ThreadPoolExecutor(1, "lambdaexec-cleanup")

    @property
    def pending(self) -> bool:
        """Whether prefixes wait for the next sweep."""
        return bool(self._prefixes)

    def discard(self, prefix: str) -> None:
        """Delete the objects under ``prefix`` (a finished job's) at the next sweep."""
        with self._lock:
            if not self._prefixes:
                self._since = time.monotonic()
            self._prefixes.append(prefix)

    def sweep_if_due(self) -> None:
        """Sweep if the first prefix waiting has waited ``SWEEP_SECONDS``."""
        if self._prefixes and time.monotonic() - self._since >= SWEEP_SECONDS:
            self.sweep()

    def sweep(self) -> None:
        """Delete the objects of the prefixes discarded so far, on the cleanup thread."""
        with self._lock:
            prefixes, self._prefixes = self._prefixes, []
        if prefixes:
            try:
                self._thread.submit(_delete_all, self.storage, prefixes)
            except RuntimeError:  # the interpreter is exiting: leave the data, not the future
                pass

    def wait(self) -> None:
        """Wait until the deletes already swept are done (benchmarks count their requests)."""
        self._thread.submit(lambda: None).result()

    def close(self) -> None:
        """Sweep what is left and wait for the deletes."""
        self.sweep()
        self._thread.shutdown(wait=True)


def _delete_all(storage: Storage, prefixes: list[str]) -> None:
    """Delete each job prefix's objects, best effort (see the module docstring)."""
    for p in prefixes:
        try:
            storage.delete(p + "/")
        except Exception:
            pass
