"""Which class serves which storage ``kind``, found by import string on first use (as fsspec's
``known_implementations``), and the process's shared open stores.

Nothing here imports a backend until a spec names it, so ``import lambdaexec`` loads neither
boto3 nor redis, and a missing extra is an error that names what to install::

    open_storage({"kind": "s3", "bucket": "b"})
        ──► known_implementations["s3"] = ("lambdaexec.storage.s3:S3Storage", "boto3", "aws")
        ──► import lambdaexec.storage.s3 (boto3 missing? ConfigError: pip install 'lambdaexec[aws]')
        ──► S3Storage(bucket="b")
"""

from __future__ import annotations

import importlib
import threading
from typing import Any, Callable

from lambdaexec.errors import ConfigError
from lambdaexec.storage.base import Storage

#: kind -> (``"module:Class"``, the package it needs, the extra that installs it)
known_implementations: dict[str, tuple[str, str, str]] = {
    "local": ("lambdaexec.storage.local:LocalStorage", "", ""),
    "s3": ("lambdaexec.storage.s3:S3Storage", "boto3", "aws"),
    "redis": ("lambdaexec.storage.redis:RedisStorage", "redis", "redis"),
}
_loaded: dict[str, Callable[..., Storage]] = {}


def register(kind: str, target: str | Callable[..., Storage]) -> None:
    """Make a backend available to :func:`open_storage` under ``kind``: a class (or factory),
    or its ``"module:Class"`` import string, imported on first use.

    >>> register("mine", "my_package.storage:MyStorage")  # doctest: +SKIP
    """
    if isinstance(target, str):
        known_implementations[kind] = (target, "", "")
        _loaded.pop(kind, None)
    else:
        _loaded[kind] = target


def _factory(kind: str) -> Callable[..., Storage]:
    if kind in _loaded:
        return _loaded[kind]
    if kind not in known_implementations:
        raise ValueError(f"unknown storage kind {kind!r}; choose one of "
                         f"{sorted(set(known_implementations) | set(_loaded))}")
    target, package, extra = known_implementations[kind]
    module, _, name = target.partition(":")
    try:
        factory = getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as err:
        if not package or err.name != package:
            raise
        raise ConfigError(f"storage {kind!r} needs the {package} package: pip install 'lambdaexec[{extra}]'") from err
    _loaded[kind] = factory
    return factory


def open_storage(spec: dict[str, Any]) -> Storage:
    """Open the store described by ``spec`` (``{"kind": "local", "path": ...}`` and so on).

    >>> store = open_storage({"kind": "local", "path": "/tmp/lambdaexec-doc"})
    >>> store.put("a/b", b"hi"), bytes(store.get("a/b"))
    (2, b'hi')
    """
    spec = dict(spec)
    return _factory(spec.pop("kind"))(**spec)


_shared: dict[str, Storage] = {}
_shared_lock = threading.Lock()


def shared_storage(spec: dict[str, Any], secret: bytes | None = None) -> Storage:
    """This process's one open store for ``spec``, its objects signed with ``secret`` or, by
    default, on a worker, with the secret of the call it is running (see
    :mod:`lambdaexec.storage.signed`). Opened on first use and kept: a warm worker reuses its
    connections from call to call (never closed; for workers, not clients)."""
    from lambdaexec.storage.signed import SignedStorage, current

    # the wrapper holds no connection of its own: one per call costs less than a cache of them
    return SignedStorage(shared_unsigned_storage(spec), current() if secret is None else secret)


def shared_unsigned_storage(spec: dict[str, Any]) -> Storage:
    """:func:`shared_storage` without signatures: for objects nobody unpickles (a probe)."""
    name = repr(sorted(spec.items()))
    with _shared_lock:
        if name not in _shared:
            _shared[name] = open_storage(spec)
        return _shared[name]
