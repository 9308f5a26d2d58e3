"""Large arguments stored once by content, the client side (the ``large_argument_size`` setting).

Before a job's inputs are stored, each call's out-of-band buffers (NumPy arrays, ...) of at
least ``large_argument_size`` bytes are taken out of its inputs and replaced by their SHA-256
(:func:`lambdaexec.wire.shared.externalize`); each distinct buffer is stored once per executor,
under ``<executor>/blobs/<sha256>``, and every call and job of the executor that passes the same
content shares it, as dask's ``scatter`` would, without the user asking. The worker reads it
back by digest (``worker/blobs.py``). The blobs go with the executor's other objects at
shutdown. Each call's ``stats`` say what was shared: ``large_argument_size`` (the threshold),
``args_stored_once`` (its bytes stored apart) and ``args_saved`` (those already stored by an
earlier call: the bytes not written again).
"""

from __future__ import annotations

import threading

from lambdaexec.future import LambdaFuture
from lambdaexec.storage import Storage
from lambdaexec.wire import serialize, shared


class SharedArguments:
    """Stores the large buffers of one executor's calls once (see the module docstring)."""

    def __init__(self, storage: Storage, executor_prefix: str, threshold: int):
        self.storage, self.prefix, self.threshold = storage, executor_prefix, threshold
        self._stored: set[bytes] = set()
        self._lock = threading.Lock()

    def take_out(self, chunks: list[memoryview]) -> tuple[list[memoryview], list[tuple[bytes, memoryview]]]:
        """A call's inputs with their large buffers replaced by digests, and those buffers."""
        if serialize.size_of(chunks) < self.threshold:
            return chunks, []
        return shared.externalize(chunks, self.threshold)

    def store(self, future: LambdaFuture, buffers: list[tuple[bytes, memoryview]]) -> None:
        """Store each of ``buffers`` not stored yet; note the call's shared and saved bytes."""
        saved = 0
        for digest, raw in buffers:
            with self._lock:  # held while storing: a second job's calls never start before the buffer is there
                if digest in self._stored:
                    saved += raw.nbytes
                    continue
                self.storage.put(f"{self.prefix}/blobs/{digest.hex()}", raw)
                self._stored.add(digest)
        future.stats.update(large_argument_size=self.threshold,
                            args_stored_once=sum(raw.nbytes for _, raw in buffers), args_saved=saved)
