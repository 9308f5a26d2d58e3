"""Broadcast: a value stored once and read once per worker process.

The client stores a value once, under its content hash, and passes a small handle;
a worker process reads the value on first use and keeps it, so its later calls (of this job or
of the next round) read nothing::

    client: broadcast(ex, X) ──► put <prefix>/<executor-id>/broadcast/<sha256>   (once)
                                 ──► Broadcast(key, storage spec, size)   a few hundred bytes
    worker: handle.value     ──► in this process's cache? ──yes──► X
                                          │ no
                                          └──► get the key once, unpickle, cache ──► X

The objects live under the executor's prefix, so they are deleted with the executor's other
data at shutdown (unless ``keep_data``), or earlier by ``handle.unpersist()``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import weakref
from collections import OrderedDict
from typing import Any

from lambdaexec.errors import LambdaExecError
from lambdaexec.storage import shared_storage, shared_unsigned_storage, signed
from lambdaexec.wire import serialize

log = logging.getLogger(__name__)

#: bytes of broadcast values a process keeps; the least recently used go first beyond it
CACHE_BYTES = 4 << 30


class BroadcastMissingError(LambdaExecError, KeyError):
    """A broadcast value was read after ``unpersist()`` or after its executor shut down (or the
    store lost it and the client no longer holds it: otherwise the client stores it again and the
    call runs again, :mod:`lambdaexec.runtime.recovery`). ``key``: its storage key."""

    key = ""

    def __str__(self) -> str:
        return str(self.args[0])


class _Cache:
    """This process's broadcast values, by key: loaded once, shared by every call and thread."""

    def __init__(self, limit: int):
        self.limit = limit
        self.values: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self.loads = 0  # values read from storage by this process
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, handle: Broadcast) -> Any:
        key = handle.key
        with self._lock:
            if key in self.values:
                self.values.move_to_end(key)
                return self.values[key][0]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # one thread loads; the others wait for it instead of loading again
            with self._lock:
                if key in self.values:
                    return self.values[key][0]
            try:
                owner = key.rsplit("/", 3)[-3]  # <prefix>/<executor>/broadcast/<sha>
                data = shared_storage(handle.storage, signed.secret_for(owner)).get(key)
            except KeyError:
                err = BroadcastMissingError(
                    f"broadcast value {handle.digest[:12]} ({handle.size:,} bytes) is no longer in storage: "
                    "it was unpersisted, or its executor shut down; broadcast it again")
                err.key = key  # the client may hold it still: runtime/recovery.py
                raise err from None
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            value = serialize.loads(data)
            with self._lock:
                self.loads += 1
                self.values[key] = (value, handle.size)
                total = sum(size for _, size in self.values.values())
                while total > self.limit and len(self.values) > 1:
                    _, (_, size) = self.values.popitem(last=False)
                    total -= size
            return value

    def drop(self, key: str) -> None:
        with self._lock:
            self.values.pop(key, None)


_cache = _Cache(CACHE_BYTES)


class Broadcast:
    """A handle to a value stored once; ``handle.value`` is the value, read once per process.

    Made by :meth:`LambdaExecutor.broadcast <lambdaexec.LambdaExecutor.broadcast>`. The handle
    pickles to its storage key (a few hundred bytes), so pass it as an argument, capture it in
    a closure, or keep it across rounds::

        X = ex.broadcast(np.random.rand(5000, 5000))      # 200 MB, stored once
        norms = list(ex.map(lambda i: np.linalg.norm(X.value[i]), range(1000)))
        X.unpersist()

    Treat ``value`` as read-only: a worker shares one copy between its calls.
    """

    def __init__(self, key: str, storage: dict[str, Any], digest: str, size: int, local: Any = None):
        self.key, self.storage, self.digest, self.size = key, storage, digest, size
        self._local = local  # the client keeps its own object: no read back
        self._unpersisted = False

    def __reduce__(self) -> tuple:
        return Broadcast, (self.key, self.storage, self.digest, self.size)

    def __repr__(self) -> str:
        return f"<Broadcast {self.digest[:12]} {self.size:,} bytes>"

    @property
    def value(self) -> Any:
        """The broadcast object, read from storage on this process's first use and then kept."""
        if self._local is not None:
            return self._local
        return _cache.get(self)

    def unpersist(self) -> None:
        """Delete the stored value and this process's copy. Workers that have it cached may
        keep using it; workers that have not raise :class:`BroadcastMissingError`."""
        self._unpersisted = True  # not stored again should a call miss it (runtime/recovery.py)
        shared_unsigned_storage(self.storage).delete_keys([self.key])  # deleting checks nothing
        _cache.drop(self.key)


def broadcast(ex: Any, obj: Any) -> Broadcast:
    """Store ``obj`` once (by content hash) in ``ex``'s storage; return a handle to pass to calls.

    The same content broadcast twice is stored once. See :class:`Broadcast`.
    """
    if ex._shutdown:
        raise RuntimeError("cannot broadcast after shutdown")
    chunks = serialize.dumps(obj)
    sha = hashlib.sha256()
    for chunk in chunks:
        sha.update(chunk)
    digest = sha.hexdigest()
    key = f"{ex.prefix}/broadcast/{digest[:32]}"
    if not ex.storage.exists(key):
        ex.storage.put(key, chunks)
    handle = Broadcast(key, ex.storage.spec, digest, serialize.size_of(chunks), local=obj)
    recovery = getattr(getattr(ex, "_monitor", None), "recovery", None)
    if recovery is not None:  # should the store lose it, stored again while the handle lives
        recovery.keep(key, functools.partial(_put_again, weakref.ref(handle), ex.storage))
    return handle


def _put_again(ref: weakref.ref, storage: Any) -> bool:
    """Store the value of the handle ``ref`` again; ``False`` if the client no longer holds it."""
    handle = ref()
    if handle is None or handle._unpersisted or handle._local is None:
        return False
    storage.put(handle.key, serialize.dumps(handle._local))
    return True
