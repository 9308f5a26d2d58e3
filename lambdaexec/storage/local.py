"""Storage in a local directory: one file per key, written by rename so it appears atomically.

The directory is private to its user, because whoever can write a job's objects decides what
the workers unpickle, that is, what code they run. A directory this store creates is made 0700
(objects are 0600); one that exists already must belong to this user and be writable by no one
else, and the default directory (``/dev/shm/lambdaexec-<uid>``) must not be a symlink nor open
to anyone else at all. Anything else is refused with a :class:`ConfigError` saying what to fix.
"""

from __future__ import annotations

import itertools
import os
import shutil
import stat
import threading
from collections.abc import Sequence

from lambdaexec.errors import ConfigError
from lambdaexec.storage.base import Chunks, Storage, as_chunks, read_exactly

_tmp_names = itertools.count()


def _check_private(path: str) -> None:
    """Refuse a directory that someone else could write objects into (see the module docstring)."""
    from lambdaexec.config import default_storage_path

    default = path == os.path.abspath(default_storage_path())
    st = os.lstat(path) if default else os.stat(path)
    fix = ("remove it if it is not yours, or set storage_path (LAMBDAEXEC_STORAGE_PATH) to a "
           "directory of your own")
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"local storage {path} is not a directory (a symlink?): {fix}")
    if st.st_uid != os.getuid():
        raise ConfigError(f"local storage {path} belongs to user id {st.st_uid}, not to you "
                          f"({os.getuid()}): whoever owns it could make your workers run their code; {fix}")
    mode = stat.S_IMODE(st.st_mode)
    if mode & (0o077 if default else 0o022):
        raise ConfigError(f"local storage {path} has mode {mode:04o}: others could "
                          f"{'read or ' if default else ''}replace your job objects (and so run code as you); "
                          f"make it private with `chmod 700 {path}`")


_IOV_MAX = 1024  # buffers one writev may take (Linux's IOV_MAX)


def _write_all(fd: int, chunks: list[memoryview]) -> int:
    """Write ``chunks`` with as few ``writev`` calls as the kernel allows (a batch of results or
    a job's inputs is hundreds of small chunks: one system call each cost more than the data)."""
    size, i = 0, 0
    chunks = [c for c in chunks if c.nbytes]
    while i < len(chunks):
        n = os.writev(fd, chunks[i : i + _IOV_MAX])
        size += n
        while i < len(chunks) and n >= chunks[i].nbytes:
            n -= chunks[i].nbytes
            i += 1
        if n:  # a partial write: the rest of this chunk goes next
            chunks[i] = chunks[i][n:]
    return size


class LocalStorage(Storage):
    """Keys are paths under ``path``. Works for any processes that share the file system."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            try:
                os.mkdir(self.path, 0o700)
            except FileExistsError:
                pass
            if not os.path.isdir(self.path):
                raise NotADirectoryError(20, "Not a directory")
        except OSError as err:
            raise ConfigError(f"storage_path {self.path} cannot be created ({err.strerror}): set storage_path "
                              "(or LAMBDAEXEC_STORAGE_PATH) to a directory you can create") from None
        _check_private(self.path)
        self.spec = {"kind": "local", "path": self.path}

    def check(self) -> None:
        if not os.access(self.path, os.W_OK):
            raise ConfigError(f"local storage directory {self.path} is not writable: set storage_path")

    def _file(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"storage key {key!r} must be relative and stay inside the store")
        return os.path.join(self.path, key)

    def put(self, key: str, data: Chunks) -> int:
        target = self._file(key)
        folder = os.path.dirname(target)
        tmp = os.path.join(folder, f".tmp-{os.getpid()}-{threading.get_ident()}-{next(_tmp_names)}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            fd = os.open(tmp, flags, 0o600)
        except FileNotFoundError:  # first object in this folder (cheaper than checking every time)
            os.makedirs(folder, exist_ok=True)
            fd = os.open(tmp, flags, 0o600)
        try:
            try:
                size = _write_all(fd, as_chunks(data))
            finally:
                os.close(fd)
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return size

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytearray:
        try:
            f = open(self._file(key), "rb", buffering=0)
        except FileNotFoundError:
            raise KeyError(key) from None
        with f:
            if start:
                f.seek(start)
            size = os.fstat(f.fileno()).st_size if end is None else min(end, os.fstat(f.fileno()).st_size)
            return read_exactly(f.readinto, max(0, size - (start or 0)), f"stored object {key!r}")

    def list(self, prefix: str) -> list[str]:
        folder, _, _ = prefix.rpartition("/")
        root = self._file(folder) if folder else self.path
        keys = []
        for dirpath, _, files in os.walk(root):
            rel = os.path.relpath(dirpath, self.path)
            base = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            keys.extend(base + f for f in files if not f.startswith(".tmp-"))
        return sorted(k for k in keys if k.startswith(prefix))

    def exists(self, key: str) -> bool:
        return os.path.isfile(self._file(key))

    def delete(self, prefix: str) -> None:
        if prefix.endswith("/") and os.path.isdir(self._file(prefix.rstrip("/"))):
            shutil.rmtree(self._file(prefix.rstrip("/")), ignore_errors=True)
            return
        self.delete_keys(self.list(prefix))

    def delete_keys(self, keys: Sequence[str]) -> None:
        for key in keys:
            try:
                os.unlink(self._file(key))
            except FileNotFoundError:
                pass
