"""Finding what Lambda workers wrote: listing the active jobs' results and start markers in storage.

The Lambda invoker learns of progress only from storage: a worker writes
``<job>/started/<call>.<attempt>`` when it starts a call and ``<job>/calls/<call>`` (or a batch
key naming several calls) when done (:mod:`lambdaexec.wire.protocol`). This module lists those
keys, one listing per job, or one listing of the executor's prefix when several of its jobs are
active, so many small jobs do not cost a request each, and sorts the keys it found.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from lambdaexec.storage import Storage
from lambdaexec.wire import protocol

SHARED_LISTING_JOBS = 3  # active jobs of one executor from which one listing serves all


def list_jobs(storage: Storage, active: Iterable[str], need_started: set[str],
              stats: dict[str, int]) -> dict[str, list[str]]:
    """Keys under each job prefix of ``active``: its results, and its start markers if the job is in
    ``need_started``. Counts the listing requests made in ``stats["list_requests"]``."""
    active = list(active)
    parents = Counter(p.rpartition("/")[0] for p in active)
    out: dict[str, list[str]] = {p: [] for p in active}
    for parent, n in parents.items():
        if n >= SHARED_LISTING_JOBS:
            keys = storage.list(parent + "/")
            stats["list_requests"] += 1 + len(keys) // 1000
            for k in keys:
                job = k.rsplit("/", 2)[0]
                if job in out:
                    out[job].append(k)
            continue
        for p in active:
            if p.rpartition("/")[0] != parent:
                continue
            for sub in ("calls/", "started/") if p in need_started else ("calls/",):
                keys = storage.list(f"{p}/{sub}")
                stats["list_requests"] += 1 + len(keys) // 1000
                out[p].extend(keys)
    return out


def is_result(key: str) -> bool:
    """Whether listed ``key`` is a result object (one call's or a batch's), not a start marker."""
    return key.rpartition("/")[0].endswith("/calls")


def sort_keys(keys: Iterable[str]) -> tuple[list[tuple[int, int]], list[tuple[str, tuple[int, ...]]]]:
    """Split one job's listed keys into start markers (as ``protocol.parse_started`` reads them)
    and results: ``(key, the calls whose results it holds)``."""
    started: list[tuple[int, int]] = []
    results: list[tuple[str, tuple[int, ...]]] = []
    for k in keys:
        name = k.rpartition("/")[2]
        if is_result(k):
            calls = protocol.calls_of_key(k) if "," in name or "-" in name else (int(name),)
            results.append((k, tuple(calls)))
        else:
            started.append(protocol.parse_started(k))
    return started, results


def measurable(keys: Iterable[str]) -> str | None:
    """The result key of ``keys`` to learn a job's per-call time from (a batch's if any), or None."""
    results = [k for k in keys if is_result(k)]
    return max(results, key=lambda k: ("-" in k or "," in k.rpartition("/")[2], k)) if results else None
