"""What client and worker agree on: storage keys, the invocation event, the result objects.

One prefix per job, every key written once by a single atomic put::

    <prefix>/<executor-id>/funcs/<sha256>          a function, by content hash (shared by jobs)
    <prefix>/<executor-id>/<job-id>/args           every call's inputs, concatenated (a job
                                                   of many calls: args, args.1, ... in parts)
    <prefix>/<executor-id>/<job-id>/calls/<call>   one call's status header + its result
    <prefix>/<executor-id>/<job-id>/calls/<runs>   a batch: several calls' status + result, indexed
    <prefix>/<executor-id>/<job-id>/started/<call>.<attempt>  (only when asked) it has started:
                                                   an event's first call at once, a later
                                                   one once it has run MARK_SECONDS

Status and result share one object so that they are committed together: a reader can never see
a status whose result is missing. The event carries keys, ids and byte ranges, never data and
never credentials; and the executor's signing secret, with which every object here is signed
(:mod:`lambdaexec.storage.signed`).

Batches: why and how
--------------------
A tiny call costs far less than a storage request (S3: a PUT and a GET of a few hundred bytes
each, about a millisecond of client CPU and money per request), so a worker that runs an event
of several calls writes the results of the calls that finish close together as ONE object, and
announces it with one message. The batch object's key names the calls it holds, as runs:
``calls/0-31``, ``calls/3,5-9,12`` (:func:`batch_key`, read back by :func:`calls_of_key`), so
a client that finds results by listing ``calls/`` (the ``lambda`` backend, attach, handles, the
job record) learns from the key alone which calls are done, and fetches each batch once. A key
naming one call (``calls/7``) holds that call alone in the single-call format
(:func:`pack_result`), exactly as before batches existed: a batch of one is written that way.

The batch layout (:func:`pack_batch`): ``u32`` length, a JSON index ``[[call, offset, size],
...]``, then each call's single-call object, every one starting 64-byte aligned (so a value
unpickled from it is as aligned as in its own object). Readers read batch objects WHOLE, never
by range: a store that signs objects (issue 12) can only verify whole objects, and the index is
at the front, so a ranged read would cost a request for the index anyway.

When the worker flushes a batch (``worker/results.py``), first of:

- the event ends (the handler never returns with results unwritten);
- the oldest result waiting is :data:`BATCH_SECONDS` old: a long call running after short ones
  must not hold back their results (a timer thread writes them while the long call runs);
- the batch reaches :data:`BATCH_BYTES`, or :data:`BATCH_CALLS` calls (keys stay short).

A result (status included) of :data:`BATCH_BYTES` or more keeps its own ``calls/<call>`` object,
written at once: a large value gains nothing from sharing a request, and its reader may want it
alone (a reduce reading one input).

Why these numbers: 5 ms is a few S3 round trips, so a batch still amortizes its request over
the calls finishing within it, while no result waits noticeably longer than its own PUT would
take; 1 MiB is where a request's fixed cost stops mattering beside its transfer time. Measured
(``bench/bench_s3.py``, W1: 1,000 tiny calls via ``map`` on a local SeaweedFS, this 2-core
machine): one object per call, 156 tasks/s and 2.6 S3 requests per call; batches, about 5,000
tasks/s and 0.04 requests per call (ProcessPoolExecutor about 4,400 tasks/s in the same runs).
The local store gains too (``bench/bench_core.py`` W1: 4,100 -> 8,800 tasks/s).

A call may have its result in more than one object (a retry or a backup copy of a call whose
first attempt's batch also lands): any of them is a valid result, and readers keep the first
they see, as they did with one key per call.
"""

from __future__ import annotations

import json
import marshal
import struct
from typing import Any, TypedDict

from lambdaexec.wire import serialize

#: the layout of the objects and events here; a worker of another version refuses the event
#: with a ``WorkerEnvironmentError`` (2: status headers in marshal's format, not JSON)
VERSION = "2"


def versions() -> dict[str, str]:
    """The versions a worker must match to unpickle what this client wrote (Python, cloudpickle),
    and to write objects it can read (this module's layout)."""
    return {"python": serialize.PYTHON_VERSION, "cloudpickle": serialize.CLOUDPICKLE_VERSION, "protocol": VERSION}


#: a result this big (status header included) or bigger gets its own object
BATCH_BYTES = 1 << 20
#: the oldest result in a batch waits at most this long before the batch is written
BATCH_SECONDS = 0.005
#: calls in one batch at most (keeps the key, which names them, short)
BATCH_CALLS = 256
#: a call that is not its event's first writes its start marker (when the event asks for
#: markers) only once it has run this long. The first call's marker says the invocation
#: started; a later call's says it is the one that may have overrun or crashed the worker. A
#: marker is an S3 PUT: it costs what ~0.3 s of a 1 GB function does, so a PUT for each
#: short call of a grouped invocation would cost more than the calls themselves
MARK_SECONDS = 1.0
#: longest ``<runs>`` part of a batch key: local storage makes it a file name (at most 255
#: bytes on Linux file systems); S3 keys are at most 1,024 bytes, prefix included
MAX_RUNS_CHARS = 200


class Event(TypedDict):
    """The payload of one invocation: which function, which calls, where their inputs are."""

    storage: dict[str, Any]
    job_prefix: str
    func_key: str
    args_key: str
    calls: list[list[int]]  # [call index, args start, args end]
    attempt: int
    versions: dict[str, str]
    max_result_size: int
    mark_start: bool
    secret: str  # hex: the executor's signing secret (storage/signed.py); never stored, never logged
    args_digests: list[str]  # hex, per call: the SHA-256 of its slice of the args object


def result_key(job_prefix: str, call: int) -> str:
    """Where call ``call`` of the job at ``job_prefix`` writes its status and result alone."""
    return f"{job_prefix}/calls/{call}"


def started_key(job_prefix: str, call: int, attempt: int) -> str:
    """Where a worker marks that it started ``attempt`` of ``call`` (when the event asks it to:
    for its first call at once, for a later one after :data:`MARK_SECONDS`).

    The attempt is part of the key so that a retry is not taken for started by the marker an
    earlier attempt left behind."""
    return f"{job_prefix}/started/{call}.{attempt}"


def runs(calls: list[int]) -> str:
    """``calls`` (ascending) as runs: ``[0, 1, 2, 5, 7, 8]`` -> ``"0-2,5,7-8"``."""
    out: list[str] = []
    i = 0
    while i < len(calls):
        j = i
        while j + 1 < len(calls) and calls[j + 1] == calls[j] + 1:
            j += 1
        out.append(str(calls[i]) if i == j else f"{calls[i]}-{calls[j]}")
        i = j + 1
    return ",".join(out)


def batch_key(job_prefix: str, calls: list[int]) -> str:
    """Where the batch holding ``calls`` is written (``calls`` ascending, two or more)."""
    return f"{job_prefix}/calls/{runs(calls)}"


def fits(calls: list[int]) -> bool:
    """Whether a batch of ``calls`` (ascending) is small enough to be one object."""
    return len(calls) <= BATCH_CALLS and len(runs(calls)) <= MAX_RUNS_CHARS


def calls_of_key(key: str) -> list[int]:
    """The calls whose results the object at ``key`` (a ``calls/`` key) holds.

    >>> calls_of_key("p/e/000001/calls/3,5-7")
    [3, 5, 6, 7]
    """
    out: list[int] = []
    for part in key.rpartition("/")[2].split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def parse_started(key: str) -> tuple[int, int]:
    """``(call, attempt)`` of a ``started/`` key."""
    call, _, attempt = key.rpartition("/")[2].partition(".")
    return int(call), int(attempt or 0)


def pack_result(status: dict[str, Any], value: list[memoryview]) -> list[memoryview]:
    """The chunks of a single-call result object: a status header, then the serialized value.

    The header is the status dict (str, int, float, bool and None values) in :mod:`marshal`'s
    format: a status is written and read once per call, and marshal does both in about 1 us
    where JSON took 10 us and 6 us. Its format (version 4) is the same across Python 3
    releases, so a client can read the status a worker on another Python writes to say so; and
    it is read only from an object whose signature checked (:mod:`lambdaexec.storage.signed`)."""
    head = marshal.dumps(status, 4)
    head += b" " * serialize.padding(4 + len(head))  # the value starts 64-byte aligned
    return [memoryview(struct.pack("<I", len(head))), memoryview(head), *value]


def unpack_result(buf: bytearray | memoryview) -> tuple[dict[str, Any], memoryview]:
    """Split a single-call result object into its status header and a view of the serialized value."""
    (n,) = struct.unpack_from("<I", buf, 0)
    view = memoryview(buf)
    try:
        status = marshal.loads(view[4 : 4 + n])
    except (ValueError, EOFError, TypeError):  # a worker of protocol 1 (it says so in JSON)
        status = json.loads(bytes(view[4 : 4 + n]))
    return status, view[4 + n :]


def pack_batch(entries: list[tuple[int, list[memoryview]]]) -> list[memoryview]:
    """The chunks of a batch object holding ``entries``: ``(call, its single-call object's chunks)``."""
    sizes = [serialize.size_of(chunks) for _, chunks in entries]
    # the index's length depends on the offsets it holds: size it with the largest they can be
    widest = json.dumps([[c, 1 << 40, s] for (c, _), s in zip(entries, sizes)]).encode()
    start = 4 + len(widest) + serialize.padding(4 + len(widest))
    index, offset = [], start
    for (call, _), size in zip(entries, sizes):
        index.append([call, offset, size])
        offset += size + serialize.padding(size)
    head = json.dumps(index).encode()
    head += b" " * (start - 4 - len(head))
    out = [memoryview(struct.pack("<I", len(head))), memoryview(head)]
    size = start
    for _, chunks in entries:
        out.extend(chunks)
        size = serialize.pad(out, size + serialize.size_of(chunks))
    return out


def unpack_results(key: str, buf: bytearray) -> dict[int, tuple[dict[str, Any], memoryview]]:
    """``{call: (status, value view)}`` of the result object at ``key`` (one call's, or a batch)."""
    calls = calls_of_key(key)
    if len(calls) == 1:
        return {calls[0]: unpack_result(buf)}
    (n,) = struct.unpack_from("<I", buf, 0)
    view = memoryview(buf)
    return {call: unpack_result(view[offset : offset + size])
            for call, offset, size in json.loads(bytes(view[4 : 4 + n]))}


def read_result(storage: Any, key: str, call: int) -> tuple[dict[str, Any], memoryview]:
    """Call ``call``'s status and value from the object at ``key`` (read whole). ``KeyError``
    if the object is missing or does not hold the call."""
    return unpack_results(key, storage.get(key))[call]


def keys_by_call(keys: list[str]) -> dict[int, str]:
    """``{call: key of an object holding its result}`` from a listing of ``calls/``."""
    out: dict[int, str] = {}
    for key in keys:
        for call in calls_of_key(key):
            out.setdefault(call, key)
    return out
