"""Signed objects: every object lambdaexec writes carries an HMAC-SHA256 made with a secret
that never enters storage, and is checked before anything unpickles it.

Whoever can write to the bucket (or the Redis, or the local directory) can otherwise make the
workers and the client unpickle bytes of their choosing, which runs their code. With signing
they can only make a call or a future fail with :class:`~lambdaexec.errors.IntegrityError`::

    client (secret, per executor)          storage                       worker
    put(key, data) ──► data + tag(key, data) ──►  [data][32-byte tag]  ──► get(key): tag ok?
                                                                          │ yes: data (unpickled)
    event {secret, args_digests, ...} ───── invoker (not storage) ──────►└ no: IntegrityError

* :class:`SignedStorage` wraps any :class:`~lambdaexec.storage.Storage`: ``put`` appends the
  32-byte tag, a whole-object ``get`` checks and strips it, so callers are unchanged and byte
  offsets stay where they were. The tag binds the object's key as well as its bytes, so a
  valid object copied to another key (call 3's result onto call 7) is refused.
* A ranged ``get`` returns the raw bytes: a whole-object tag cannot vouch for a slice. The
  client puts the SHA-256 of each call's slice of the job's ``args`` object in the invocation
  event (:func:`digest`; the event is trusted, so a hash suffices) and the worker checks it
  (:meth:`SignedStorage.check_digest`); a shuffle mapper puts each partition's HMAC in its
  object's index (:meth:`SignedStorage.range_tag`, in storage, so keyed), which reducers check
  (:meth:`SignedStorage.check_range`). Such an object is read only by its slices, so it is
  stored without the whole-object tag (:meth:`SignedStorage.put_ranged`): its bytes are hashed
  once, not twice, and a whole ``get`` of it is refused.
* The secret (:func:`new_secret`, 32 random bytes) is made per executor and travels to workers
  in the invocation event, never in storage, in a storage spec or in a job record. This
  process's secrets are kept by executor id (:func:`remember`, :func:`secret_for`); the client
  also keeps its secret in a 0600 file under :data:`SECRETS_DIR` (a 0700 directory) so that
  another process of the same user on this machine can read the executor's results
  (:func:`lambdaexec.attach`, futures unpickled elsewhere).

JSON job records (read by ``lambdaexec jobs`` / ``logs``, never unpickled), ``ParameterServer``
arrays in Redis (raw numbers) and the user's own input data (read by :func:`lambdaexec.chunks`)
are not signed, and ``started/`` markers are written signed but only listed: docs/security.md
says, kind by kind, why that is sound and what a writer of the store can do with each.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import struct
import threading
from typing import Any, Sequence

from lambdaexec.errors import ConfigError, IntegrityError
from lambdaexec.storage.base import Chunks, Storage, as_chunks

#: bytes of the tag at the end of every signed object
TAG_SIZE = 32
#: where a client keeps its executors' secrets (one 0600 file per executor id), private to its user
SECRETS_DIR = os.path.join(os.path.expanduser("~"), ".local", "state", "lambdaexec", "secrets")

_keyring: dict[str, bytes] = {}  # executor id -> secret, for this process
_current: list = []  # on a worker: [secret, executor id] of the event being run
_lock = threading.Lock()


def new_secret() -> bytes:
    """A fresh secret for one executor (32 bytes from :mod:`secrets`)."""
    return secrets.token_bytes(32)


def _refuse(store: Storage, key: str, what: str) -> IntegrityError:
    return IntegrityError(
        f"{what} {key!r} in {store.describe()} fails its signature check: it was written by someone "
        "without this executor's secret, or altered, truncated or copied from another key, so it was "
        "not unpickled. Make the bucket (or Redis, or directory) writable only by you; see docs/security.md")


def _unretried(method: Any) -> Any:
    """The inner store retries; the wrapper must not retry again, nor retry a failed check."""
    method.__wrapped_by_retry__ = True
    return method


class SignedStorage(Storage):
    """``inner`` with every object signed with ``secret`` (see the module docstring).

    >>> from lambdaexec.storage import open_storage
    >>> store = SignedStorage(open_storage({"kind": "local", "path": "/tmp/lambdaexec-doc"}), new_secret())
    >>> store.put("a/b", b"hi"), bytes(store.get("a/b"))
    (2, b'hi')
    """

    def __init__(self, inner: Storage, secret: bytes):
        self.inner, self.secret = inner, secret
        self.spec, self.concurrency = inner.spec, inner.concurrency

    def _mac(self, key: str, chunks: Sequence[Any], scope: bytes = b"") -> bytes:
        """HMAC-SHA256 of ``key``, ``scope`` (a slice's bounds) and ``chunks``.

        ``hmac.new`` + ``update``: one path for small and large objects, no copy of the data,
        about 2 us for a small object (``hmac.digest`` on a joined copy costs the same, and
        releases the GIL on every call)."""
        mac = hmac.new(self.secret, key.encode() + b"\0" + scope + b"\0", "sha256")
        for chunk in chunks:
            mac.update(chunk)
        return mac.digest()

    def describe(self) -> str:
        return self.inner.describe()

    @_unretried
    def put(self, key: str, data: Chunks) -> int:
        chunks = as_chunks(data)
        self.inner.put(key, [*chunks, memoryview(self._mac(key, chunks))])
        return sum(len(c) for c in chunks)

    @_unretried
    def put_ranged(self, key: str, data: Chunks) -> int:
        """Store ``data`` at ``key`` without the whole-object tag: for an object read only by
        slices, each tagged on its own (:meth:`range_tag`, e.g. a shuffle output's partitions,
        whose tags its index holds), so that its bytes are hashed once, not twice. A slice
        whose tag fails is refused as ever (:meth:`check_range`), and so is any whole-object
        :meth:`get` of it: nothing unpickles its bytes unchecked."""
        chunks = as_chunks(data)
        self.inner.put(key, chunks)
        return sum(len(c) for c in chunks)

    @_unretried
    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytearray:
        """The object at ``key``, checked (whole) or raw (a range: see :meth:`check_range`)."""
        if start is not None or end is not None:
            return self.inner.get(key, start, end)
        return self.checked(key, self.inner.get(key))

    def checked(self, key: str, buf: Any) -> bytearray:
        """``buf``, the whole object at ``key`` as stored, without its tag once the tag checks;
        :class:`~lambdaexec.errors.IntegrityError` if it does not."""
        if not isinstance(buf, bytearray):
            buf = bytearray(buf)
        n = len(buf) - TAG_SIZE
        if n < 0 or not hmac.compare_digest(self._mac(key, [memoryview(buf)[:n]]), buf[n:]):
            raise _refuse(self, key, "object")
        del buf[n:]
        return buf

    def range_tag(self, key: str, start: int, end: int, data: Chunks) -> bytes:
        """The tag of bytes ``[start, end)`` of the object at ``key`` (``data``), for a reader
        of just that slice to check with :meth:`check_range`."""
        chunks = (data,) if isinstance(data, (bytes, bytearray, memoryview)) else data
        return self._mac(key, chunks, struct.pack("<2Q", start, end))

    def check_range(self, key: str, start: int, end: int, data: Chunks, tag: bytes | str) -> None:
        """Raise :class:`~lambdaexec.errors.IntegrityError` unless ``data``, read from
        ``[start, end)`` of ``key``, matches ``tag`` (bytes or hex) from :meth:`range_tag`."""
        expected = bytes.fromhex(tag) if isinstance(tag, str) else bytes(tag)
        if not hmac.compare_digest(self.range_tag(key, start, end, data), expected):
            raise _refuse(self, key, f"bytes [{start}:{end}) of object")

    def check_digest(self, key: str, start: int, end: int, data: Any, digest: str) -> None:
        """Raise :class:`~lambdaexec.errors.IntegrityError` unless ``data``, read from ``[start,
        end)`` of ``key``, has the SHA-256 ``digest`` (hex) that a trusted channel (the
        invocation event) carried; see :func:`digest`."""
        if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), digest):
            raise _refuse(self, key, f"bytes [{start}:{end}) of object")

    @_unretried
    def list(self, prefix: str) -> list[str]:
        return self.inner.list(prefix)

    def delete(self, prefix: str) -> None:
        self.inner.delete(prefix)

    @_unretried
    def delete_keys(self, keys: Sequence[str]) -> None:
        self.inner.delete_keys(keys)

    @_unretried
    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def check(self) -> None:
        self.inner.check()

    def close(self) -> None:
        self.inner.close()


# --- secrets ----------------------------------------------------------------------------------
def remember(owner: str, secret: bytes) -> None:
    """Know ``secret`` as executor ``owner``'s in this process."""
    with _lock:
        _keyring[owner] = secret


def enter(owner: str, secret: bytes) -> None:
    """On a worker: the event being run is executor ``owner``'s, signed with ``secret``; stores
    opened by :func:`~lambdaexec.storage.shared_storage` during it sign with it."""
    with _lock:
        for previous in _current[1:]:  # a warm Lambda container keeps only the executor it serves
            _keyring.pop(previous, None)
        _keyring[owner] = secret
        _current[:] = [secret, owner]


def current() -> bytes:
    """The secret of the event this worker is running."""
    if not _current:
        raise IntegrityError("no signing secret is known in this process: shared_storage() is for code "
                             "running in a lambdaexec call; elsewhere use the executor's own storage")
    return _current[0]


def _path(owner: str) -> str:
    if not owner or not all(c.isalnum() or c in "-_" for c in owner):
        raise ValueError(f"not an executor id: {owner!r}")
    return os.path.join(SECRETS_DIR, owner)


def _private_dir() -> None:
    os.makedirs(SECRETS_DIR, mode=0o700, exist_ok=True)
    st = os.lstat(SECRETS_DIR)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
        raise ConfigError(f"{SECRETS_DIR} must be a directory owned by you with mode 0700 (it holds "
                          "your executors' signing secrets); remove it or fix its owner and mode")


def save(owner: str, secret: bytes) -> None:
    """Keep executor ``owner``'s secret in this process and in its 0600 file under
    :data:`SECRETS_DIR` (if the home directory cannot be written, as in a Lambda worker, in this
    process only: other processes then cannot check its objects)."""
    remember(owner, secret)
    try:
        _private_dir()
        fd = os.open(_path(owner), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except ConfigError:
        raise
    except OSError:
        return
    with os.fdopen(fd, "wb") as f:
        f.write(secret)


def forget(owner: str) -> None:
    """Delete executor ``owner``'s secret file and this process's copy (its data is gone)."""
    with _lock:
        _keyring.pop(owner, None)
    try:
        os.unlink(_path(owner))
    except FileNotFoundError:
        pass


def secret_for(owner: str, secret: bytes | str | None = None) -> bytes:
    """Executor ``owner``'s secret: ``secret`` if given (bytes or hex), else this process's
    copy, else its file under :data:`SECRETS_DIR`; :class:`~lambdaexec.errors.IntegrityError`
    saying what to do if none of these has it."""
    if secret is not None:
        return bytes.fromhex(secret) if isinstance(secret, str) else bytes(secret)
    with _lock:
        if owner in _keyring:
            return _keyring[owner]
    try:
        with open(_path(owner), "rb") as f:
            found = f.read()
    except FileNotFoundError:
        raise IntegrityError(
            f"the signing secret of executor {owner!r} is not on this machine ({SECRETS_DIR}), so its "
            "objects cannot be checked and will not be unpickled: run this where that executor ran, or "
            f"copy the file {owner} from that directory there to this one (mode 0600), or pass secret=; "
            "see docs/security.md") from None
    remember(owner, found)
    return found


def unsigned(store: Storage) -> Storage:
    """The store under ``store``'s signatures, for what is not signed (the JSON job records)."""
    return store.inner if isinstance(store, SignedStorage) else store


def digest(chunks: Sequence[Any]) -> str:
    """SHA-256 (hex) of a call's inputs, for its invocation event: the event does not pass
    through storage, so a plain hash there authenticates the slice the worker reads (and costs
    a quarter of an HMAC)."""
    if len(chunks) == 1:
        return hashlib.sha256(chunks[0]).hexdigest()
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def owner_of(job_prefix: str) -> str:
    """The executor id in a job prefix ``<prefix>/<executor-id>/<job-id>``."""
    return job_prefix.rsplit("/", 2)[-2]
