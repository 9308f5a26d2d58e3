"""The shuffle through storage: each mapper writes ONE object holding all of its partitions
behind an offset index; each reducer range-reads its own partition out of every mapper's object.

Storage layout of one shuffle (M mappers, R reducers; M + 1 objects at most, never M x R)::

    <executor prefix>/shuffle/<id>/map/000000    [index: R entries of 48 bytes]
    <executor prefix>/shuffle/<id>/map/000001    [partition 0][partition 1]...[partition R-1]
    ...
    <executor prefix>/shuffle/<id>/abort         written by the client if the job fails

    index entry r = [start u64][end u64][tag: 32 bytes, HMAC of (key, r, start, end, bytes)]

Reducer ``r`` reads bytes ``[48r, 48r+48)`` of a mapper's object (where its partition starts
and ends, and its tag), then that byte range, and checks the bytes against the tag before
unpickling them (see :mod:`lambdaexec.storage.signed`): two ranged reads per mapper, on local
files, S3 or Redis alike. Nothing reads a mapper's object whole, so it carries no
whole-object tag (:meth:`~lambdaexec.storage.signed.SignedStorage.put_ranged`): each byte is
hashed once, by its partition's tag, which binds the object's key, the partition's number and
its bounds, so an index entry cannot be altered, swapped or pointed elsewhere either.

Reducers are started right behind the mappers and poll the ``map/`` prefix (one ``list`` per
round), so they fetch map output as it appears; an ``abort`` object ends their wait at once.
A partition's bytes are what the operator makes of them: encoded keys and
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


_ENTRY = 48  # bytes of one index entry: start, end, tag


def encode(blobs: list[bytes], store: Any, key: str) -> list[bytes]:
    """One mapper's object for ``key`` in ``store`` (a signed store): the index, then every
    partition's bytes; each index entry holds its partition's range and tag."""
    entries, pos = [], _ENTRY * len(blobs)
    for r, blob in enumerate(blobs):
        end = pos + len(blob)
        entries.append(struct.pack("<2Q", pos, end) + store.range_tag(f"{key}#{r}", pos, end, blob))
        pos = end
    return [b"".join(entries), *blobs]


def write(store: Any, key: str, blobs: list[bytes]) -> list[bytes]:
    """Store one mapper's object (:func:`encode`) at ``key`` in ``store`` (a signed store),
    tagged per partition only; return what was stored."""
    chunks = encode(blobs, store, key)
    store.put_ranged(key, chunks)
    return chunks


def read_partition(store: Any, key: str, r: int) -> tuple[bytes, int]:
    """Partition ``r``'s bytes from one mapper's object, checked against its tag, and the number
    of reads it took. Raises :class:`~lambdaexec.errors.IntegrityError` if they do not match."""
    entry = store.get(key, _ENTRY * r, _ENTRY * (r + 1))
    if len(entry) != _ENTRY:
        store.check_range(f"{key}#{r}", 0, 0, b"", b"")  # a truncated object: refused, naming it
    start, end = struct.unpack_from("<2Q", entry)
    blob = store.get(key, start, end) if end > start else b""
    store.check_range(f"{key}#{r}", start, end, blob, bytes(entry[16:]))
    return blob, 1 + (end > start)


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
