"""What runs in the worker: one task (or fused chain) reading its inputs from storage by key.

Each worker process keeps its storage connection and a small cache of the objects it has
recently read or written, so a task whose input was made on the same worker does not fetch it.
The cache holds the stored bytes, never the producer's live object: each reader unpickles its
own copy, as dask's processes scheduler hands each task a value, so a task that mutates its
input, or an output that does not survive its producer (a ``weakref.proxy``), harms no one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from dask._task_spec import GraphNode

from lambdaexec.storage import Storage, shared_storage
from lambdaexec.wire import serialize

CACHE_BYTES = 128 << 20  # per worker process

_cache: OrderedDict[str, bytearray] = OrderedDict()
_cached_bytes = 0
_lock = threading.Lock()


def _remember(key: str, blob: bytearray) -> None:
    global _cached_bytes
    if len(blob) > CACHE_BYTES // 4:
        return
    with _lock:
        _cache[key] = blob
        _cached_bytes += len(blob)
        while _cached_bytes > CACHE_BYTES:
            _, old = _cache.popitem(last=False)
            _cached_bytes -= len(old)


def _load(store: Storage, key: str) -> Any:
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
    if hit is not None:
        return serialize.loads(bytearray(hit))  # a copy: arrays unpickled from it are views
    blob = store.get(key)
    _remember(key, bytearray(blob))
    return serialize.loads(blob)


def run_task(spec: dict[str, Any], node: GraphNode, inputs: dict[Hashable, tuple[str, Any]],
             out_key: str | None, return_value: bool) -> tuple[int, Any]:
    """Run ``node`` on its inputs; store the output at ``out_key`` (if given).

    ``inputs`` maps each key the node reads to ``("ref", storage_key)`` or ``("value", value)``.
    Returns ``(stored bytes, the output if return_value else None)``: only a small reference
    travels back to the client unless it asked for the value itself.
    """
    store = shared_storage(spec)
    values = {key: _load(store, where) if how == "ref" else where for key, (how, where) in inputs.items()}
    result = node(values)
    nbytes = 0
    if out_key is not None:
        chunks = serialize.dumps(result)
        nbytes = store.put(out_key, chunks)
        if nbytes <= CACHE_BYTES // 4:
            _remember(out_key, bytearray(b"".join(chunks)))
    return nbytes, (result if return_value else None)
