"""The durable job record: what ran, when, where, how each call ended and what it printed.

Every job (the calls of one function uploaded together) leaves two small JSON objects under
the configured prefix, beside (not inside) the job's bulk data, so they outlive its deletion::

    <prefix>/jobs/<job-id>/manifest   written soon after the job is submitted: job id, created,
                                      function name and code hash, calls, Python and package
                                      versions, host, backend, storage, memory, where its data is,
                                      the client process (``client``: pid, when it started,
                                      which machine) so ``clean`` can tell a killed client's
                                      executor from a live one
    <prefix>/jobs/<job-id>/calls      written when its last call finished: per call state,
                                      error, stats (timestamps, worker, result object), attempts,
                                      stdout, stderr, by column (see :func:`encode_calls`)

The writer writes every ``WRITE_INTERVAL``, a job's manifest once the job has finished or has
run ``WRITE_INTERVAL``. A job that finishes by then (a one-call job from joblib or dask, a
loop's ``submit(...).result()``) leaves ONE record: its manifest with the calls record inside,
under ``"calls_record"``. And the manifests one round of the writer has go in one object
(``<time>-<executor>-<first>-<last>/manifest`` holding ``{"jobs": {job id: manifest}}``:
:mod:`lambdaexec.observe.clients`), as do its calls records of jobs whose ids share a second,
so a loop of ``submit(...).result()``, a job per call, costs a PUT per round, not one per call.

A job id is ``<UTC time>-<executor id>-<job number>``, the time being the second in which its
manifest was written (``created``, in the manifest, is when the job was submitted, at most
about ``2 * WRITE_INTERVAL`` earlier), so age is read from the key alone and ``clean`` needs
one listing. While a job runs, its done count is the number of result objects
in its data prefix. :class:`JobRecorder` writes records (a watcher of the monitor);
:mod:`~lambdaexec.observe.jobs` reads them for ``lambdaexec jobs``, ``logs``, ``plot`` and
:func:`attach`, and :mod:`~lambdaexec.observe.clean` expires them for ``lambdaexec clean``.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import platform
import socket
import sys
import threading
import time
from typing import Any

from lambdaexec.observe.clients import jobs_prefix, record_names, this_client
from lambdaexec.runtime.watcher import Watcher
from lambdaexec.storage import Storage

#: the timestamps (seconds since the epoch) and other stats a call's record keeps
TIMES = ("submitted", "invoked", "received", "func_start", "func_end", "result_written", "seen")
STAT_KEYS = (*TIMES, "worker", "bytes_in", "bytes_out", "attempt", "memory", "peak_memory", "result_key")


#: seconds between two expiries of old records by the same process (at executor shutdown)
CLEAN_INTERVAL = 3600.0
_CLEANED: dict[tuple[str, str], float] = {}  # (storage spec, prefix) -> when this process last expired
_CLEANED_LOCK = threading.Lock()


@functools.cache
def _environment() -> dict[str, Any]:
    """Where this client runs: Python and package versions, host, command (looked up once)."""
    from importlib import metadata

    packages = {}
    for name in ("lambdaexec", "cloudpickle", "numpy"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {"python": platform.python_version(), "packages": packages, "host": socket.gethostname(),
            "argv": sys.argv[:3]}


class JobRecorder(Watcher):
    """Writes each job's manifest once it has finished or run ``WRITE_INTERVAL``, and its calls
    record when it completes (inside the manifest if by then), on a thread of its own that wakes
    every ``WRITE_INTERVAL`` seconds and writes what has queued up, one object per kind (see the
    module docstring): no call and no future waits for a record, and a burst of small jobs
    (joblib and dask submit one call at a time) costs a write per round, not per call."""

    WRITE_INTERVAL = 0.25

    def __init__(self, storage: Storage, config: Any, executor_id: str):
        self.storage, self.config, self.executor_id = storage, config, executor_id
        self.root = jobs_prefix(config.prefix)
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}  # job prefix -> its calls finished so far
        self._queue: list[tuple[str, _Pending]] = []  # (kind of record, its job)
        self._wake = threading.Condition(self._lock)
        self._closing = False
        self._writer: threading.Thread | None = None

    def added(self, job: Any) -> None:
        created = time.time()
        cfg = self.config
        manifest = {  # its "job_id" is given when it is written (_manifest)
            "created": created, "function": getattr(job, "name", "") or "?",
            "code_hash": job.func_key.rsplit("/", 1)[1], "calls": len(job.futures),
            **_environment(), "executor_id": self.executor_id, "backend": cfg.backend,
            "storage": self.storage.spec, "job_prefix": job.prefix, "func_key": job.func_key,
            "args_key": job.args_keys[0] if job.args_keys else "", "memory": cfg.memory,
            "architecture": cfg.architecture,
            "timeout": cfg.timeout, "retries": cfg.retries, "start_deadline": cfg.start_deadline,
            "keep_data": cfg.keep_data, "client": this_client(),
            "workers": cfg.resolved_workers() if cfg.backend == "local" else cfg.max_workers or 1000,
        }
        pending = _Pending(job.prefix.rsplit("/", 1)[1], len(job.futures), manifest)
        with self._lock:
            self._pending[job.prefix] = pending
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name="lambdaexec-record", daemon=True)
                self._writer.start()
        self._write("manifest", pending)

    def finished(self, job: Any, call: int, future: Any, exc: BaseException | None) -> None:
        # the hot path (once per call, on the monitor's threads): one tuple and a copy of the
        # stats dict, no formatting (a failure's text is made here, rarely); encoded by the writer
        if exc is None:
            row = ("done", None, future.stats.copy(), future.attempts, future.stdout, future.stderr,
                   future.remote_traceback)
        else:  # the text, not the exception: its traceback would keep frames (and values) alive
            state = "cancelled" if isinstance(exc, concurrent.futures.CancelledError) else "failed"
            row = (state, None if state == "cancelled" else f"{type(exc).__name__}: {exc}",
                   future.stats.copy(), future.attempts, future.stdout, future.stderr, future.remote_traceback)
        with self._lock:
            pending = self._pending.get(job.prefix)
            if pending is None or pending.rows[call] is not None:  # not ours, or heard already
                return
            pending.rows[call] = row
            pending.left -= 1
            if pending.left:
                return
            del self._pending[job.prefix]
            if pending.manifest is not None:  # not written yet: the calls go inside it
                return
        self._write("calls", pending)

    def closed(self) -> None:
        if self._writer is None:
            return
        with self._lock:
            self._closing = True
            self._wake.notify()
        self._writer.join()
        where, now = (json.dumps(self.storage.spec, sort_keys=True, default=str), self.config.prefix), time.monotonic()
        with _CLEANED_LOCK:  # a listing of every record: once an hour per process is plenty
            if now - _CLEANED.get(where, -CLEAN_INTERVAL) < CLEAN_INTERVAL:
                return
            _CLEANED[where] = now
        # in the background, on a store of its own (this one closes with the executor): listing
        # a store of many records takes seconds (61,000: 1.7 s on tmpfs), which a shutdown, or
        # a joblib call aborted after a task raised, must not wait for
        threading.Thread(target=_expire, args=(self.storage.spec, self.config.prefix,
                                               self.config.job_retention_days * 86400.0),
                         name="lambdaexec-expire", daemon=True).start()

    def _write(self, kind: str, pending: _Pending) -> None:
        with self._lock:
            if not self._closing:
                self._queue.append((kind, pending))
                return
        self._write_round([(kind, pending)])  # after close (a straggler): write it here and now

    def _write_loop(self) -> None:
        while True:
            with self._lock:
                if not self._closing:
                    self._wake.wait(self.WRITE_INTERVAL)
                queued, self._queue, closing = self._queue, [], self._closing
                now, batch = time.monotonic(), []
                for kind, pending in queued:  # a job just added and still running: its manifest
                    # waits a round, so that one of a short job carries its calls (one object, not two)
                    young = kind == "manifest" and pending.left and now - pending.added < self.WRITE_INTERVAL
                    (self._queue if young and not closing else batch).append((kind, pending))
            self._write_round(batch)
            if closing:
                return

    def _write_round(self, batch: list[tuple[str, _Pending]]) -> None:
        """Write the records queued: one object per kind for the jobs whose ids have the same
        second (:func:`~lambdaexec.observe.clients.record_names`), its records by job id if
        several. A job's id takes the time of the round that writes its manifest, so the
        manifests of one round share one object."""
        groups: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        for kind, pending in batch:
            record = self._manifest(pending, stamp) if kind == "manifest" else encode_calls(pending.rows)
            groups.setdefault((kind, pending.job_id.rsplit("-", 1)[0]), {})[pending.job_id] = record
        for (kind, _), records in groups.items():
            for name, ids in record_names(list(records)):
                body = records[ids[0]] if len(ids) == 1 else {"jobs": {i: records[i] for i in ids}}
                self._put(f"{self.root}{name}/{kind}", body)

    def _manifest(self, pending: _Pending, stamp: str) -> dict[str, Any]:
        """``pending``'s manifest, taken, with its job id (``<stamp>-<executor>-<job number>``);
        the calls record of a job finished by now goes inside."""
        with self._lock:
            pending.job_id = f"{stamp}-{self.executor_id}-{pending.number}"
            manifest, pending.manifest = {"job_id": pending.job_id, **pending.manifest}, None
            done = pending.left == 0
        if done:
            manifest["calls_record"] = encode_calls(pending.rows)
        return manifest

    def _put(self, key: str, record: dict[str, Any]) -> None:
        try:
            self.storage.put(key, json.dumps(record, separators=(",", ":")).encode())
        except Exception as err:  # the record must never fail the user's calls
            print(f"lambdaexec: could not write the job record {key}: {err!r}", file=sys.stderr)


def _expire(spec: dict[str, Any], prefix: str, older_than: float) -> None:
    """Delete the records (and left data) of jobs older than ``older_than`` seconds, best
    effort: another process, or this one an hour later, tries again."""
    from lambdaexec.observe.clean import clean
    from lambdaexec.storage import open_storage

    try:
        storage = open_storage(spec)
        try:
            clean(storage, prefix, older_than)
        finally:
            storage.close()
    except Exception:
        pass


class _Pending:
    """One job's calls while it runs: a row per finished call (see :func:`encode_calls`)."""

    __slots__ = ("number", "job_id", "rows", "left", "manifest", "added")

    def __init__(self, number: str, calls: int, manifest: dict[str, Any]):
        self.number, self.rows, self.left = number, [None] * calls, calls
        self.added = time.monotonic()
        self.job_id = ""  # given when its manifest is written
        self.manifest: dict[str, Any] | None = manifest  # None once the writer has written it


#: a finished call's row, as the recorder keeps it until its job's last call (never the future)
ROW = ("state", "error", "stats", "attempts", "stdout", "stderr", "remote_traceback")


def encode_calls(rows: list[tuple]) -> dict[str, Any]:
    """The calls record from one :data:`ROW` tuple per call, by column: timestamps as integer
    microseconds from ``base`` (JSON writes integers several times faster than floats, and a
    100,000-call job has 700,000 of them); texts and errors only for the calls that have one."""
    states, errors, stats, attempts, stdouts, stderrs, tracebacks = zip(*rows) if rows else ((),) * 7
    now = time.time()
    base = min((s.get("submitted") or now for s in stats), default=now)
    columns: dict[str, list[Any]] = {}
    for k in TIMES:
        try:  # every call has every time (the usual case): no test per value
            columns[k] = [round((s[k] - base) * 1e6) for s in stats]
        except KeyError:
            columns[k] = [None if (v := s.get(k)) is None else round((v - base) * 1e6) for s in stats]
    for k in STAT_KEYS[len(TIMES):]:
        columns[k] = [s.get(k) for s in stats]
    # the object that held each result, by its name under the job's calls/ (the job's prefix is
    # in the manifest): which calls shared one, so that cost counts its PUT once
    columns["result_key"] = [k and k.rpartition("/")[2] for k in columns["result_key"]]
    return {"finished": now, "base": base, "state": list(states), "attempts": list(attempts),
            "error": {i: e for i, e in enumerate(errors) if e}, "stats": columns,
            **{name: {i: t for i, t in enumerate(texts) if t}
               for name, texts in (("stdout", stdouts), ("stderr", stderrs), ("remote_traceback", tracebacks))}}


def decode_calls(record: dict[str, Any], job_prefix: str = "") -> list[dict[str, Any]]:
    """Per-call dicts (``call``, ``state``, ``attempts``, ``error``, ``traceback``, ``stdout``,
    ``stderr``, ``stats`` with timestamps in seconds since the epoch, and ``result_key`` under
    ``job_prefix``, the manifest's) from a calls record."""
    base, stats = record["base"], record["stats"]
    out = []
    for i, state in enumerate(record["state"]):
        key = str(i)
        call_stats = {k: base + col[i] / 1e6 for k in TIMES if (col := stats.get(k)) and col[i] is not None}
        call_stats.update({k: col[i] for k in STAT_KEYS[len(TIMES):]
                           if (col := stats.get(k)) and col[i] is not None})
        if "result_key" in call_stats:
            call_stats["result_key"] = f"{job_prefix}/calls/{call_stats['result_key']}"
        out.append({"call": i, "state": state, "attempts": record["attempts"][i],
                    "error": record["error"].get(key), "traceback": record["remote_traceback"].get(key),
                    "stdout": record["stdout"].get(key, ""), "stderr": record["stderr"].get(key, ""),
                    "stats": call_stats})
    return out

