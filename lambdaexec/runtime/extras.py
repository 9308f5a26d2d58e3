"""What the engine does to a job before storing it, beyond storing it: large arguments stored
once by content (:mod:`~lambdaexec.runtime.blobs`), results found in the cache
(:mod:`~lambdaexec.runtime.cache`); and the failed calls kept for replay
(:mod:`~lambdaexec.runtime.replay`). One module, so that the engine calls two functions."""

from __future__ import annotations

from typing import Any

from lambdaexec.config import Config
from lambdaexec.future import LambdaFuture
from lambdaexec.runtime import cache as result_cache
from lambdaexec.runtime import replay
from lambdaexec.runtime.blobs import SharedArguments

Calls = list[tuple[list[memoryview], LambdaFuture]]


def attach(config: Config, monitor: Any, executor_prefix: str) -> tuple[Any, Any]:
    """The executor's result cache (if ``cache``) and large-argument store (if
    ``large_argument_size``), hooked to ``monitor``; failed calls are kept for replay."""
    storage = monitor.storage
    cache = None
    if config.cache:
        cache = result_cache.ResultCache(storage, config.prefix)
        monitor.cache = cache
        monitor.watchers.append(cache)  # its closed() writes what is left before storage closes
    monitor.watchers.append(replay.Keeper(storage, config.prefix))
    blobs = SharedArguments(storage, executor_prefix, config.large_argument_size) \
        if config.large_argument_size > 0 else None
    return cache, blobs


def prepare(engine: Any, blob: bytes, calls: Calls) -> tuple[Calls, list[str] | None]:
    """The calls of ``blob`` left to run, their inputs' large buffers stored apart, and their
    cache keys (None without the cache); calls found in the cache are completed."""
    blobs, cache = engine.blobs, engine.cache
    if blobs is None and cache is None:
        return calls, None
    taken: list[list] = [[] for _ in calls]
    if blobs is not None:
        calls = list(calls)
        for i, (chunks, f) in enumerate(calls):
            out, taken[i] = blobs.take_out(chunks)
            if taken[i]:
                calls[i] = (out, f)
    keys = None
    if cache is not None:
        rest, keys = result_cache.resolve(cache, blob, calls)
        if len(rest) < len(calls):
            left = {id(f) for _, f in rest}
            taken = [t for (_, f), t in zip(calls, taken) if id(f) in left]
            calls = rest
    if blobs is not None and any(taken):
        kept, kept_keys = [], []
        for i, ((chunks, f), buffers) in enumerate(zip(calls, taken)):
            try:
                if buffers:
                    blobs.store(f, buffers)
            except Exception as err:  # the large argument could not be stored: this call fails, as
                # any call whose inputs cannot be stored
                if not f.done() and f.set_running_or_notify_cancel():
                    f.set_exception(err)
                continue
            kept.append((chunks, f))
            if keys is not None:
                kept_keys.append(keys[i])
        calls, keys = kept, (kept_keys if keys is not None else None)
    return calls, keys
