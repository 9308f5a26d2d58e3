"""What runs in the worker: one task (or fused chain) reading its inputs from storage by key.

Each worker process keeps its storage connection and a small cache of the values it has
recently read or written, so a task whose input was made on the same worker does not fetch it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from dask._task_spec import GraphNode

from lambdaexec import serialize
from lambdaexec.storage import Storage, shared_storage

CACHE_BYTES = 128 << 20  # per worker process

_cache: OrderedDict[str, tuple[Any, int]] = OrderedDict()
_cached_bytes = 0
_lock = threading.Lock()


def _remember(key: str, value: Any, nbytes: int) -> None:
    global _cached_bytes
    if nbytes > CACHE_BYTES // 4:
        return
    with _lock:
        _cache[key] = (value, nbytes)
        _cached_bytes += nbytes
        while _cached_bytes > CACHE_BYTES:
            _, (_, size) = _cache.popitem(last=False)
            _cached_bytes -= size


def _load(store: Storage, key: str) -> Any:
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit[0]
    blob = store.get(key)
    value = serialize.loads(blob)
    _remember(key, value, len(blob))
    return value


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
        nbytes = store.put(out_key, serialize.dumps(result))
        _remember(out_key, result, nbytes)
    return nbytes, (result if return_value else None)
