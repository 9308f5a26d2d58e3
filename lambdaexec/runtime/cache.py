"""The result cache (``cache=True``): a call computed successfully before, with the same storage,
completes from its stored result without running, in this process or a later one.

::

    <prefix>/cache/<function fingerprint>/<arguments digest>    the call's result (wire format),
                                                                 signed with the durable secret

* The key: the function's fingerprint (:mod:`lambdaexec.wire.fingerprint`: its code and what
  it closes over and names, recursively, also for functions pickled by reference) and the
  SHA-256 of the call's serialized arguments (their content; a large argument stored once by
  content counts by its own SHA-256: :mod:`lambdaexec.runtime.blobs`). docs/cache.md says what
  the key does not cover.
* Packs: results are stored many to an object, ``<prefix>/cache/<fingerprint>/<uuid>``: an
  index (argument digests, byte ranges, one HMAC per result, and one over the index) followed by
  the results, each 64-byte aligned. A fully cached 1,000-call rerun reads a few objects, not
  1,000 (``bench/bench_cache.py``).
* Lookup, when a job is uploaded: one LIST of its function's packs, the index of each pack not
  seen before by this executor (one ranged GET, two for a large index), then one ranged GET per
  pack holding hits. Hits complete their futures (``stats["cached"]`` is True) and leave the
  job; the rest run.
* Store: the monitor hands each successful result's payload to :meth:`ResultCache.store_result`
  (the bytes the worker wrote, not the value the caller may since have changed); a thread
  packs those finishing within ``PACK_SECONDS`` of each other and writes them in the
  background, and :meth:`closed` writes the rest before the executor's storage closes.
  Failures are never stored.
* Signing: cache entries outlive the executor that wrote them, so they are signed with this
  user's durable secret (:func:`durable_secret`, a 0600 file beside the executors' secrets),
  not an executor's. An entry that fails the check (another user's or machine's, or altered) is
  a miss, and is overwritten.
* Operators (``reduce``, ``map_reduce``, ``sort``, broadcast, ``iterate``) are not cached: their
  calls write objects as they run, which a cached result would skip.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import marshal
import os
import struct
import threading
import time
import uuid
from typing import Any

from lambdaexec.errors import IntegrityError, LambdaExecError
from lambdaexec.future import LambdaFuture
from lambdaexec.runtime.watcher import Watcher
from lambdaexec.storage import Storage, signed
from lambdaexec.wire import fingerprint, serialize

#: a pack holds at most this many results; results finishing within PACK_SECONDS share one
PACK_CALLS = 4096
PACK_SECONDS = 1.0
_MAGIC = b"LXC1"
_HEAD = 4 + 4 + 32  # magic, index size, index tag
_INDEX_READ = 64 << 10  # bytes read first for a pack's index (a second read if it is larger)
#: the name of this user's durable secret (cache entries, replay records) under signed.SECRETS_DIR
DURABLE = "durable"
#: modules whose functions are never cached (their calls write objects as they run)
_UNCACHED = ("lambdaexec.dataflow", "lambdaexec.iterative")

#: results handed to a cache writer of this process and not yet stored, by (storage, prefix):
#: an executor made right after another one ended (joblib's next ``Parallel``) finds them
_unwritten: dict[tuple[str, str], dict[str, Any]] = {}
_unwritten_lock = threading.Lock()

_durable: list[bytes] = []
_durable_lock = threading.Lock()


def durable_secret() -> bytes:
    """This user's secret for objects that outlive an executor (cache entries, replay records):
    made once, kept in a 0600 file under :data:`lambdaexec.storage.signed.SECRETS_DIR`; processes
    racing to make it agree on the first file written."""
    with _durable_lock:
        if _durable:
            return _durable[0]
        path = os.path.join(signed.SECRETS_DIR, DURABLE)
        try:
            with open(path, "rb") as f:
                secret = f.read()
        except FileNotFoundError:
            signed._private_dir()
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(signed.new_secret())
            except FileExistsError:
                pass  # another process made it first: use theirs
            with open(path, "rb") as f:
                secret = f.read()
        if len(secret) != 32:
            raise IntegrityError(f"{path} is not a lambdaexec secret (32 bytes): remove it to make a new one")
        _durable.append(secret)
        return secret


def cache_prefix(root: str) -> str:
    """Where the cache of the executors under ``root`` (the ``prefix`` setting) lives."""
    return f"{root}/cache/"


def _uncached(fn: Any) -> bool:
    """Whether ``fn`` is (or wraps, as ``map``'s chunks do) an operator's function."""
    stack, looked = [fn], 0
    while stack and looked < 16:
        f = stack.pop()
        looked += 1
        if (getattr(f, "__module__", None) or "").startswith(_UNCACHED):
            return True
        if isinstance(f, functools.partial):
            stack.append(f.func)
            stack.extend(a for a in f.args if callable(a))
    return False


class ResultCache(Watcher):
    """Reads and writes the cache for one executor; see the module docstring."""

    def __init__(self, storage: Storage, root: str):
        self.store = signed.SignedStorage(signed.unsigned(storage), durable_secret())
        self.prefix = cache_prefix(root)
        self._where = (json.dumps(storage.spec, sort_keys=True, default=str), self.prefix)
        self._keys: dict[bytes, str | None] = {}  # function blob -> its fingerprint (None: not cached)
        self._packs: dict[str, dict[str, tuple[int, int, bytes]]] = {}  # pack key -> its index (immutable)
        self._lock = threading.Lock()
        self._writes: list[tuple[str, Any]] = []
        self._wake = threading.Condition(self._lock)
        self._writer: threading.Thread | None = None
        self._closing = False
        self._busy = 0

    # --- keys -----------------------------------------------------------------------------
    def note(self, blob: bytes, fn: Any) -> None:
        """Remember the fingerprint of ``fn``, whose pickle is ``blob`` (at submit)."""
        if blob in self._keys:
            return
        try:
            key = None if _uncached(fn) else fingerprint.fingerprint(fn)[:32]
        except (fingerprint.Unfingerprintable, RecursionError):
            key = None  # its calls simply run
        with self._lock:
            if len(self._keys) > 1000:
                self._keys.clear()
            self._keys[blob] = key

    def keys_for(self, blob: bytes, digests: list[str]) -> list[str] | None:
        """The cache key (``<function fingerprint>/<arguments digest>``) of each call of ``blob``
        whose arguments have ``digests``; None if the function is not cached."""
        fn_key = self._keys.get(blob)
        if fn_key is None:
            return None
        return [f"{fn_key}/{d[:40]}" for d in digests]

    # --- lookup ---------------------------------------------------------------------------
    def lookup(self, keys: list[str]) -> dict[int, memoryview]:
        """``{i: payload}`` for the keys found (passing their signature checks); all of one function."""
        fn_key = keys[0].partition("/")[0]
        found: dict[int, memoryview] = {}
        with _unwritten_lock:
            waiting = _unwritten.get(self._where)
            if waiting:
                for i, key in enumerate(keys):
                    if key in waiting:
                        found[i] = memoryview(waiting[key])
        if len(found) == len(keys):
            return found
        try:
            packs = self.store.list(f"{self.prefix}{fn_key}/")
        except Exception:
            return found
        fresh = [p for p in packs if p not in self._packs]
        self._each(self._read_index, fresh)
        where: dict[str, tuple[str, int, int, bytes]] = {}
        for pack in packs:
            for digest, (start, end, tag) in self._packs.get(pack, {}).items():
                where.setdefault(digest, (pack, start, end, tag))
        wanted: dict[str, list[tuple[int, int, int, bytes]]] = {}
        for i, key in enumerate(keys):
            hit = None if i in found else where.get(key.partition("/")[2])
            if hit is not None:
                wanted.setdefault(hit[0], []).append((i, *hit[1:]))

        def read(pack: str) -> None:
            entries = wanted[pack]
            lo, hi = min(e[1] for e in entries), max(e[2] for e in entries)
            try:
                view = memoryview(self.store.get(pack, lo, hi))
            except Exception:
                return  # gone (cleaned) or unreadable: those calls run
            for i, start, end, tag in entries:
                part = view[start - lo : end - lo]
                try:
                    self.store.check_range(pack, start, end, part, tag)
                except IntegrityError:
                    continue
                found[i] = part
        self._each(read, list(wanted))
        return found

    def _each(self, fn: Any, items: list) -> None:
        if len(items) > 2 and self.store.concurrency > 1:
            with concurrent.futures.ThreadPoolExecutor(min(self.store.concurrency, 16, len(items))) as pool:
                list(pool.map(fn, items))
        else:
            for item in items:
                fn(item)

    def _read_index(self, pack: str) -> None:
        """Read (and check) the index of ``pack``; an unreadable or forged one counts as empty."""
        index: dict[str, tuple[int, int, bytes]] = {}
        try:
            head = self.store.get(pack, 0, _INDEX_READ)
            if head[:4] != _MAGIC:
                raise IntegrityError(pack)
            size, = struct.unpack_from("<I", head, 4)
            end = _HEAD + size
            if len(head) < end:
                head += self.store.get(pack, len(head), end)
            self.store.check_range(pack, _HEAD, end, memoryview(head)[_HEAD:end], bytes(head[8:_HEAD]))
            index = {d: (start, stop, tag) for d, start, stop, tag in marshal.loads(bytes(head[_HEAD:end]))}
        except Exception:
            pass
        with self._lock:
            if len(self._packs) > 10_000:
                self._packs.clear()
            self._packs[pack] = index

    @staticmethod
    def complete(future: LambdaFuture, payload: memoryview, key: str) -> None:
        """Complete ``future`` from a cached ``payload`` (one that cannot be unpickled here fails
        the call, as an unreadable result would)."""
        if not future.set_running_or_notify_cancel():
            return
        future.stats.update({"cached": True, "cache_key": key, "seen": time.time()})
        try:
            value = serialize.loads(payload)
        except (Exception, SystemExit) as err:
            future.set_exception(LambdaExecError(f"the cached result {key} cannot be unpickled here: {err!r}; "
                                                 "`lambdaexec clean --cache` deletes the cache"))
            return
        future.set_result(value)

    # --- store ----------------------------------------------------------------------------
    def store_result(self, key: str, payload: Any) -> None:
        """Queue ``payload`` (a successful call's result, wire format) to be stored as ``key``."""
        with self._lock:
            if self._closing:
                return
            self._writes.append((key, payload))
            with _unwritten_lock:
                _unwritten.setdefault(self._where, {})[key] = payload
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name="lambdaexec-cache", daemon=True)
                self._writer.start()
            if len(self._writes) >= PACK_CALLS:
                self._wake.notify()

    def _write_loop(self) -> None:
        while True:
            with self._lock:
                if not self._closing:  # results finishing together go into one pack
                    self._wake.wait(PACK_SECONDS)
                batch, self._writes = self._writes, []
                closing = self._closing
                self._busy += 1
            try:
                by_function: dict[str, list[tuple[str, Any]]] = {}
                for key, payload in batch:
                    fn_key, _, digest = key.partition("/")
                    by_function.setdefault(fn_key, []).append((digest, payload))
                for fn_key, entries in by_function.items():
                    for i in range(0, len(entries), PACK_CALLS):
                        try:
                            self._write_pack(fn_key, entries[i : i + PACK_CALLS])
                        except Exception:
                            pass  # best effort: those calls simply run again next time
                with _unwritten_lock:
                    waiting = _unwritten.get(self._where, {})
                    for key, _ in batch:
                        waiting.pop(key, None)
                    if not waiting:
                        _unwritten.pop(self._where, None)
            finally:
                with self._lock:
                    self._busy -= 1
                    self._wake.notify_all()
            if closing:
                return

    def _write_pack(self, fn_key: str, entries: list[tuple[str, Any]]) -> None:
        """Store ``entries`` (digest, payload) as one pack: ``LXC1 | u32 n | index tag | index |
        payloads``, each payload 64-byte aligned and tagged on its own (ranged reads check it)."""
        key = f"{self.prefix}{fn_key}/{uuid.uuid4().hex}"
        payloads = [(d, serialize.size_of(p) if isinstance(p, list) else memoryview(p).nbytes, p) for d, p in entries]
        # the index's size depends on the offsets: lay out with a generous estimate, then fix
        index_size = 0
        while True:
            pos = _HEAD + index_size
            layout = []
            for digest, size, _ in payloads:
                pos += serialize.padding(pos)
                layout.append((digest, pos, pos + size))
                pos += size
            trial = marshal.dumps([(d, a, b, b"\0" * 32) for d, a, b in layout], 2)  # 2: no shared refs
            if len(trial) <= index_size:
                break
            index_size = len(trial) + 64
        chunks: list[Any] = [b"", b""]
        index = []
        pos = _HEAD + index_size
        for (digest, a, b), (_, _, payload) in zip(layout, payloads):
            pad = a - pos
            if pad:
                chunks.append(bytes(pad))
            parts = payload if isinstance(payload, list) else [payload]
            chunks.extend(parts)
            index.append((digest, a, b, self.store.range_tag(key, a, b, parts)))
            pos = b
        body = marshal.dumps(index, 2)
        body += bytes(index_size - len(body))
        chunks[0] = _MAGIC + struct.pack("<I", index_size) + self.store.range_tag(key, _HEAD, _HEAD + index_size, body)
        chunks[1] = body
        try:
            self.store.put(key, [memoryview(c) for c in chunks])
        except Exception:
            return  # best effort: those calls simply run again next time
        with self._lock:
            self._packs[key] = {d: (a, b, t) for d, a, b, t in index}

    def flush(self) -> None:
        """Wait until the results handed over so far are stored."""
        with self._lock:
            while self._writes or self._busy:
                self._wake.notify_all()
                self._wake.wait(0.05)

    def closed(self) -> None:
        with self._lock:
            self._closing = True
            self._wake.notify_all()
            writer = self._writer
        if writer is not None:
            writer.join()
        elif self._writes:
            self._write_loop()


def size(storage: Storage, root: str) -> tuple[int, int]:
    """``(results, objects)``: what the cache under ``root`` holds (its packs' indexes read)."""
    packs = storage.list(cache_prefix(root))
    if not packs:
        return 0, 0
    reader = ResultCache(storage, root)
    reader._each(reader._read_index, packs)
    return sum(len(reader._packs.get(p, ())) for p in packs), len(packs)


def clear(storage: Storage, root: str) -> tuple[int, int]:
    """Delete the cache under ``root``; what it held, as :func:`size` says."""
    held = size(storage, root)
    storage.delete(cache_prefix(root))
    return held


def resolve(cache: ResultCache, blob: bytes, calls: list[tuple[list[memoryview], LambdaFuture]]
            ) -> tuple[list[tuple[list[memoryview], LambdaFuture]], list[str] | None]:
    """Complete the calls of ``blob`` found in ``cache``; the others and their cache keys
    (None: the function is not cached)."""
    keys = cache.keys_for(blob, [signed.digest(chunks) for chunks, _ in calls])
    if keys is None:
        return calls, None
    found = cache.lookup(keys)
    for i, payload in found.items():
        cache.complete(calls[i][1], payload, keys[i])
    if not found:
        return calls, keys
    rest = [i for i in range(len(calls)) if i not in found]
    return [calls[i] for i in rest], [keys[i] for i in rest]
