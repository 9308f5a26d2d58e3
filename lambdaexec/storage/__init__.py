"""Storage backends behind one interface: ``local`` (a directory), ``s3`` and ``redis``."""

from lambdaexec.storage.base import Storage, open_storage, register, shared_storage

__all__ = ["Storage", "open_storage", "register", "shared_storage"]
