"""Iterative jobs: values broadcast once to every worker, and rounds checkpointed to storage.

Broadcast: the client stores a value once, under its content hash, and passes a small handle;
a worker process reads the value on first use and keeps it, so its later calls (of this job or
of the next round) read nothing::

    client: broadcast(ex, X) ──► put <prefix>/<executor-id>/broadcast/<sha256>   (once)
                                 ──► Broadcast(key, storage spec, size)   a few hundred bytes
    worker: handle.value     ──► in this process's cache? ──yes──► X
                                          │ no
                                          └──► get the key once, unpickle, cache ──► X

The objects live under the executor's prefix, so they are deleted with the executor's other
data at shutdown (unless ``keep_data``), or earlier by ``handle.unpersist()``.

Rounds: :func:`iterate` runs ``state = step(state, round)`` on the client and writes each
round's state to ``<prefix>/iterate/<run-id>/<round>`` before starting the next, so that a
client that dies can be run again with the same ``resume`` id and continue after the last
round it completed (the round that was cut short runs again)::

    round r: step(state, r) ──► put iterate/<run>/<r> ──► delete iterate/<run>/<r-1> ──► r+1
    resume:  list iterate/<run>/ ──► newest round r ──► state = get(...) ──► continue at r+1
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections import OrderedDict
from typing import Any, Callable

from lambdaexec import serialize
from lambdaexec.errors import LambdaExecError
from lambdaexec.storage import shared_storage, signed
from lambdaexec.storage.base import shared_unsigned_storage

log = logging.getLogger(__name__)

#: bytes of broadcast values a process keeps; the least recently used go first beyond it
CACHE_BYTES = 4 << 30


class BroadcastMissingError(LambdaExecError, KeyError):
    """A broadcast value was read after ``unpersist()`` or after its executor shut down."""

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
                raise BroadcastMissingError(
                    f"broadcast value {handle.digest[:12]} ({handle.size:,} bytes) is no longer in storage: "
                    "it was unpersisted, or its executor shut down; broadcast it again") from None
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
    return Broadcast(key, ex.storage.spec, digest, serialize.size_of(chunks), local=obj)


def iterate(ex: Any, step: Callable[[Any, int], Any], state: Any, rounds: int, *,
            until: Callable[[Any, int], bool] | None = None, resume: str | None = None) -> Any:
    """Run ``state = step(state, r)`` for ``r`` in ``range(rounds)`` on the client; return the
    final state. Each round's state is checkpointed to storage before the next round starts.

    ``step`` may use the executor (typically one ``ex.map`` per round). ``until(state, r)``
    returning true stops after round ``r``. ``resume`` names the run: if a run of that name was
    interrupted (the client crashed or was killed), it continues after its last completed
    round instead of starting again; without ``resume`` a fresh name is used (and logged).
    The checkpoints are deleted once the run finishes, unless ``keep_data`` is set::

        def epoch(w, r):
            grads = ex.map(gradient, [w] * 8, range(8))
            return w - 0.1 * np.mean(list(grads), axis=0)

        w = ex.iterate(epoch, np.zeros(64), 100, resume="sgd-run-1")
    """
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {rounds}")
    run = resume or uuid.uuid4().hex[:12]
    if "/" in run or not run:
        raise ValueError(f"resume must be a non-empty name without '/', got {run!r}")
    # the checkpoints outlive the executor (a resumed run is another executor): they are signed
    # with the run's own secret, kept beside the executors' (storage/signed.py)
    owner = "iterate-" + hashlib.sha256(run.encode()).hexdigest()[:32]
    try:
        secret = signed.secret_for(owner)
    except LambdaExecError:
        secret = signed.new_secret()
        signed.save(owner, secret)
    store = signed.SignedStorage(ex.storage.inner, secret)
    prefix = f"{ex.config.prefix}/iterate/{run}/"
    done = sorted(int(k[len(prefix):]) for k in store.list(prefix) if k[len(prefix):].isdigit())
    first = 0
    if done:
        first = done[-1] + 1
        state = serialize.loads(store.get(f"{prefix}{done[-1]:08d}"))
        log.info("iterate %s: resuming after round %d", run, done[-1])
        if until is not None and until(state, done[-1]):
            first = rounds
    else:
        log.info("iterate %s: starting (pass resume=%r to continue it after a crash)", run, run)
    for r in range(first, rounds):
        state = step(state, r)
        store.put(f"{prefix}{r:08d}", serialize.dumps(state))
        store.delete_keys([f"{prefix}{d:08d}" for d in done])
        done = [r]
        if until is not None and until(state, r):
            break
    if not ex.config.keep_data:
        store.delete(prefix)
        signed.forget(owner)
    return state
