"""The durable job record: what ran, when, where, how each call ended and what it printed.

Every job (the calls of one function uploaded together) leaves two small JSON objects under
the configured prefix, beside (not inside) the job's bulk data, so they outlive its deletion::

    <prefix>/jobs/<job-id>/manifest   written when the job is submitted: job id, created,
                                      function name and code hash, calls, Python and package
                                      versions, host, backend, storage, memory, where its data is
    <prefix>/jobs/<job-id>/calls      written when its last call finished: per call state,
                                      error, stats (timestamps, worker), attempts, stdout, stderr,
                                      by column (see :func:`encode_calls`)

A job id is ``<UTC time>-<executor id>-<job number>``, so age is read from the key alone and
``clean`` needs one listing. While a job runs, its done count is the number of result objects
in its data prefix. :class:`JobRecorder` writes records (a watcher of the monitor); the other
functions read them for ``lambdaexec jobs``, ``logs``, ``plot``, ``clean`` and :func:`attach`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import platform
import socket
import sys
import threading
import time
from typing import Any

from lambdaexec import protocol
from lambdaexec.errors import LambdaExecError
from lambdaexec.observe.watcher import Watcher
from lambdaexec.storage import Storage

#: the timestamps (seconds since the epoch) and other stats a call's record keeps
TIMES = ("submitted", "invoked", "received", "func_start", "func_end", "result_written", "seen")
STAT_KEYS = (*TIMES, "worker", "bytes_in", "bytes_out", "attempt")


#: seconds between two expiries of old records by the same process (at executor shutdown)
CLEAN_INTERVAL = 3600.0
_CLEANED: dict[tuple[str, str], float] = {}  # (storage spec, prefix) -> when this process last expired
_CLEANED_LOCK = threading.Lock()


class JobNotFoundError(LambdaExecError, KeyError):
    """No job record matches the id given."""

    def __str__(self) -> str:
        return str(self.args[0])


def jobs_prefix(root: str) -> str:
    """Where job records live for the configured ``prefix`` ``root``."""
    return f"{root}/jobs/"


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
    """Writes each job's manifest when it is added and its calls record when it completes, on a
    thread of its own that wakes every ``WRITE_INTERVAL`` seconds and writes what has queued up:
    no call and no future waits for a record, and a burst of small jobs (joblib and dask submit
    one call at a time) is not interleaved with record writes call by call."""

    WRITE_INTERVAL = 0.25

    def __init__(self, storage: Storage, config: Any, executor_id: str):
        self.storage, self.config, self.executor_id = storage, config, executor_id
        self.root = jobs_prefix(config.prefix)
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}  # job prefix -> its calls finished so far
        self._queue: list[tuple[Any, tuple]] = []
        self._wake = threading.Condition(self._lock)
        self._closing = False
        self._writer: threading.Thread | None = None

    def added(self, job: Any) -> None:
        created = time.time()
        job_id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(created))}-{self.executor_id}-" \
                 f"{job.prefix.rsplit('/', 1)[1]}"
        with self._lock:
            self._pending[job.prefix] = _Pending(job_id, len(job.futures))
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name="lambdaexec-record", daemon=True)
                self._writer.start()
        cfg = self.config
        manifest = {
            "job_id": job_id, "created": created, "function": getattr(job, "name", "") or "?",
            "code_hash": job.func_key.rsplit("/", 1)[1], "calls": len(job.futures),
            **_environment(), "executor_id": self.executor_id, "backend": cfg.backend,
            "storage": self.storage.spec, "job_prefix": job.prefix, "func_key": job.func_key,
            "args_key": job.args_key, "memory": cfg.memory, "architecture": cfg.architecture,
            "timeout": cfg.timeout, "retries": cfg.retries, "start_deadline": cfg.start_deadline,
            "keep_data": cfg.keep_data,
        }
        self._write(self._put, f"{self.root}{job_id}/manifest", manifest)
        with self._lock:  # the manifest goes out now, not a WRITE_INTERVAL later: with workers
            self._wake.notify()  # forked in ms, `lambdaexec jobs` may look right after a first result

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
        self._write(self._put_calls, pending)

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
        try:  # expire old records
            clean(self.storage, self.config.prefix, self.config.job_retention_days * 86400.0)
        except Exception:
            pass

    def _write(self, fn: Any, *args: Any) -> None:
        with self._lock:
            if not self._closing:
                self._queue.append((fn, args))
                return
        fn(*args)  # after close (a straggler): write it here and now

    def _write_loop(self) -> None:
        while True:
            with self._lock:
                if not self._closing:
                    self._wake.wait(self.WRITE_INTERVAL)
                batch, self._queue, closing = self._queue, [], self._closing
            for fn, args in batch:
                fn(*args)
            if closing:
                return

    def _put_calls(self, pending: _Pending) -> None:
        self._put(f"{self.root}{pending.job_id}/calls", encode_calls(pending.rows))

    def _put(self, key: str, record: dict[str, Any]) -> None:
        try:
            self.storage.put(key, json.dumps(record, separators=(",", ":")).encode())
        except Exception as err:  # the record must never fail the user's calls
            print(f"lambdaexec: could not write the job record {key}: {err!r}", file=sys.stderr)


class _Pending:
    """One job's calls while it runs: a row per finished call (see :func:`encode_calls`)."""

    __slots__ = ("job_id", "rows", "left")

    def __init__(self, job_id: str, calls: int):
        self.job_id, self.rows, self.left = job_id, [None] * calls, calls


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
    return {"finished": now, "base": base, "state": list(states), "attempts": list(attempts),
            "error": {i: e for i, e in enumerate(errors) if e}, "stats": columns,
            **{name: {i: t for i, t in enumerate(texts) if t}
               for name, texts in (("stdout", stdouts), ("stderr", stderrs), ("remote_traceback", tracebacks))}}


def decode_calls(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-call dicts (``call``, ``state``, ``attempts``, ``error``, ``traceback``, ``stdout``,
    ``stderr``, ``stats`` with timestamps in seconds since the epoch) from a calls record."""
    base, stats = record["base"], record["stats"]
    out = []
    for i, state in enumerate(record["state"]):
        key = str(i)
        call_stats = {k: base + col[i] / 1e6 for k in TIMES if (col := stats.get(k)) and col[i] is not None}
        call_stats.update({k: col[i] for k in STAT_KEYS[len(TIMES):]
                           if (col := stats.get(k)) and col[i] is not None})
        out.append({"call": i, "state": state, "attempts": record["attempts"][i],
                    "error": record["error"].get(key), "traceback": record["remote_traceback"].get(key),
                    "stdout": record["stdout"].get(key, ""), "stderr": record["stderr"].get(key, ""),
                    "stats": call_stats})
    return out


# --- reading records ------------------------------------------------------------------------
@dataclasses.dataclass
class JobRecord:
    """One job as its record tells it. ``calls`` is None while the job has not finished."""

    manifest: dict[str, Any]
    calls: list[dict[str, Any]] | None
    finished: float | None = None
    #: result objects present in the job's data (known while it runs; -1 if not looked up)
    results_present: int = -1

    @property
    def job_id(self) -> str:
        """The job's id."""
        return self.manifest["job_id"]

    def counts(self) -> dict[str, int]:
        """Calls ``done``, ``failed``, ``running`` (or not yet started) and ``cancelled``."""
        n = self.manifest["calls"]
        if self.calls is None:
            done = max(0, self.results_present)
            return {"done": done, "failed": 0, "running": n - done, "cancelled": 0}
        out = {"done": 0, "failed": 0, "running": 0, "cancelled": 0}
        for c in self.calls:
            out[c["state"]] += 1
        return out

    @property
    def state(self) -> str:
        """``finished``, ``failed`` (some call failed or was cancelled), or ``running`` (no calls
        record yet: still running, or its client exited before the end)."""
        if self.calls is None:
            return "running"
        return "failed" if any(c["state"] != "done" for c in self.calls) else "finished"

    @property
    def duration(self) -> float | None:
        """Seconds from submission to the last result (None while running)."""
        return None if self.finished is None else self.finished - self.manifest["created"]

    def cost(self, prices: Any = None) -> Any:
        """The :class:`~lambdaexec.observe.cost.CostReport` of the finished calls."""
        from lambdaexec.observe.cost import cost

        return cost(self.futures(), memory=self.manifest["memory"],
                    architecture=self.manifest["architecture"], prices=prices,
                    backend=self.manifest["backend"])

    def futures(self) -> list[Any]:
        """Finished stand-ins for the calls (``stats``, ``attempts``, ``call_id``, output), enough
        for :func:`lambdaexec.cost` and :func:`lambdaexec.plot_timeline`."""
        job = self.manifest["job_prefix"].rsplit("/", 1)[1]
        return [_Recorded(f"{job}/{c['call']}", c) for c in self.calls or []]


class _Recorded:
    """A finished call read back from its record (quacks like a LambdaFuture's details)."""

    def __init__(self, call_id: str, call: dict[str, Any]):
        self.call_id, self.stats, self.attempts = call_id, call["stats"], call["attempts"]
        self.stdout, self.stderr, self.state = call["stdout"], call["stderr"], call["state"]

    def exception(self) -> Any:
        return None if self.state == "done" else RuntimeError(self.state)

    def cancelled(self) -> bool:
        return self.state == "cancelled"


def job_ids(storage: Storage, root: str) -> list[str]:
    """Ids of every recorded job, oldest first."""
    prefix = jobs_prefix(root)
    ids = {k[len(prefix):].split("/", 1)[0] for k in storage.list(prefix)}
    return sorted(ids)


def resolve(storage: Storage, root: str, job: str) -> str:
    """The full id of the job named ``job`` (a full id, or a unique part of one)."""
    ids = job_ids(storage, root)
    if job in ids:
        return job
    hits = [i for i in ids if job in i]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise JobNotFoundError(f"no job record matches {job!r} under {jobs_prefix(root)} (see `lambdaexec jobs`)")
    raise JobNotFoundError(f"{job!r} matches {len(hits)} jobs ({', '.join(hits[:3])}, ...): give more of the id")


def read_job(storage: Storage, root: str, job_id: str, look: bool = True) -> JobRecord:
    """The record of ``job_id``; with ``look``, count the results of a job still running."""
    base = f"{jobs_prefix(root)}{job_id}/"
    try:
        manifest = json.loads(bytes(storage.get(base + "manifest")))
    except KeyError:
        raise JobNotFoundError(f"job {job_id} has no manifest under {base}") from None
    try:
        done = json.loads(bytes(storage.get(base + "calls")))
        return JobRecord(manifest, decode_calls(done), done["finished"])
    except KeyError:
        present = len(protocol.keys_by_call(storage.list(manifest["job_prefix"] + "/calls/"))) if look else -1
        return JobRecord(manifest, None, results_present=present)


def list_jobs(storage: Storage, root: str, limit: int = 20) -> list[JobRecord]:
    """The ``limit`` most recent jobs, newest first."""
    return [read_job(storage, root, i) for i in reversed(job_ids(storage, root)[-limit:])]


def created_at(job_id: str) -> float:
    """When ``job_id`` was created (from the id itself), seconds since the epoch."""
    import calendar

    return calendar.timegm(time.strptime(job_id.split("-", 1)[0], "%Y%m%dT%H%M%S"))


def clean(storage: Storage, root: str, older_than: float, dry_run: bool = False) -> list[str]:
    """Delete the records of jobs created more than ``older_than`` seconds ago, and whatever
    data of theirs is left (a client that exited early leaves it); return their ids."""
    now = time.time()
    old = [i for i in job_ids(storage, root) if now - created_at(i) > older_than]
    if not dry_run:
        for job_id in old:
            try:
                manifest = json.loads(bytes(storage.get(f"{jobs_prefix(root)}{job_id}/manifest")))
                storage.delete(manifest["job_prefix"] + "/")
            except (KeyError, ValueError):
                pass
            storage.delete(f"{jobs_prefix(root)}{job_id}/")
    return old


def result_keys(storage: Storage, manifest: dict[str, Any]) -> dict[int, str]:
    """``{call: key of the object holding its result}`` for the calls of a recorded job that
    have written one (a batch object holds several: :mod:`lambdaexec.protocol`)."""
    return protocol.keys_by_call(storage.list(manifest["job_prefix"] + "/calls/"))


def _call_from_result(storage: Storage, keys: dict[int, str], call: int,
                      read: dict[str, Any]) -> dict[str, Any] | None:
    """A call's record read from its result object (for a job whose calls record is not
    written); ``keys`` from :func:`result_keys`, ``read`` caches the objects read."""
    try:
        key = keys[call]
        if key not in read:
            read[key] = protocol.unpack_results(key, storage.get(key))
        status, _ = read[key][call]
    except KeyError:
        return None
    state = "done" if status.get("ok") else "failed"
    error = None if state == "done" else status.get("message") or "the call raised (see its traceback)"
    if status.get("error_type") and error:
        error = f"{status['error_type']}: {error}"
    return {"call": call, "state": state, "attempts": status.get("attempt", 0) + 1, "error": error,
            "traceback": status.get("traceback"), "stdout": status.get("stdout", ""),
            "stderr": status.get("stderr", ""), "stats": {k: status[k] for k in STAT_KEYS if k in status}}


def format_call(job_id: str, c: dict[str, Any]) -> str:
    """A call's record as text: a header, its stdout, its stderr, its error and traceback."""
    worker = c["stats"].get("worker", "?")
    parts = [f"=== job {job_id} call {c['call']}: {c['state']} after {c['attempts']} attempt(s) on {worker} ==="]
    parts += ["--- stdout ---", c["stdout"].rstrip("\n") or "(nothing)"]
    parts += ["--- stderr ---", c["stderr"].rstrip("\n") or "(nothing)"]
    if c.get("error"):
        parts += ["--- error ---", c["error"]]
    if c.get("traceback"):
        parts += ["--- traceback ---", c["traceback"].rstrip("\n")]
    return "\n".join(parts)


def call_logs(storage: Storage, job: JobRecord, call: int | None = None) -> list[str]:
    """Text of call ``call`` of ``job``, or of every failed call (a line saying so if none).
    A job still running is read from its result objects."""
    n = job.manifest["calls"]
    if call is not None and not 0 <= call < n:
        raise LambdaExecError(f"job {job.job_id} has calls 0 to {n - 1}, not {call}")
    if job.calls is not None:
        calls: list[dict[str, Any] | None] = list(job.calls)
    else:
        wanted = [call] if call is not None else range(n)
        keys, read = result_keys(storage, job.manifest), {}
        found = {i: _call_from_result(storage, keys, i, read) for i in wanted}
        calls = [found.get(i) for i in range(n)]
    if call is not None:
        c = calls[call]
        if c is None:
            return [f"job {job.job_id} call {call} has not finished (or its data is gone): no output yet"]
        return [format_call(job.job_id, c)]
    failed = [c for c in calls if c is not None and c["state"] != "done"]
    if not failed:
        return [f"no call of job {job.job_id} failed; `lambdaexec logs {job.job_id} N` shows call N (0 to {n - 1})"]
    return [format_call(job.job_id, c) for c in failed]
