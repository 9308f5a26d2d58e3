"""Objects the store forgot, uploaded again from what the client still holds.

A Redis without persistence that restarts, or one that evicts under ``maxmemory`` (the
``allkeys-lru`` policy), forgets objects lambdaexec wrote: a job's function, its inputs, the
executor's initializer, results not read yet. The client still holds every unfinished call's
function and inputs (a future keeps its serialized call until it succeeds, for
:func:`lambdaexec.retry_failed`), so when a worker reports an input missing, or a result listed
as written cannot be read, the monitor has them uploaded here and runs the calls again, without
counting an attempt (nothing ran, or what ran was lost with the store)::

    worker status "MissingObjectError"  ──► Recovery.restore(job, calls)
    result object gone when read        ──┤    function, initializer: put again if missing
    a call's BroadcastMissingError      ──┘    a kept object (a broadcast value): put again
                                               inputs: the part put again at its key (up to
                                               RESTORE_BYTES), or the calls' own inputs as a
                                               new object <job>/args.r<n>
                                          ──► the monitor dispatches the calls again

It is bounded: a call's inputs are uploaded again at most :data:`MAX_ROUNDS` times, and a part at
its own key as often; past that the call fails with
:class:`~lambdaexec.errors.MissingObjectError` naming the store and the fix (for Redis:
``maxmemory-policy noeviction`` and persistence). What the client no longer holds fails the
same way at once.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from lambdaexec.errors import MissingObjectError, StorageError
from lambdaexec.runtime.job import FINISHED, RESTORED, Job
from lambdaexec.storage import Storage
from lambdaexec.wire import serialize

#: times a call's inputs (and a part at its own key) may be uploaded again before it fails
MAX_ROUNDS = 4
#: a lost part up to this size is put again whole at its key (its calls not yet started then
#: need nothing more); a larger one is not, and each call whose inputs are missing gets them in
#: a small object of its own batch (a store that evicts may keep a small object long enough)
RESTORE_BYTES = 8 << 20

_FIX = ("For Redis: set `maxmemory-policy noeviction` (and a maxmemory that holds a job's inputs), and "
        "persistence (`appendonly yes`) if it may restart; or use S3 storage (storage='s3')")


def forgotten(status: dict[str, Any]) -> bool:
    """Whether a call's status says its worker found an object of the job missing."""
    return not status.get("ok", True) and status.get("error_type") == "MissingObjectError"


class Recovery:
    """Uploads again what the store lost of a job (see the module docstring)."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self._lock = threading.Lock()  # one restore at a time: a burst of reports puts a part once
        self._init: tuple[str, bytes] = ("", b"")
        self._kept: dict[str, Callable[[], bool]] = {}  # key -> puts it again; False: no longer held

    def keep_init(self, key: str, blob: bytes) -> None:
        """Hold the executor's initializer (stored at ``key``) to upload again if lost."""
        self._init = (key, blob)

    def keep(self, key: str, put_again: Callable[[], bool]) -> None:
        """Should calls miss the object at ``key`` (a broadcast value), ``put_again()`` stores
        it again, or returns ``False`` if the client no longer holds it."""
        self._kept[key] = put_again

    def put_kept(self, exc: BaseException) -> bool:
        """Whether a call raised ``exc`` for a kept object's absence, and it is stored again
        (or back already); ``False`` if not kept, or no longer held (the call fails with ``exc``)."""
        key = getattr(exc, "key", None) if isinstance(exc, KeyError) else None
        if not isinstance(key, str) or key not in self._kept:
            return False
        with self._lock:
            try:
                return self.storage.exists(key) or self._kept[key]()
            except StorageError:
                return False

    def restore(self, job: Job, calls: list[int], lock: threading.Lock, why: str,
                stale: str = "") -> tuple[list[int], list[tuple[int, BaseException]]]:
        """Upload again what ``calls`` of ``job`` need; return the calls to dispatch again and
        the calls that fail, each with its error. ``lock``: the monitor's (guards the job);
        ``why``: what was missing, for the error; ``stale``: the result object that reported
        it, deleted before the calls run again (a listing invoker would report it again)."""
        with self._lock:
            redo, failed, recipes = self._triage(job, calls, lock, why)
            if not redo:
                return [], failed
            try:
                self._put_shared(job, recipes[redo[0]][0])
                self._put_inputs(job, redo, recipes, lock)
            except StorageError as err:  # the store fails outright: that is the calls' error
                return [], failed + [(c, err) for c in redo]
        if stale:
            try:
                self.storage.delete_keys([stale])
            except StorageError:
                pass  # a listing invoker reports it again; the call then comes back here
        return redo, failed

    def _triage(self, job: Job, calls: list[int], lock: threading.Lock,
                why: str) -> tuple[list[int], list[tuple[int, BaseException]], dict[int, Any]]:
        """The calls to restore (and their recipes), and those that fail now."""
        redo, failed, recipes = [], [], {}
        with lock:
            for c in calls:
                future = job.futures[c]
                if future is None or job.state[c] == FINISHED:
                    continue
                recipe = getattr(future, "_recipe", None)
                if recipe is None:
                    failed.append((c, MissingObjectError(
                        f"{self.storage.describe()} lost an object call {future.call_id} needs, and this client "
                        f"no longer holds it to upload again ({why}). {_FIX}")))
                elif job.restored.get(c, 0) >= MAX_ROUNDS:
                    failed.append((c, MissingObjectError(
                        f"{self.storage.describe()} lost the objects of call {future.call_id} {MAX_ROUNDS + 1} "
                        f"times; lambdaexec uploaded them again each time, but the store evicts or forgets "
                        f"objects faster than the calls run ({why}). {_FIX}")))
                else:
                    redo.append(c)
                    recipes[c] = recipe
                    job.restored[c] = job.restored.get(c, 0) + 1
        return redo, failed, recipes

    def _put_shared(self, job: Job, blob: bytes) -> None:
        """Put the job's function and the executor's initializer again if the store lost them."""
        if job.func_key and not self.storage.exists(job.func_key):
            self.storage.put(job.func_key, blob)
        key, init = self._init
        if key and job.init_key == key and not self.storage.exists(key):
            self.storage.put(key, init)

    def _put_inputs(self, job: Job, redo: list[int], recipes: dict[int, Any], lock: threading.Lock) -> None:
        """Make the inputs of ``redo`` readable again: their parts at their own keys (small
        ones, not put again too often), else the calls' inputs as a new object."""
        with lock:
            parts = {job.ranges[c][0] for c in redo}
        alone = []
        for part in sorted(parts):
            mine = [c for c in redo if job.ranges[c][0] == part]
            key = job.args_key(part)
            if self.storage.exists(key):  # put again for an earlier report (or never lost)
                continue
            slots = self._slots(job, part, lock) if part < RESTORED else None
            if slots is not None and job.restored.get(-1 - part, 0) < MAX_ROUNDS:
                job.restored[-1 - part] = job.restored.get(-1 - part, 0) + 1
                self.storage.put(key, slots)
            else:
                alone.extend(mine)
        if alone:
            self._put_alone(job, alone, recipes, lock)

    def _slots(self, job: Job, part: int, lock: threading.Lock) -> list[memoryview] | None:
        """The bytes of original ``part`` as uploaded (zeros where a call is finished or its
        inputs moved), or ``None`` if it is too large."""
        with lock:
            held = []
            for c, (p, start, end) in enumerate(job.ranges):
                if p != part or end == 0:
                    continue
                future = job.futures[c]
                recipe = getattr(future, "_recipe", None) if future is not None else None
                held.append((start, end, recipe[1] if recipe is not None else None))
        if not held or max(end for _, end, _ in held) > RESTORE_BYTES:
            return None
        chunks: list[memoryview] = []
        offset = 0
        for start, end, data in sorted(held, key=lambda h: h[0]):
            if start > offset:
                chunks.append(memoryview(bytes(start - offset)))
            chunks.extend(data if data is not None else [memoryview(bytes(end - start))])
            offset = end
        serialize.pad(chunks, offset)
        return chunks

    def _put_alone(self, job: Job, calls: list[int], recipes: dict[int, Any], lock: threading.Lock) -> None:
        """Store the inputs of ``calls`` as one new object, and point the calls at it."""
        key = f"{job.prefix}/args.r{len(job.restored_keys)}"
        chunks: list[memoryview] = []
        ranges, offset = {}, 0
        for c in calls:
            data = recipes[c][1]
            size = serialize.size_of(data)
            ranges[c] = (offset, offset + size)
            chunks.extend(data)
            offset = serialize.pad(chunks, offset + size)
        self.storage.put(key, chunks)
        with lock:
            part = RESTORED + len(job.restored_keys)
            job.restored_keys.append(key)
            for c, (start, end) in ranges.items():
                job.ranges[c] = (part, start, end)
