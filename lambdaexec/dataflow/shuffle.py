"""The shuffle through storage: each mapper writes ONE object holding all of its partitions
behind an offset index; each reducer range-reads its own partition out of every mapper's object.

Storage layout of one shuffle (M mappers, R reducers; M + 1 objects at most, never M x R)::

    <executor prefix>/shuffle/<id>/map/000000    [index: R+1 little-endian u64 offsets]
    <executor prefix>/shuffle/<id>/map/000001    [partition 0][partition 1]...[partition R-1]
    ...
    <executor prefix>/shuffle/<id>/abort         written by the client if the job fails

Reducer ``r`` reads bytes ``[8r, 8r+16)`` of a mapper's object (where its partition starts
and ends), then that byte range: two ranged reads per mapper, on local files, S3 or Redis
alike. Reducers are started right behind the mappers and poll the ``map/`` prefix (one
``list`` per round), so they fetch map output as it appears; an ``abort`` object ends their
wait at once. A partition's bytes are what the operator makes of them: encoded keys and
values for map_reduce (see :mod:`lambdaexec.dataflow.keyed`), raw records for sort.

Keys are routed by :func:`hash_partition`, a hash that is the same in every process (Python's
own ``hash`` of a string changes from process to process).
"""

from __future__ import annotations

import pickle
import struct
import time
import zlib
from typing import Any, Callable

from lambdaexec.errors import LambdaExecError, UnpicklableError

_MAX_WAIT = 0.5  # longest pause between two polls of a reducer


class ShuffleAbortedError(LambdaExecError):
    """A reducer stopped waiting because another part of its job failed."""


def stable_hash(key: Any) -> int:
    """A 32-bit hash of ``key`` that every Python process computes alike.

    Equal keys hash alike across types as ``==`` says (``1``, ``1.0`` and ``True``); strings,
    bytes, numbers, ``None``, tuples and frozensets of them are hashed by value, other keys by
    their pickle.

    >>> stable_hash("word") == stable_hash("word"), stable_hash(1) == stable_hash(1.0)
    (True, True)
    """
    if isinstance(key, str):
        return zlib.crc32(key.encode("utf-8", "surrogatepass"))
    return zlib.crc32(_canonical(key))


def _canonical(key: Any) -> bytes:
    if isinstance(key, str):
        return b"s" + key.encode("utf-8", "surrogatepass")
    if isinstance(key, (bytes, bytearray, memoryview)):
        return b"b" + bytes(key)
    if isinstance(key, (bool, int)):
        return b"i" + str(int(key)).encode()
    if isinstance(key, float):
        return b"i" + str(int(key)).encode() if key.is_integer() else b"f" + repr(key).encode()
    if key is None:
        return b"n"
    if isinstance(key, tuple):
        return b"t(" + b",".join(_canonical(k).replace(b",", b",,") for k in key) + b")"
    if isinstance(key, frozenset):
        return b"z" + struct.pack("<Q", sum(zlib.crc32(_canonical(k)) for k in key) % (1 << 64))
    try:
        return b"p" + pickle.dumps(key, protocol=4)
    except Exception as err:
        raise UnpicklableError(f"the key {key!r} cannot be pickled ({err}), so it cannot be shuffled: "
                               "use keys made of str, bytes, numbers and tuples") from None


def hash_partition(key: Any, partitions: int) -> int:
    """The default partition function: ``stable_hash(key) % partitions``."""
    return stable_hash(key) % partitions


def encode(blobs: list[bytes]) -> list[bytes]:
    """One mapper's object: the offset index, then every partition's bytes."""
    head = 8 * (len(blobs) + 1)
    offsets, pos = [], head
    for blob in blobs:
        offsets.append(pos)
        pos += len(blob)
    offsets.append(pos)
    return [struct.pack(f"<{len(offsets)}Q", *offsets), *blobs]


def read_partition(store: Any, key: str, r: int) -> tuple[bytes, int]:
    """Partition ``r``'s bytes from one mapper's object, and the number of reads it took."""
    start, end = struct.unpack("<2Q", store.get(key, 8 * r, 8 * r + 16))
    if end == start:
        return b"", 1
    return store.get(key, start, end), 2


def wait_for_maps(store: Any, prefix: str, mappers: int, on_object: Callable[[str], None]) -> int:
    """Call ``on_object(key)`` for each of the ``mappers`` objects as it appears under
    ``prefix``; return the number of ``list`` requests made. Raises :class:`ShuffleAbortedError`
    when the client has written the ``abort`` object."""
    seen: set[str] = set()
    lists, pause = 0, 0.005
    map_prefix = f"{prefix}/map/"
    while len(seen) < mappers:
        keys = store.list(prefix + "/")
        lists += 1
        if f"{prefix}/abort" in keys:
            raise ShuffleAbortedError(f"the shuffle was abandoned: {bytes(store.get(prefix + '/abort')).decode()}")
        new = [k for k in keys if k.startswith(map_prefix) and k not in seen]
        for k in new:
            on_object(k)
            seen.add(k)
        if new:
            pause = 0.005
        elif len(seen) < mappers:
            time.sleep(pause)
            pause = min(_MAX_WAIT, pause * 2)
    return lists
