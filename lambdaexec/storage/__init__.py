"""One storage interface (:class:`Storage`: flat keys, atomic puts, ranged gets, listing) and its
implementations, local directory, S3 and Redis, found by :func:`open_storage` through a registry.

Objects the client and workers exchange are signed (:mod:`~lambdaexec.storage.signed`).
"""

from lambdaexec.storage.base import Storage
from lambdaexec.storage.registry import open_storage, register, shared_storage, shared_unsigned_storage

__all__ = ["Storage", "open_storage", "register", "shared_storage", "shared_unsigned_storage"]
