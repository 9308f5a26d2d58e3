"""Large arguments stored once by content, read back on the worker (see ``lambdaexec/wire/shared.py``).

A call's inputs name such a buffer by its SHA-256 (the inputs themselves are checked against
the digest in the trusted event), so the buffer read from ``<executor>/blobs/<sha256>`` is
checked against that name. A warm worker keeps the last few it read (up to a quarter of its
memory size), so 40 calls passing the same 50 MB array cost it one read; each call gets its own
copy, as it would get its own inputs, so a call that changes its array in place changes only its own.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any, Callable

from lambdaexec.errors import IntegrityError
from lambdaexec.storage import Storage

_kept: OrderedDict[bytes, bytes] = OrderedDict()
_KEEP_BYTES = 256 << 20


def blob_key(job_prefix: str, digest: bytes) -> str:
    """The key of the buffer of SHA-256 ``digest`` used by the job at ``job_prefix``."""
    return f"{job_prefix.rsplit('/', 1)[0]}/blobs/{digest.hex()}"


def fetcher(store: Storage, job_prefix: str, memory_mb: Any = None) -> Callable[[bytes, int], Any]:
    """What ``serialize.loads(external=)`` calls for a buffer stored apart: the buffer, checked."""
    limit = min(_KEEP_BYTES, int(memory_mb) << 18) if memory_mb else _KEEP_BYTES  # a quarter of memory

    def fetch(digest: bytes, size: int) -> memoryview:
        data = _kept.get(digest)
        if data is None:
            key = blob_key(job_prefix, digest)
            got = store.get(key)
            if len(got) != size or hashlib.sha256(got).digest() != digest:
                raise IntegrityError(f"the large argument {key} does not match the digest its call names")
            if size <= limit:  # kept for the next calls; this one gets the buffer read
                _kept[digest] = bytes(got)
                while sum(len(v) for v in _kept.values()) > limit:
                    _kept.popitem(last=False)
            return memoryview(got)
        _kept.move_to_end(digest)
        return memoryview(bytearray(data))

    return fetch
