"""Job records read back: list them, find one by a part of its id, read its calls and output.

What :mod:`lambdaexec.observe.record` writes (see its docstring for the layout), as the CLI's
``jobs``, ``logs`` and ``plot`` and :func:`lambdaexec.attach` read it. A job whose calls record
is not written yet (still running, or its client was killed) is read from its result objects.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lambdaexec.errors import IntegrityError, LambdaExecError
from lambdaexec.observe.clients import client_alive, job_ids, jobs_prefix, read_record, record_index
from lambdaexec.observe.record import STAT_KEYS, decode_calls
from lambdaexec.storage import Storage, signed
from lambdaexec.storage.signed import unsigned
from lambdaexec.wire import protocol


class JobNotFoundError(LambdaExecError, KeyError):
    """No job record matches the id given."""

    def __str__(self) -> str:
        return str(self.args[0])



@dataclasses.dataclass
class JobRecord:
    """One job as its record tells it. ``calls`` is None while the job has not finished."""

    manifest: dict[str, Any]
    calls: list[dict[str, Any]] | None
    finished: float | None = None
    #: result objects present in the job's data (known while it runs; -1 if not looked up)
    results_present: int = -1
    #: calls known started and not done (Lambda's start markers), or, on local workers, as many
    #: as its executor's workers can run (:func:`list_jobs` shares them among its jobs); -1: unknown
    started: int = -1
    #: whether the client that ran it still runs (None: cannot be told from here)
    client_alive: bool | None = None

    @property
    def job_id(self) -> str:
        """The job's id."""
        return self.manifest["job_id"]

    def counts(self) -> dict[str, int]:
        """Calls ``done``, ``failed``, ``running``, ``queued`` (not started yet), ``cancelled``,
        and ``lost`` (not done when its client died)."""
        n = self.manifest["calls"]
        out = {"done": 0, "failed": 0, "running": 0, "queued": 0, "cancelled": 0, "lost": 0}
        if self.calls is None:
            out["done"] = done = max(0, self.results_present)
            if self.state == "lost":
                out["lost"] = n - done
            else:
                out["running"] = n - done if self.started < 0 else min(n - done, self.started)
                out["queued"] = n - done - out["running"]
            return out
        for c in self.calls:
            out[c["state"]] += 1
        return out

    @property
    def state(self) -> str:
        """``finished``, ``failed`` (some call failed or was cancelled), ``running`` (no calls
        record yet), or ``lost`` (no calls record, and its client process is known to be gone:
        killed, or it exited without waiting for its calls)."""
        if self.calls is None:
            return "lost" if self.client_alive is False else "running"
        return "failed" if any(c["state"] != "done" for c in self.calls) else "finished"

    @property
    def peak_memory(self) -> int:
        """Bytes: the highest peak resident memory of one of its calls (0 if unknown or running)."""
        return max((c["stats"].get("peak_memory") or 0 for c in self.calls or ()), default=0)

    @property
    def duration(self) -> float | None:
        """Seconds from submission to the last result (None while running)."""
        return None if self.finished is None else self.finished - self.manifest["created"]

    def cost(self, prices: Any = None) -> Any:
        """The :class:`~lambdaexec.observe.cost.CostReport` of the finished calls."""
        from lambdaexec.observe.cost import cost

        return cost(self.futures(), default_memory=self.manifest["memory"],
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


def read_job(storage: Storage, root: str, job_id: str, look: bool = True,
             index: dict[str, dict[str, str]] | None = None, cache: dict[str, Any] | None = None) -> JobRecord:
    """The record of ``job_id``; with ``look``, count the results of a job still running.
    ``index`` (:func:`~lambdaexec.observe.clients.record_index`) and ``cache`` spare listings
    and reads when reading many jobs."""
    storage = unsigned(storage)  # records are JSON, never unpickled: not signed (docs/security.md)
    keys = (record_index(storage, root, job_id) if index is None else index).get(job_id, {})
    try:
        manifest = read_record(storage, keys["manifest"], job_id, cache)
    except KeyError:
        raise JobNotFoundError(f"job {job_id} has no manifest under {jobs_prefix(root)}") from None
    try:  # a job that ended before its manifest was written has its calls inside (record.py)
        done = manifest.pop("calls_record", None) or read_record(storage, keys["calls"], job_id, cache)
        return JobRecord(manifest, decode_calls(done, manifest["job_prefix"]), done["finished"])
    except KeyError:
        job = JobRecord(manifest, None, client_alive=client_alive(manifest.get("client")))
        if look:
            done = protocol.keys_by_call(storage.list(manifest["job_prefix"] + "/calls/"))
            job.results_present = len(done)
            if manifest.get("backend") == "lambda":  # its workers mark the calls they start
                marked = {protocol.parse_started(k)[0] for k in storage.list(manifest["job_prefix"] + "/started/")}
                job.started = len(marked - set(done))
        return job


def list_jobs(storage: Storage, root: str, limit: int = 20) -> list[JobRecord]:
    """The ``limit`` most recent jobs, newest first. The running calls of jobs on local workers
    are their executor's workers, given to its oldest running jobs first (as its pool takes calls)."""
    index, cache = record_index(unsigned(storage), root), {}
    found = [read_job(storage, root, i, index=index, cache=cache) for i in reversed(sorted(index)[-limit:])]
    free: dict[str, int] = {}
    for job in reversed(found):  # oldest first
        m = job.manifest
        if job.state != "running" or m.get("backend") != "local" or not m.get("workers"):
            continue
        left = free.setdefault(m.get("executor_id", ""), int(m["workers"]))
        job.started = min(left, m["calls"] - max(0, job.results_present))
        free[m.get("executor_id", "")] = left - job.started
    return found


def result_keys(storage: Storage, manifest: dict[str, Any]) -> dict[int, str]:
    """``{call: key of the object holding its result}`` for the calls of a recorded job that
    have written one (a batch object holds several: :mod:`lambdaexec.wire.protocol`)."""
    return protocol.keys_by_call(storage.list(manifest["job_prefix"] + "/calls/"))


def _call_from_result(storage: Storage, keys: dict[int, str], call: int,
                      read: dict[str, Any]) -> dict[str, Any] | None:
    """A call's record read from its result object (for a job whose calls record is not
    written); ``keys`` from :func:`result_keys`, ``read`` caches the objects read."""
    try:
        key = keys[call]
        if key not in read:  # checked before its status head is parsed (marshal is for trusted data)
            owner = signed.owner_of(key.rsplit("/calls/", 1)[0])
            store = signed.SignedStorage(unsigned(storage), signed.secret_for(owner))
            read[key] = protocol.unpack_results(key, store.get(key))
        status, _ = read[key][call]
    except (KeyError, IntegrityError):  # not written yet, or not checkable here (no secret)
        return None
    state = "done" if status.get("ok") else "failed"
    error = None if state == "done" else status.get("message") or "the call raised (see its traceback)"
    if status.get("error_type") and error:
        error = f"{status['error_type']}: {error}"
    return {"call": call, "state": state, "attempts": status.get("attempt", 0) + 1, "error": error,
            "traceback": status.get("traceback"), "stdout": status.get("stdout", ""),
            "stderr": status.get("stderr", ""),
            "stats": {**{k: status[k] for k in STAT_KEYS if k in status}, "result_key": key}}


def format_call(job_id: str, c: dict[str, Any]) -> str:
    """A call's record as text: a header, its stdout, its stderr, its error and traceback."""
    worker = c["stats"].get("worker", "?")
    parts = [f"=== job {job_id} call {c['call']}: {c['state']} after {c['attempts']} attempt(s) on {worker} ==="]
    if c["state"] == "failed":
        parts.append(f"call id: {job_id.split('-', 1)[-1]}/{c['call']} (`lambdaexec replay` it here)")
    if c["stats"].get("peak_memory"):
        memory = c["stats"].get("memory")
        peak = c["stats"]["peak_memory"] / 2**20
        parts.append(f"peak memory: {peak:,.0f} MB" + (f" of {memory} MB" if memory else ""))
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
            return [f"job {job.job_id} call {call} has not finished (or its data is gone): a call's output is "
                    "stored with its result when it ends, so there is none to show yet"]
        return [format_call(job.job_id, c)]
    failed = [c for c in calls if c is not None and c["state"] != "done"]
    if not failed:
        return [f"no call of job {job.job_id} failed; `lambdaexec logs {job.job_id} N` shows call N (0 to {n - 1})"]
    return [format_call(job.job_id, c) for c in failed]

