"""``map_reduce(ex, map_fn, iterable, reduce_fn, ...)``: a keyed MapReduce whose shuffle goes
through storage, built from ordinary calls on the executor.

A word count over two inputs with two reducers, walked through::

    items        mappers (M=2)                        storage (M objects)    reducers (R=2)
    "a b a"  ──► map_fn → {"a": 2, "b": 1}      ──►   map/000000             r0: "a" ← 2, then 2 + 1
                 split by hash_partition:              [idx][p0: a=2][p1: b=1]   reduce_fn("a", [3]) = 3
                   p0: [("a", 2)]  p1: [("b", 1)]
    "a c"    ──► map_fn → {"a": 1, "c": 1}      ──►   map/000001             r1: "b" ← [1], "c" ← [1]
                   p0: [("a", 1)]  p1: [("c", 1)]      [idx][p0: a=1][p1: c=1]
                                                                       client: {"a": 3, "b": 1, "c": 1}

1. The client cuts the items into M runs of consecutive items, one per mapper call (one item
   each, or, with more items than ``CALLS_PER_WORKER`` x workers, that many even runs), and
   submits the M mapper calls, then R reducer calls right behind them (the same
   function-and-inputs path as ``map``); reducers start as workers free up and collect each
   mapper's object as it appears (see :mod:`lambdaexec.dataflow.shuffle`). With as many
   reducers as workers or more, reducers start once the maps are done instead (see :class:`Job`).
2. A mapper runs ``map_fn(item)`` for each of its items, merges values of one key with
   ``combine`` if given (else keeps them in order), routes each distinct key by
   ``partition(key, R)`` and writes its one object; its call returns only the sizes.
3. Reducer ``r`` range-reads partition ``r`` from every mapper's object, merges each into its
   groups as soon as every earlier mapper's is in (values stay in item order; with ``combine``
   they are merged by it, as in the diagram, else kept in a list), and returns
   ``{key: reduce_fn(key, values)}``. See :mod:`lambdaexec.dataflow.keyed` for the encoding.
4. The client merges the reducers' dicts into the result, then deletes the shuffle's objects
   (unless ``keep_data``). If a mapper or reducer fails, the result fails with that call's
   exception, and an ``abort`` object tells the waiting reducers to stop.

Intermediates go to the executor's storage, or to ``shuffle_storage`` when set (e.g. inputs on
S3, shuffle on Redis, as PyWren did).
"""

from __future__ import annotations

import concurrent.futures
import functools
import threading
import time
import uuid
from concurrent.futures import Executor  # a LambdaExecutor: this layer sits below it
from typing import TYPE_CHECKING, Any, Callable, Iterable

from lambdaexec.dataflow import keyed, shuffle
from lambdaexec.dataflow.follow_up import follow_up, hold
from lambdaexec.future import LambdaFuture

if TYPE_CHECKING:
    from lambdaexec.storage import Storage


def map_reduce(ex: Executor, map_fn: Callable[[Any], Any], iterable: Iterable,
               reduce_fn: Callable[[Any, list], Any], *, reducers: int = 1,
               combine: Callable[[Any, Any], Any] | None = None,
               partition: Callable[[Any, int], int] | None = None) -> LambdaFuture:
    """MapReduce over ``iterable``; the future's result is ``{key: reduce_fn(key, values)}``.

    ``map_fn(item)`` returns a Mapping or an iterable of ``(key, value)`` pairs. ``combine(a, b)``
    merges two values of one key on the mapper before the shuffle, and again on the reducer as
    mapper outputs arrive. Keys go to ``reducers`` partitions by ``partition(key, reducers)``
    (default :func:`~lambdaexec.dataflow.hash_partition`, the same in every process), called
    once per distinct key of a mapper. ``reduce_fn(key, values)`` gets the values of one key in
    item order: every value without ``combine``, the merged value (a one-item list) with it,
    as Hadoop's reducers get combiner output. A word count::

        from collections import Counter
        import lambdaexec, operator

        with lambdaexec.LambdaExecutor() as ex:
            counts = ex.map_reduce(lambda c: Counter(c.read().split()), lambdaexec.chunks("*.txt"),
                                   lambda word, ns: sum(ns), reducers=4, combine=operator.add).result()

    The returned future also has ``shuffle_stats``, filled in when it completes: ``objects``
    written and storage ``requests`` made by the shuffle, and when the last mapper ended and the
    first reducer started (``last_map_end``, ``first_reduce_start``, seconds since the epoch).
    """
    for name, fn in (("map_fn", map_fn), ("reduce_fn", reduce_fn)):
        if not callable(fn):
            raise TypeError(f"{name} must be callable, got {fn!r}")
    for name, fn in (("combine", combine), ("partition", partition)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be callable or None, got {fn!r}")
    if isinstance(reducers, bool) or not isinstance(reducers, int) or reducers < 1:
        raise ValueError(f"reducers must be an int >= 1, got {reducers!r}")
    if ex._shutdown:
        raise RuntimeError("cannot schedule new futures after shutdown")
    items = list(iterable)
    store, own_store = shuffle_store(ex)
    prefix = f"{ex.prefix}/shuffle/{uuid.uuid4().hex[:12]}"
    batches = _batches(items, _workers(ex) * CALLS_PER_WORKER)
    mapper = functools.partial(_map_task, store.spec, prefix, map_fn, reducers, combine, partition)
    reducer = functools.partial(_reduce_task, store.spec, prefix, len(batches), reduce_fn, combine)
    try:
        map_futures = ex.map_futures(mapper, range(len(batches)), batches)
    except BaseException:
        if own_store:
            store.close()
        raise
    out = LambdaFuture(time.time())
    out.shuffle_stats = {"mappers": len(batches), "reducers": reducers, "objects": 0, "requests": 0}
    hold(ex, out)  # reducers may be submitted after shutdown began: it waits for them
    Job(ex, store, own_store, prefix, map_futures, lambda: follow_up(ex, reducer, range(reducers)), reducers,
        out, _merge_dicts).watch()
    return out


#: mapper calls per worker: items beyond that many are taken in runs by one call, whose outputs
#: are merged on the mapper (with ``combine``: one value per key) before the shuffle. A word
#: count's shuffle then carries one (key, count) per word per call, not per item, and the
#: reducers merge 2 x workers partitions instead of one per item: the measured difference on
#: bench W4 (16 files, 2 workers) is ~10% of all CPU. Two, not one, so that a worker slowed by
#: other load does not hold the whole map phase back.
CALLS_PER_WORKER = 2


def _workers(ex: Executor) -> int:
    """How many calls the executor runs at once."""
    return ex.config.max_workers or (1000 if ex.config.backend == "lambda" else ex.config.resolved_workers())


def _batches(items: list, calls: int) -> list[list]:
    """``items`` cut into ``min(calls, len(items))`` runs of consecutive items, as even as can be."""
    calls = max(1, min(calls, len(items)))
    size, extra = divmod(len(items), calls)
    out, start = [], 0
    for i in range(calls):
        end = start + size + (i < extra)
        out.append(items[start:end])
        start = end
    return [b for b in out if b]


def _merge_dicts(parts: list[dict]) -> dict:
    result: dict = {}
    for part in parts:
        result.update(part)
    return result


def shuffle_store(ex: Executor) -> tuple[Storage, bool]:
    """The store a shuffle's intermediates go to, and whether it was opened just for it."""
    spec = ex.config.shuffle_storage_spec()
    if spec == ex.storage.spec:
        return ex.storage, False
    from lambdaexec.storage import open_storage
    from lambdaexec.storage.signed import SignedStorage

    store = SignedStorage(open_storage(spec), ex.storage.secret)
    store.check()
    return store, True


class Job:
    """The client's side of one shuffle job: starts the reducers, completes ``out`` and cleans up.

    Reducers are submitted right behind the mappers when fewer reducers than workers exist
    (workers take calls in order, so every mapper is placed before any reducer, and a retried
    mapper still finds a free worker); otherwise they are submitted once every mapper is done,
    so that waiting reducers can never hold all the workers a mapper needs.
    """

    def __init__(self, ex: Executor, store: Storage, own_store: bool, prefix: str, map_futures: list,
                 start_reducers: Callable[[], list], reducers: int, out: LambdaFuture,
                 collect: Callable[[list], Any]):
        self.collect, self.start_reducers = collect, start_reducers
        self.store, self.own_store, self.prefix = store, own_store, prefix
        self.keep = ex.config.keep_data
        self.map_futures, self.out = map_futures, out
        self.reduce_futures: list = []
        self.lock = threading.Lock()
        self.maps_left = len(map_futures)
        self.left = reducers
        self.over = False
        self.early = reducers < _workers(ex)

    def watch(self) -> None:
        """Start the reducers now or after the maps (see the class docstring), and follow them."""
        if self.early or not self.map_futures:
            self._launch()
        for f in self.map_futures:
            f.add_done_callback(self._map_done)

    def _launch(self) -> None:
        try:
            futures = self.start_reducers()
        except BaseException as err:  # shut down meanwhile
            with self.lock:
                if self.over:
                    return
                self.over = True
            self._settle(exc=err)
            return
        with self.lock:
            self.reduce_futures = futures
        for f in futures:
            f.add_done_callback(self._reduce_done)

    def _map_done(self, f: concurrent.futures.Future) -> None:
        if f.cancelled() or f.exception() is not None:
            self._fail(f, "a mapper failed")
            return
        with self.lock:
            self.maps_left -= 1
            launch = not self.maps_left and not self.early and not self.over
        if launch:
            self._launch()

    def _reduce_done(self, f: concurrent.futures.Future) -> None:
        if f.cancelled() or f.exception() is not None:
            if not isinstance(f.exception() if not f.cancelled() else None, shuffle.ShuffleAbortedError):
                self._fail(f, "a reducer failed")
            return
        with self.lock:
            self.left -= 1
            if self.left or self.over:
                return
            self.over = True
        try:
            stats = self.out.shuffle_stats
            stats["objects"] = len(self.map_futures)
            stats["requests"] = len(self.map_futures)  # one put per mapper
            parts = []
            for g in self.reduce_futures:
                part, requests = g.result()
                parts.append(part)
                stats["requests"] += requests
            stats["last_map_end"] = max((f.stats.get("func_end", 0) for f in self.map_futures), default=0)
            stats["first_reduce_start"] = min(g.stats.get("func_start", 0) for g in self.reduce_futures)
            result = self.collect(parts)
        except BaseException as err:
            self._settle(exc=err)
            return
        self._settle(value=result)

    def _fail(self, f: concurrent.futures.Future, what: str) -> None:
        with self.lock:
            if self.over:
                return
            self.over = True
        exc = concurrent.futures.CancelledError(f"{what}: it was cancelled") if f.cancelled() else f.exception()
        try:
            self.store.put(f"{self.prefix}/abort", f"{what}: {exc!r}".encode())
        except Exception:
            pass  # reducers still end at their call timeout
        with self.lock:
            started = list(self.reduce_futures)
        for g in self.map_futures + started:
            g.cancel()
        self._settle(exc=exc)

    def _settle(self, value: Any = None, exc: BaseException | None = None) -> None:
        if not self.keep:
            threading.Thread(target=self._clean, name="lambdaexec-shuffle-clean", daemon=True).start()
        elif self.own_store:
            self.store.close()
        if not self.out.set_running_or_notify_cancel():
            return
        if exc is not None:
            self.out.set_exception(exc)
        else:
            self.out.set_result(value)

    def _clean(self) -> None:
        # reducers cut short by an abort may still be reading: give them a moment
        with self.lock:
            started = list(self.reduce_futures)
        concurrent.futures.wait(started, timeout=60)
        try:
            self.store.delete(self.prefix + "/")
        finally:
            if self.own_store:
                self.store.close()


def _map_task(spec: dict[str, Any], prefix: str, map_fn: Callable, reducers: int, combine: Callable | None,
              partition: Callable | None, index: int, items: list) -> list[int]:
    """On a worker: one mapper over consecutive ``items``. Writes its object; returns its
    partitions' sizes in bytes."""
    from lambdaexec.storage import shared_storage

    blobs = keyed.map_side((map_fn(item) for item in items), reducers, partition, combine)
    store, key = shared_storage(spec), f"{prefix}/map/{index:06d}"
    chunks = shuffle.write(store, key, blobs)
    return [len(c) for c in chunks[1:]]


def _reduce_task(spec: dict[str, Any], prefix: str, mappers: int, reduce_fn: Callable, combine: Callable | None,
                 r: int) -> tuple[dict, int]:
    """On a worker: reducer ``r``. Returns ``({key: reduce_fn(key, values)}, requests made)``.

    Each mapper's partition is read as its object appears and merged as soon as every earlier
    mapper's is (values stay in mapper order), so most of the merging overlaps the maps."""
    from lambdaexec.storage import shared_storage

    store = shared_storage(spec)
    groups = keyed.Groups(combine)
    waiting: dict[int, bytes] = {}
    reads = 0
    following = 0  # the next mapper whose partition is to be merged

    def take(key: str) -> None:
        nonlocal reads, following
        blob, n = shuffle.read_partition(store, key, r)
        reads += n
        waiting[int(key.rsplit("/", 1)[1])] = blob
        while following in waiting:
            groups.add(keyed.decode(waiting.pop(following)))
            following += 1

    lists = shuffle.wait_for_maps(store, prefix, mappers, take)
    return groups.reduce(reduce_fn), reads + lists


# the job record names the user's function these stages run (lambdaexec.runtime.engine.Engine.name)
_map_task.lambdaexec_wraps = 2  # type: ignore[attr-defined]
_reduce_task.lambdaexec_wraps = 3  # type: ignore[attr-defined]
