"""Who ran a job, and where its records live: the job-record layout and the client's identity.

A job record's manifest names its client (pid, when that process started, and the machine: boot
id and pid namespace), so that on the same machine ``clean`` and ``jobs`` can tell a client that
is gone from one that still runs, even if its pid was given to another process since.
"""

from __future__ import annotations

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
    prefix = jobs_prefix(root)
    ids = {k[len(prefix):].split("/", 1)[0] for k in storage.list(prefix)}
    return sorted(ids)


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
