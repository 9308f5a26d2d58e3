"""Values as bytes, with every out-of-band buffer (a NumPy array's memory) 64-byte aligned.

Format: ``u32 n`` | ``n x u64`` buffer sizes | ``u64`` pickle size | pickle (cloudpickle,
protocol 5) | then each out-of-band buffer after zero padding to the next multiple of
:data:`ALIGN`. Unaligned arrays are slower, and NumPy sums them in a different order, so
without the padding a reduction in a worker could differ from the same reduction in the
client in the last bit. (lambdaexec's own format does not pad yet; both adapters use this one
for the data they send, and it needs only cloudpickle, not dask.)
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

import cloudpickle

from lambdaexec import serialize

ALIGN = 64


def pack(value: Any) -> list[memoryview]:
    """Serialize ``value`` to chunks, each buffer starting at a multiple of :data:`ALIGN`."""
    serialize.register_user_modules()  # the user's own functions and classes travel by value
    buffers: list[pickle.PickleBuffer] = []
    data = cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    raws = [b.raw() for b in buffers]
    head = struct.pack(f"<I{len(raws)}QQ", len(raws), *(r.nbytes for r in raws), len(data))
    out, pos = [memoryview(head), memoryview(data)], len(head) + len(data)
    for raw in raws:
        pad = -pos % ALIGN
        if pad:
            out.append(memoryview(bytes(pad)))
        out.append(raw)
        pos += pad + raw.nbytes
    return out


def packed(value: Any) -> bytearray:
    """:func:`pack` joined into one ``bytearray`` (which pickles in-band, so it can travel as an argument)."""
    return bytearray(b"".join(pack(value)))


def unpack(buf: bytearray | memoryview) -> Any:
    """Inverse of :func:`pack` over the joined chunks; arrays are views into ``buf``."""
    view = memoryview(buf)
    (n,) = struct.unpack_from("<I", view, 0)
    sizes = struct.unpack_from(f"<{n}QQ", view, 4)
    pos = 4 + 8 * (n + 1)
    data = view[pos : pos + sizes[-1]]
    pos += sizes[-1]
    buffers = []
    for size in sizes[:-1]:
        pos += -pos % ALIGN
        buffers.append(view[pos : pos + size])
        pos += size
    return pickle.loads(data, buffers=buffers)
