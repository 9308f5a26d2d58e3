"""Who ran a job, and where its records live: the job-record layout and the client's identity.

One record object may hold the records of several jobs of one executor whose ids share a
second (a round of the writer batches them: :mod:`lambdaexec.observe.record`); its key names
them, so a listing gives every job id without reading anything::

    <prefix>/jobs/<time>-<executor>-000007/manifest                 job 7's manifest (bare JSON)
    <prefix>/jobs/<time>-<executor>-000008-000031,000033/manifest   {"jobs": {job id: manifest}}

The jobs of one object have the same age (their ids' second), so they expire together.

A job record's manifest names its client (pid, when that process started, and the machine: boot
id and pid namespace), so that on the same machine ``clean`` and ``jobs`` can tell a client that
is gone from one that still runs, even if its pid was given to another process since.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from lambdaexec.storage import Storage


def jobs_prefix(root: str) -> str:
    """Where job records live for the configured ``prefix`` ``root``."""
    return f"{root}/jobs/"


def machine() -> str:
    """Which machine and process-id namespace this process runs in (its boot id and pid
    namespace on Linux, else its host name): where a recorded pid means this same process."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f"{f.read().strip()}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return socket.gethostname()


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, Linux), telling it from a later
    process given the same pid; None if there is no such process or it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


_CLIENT: dict[int, dict[str, Any]] = {}


def this_client() -> dict[str, Any]:
    """This client process as a manifest names it (looked up once per process)."""
    pid = os.getpid()
    if pid not in _CLIENT:
        _CLIENT[pid] = {"pid": pid, "start": process_start(pid), "machine": machine()}
    return _CLIENT[pid]


def job_ids(storage: Storage, root: str) -> list[str]:
    """Ids of every recorded job, oldest first."""
    return sorted(record_index(storage, root))


#: runs of job numbers one record object's name holds at most (a local file's name stays < 255 bytes)
MAX_RUNS = 12


def record_names(job_ids: list[str]) -> list[tuple[str, list[str]]]:
    """``[(name, ids), ...]``: the record objects for ``job_ids`` (jobs of one executor whose
    ids share a second), each named ``<time>-<executor>-<numbers>``, its numbers in runs
    (``000003-000010,000012``), at most :data:`MAX_RUNS` runs per object.

    >>> record_names(["T-e-000003", "T-e-000004", "T-e-000005", "T-e-000009"])
    [('T-e-000003-000005,000009', ['T-e-000003', 'T-e-000004', 'T-e-000005', 'T-e-000009'])]
    """
    head = job_ids[0].rsplit("-", 1)[0]
    runs: list[list[int]] = []
    for n in sorted(int(i.rsplit("-", 1)[1]) for i in job_ids):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    out = []
    for k in range(0, len(runs), MAX_RUNS):
        part = runs[k : k + MAX_RUNS]
        name = f"{head}-" + ",".join(f"{a:06d}" if a == b else f"{a:06d}-{b:06d}" for a, b in part)
        out.append((name, [f"{head}-{n:06d}" for a, b in part for n in range(a, b + 1)]))
    return out


def ids_in(name: str) -> list[str]:
    """The job ids whose records an object named ``name`` holds (see :func:`record_names`)."""
    time_part, executor, numbers = name.split("-", 2)
    out = []
    for run in numbers.split(","):
        first, _, last = run.partition("-")
        out.extend(f"{time_part}-{executor}-{n:06d}" for n in range(int(first), int(last or first) + 1))
    return out


def record_index(storage: Storage, root: str, job_id: str = "") -> dict[str, dict[str, str]]:
    """``{job id: {"manifest": key, "calls": key}}`` of the record objects stored (each kind
    where present), from one listing: of every record, or with ``job_id``, of the records of
    its executor's jobs whose ids share its second only."""
    prefix = jobs_prefix(root)
    out: dict[str, dict[str, str]] = {}
    for k in storage.list(prefix + (job_id.rsplit("-", 1)[0] + "-" if job_id.count("-") >= 2 else "")):
        name, _, kind = k[len(prefix):].partition("/")
        try:
            ids = ids_in(name)
        except ValueError:  # not a record (nothing else is written there)
            continue
        for i in ids:
            out.setdefault(i, {})[kind] = k
    return out


def read_record(storage: Storage, key: str, job_id: str, cache: dict[str, Any] | None = None) -> dict[str, Any]:
    """Job ``job_id``'s record in the object ``key`` (a manifest or a calls record), read from
    ``storage`` (raises ``KeyError`` if it is gone); ``cache`` keeps objects read already."""
    if cache is not None and key in cache:
        record = cache[key]
    else:
        record = json.loads(bytes(storage.get(key)))
        if cache is not None:
            cache[key] = record
    name = key.rsplit("/", 2)[-2]
    if "," in name or name.count("-") > 2:  # several jobs' records: {"jobs": {job id: record}}
        return dict(record["jobs"][job_id])
    return dict(record)


def client_alive(client: dict[str, Any] | None) -> bool | None:
    """Whether the client process a manifest names still runs: True, False, or None when it
    cannot be told from here (another machine or pid namespace, or an older record)."""
    if not client or client.get("machine") != machine():
        return None
    pid, start = client.get("pid"), client.get("start")
    if not isinstance(pid, int):
        return None
    if start is not None:
        return process_start(pid) == start  # gone, or its pid now belongs to another process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
