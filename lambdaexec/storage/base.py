"""The storage interface every backend implements, and the registry that finds them.

Everything between the client and the workers passes through one of these: a flat key space
with whole-object atomic writes, ranged reads, prefix listing, and deletion by prefix or by
key. Keys are ``/``-separated strings; a backend maps them to files, S3 objects or Redis keys.
"""

from __future__ import annotations

import abc
import threading
from typing import Any, Callable, Iterable, Sequence, Union

Chunks = Union[bytes, bytearray, memoryview, Iterable[Union[bytes, bytearray, memoryview]]]

_REGISTRY: dict[str, Callable[..., Storage]] = {}


class Storage(abc.ABC):
    """A key-value object store shared by the client and its workers.

    ``put`` is atomic: a reader sees either nothing or the whole object, never a part.
    ``get`` returns a writable ``bytearray`` so arrays unpickled from it are writable too.
    """

    #: the spec a worker needs to open the same store (no credentials, ever)
    spec: dict[str, Any]
    #: how many requests are worth having in flight at once (1: do them inline)
    concurrency: int = 1

    @abc.abstractmethod
    def put(self, key: str, data: Chunks) -> int:
        """Write ``data`` (bytes, or an iterable of byte chunks) at ``key``; return its size."""

    @abc.abstractmethod
    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytearray:
        """Read ``key``, or only bytes ``[start, end)`` of it. Raises ``KeyError`` if absent."""

    @abc.abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Return every key that starts with ``prefix``."""

    def delete(self, prefix: str) -> None:
        """Delete every key that starts with ``prefix`` (nothing if there are none)."""
        self.delete_keys(self.list(prefix))

    @abc.abstractmethod
    def delete_keys(self, keys: Sequence[str]) -> None:
        """Delete exactly ``keys``, skipping absent ones, without listing anything."""

    def check(self) -> None:
        """Raise :class:`~lambdaexec.errors.ConfigError` saying what to fix if the store is unusable."""

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds an object."""
        return key in self.list(key)

    def close(self) -> None:
        """Release connections. The store's contents are untouched."""


def register(kind: str) -> Callable[[Callable[..., Storage]], Callable[..., Storage]]:
    """Class decorator: make a backend available to :func:`open_storage` under ``kind``."""

    def wrap(factory: Callable[..., Storage]) -> Callable[..., Storage]:
        _REGISTRY[kind] = factory
        return factory

    return wrap


def open_storage(spec: dict[str, Any]) -> Storage:
    """Open the store described by ``spec`` (``{"kind": "local", "path": ...}`` and so on).

    >>> store = open_storage({"kind": "local", "path": "/tmp/lambdaexec-doc"})
    >>> store.put("a/b", b"hi"), bytes(store.get("a/b"))
    (2, b'hi')
    """
    from lambdaexec.storage import local, redis, s3  # noqa: F401  (they register themselves)

    spec = dict(spec)
    kind = spec.pop("kind")
    try:
        factory = _REGISTRY[kind]
    except KeyError:
        raise ValueError(
            f"unknown storage kind {kind!r}; choose one of {sorted(_REGISTRY)}"
        ) from None
    return factory(**spec)


_shared: dict[str, Storage] = {}
_shared_lock = threading.Lock()


def shared_storage(spec: dict[str, Any]) -> Storage:
    """This process's one open store for ``spec``, opened on first use and kept: a warm worker
    reuses its connections from call to call (never closed; for workers, not clients)."""
    name = repr(sorted(spec.items()))
    with _shared_lock:
        if name not in _shared:
            _shared[name] = open_storage(spec)
        return _shared[name]


def as_chunks(data: Chunks) -> list[memoryview]:
    """Normalize ``data`` to a list of byte views (no copies)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return [memoryview(data).cast("B")]
    return [memoryview(c).cast("B") for c in data]


def read_exactly(readinto: Callable[[memoryview], int | None], size: int, what: str) -> bytearray:
    """Read ``size`` bytes with a stream's ``readinto``; ``OSError`` naming ``what`` if it ends sooner."""
    buf = bytearray(size)
    view, got = memoryview(buf), 0
    while got < size:
        n = readinto(view[got:])
        if not n:
            raise OSError(f"{what} ended after {got} of {size} bytes")
        got += n
    return buf


class ChunkReader:
    """A read-only binary file over a list of byte chunks, for uploaders that want a file."""

    def __init__(self, chunks: list[memoryview]):
        self._chunks = chunks
        self._i = 0
        self._off = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        out = []
        while self._i < len(self._chunks) and n != 0:
            chunk = self._chunks[self._i]
            take = len(chunk) - self._off if n < 0 else min(n, len(chunk) - self._off)
            out.append(chunk[self._off : self._off + take])
            self._off += take
            if n > 0:
                n -= take
            if self._off == len(chunk):
                self._i += 1
                self._off = 0
        return b"".join(out)
