"""The storage interface every backend implements (:class:`Storage`), and its retries.

Everything between the client and the workers passes through one of these: a flat key space
with whole-object atomic writes, ranged reads, prefix listing, and deletion by prefix or by
key. Keys are ``/``-separated strings; a backend maps them to files, S3 objects or Redis keys.

Every backend's operations (``put``, ``get``, ``list``, ``delete_keys``, ``exists``) are
retried here when they fail for a transient reason (a refused or dropped connection, a
timeout, a 5xx): with exponential backoff, for up to :data:`RETRY_SECONDS` or until the
deadline set with :func:`retry_deadline`, whichever comes first. What still fails is raised as
:class:`~lambdaexec.errors.StorageError` naming the store, and a missing object as
:class:`~lambdaexec.errors.MissingObjectError` (a ``KeyError`` too).
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
import errno
import functools
import random
import time
from typing import Any, Callable, Iterable, Iterator, Sequence, Union

from lambdaexec.errors import ConfigError, MissingObjectError, StorageError

Chunks = Union[bytes, bytearray, memoryview, Iterable[Union[bytes, bytearray, memoryview]]]


#: longest time one storage operation is retried through transient failures
RETRY_SECONDS = 30.0
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("lambdaexec_storage_deadline", default=None)

# exception class names (anywhere in the type's MRO or its causes) that mean "try again"; by
# name, so that redis and botocore are not imported here
_TRANSIENT_NAMES = {
    "ConnectionError", "TimeoutError", "EndpointConnectionError", "ConnectionClosedError",
    "ReadTimeoutError", "ConnectTimeoutError", "HTTPClientError", "BusyLoadingError",
    "HTTPException", "IncompleteRead", "RemoteDisconnected",
}
_TRANSIENT_CODES = {"500", "502", "503", "504", "SlowDown", "InternalError", "ServiceUnavailable",
                    "RequestTimeout", "Throttling", "ThrottlingException", "RequestLimitExceeded"}
_PERMANENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT,
                     errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}
_OPERATIONS = ("put", "get", "list", "delete_keys", "exists")


@contextlib.contextmanager
def retry_deadline(deadline: float) -> Iterator[None]:
    """Within this block, stop retrying storage operations at ``deadline`` (``time.monotonic()``),
    so that a call's storage retries end before the call's own time does."""
    token = _deadline.set(deadline)
    try:
        yield
    finally:
        _deadline.reset(token)


def set_retry_deadline(deadline: float | None) -> None:
    """Stop retrying storage operations at ``deadline`` (``time.monotonic()``) from now on in
    this thread (a worker handler sets it per invocation, from the call's remaining time)."""
    _deadline.set(deadline)


def transient(err: BaseException) -> bool:
    """Whether ``err`` (or an error it was raised from) is worth retrying."""
    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, OSError) and err.errno in _PERMANENT_ERRNOS:
            return False
        if any(k.__name__ in _TRANSIENT_NAMES for k in type(err).__mro__):
            return True
        response = getattr(err, "response", None)  # botocore's ClientError
        if isinstance(response, dict):
            code = str(response.get("Error", {}).get("Code", ""))
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in _TRANSIENT_CODES or (isinstance(status, int) and status >= 500):
                return True
        if "reached max retries" in str(err):
            return True
        err = err.__cause__ or err.__context__
        seen += 1
    return False


def _retrying(op: str, method: Callable) -> Callable:
    @functools.wraps(method)
    def call(self: Storage, *args: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        end = start + RETRY_SECONDS
        limit = _deadline.get()
        if limit is not None:
            end = min(end, limit)
        delay, attempts = 0.05, 0
        while True:
            attempts += 1
            try:
                return method(self, *args, **kwargs)
            except (StorageError, MemoryError):  # out of memory is the caller's, not the store's failure
                raise
            except KeyError as err:
                key = err.args[0] if err.args else (args[0] if args else "")
                raise MissingObjectError(f"{self.describe()} has no object {key!r}: it expired, was "
                                         "deleted, or the server lost it (restarted without persistence?)"
                                         ) from None
            except Exception as err:
                if isinstance(err, (ValueError, TypeError)) and not isinstance(err, ConfigError):
                    raise  # a bad key or argument: a bug to see as it is, not the store's failure
                now = time.monotonic()
                if not transient(err) or now + delay >= end:
                    what = args[0] if args and isinstance(args[0], str) else ""
                    retried = f" after {attempts} attempts over {now - start:.1f} s" if attempts > 1 else ""
                    raise StorageError(f"{self.describe()}: {op} {what!r} failed{retried}: "
                                       f"{type(err).__name__}: {err}") from err
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)

    call.__wrapped_by_retry__ = True  # type: ignore[attr-defined]
    return call


class Storage(abc.ABC):
    """A key-value object store shared by the client and its workers.

    ``put`` is atomic: a reader sees either nothing or the whole object, never a part.
    ``get`` returns a writable ``bytearray`` so arrays unpickled from it are writable too.
    A subclass's operations are retried and their errors typed (see the module docstring).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for op in _OPERATIONS:
            method = cls.__dict__.get(op)
            if method is not None and not getattr(method, "__isabstractmethod__", False) \
                    and not getattr(method, "__wrapped_by_retry__", False):
                setattr(cls, op, _retrying(op, method))

    def describe(self) -> str:
        """The store in words, for error messages (``local storage /dev/shm/...``)."""
        spec = getattr(self, "spec", {})
        kind = spec.get("kind")
        if kind == "local":
            return f"local storage {spec.get('path')}"
        if kind == "s3":
            at = f" at {spec['endpoint_url']}" if spec.get("endpoint_url") else ""
            return f"S3 bucket {spec.get('bucket')!r}{at}"
        if kind == "redis":
            return f"Redis at {spec.get('url')}"
        return f"{type(self).__name__} storage"

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


def as_chunks(data: Chunks) -> list[memoryview]:
    """Normalize ``data`` to a list of byte views (no copies)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return [memoryview(data).cast("B")]
    # what lambdaexec's serializer makes is byte views already: kept as they are (half the cost)
    return [c if type(c) is memoryview and c.format == "B" and c.ndim == 1 and c.c_contiguous
            else memoryview(c).cast("B") for c in data]


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
