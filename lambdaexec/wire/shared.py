"""Large arguments stored once by content: the wire side.

A call's serialized inputs (:func:`lambdaexec.wire.serialize.dumps`) hold NumPy arrays and other
out-of-band buffers as separate chunks. :func:`externalize` takes out each buffer of at least
``threshold`` bytes and puts its SHA-256 in its place (its size marked
:data:`~lambdaexec.wire.serialize.EXTERNAL`); the client stores the buffer once under its
digest (:mod:`lambdaexec.runtime.blobs`) and the worker reads it back by digest, checking it
(``worker/blobs.py``), through ``serialize.loads(external=)``. The same 50 MB array passed to
40 calls is then stored once, not 40 times; a warm worker reads it once.
"""

from __future__ import annotations

import hashlib
import struct

from lambdaexec.wire.serialize import EXTERNAL, pad, padding

DIGEST_SIZE = 32


def externalize(chunks: list[memoryview], threshold: int) -> tuple[list[memoryview], list[tuple[bytes, memoryview]]]:
    """``chunks`` (one serialized value) with each out-of-band buffer of ``threshold`` bytes or
    more replaced by its SHA-256, and those ``(sha256, buffer)``; ``chunks`` itself if none."""
    if threshold <= 0 or len(chunks) < 3:
        return chunks, []
    head = chunks[0]
    (n,) = struct.unpack_from("<I", head, 0)
    if n == 0 or head.nbytes != 4 + 8 * (n + 1):
        return chunks, []
    sizes = struct.unpack_from(f"<{n}QQ", head, 4)
    if max(sizes[:-1]) < threshold:
        return chunks, []
    data, raws, i, pos = chunks[1], [], 2, head.nbytes + chunks[1].nbytes
    for size in sizes[:-1]:  # the layout dumps wrote: [padding] buffer, per buffer
        if padding(pos):
            pos += padding(pos)
            i += 1
        raws.append(chunks[i])
        i += 1
        pos += size
    out: list[memoryview] = [memoryview(b""), data]
    new_sizes, taken = [], []
    pos = 4 + 8 * (n + 1) + data.nbytes
    for raw in raws:
        pos = pad(out, pos)
        if raw.nbytes >= threshold:
            digest = hashlib.sha256(raw).digest()
            taken.append((digest, raw))
            new_sizes.append(EXTERNAL | raw.nbytes)
            out.append(memoryview(digest))
            pos += DIGEST_SIZE
        else:
            new_sizes.append(raw.nbytes)
            out.append(raw)
            pos += raw.nbytes
    out[0] = memoryview(struct.pack(f"<I{n}QQ", n, *new_sizes, sizes[-1]))
    return out, taken
