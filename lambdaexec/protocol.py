"""What client and worker agree on: storage keys, the invocation event, the result object.

One prefix per job, every key written once by a single atomic put::

    <prefix>/<executor-id>/funcs/<sha256>          a function, by content hash (shared by jobs)
    <prefix>/<executor-id>/<job-id>/args           every call's inputs, concatenated
    <prefix>/<executor-id>/<job-id>/calls/<call>   the call's status header + its result
    <prefix>/<executor-id>/<job-id>/started/<call>.<attempt>  (only when asked) it has started

Status and result share one object so that they are committed together: a reader can never see
a status whose result is missing. The event carries keys, ids and byte ranges, never data and
never credentials; and the executor's signing secret, with which every object above is signed
(:mod:`lambdaexec.storage.signed`).
"""

from __future__ import annotations

import json
import struct
from typing import Any, TypedDict

from lambdaexec import serialize


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
    """Where call ``call`` of the job at ``job_prefix`` writes its status and result."""
    return f"{job_prefix}/calls/{call}"


def started_key(job_prefix: str, call: int, attempt: int) -> str:
    """Where a worker marks that it started ``attempt`` of ``call`` (when the event asks it to).

    The attempt is part of the key so that a retry is not taken for started by the marker an
    earlier attempt left behind."""
    return f"{job_prefix}/started/{call}.{attempt}"


def parse_started(key: str) -> tuple[int, int]:
    """``(call, attempt)`` of a ``started/`` key."""
    call, _, attempt = key.rpartition("/")[2].partition(".")
    return int(call), int(attempt or 0)


def pack_result(status: dict[str, Any], value: list[memoryview]) -> list[memoryview]:
    """The chunks of a result object: a JSON status header, then the serialized value."""
    head = json.dumps(status).encode()
    head += b" " * serialize.padding(4 + len(head))  # the value starts 64-byte aligned
    return [memoryview(struct.pack("<I", len(head))), memoryview(head), *value]


def unpack_result(buf: bytearray) -> tuple[dict[str, Any], memoryview]:
    """Split a result object into its status header and a view of the serialized value."""
    (n,) = struct.unpack_from("<I", buf, 0)
    view = memoryview(buf)
    return json.loads(bytes(view[4 : 4 + n])), view[4 + n :]
