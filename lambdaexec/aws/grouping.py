"""How many calls of a job one Lambda invocation carries: the grouping rule and what it measures.

An asynchronous invocation costs far more than a tiny call: ~20-30 ms of Invoke latency, a
Lambda request ($0.20 per million, what 12 ms of a 1 GB function costs), and the event's own
storage round trips (the job's function, once per container, and the calls' inputs). A worker
that runs several calls of one event writes their results as one batch object (one PUT, one GET,
one key listed: :mod:`lambdaexec.wire.protocol`), so grouping short calls saves invocations and
storage requests alike. The rule, per invocation a sender thread is about to make::

    per-call seconds of the job   unknown, or > SHORT x target  ->  1 call
    otherwise  min(target / per-call seconds,                      the work one invocation carries
                   calls waiting // max_workers,                  every slot gets work first
                   MAX_CALLS)                                      one batch key; event << 256 KB

``target`` is :data:`TARGET_SECONDS`, or a quarter of the function's ``timeout`` if that is
less (a group must finish well inside the one timeout its invocation has). Why 0.5 s: the
per-invocation costs above are then under a tenth of the work, while a call waits at most about
half a second behind its batch-mates. Calls go one per invocation until the job has calls
waiting for a free slot (fewer waiting calls than ``max_workers``: one each, every slot is used)
and its calls are measured short. Retries and straggler backups are dispatched one call at a
time, so they always travel alone: a call that kills its invocation takes others down once.

Per-call seconds come from results already written: :class:`Timings` reads one of the job's
result objects (a ranged GET of its first :data:`HEAD_BYTES`, at most once a second per job, and
only while the job has calls waiting). A call's cost is what it adds to its invocation: the gap
between consecutive ``result_written`` times of calls that shared an invocation (its start
marker, its run, its serialization), or, for a call that ran alone, ``result_written`` minus the
event's ``received`` (which also counts the event's loading: an overestimate, corrected once
grouped calls report). The status headers are marshal data, which is parsed only from a checked
object (:mod:`lambdaexec.storage.signed`): the read is used only if it returned the whole object
(a batch of tiny calls' results is a few KB), whose tag is then checked; a larger object is
skipped and the job measured from another one later.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any

from lambdaexec.wire import protocol

#: seconds of work an invocation carries once its job's calls are measured short
TARGET_SECONDS = 0.5
#: calls are grouped only if each takes at most this share of the target
SHORT = 0.5
#: calls in one invocation at most: its results fit one batch key (protocol.BATCH_CALLS), and
#: its event (~100 bytes a call: the call's byte range and its inputs' SHA-256) stays far under
#: Lambda's 256 KB async payload limit
MAX_CALLS = protocol.BATCH_CALLS
#: Lambda's limit on an asynchronous invocation's payload, bytes
PAYLOAD_LIMIT = 256 * 1024
#: bytes read from the front of a result object to learn its calls' timings: an object that
#: does not end within them is not used (its signature could not be checked)
HEAD_BYTES = 64 * 1024
#: seconds between two measurements of one job
MEASURE_INTERVAL = 1.0


def target(timeout: float) -> float:
    """Seconds of work per invocation for a function with ``timeout``."""
    return min(TARGET_SECONDS, timeout / 4)


def group_size(per_call: float | None, waiting: int, cap: int, work: float = TARGET_SECONDS) -> int:
    """How many calls the next invocation carries (see the module docstring).

    ``per_call``: measured seconds per call of the job (None: not yet measured); ``waiting``:
    calls waiting to be invoked (all jobs'); ``cap``: invocations allowed in flight; ``work``:
    the target seconds per invocation.

    >>> group_size(None, 5000, 100), group_size(0.4, 5000, 100), group_size(0.01, 5000, 100)
    (1, 1, 50)
    >>> group_size(0.01, 50, 100)  # fewer calls waiting than slots: one each
    1
    """
    if per_call is None or per_call > SHORT * work:
        return 1
    return max(1, min(MAX_CALLS, waiting // max(1, cap), int(work / max(per_call, 1e-4))))


def plan(calls: int, per_call: float, cap: int, work: float = TARGET_SECONDS) -> tuple[int, int]:
    """``(invocations, result objects)`` this rule makes of a job of ``calls`` calls that take
    ``per_call`` seconds each, with ``cap`` invocations in flight: what :func:`lambdaexec.estimate`
    prices. The first ``cap`` calls go one each (none is measured yet); a worker writes an
    invocation's results as one object per :data:`~lambdaexec.wire.protocol.BATCH_SECONDS` of its work.

    >>> plan(10_000, 0.5, 100)  # long calls: one per invocation
    (10000, 10000)
    >>> plan(10_000, 0.001, 100)  # 1 ms calls: up to 0.5 s of them per invocation
    (714, 2414)
    """
    alone = min(calls, cap)
    invocations, objects, waiting = alone, alone, calls - alone
    while waiting:
        group = group_size(per_call, waiting, cap, work)
        if group == 1:
            invocations, objects = invocations + waiting, objects + waiting
            break
        # the group stays this size while calls // cap stays >= it: take those invocations at once
        times = min(waiting // group, max(1, (waiting - group * cap) // group))
        invocations += times
        objects += times * min(group, max(1, math.ceil(group * per_call / protocol.BATCH_SECONDS)))
        waiting -= times * group
    return invocations, objects


def statuses(storage: Any, key: str) -> list[dict[str, Any]]:
    """The statuses in the result object at ``key`` if it is at most :data:`HEAD_BYTES` long
    and its tag checks (``storage``: a :class:`~lambdaexec.storage.signed.SignedStorage`),
    else none: marshal data is parsed only from checked objects."""
    if not hasattr(storage, "checked"):
        return []
    head = storage.get(key, 0, HEAD_BYTES)
    if len(head) >= HEAD_BYTES:  # not the whole object: its tag cannot be checked
        return []
    return [status for status, _ in protocol.unpack_results(key, storage.checked(key, head)).values()]


def seconds_per_call(statuses: list[dict[str, Any]]) -> float | None:
    """What a call adds to its invocation's time, on average over ``statuses`` (see the module
    docstring); None if they hold no timings."""
    runs: dict[tuple[Any, Any], list[float]] = defaultdict(list)
    received: dict[tuple[Any, Any], float] = {}
    for s in statuses:
        written = s.get("result_written")
        if written is None or s.get("received") is None:
            continue
        event = (s.get("worker"), s["received"])
        runs[event].append(written)
        received[event] = s["received"]
    seconds = calls = 0.0
    for event, times in runs.items():
        if len(times) > 1:
            seconds += max(times) - min(times)
            calls += len(times) - 1
        else:
            seconds += times[0] - received[event]
            calls += 1
    return max(0.0, seconds / calls) if calls else None


class Timings:
    """Measured seconds per call, per job (a running average over the measurements)."""

    def __init__(self) -> None:
        self._per_call: dict[str, float] = {}
        self._measured: dict[str, float] = {}

    def get(self, job: str) -> float | None:
        """Seconds per call of ``job``, or None if not measured yet."""
        return self._per_call.get(job)

    def due(self, job: str, now: float | None = None) -> bool:
        """Whether ``job`` may be measured again now (at most every :data:`MEASURE_INTERVAL`)."""
        now = time.monotonic() if now is None else now
        return now - self._measured.get(job, -MEASURE_INTERVAL) >= MEASURE_INTERVAL

    def measure(self, storage: Any, job: str, key: str) -> None:
        """Read the result object at ``key`` (if small: :func:`statuses`) and fold its calls'
        timings into ``job``'s; a read that fails, or an object too large, changes nothing
        (calls then stay as they were grouped)."""
        self._measured[job] = time.monotonic()
        try:
            seconds = seconds_per_call(statuses(storage, key))
        except Exception:  # gone already, unreadable, forged: a measurement is only a hint
            return
        if seconds is None:
            return
        old = self._per_call.get(job)
        self._per_call[job] = seconds if old is None else 0.5 * old + 0.5 * seconds
        for table in (self._per_call, self._measured):
            if len(table) > 256:
                del table[next(iter(table))]
