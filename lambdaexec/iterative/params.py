"""``ParameterServer``: named NumPy arrays in Redis that every call can pull and push to at once.

The model lives outside the stateless workers, as in PyWren's HOGWILD! experiments: each call
pulls the current weights, computes a step, and pushes it; the server adds every push, so
concurrent pushes are never lost and nobody waits for a lock.

How an add stays atomic without doing arithmetic inside Redis (a Lua loop over the elements runs
at about 30 ms per MB and would stall the server): a push appends its delta to a list, which
Redis does atomically; a pull reads, in one atomic script, what it lacks and sums it in NumPy;
when enough deltas are pending, the pull script lets one caller (a lock with a lease) write its
sum back as the new base ("fold"), guarded by ``head``, the count of deltas folded so far, so
that a fold based on an outdated read never applies::

    push(d)  ──► RPUSH deltas d                         (atomic; O(1) on the server)
    pull()   ──► knows the sum up to delta p >= head?  ──yes──► deltas p.. only: cached + d_p + ...
                                   │ no                                        (summed by the client)
                                   └──► base + every pending delta
    fold     ──► if head unchanged: SET base = sum; LTRIM the deltas it holds; head += their count

Each process caches, per array, the last sum it pulled and how many deltas it includes, so a
worker that pulls in a loop reads only the deltas pushed since its last pull.

Where and how arrays sit in Redis (keys, shards, and the scripts): :mod:`lambdaexec.iterative.params_redis`.

A ``ParameterServer`` pickles to its URL and name, so the same object works on the client and
in every call; each process keeps one connection pool per URL. If Redis goes away, every
operation fails within ``timeout`` seconds with :class:`ParameterServerUnavailableError`, which
names the URL.
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any, Iterable, Mapping

import numpy as np

from lambdaexec.errors import LambdaExecError
from lambdaexec.iterative.params_redis import (
    FOLD_SCRIPT,
    PULL_SCRIPT,
    PUSH_SCRIPT,
    REDIS_VALUE_LIMIT,
    SHARD_BYTES,
    ArrayLayout,
)

#: pending deltas of one array from which a pull folds them in (a push folds from 4x as many)
FOLD_AT = 4
#: ... or pending bytes from which it does, so that large arrays never pile up deltas
FOLD_BYTES = 64 << 20


def _fold_at(layout: ArrayLayout) -> int:
    """How many pending deltas of an array are worth folding: :data:`FOLD_AT`, fewer for large arrays."""
    return max(1, min(FOLD_AT, -(-FOLD_BYTES // max(1, layout.nbytes))))


class ParameterServerUnavailableError(LambdaExecError, ConnectionError):
    """The parameter server's Redis could not be reached or did not answer in time."""


class ParameterMismatchError(LambdaExecError, ValueError):
    """A pushed array's shape or dtype does not match the array on the server."""


_clients: dict[tuple[str, float], Any] = {}
_clients_lock = threading.Lock()
_scripts: dict[tuple[int, str], Any] = {}
#: per (url, server, array): (meta, deltas included, their sum) of this process's last pull
_sums: dict[tuple[str, str, str], tuple[bytes, int, np.ndarray]] = {}


def _client(url: str, timeout: float) -> Any:
    """This process's Redis client for ``url`` (one connection pool, reused by every call)."""
    key = (url, timeout)
    with _clients_lock:
        if key not in _clients:
            try:
                import redis
            except ImportError:
                raise ImportError(
                    "ParameterServer needs the redis client: pip install 'lambdaexec[redis]'"
                ) from None
            _clients[key] = redis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=min(timeout, 10.0))
        return _clients[key]


class ParameterServer:
    """Named NumPy arrays in Redis, shared by the client and every call; pushes add atomically.

    ``url`` defaults to the configured ``redis_url`` (``LAMBDAEXEC_REDIS_URL``); ``name``
    separates servers on one Redis (a fresh one each time by default). Pass the object to
    calls like any argument::

        ps = lambdaexec.ParameterServer(name="sgd")
        ps.init("w", np.zeros(10))

        def step(ps, i):
            w = ps.pull("w")
            ps.push("w", np.ones_like(w))      # concurrent pushes are all kept

        with lambdaexec.LambdaExecutor() as ex:
            list(ex.map(step, [ps] * 8, range(8)))
        ps.pull("w")                           # array([8., 8., ...])

    ``shard_bytes`` bounds the piece of an array kept in one Redis value (64 MB by default;
    Redis allows 512 MB). ``timeout`` bounds every request: an unreachable or silent Redis
    raises :class:`ParameterServerUnavailableError` naming the URL instead of hanging.
    """

    def __init__(self, url: str | None = None, *, name: str | None = None,
                 shard_bytes: int = SHARD_BYTES, timeout: float = 30.0):
        if url is None:
            from lambdaexec.config import load_config

            url = load_config().redis_url
        if not 0 < shard_bytes <= REDIS_VALUE_LIMIT:
            raise ValueError(f"shard_bytes must be 1 to {REDIS_VALUE_LIMIT} (Redis's value limit), got {shard_bytes}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.url = url
        self.name = name or uuid.uuid4().hex[:12]
        if "/" in self.name:
            raise ValueError(f"a parameter server name cannot contain '/': {self.name!r}")
        self.shard_bytes = shard_bytes
        self.timeout = timeout
        self._metas: dict[str, ArrayLayout] = {}

    def __repr__(self) -> str:
        return f"ParameterServer({self.url!r}, name={self.name!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "name": self.name, "shard_bytes": self.shard_bytes, "timeout": self.timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._metas = {}

    # --- plumbing -------------------------------------------------------------------------
    def _key(self, array: str, *parts: Any) -> str:
        if not isinstance(array, str) or not array or "/" in array:
            raise ValueError(f"an array name must be a non-empty string without '/', got {array!r}")
        return "/".join(["lambdaexec/ps", self.name, array, *map(str, parts)])

    def _keys(self, array: str, meta: ArrayLayout) -> list[str]:
        """An array's keys, in the order the scripts take them: meta, head, fold, bases, deltas."""
        keys = [self._key(array, "meta"), self._key(array, "head"), self._key(array, "fold")]
        keys += [self._key(array, "base", i) for i in range(meta.shards)]
        return keys + [self._key(array, "deltas", i) for i in range(meta.shards)]

    def _redis(self, op: str, fn: Any) -> Any:
        """Run ``fn(client)``; turn connection failures and timeouts into one typed error."""
        import redis

        try:
            return fn(_client(self.url, self.timeout))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as err:
            raise ParameterServerUnavailableError(
                f"parameter server {self.name!r}: Redis at {self.url} is unreachable during {op} "
                f"({type(err).__name__}: {err}); check that redis-server is running there, or pass "
                "the right url= (default: redis_url, LAMBDAEXEC_REDIS_URL)") from None

    def _eval(self, op: str, source: str, keys: list, args: list) -> Any:
        """Run a Lua script (EVALSHA, loading it first if Redis lacks it) in one round trip."""
        def run(client: Any) -> Any:
            key = (id(client), source)
            if key not in _scripts:
                _scripts[key] = client.register_script(source)
            return _scripts[key](keys=keys, args=args)

        return self._redis(op, run)

    def _meta(self, array: str, refresh: bool = False) -> ArrayLayout:
        if refresh or array not in self._metas:
            raw = self._redis(f"reading the layout of {array!r}", lambda r: r.get(self._key(array, "meta")))
            if raw is None:
                self._metas.pop(array, None)
                raise KeyError(f"parameter server {self.name!r} at {self.url} has no array {array!r}: "
                               f"call ps.init({array!r}, initial_array) first")
            self._metas[array] = ArrayLayout(raw)
        return self._metas[array]

    # --- the API --------------------------------------------------------------------------
    def init(self, name: str, array: Any) -> None:
        """Store ``array`` (any numeric array-like) as ``name``, replacing what was there.

        Its dtype and shape are kept with it; later pushes must match them.
        """
        value = np.asarray(array)
        if value.dtype.kind not in "iufc":
            raise TypeError(f"parameter {name!r} must be a numeric array, got dtype {value.dtype}")
        dtype = value.dtype.newbyteorder("<")
        flat = np.ascontiguousarray(value, dtype=dtype).reshape(-1)
        step = self.shard_bytes - self.shard_bytes % dtype.itemsize or dtype.itemsize
        shards = max(1, -(-flat.nbytes // step))
        raw = json.dumps({"dtype": dtype.str, "shape": list(value.shape), "shards": shards,
                          "shard_bytes": step, "id": uuid.uuid4().hex}).encode()
        meta = ArrayLayout(raw)
        old = self._redis(f"init({name!r})", lambda r: r.get(self._key(name, "meta")))

        def write(r: Any) -> None:
            pipe = r.pipeline(transaction=True)
            if old is not None:
                pipe.delete(*self._keys(name, ArrayLayout(old)))
            pipe.delete(self._key(name, "head"), self._key(name, "fold"))
            for key, shard in zip(self._keys(name, meta)[3 : 3 + shards], meta.cut(flat)):
                pipe.set(key, shard)
            pipe.set(self._key(name, "meta"), raw)
            pipe.execute()

        self._redis(f"init({name!r})", write)
        self._metas[name] = meta

    def pull(self, name: str) -> np.ndarray:
        """The current value of ``name``: its initial value plus every push so far."""
        return self.pull_many([name])[name]

    def pull_many(self, names: Iterable[str]) -> dict[str, np.ndarray]:
        """The current values of several arrays, read together in one round trip."""
        names = list(dict.fromkeys(names))
        for _ in range(3):
            metas = {n: self._meta(n) for n in names}
            cached = {n: self._cached(n, metas[n]) for n in names}
            keys, args = [], []
            for n in names:
                keys += self._keys(n, metas[n])
                args += [metas[n].raw, metas[n].shards, cached[n][0] if cached[n] else -1, _fold_at(metas[n])]
            replies = self._eval("pull", PULL_SCRIPT, keys, args)
            stale = [n for n, reply in zip(names, replies) if reply[0] == b"meta"]
            if not stale:
                return {n: self._sum(n, metas[n], cached[n], reply) for n, reply in zip(names, replies)}
            for n in stale:  # re-initialized since we cached its layout, or removed: look again
                self._meta(n, refresh=True)
        raise ParameterMismatchError(f"arrays {stale} keep being re-initialized while being pulled")

    def _cached(self, name: str, meta: ArrayLayout) -> tuple[int, np.ndarray] | None:
        hit = _sums.get((self.url, self.name, name))
        return hit[1:] if hit is not None and hit[0] == meta.raw else None

    def _sum(self, name: str, meta: ArrayLayout, cached: tuple[int, np.ndarray] | None, reply: list) -> np.ndarray:
        kind, head, fold, n = reply[0], int(reply[1]), reply[2], meta.shards
        if kind == b"inc":
            value, deltas = cached[1].copy(), reply[3:]
        else:
            bases, deltas = reply[3 : 3 + n], reply[3 + n :]
            if any(b is None for b in bases):
                raise KeyError(f"parameter server {self.name!r} at {self.url}: array {name!r} was removed")
            value = np.frombuffer(b"".join(bases), dtype=meta.dtype).copy()
        for j in range(min(len(d) for d in deltas)):
            value += np.frombuffer(b"".join(d[j] for d in deltas), dtype=meta.dtype)
        count = (cached[0] if kind == b"inc" else head) + min(len(d) for d in deltas)
        _sums[(self.url, self.name, name)] = (meta.raw, count, value)
        if fold:  # this process holds the fold lock: write the sum back as the new base
            keys = self._keys(name, meta)
            self._eval(f"pull({name!r})", FOLD_SCRIPT, keys, [meta.raw, head, count - head, *meta.cut(value)])
        return value.reshape(meta.shape).astype(meta.dtype.newbyteorder("="))

    def push(self, name: str, delta: Any) -> None:
        """Add ``delta`` to ``name`` on the server, atomically: concurrent pushes all count.

        ``delta`` must have the array's shape; its dtype must cast to the array's within the
        same kind (a float64 step onto float32 weights is fine, a float onto ints is not).
        """
        self.push_many({name: delta})

    def push_many(self, deltas: Mapping[str, Any]) -> None:
        """Add several deltas (``{name: delta}``) in one round trip, all at once."""
        names = list(deltas)
        for _ in range(3):
            metas = {n: self._meta(n) for n in names}
            keys, args = [], []
            for n in names:
                meta = metas[n]
                keys += [self._key(n, "meta"), *(self._key(n, "deltas", i) for i in range(meta.shards))]
                args += [meta.raw, meta.shards, *meta.cut(self._flat(n, meta, deltas[n]))]
            reply = self._eval("push", PUSH_SCRIPT, keys, args)
            if reply[0] == b"ok":
                break
            stale = keys[int(reply[1]) - 1].rpartition("/meta")[0].rpartition("/")[2]
            self._meta(stale, refresh=True)  # re-initialized since we cached its layout: check again
        else:
            raise ParameterMismatchError(f"array {stale!r} keeps being re-initialized while being pushed to")
        for n, pending in zip(names, reply[1]):
            if pending >= 4 * _fold_at(metas[n]):  # nobody has pulled for a while: fold here
                self.pull(n)

    def _flat(self, name: str, meta: ArrayLayout, delta: Any) -> np.ndarray:
        d = np.asarray(delta)
        if d.shape != meta.shape:
            raise ParameterMismatchError(
                f"push to {name!r}: the delta has shape {d.shape} but the array has shape {meta.shape}; "
                f"push an array of shape {meta.shape} (or init {name!r} again with the new shape)")
        if not np.can_cast(d.dtype, meta.dtype, casting="same_kind"):
            raise ParameterMismatchError(
                f"push to {name!r}: a {d.dtype} delta cannot be added to a {meta.dtype.newbyteorder('=')} "
                f"array; convert it with .astype({meta.dtype.newbyteorder('=').name!r})")
        return np.ascontiguousarray(d, dtype=meta.dtype).reshape(-1)

    def names(self) -> list[str]:
        """The arrays this server holds."""
        prefix = f"lambdaexec/ps/{self.name}/"
        keys = self._redis("names", lambda r: list(r.scan_iter(match=_glob(prefix) + "*/meta", count=1000)))
        return sorted(k.decode()[len(prefix) : -len("/meta")] for k in keys)

    def delete(self, name: str) -> None:
        """Remove array ``name`` from the server."""
        self._drop(f"lambdaexec/ps/{self.name}/{name}/", f"delete({name!r})")
        self._metas.pop(name, None)
        _sums.pop((self.url, self.name, name), None)

    def clear(self) -> None:
        """Remove every array of this server (other servers on the same Redis are untouched)."""
        self._drop(f"lambdaexec/ps/{self.name}/", "clear")
        self._metas.clear()
        for key in [k for k in _sums if k[:2] == (self.url, self.name)]:
            del _sums[key]

    def _drop(self, prefix: str, op: str) -> None:
        def drop(r: Any) -> None:
            keys = list(r.scan_iter(match=_glob(prefix) + "*", count=1000))
            for i in range(0, len(keys), 1000):
                r.delete(*keys[i : i + 1000])

        self._redis(op, drop)


def _glob(text: str) -> str:
    """``text`` with Redis glob characters escaped."""
    return "".join("\\" + ch if ch in "\\*?[]^" else ch for ch in text)
