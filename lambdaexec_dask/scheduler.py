"""``lambda_get``: a dask scheduler that runs each task (or fused chain) as one lambdaexec call.

Outputs stay in storage under ``<executor prefix>/dask/<graph id>/``; a call gets its inputs as
storage keys and returns only its output's size, so the client never downloads an intermediate
and never uploads one again. Only the requested keys come back to the client (inside the
result of the call that made them). Calls are submitted as soon as their inputs exist, all
ready ones at once (the executor uploads a burst of submits as one job). An output is deleted
as soon as every call that reads it has finished, as dask's own schedulers release data, so
a graph holds only its frontier in storage; whatever is left goes when the graph ends,
whether it succeeded or failed.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import queue
import threading
import uuid
from collections.abc import Hashable, Mapping
from typing import Any

import dask
from dask._task_spec import DataNode, convert_legacy_graph
from dask.callbacks import local_callbacks, unpack_callbacks
from dask.core import flatten
from dask.local import nested_get
from dask.order import order
from dask.sizeof import sizeof

import lambdaexec
from lambdaexec import LambdaExecutor
from lambdaexec.wire import serialize
from lambdaexec_dask.graph import Plan, plan
from lambdaexec_dask.remote import run_task
from lambdaexec_dask.state import LocalState

#: literals larger than this are stored once and read by key, not copied into every call
INLINE_LIMIT = 64 << 10

_executors: dict[int, LambdaExecutor] = {}
_executors_lock = threading.Lock()


def _executor_for(num_workers: int | None) -> LambdaExecutor:
    """The shared default executor, or a shared one with ``num_workers`` workers."""
    if not num_workers:
        return lambdaexec.default_executor()
    with _executors_lock:
        ex = _executors.get(num_workers)
        if ex is None or ex._shutdown:
            ex = _executors[num_workers] = LambdaExecutor(max_workers=num_workers)
        return ex


def lambda_get(dsk: Any, keys: Any, executor: LambdaExecutor | None = None,
               num_workers: int | None = None, callbacks: Any = None, cache: dict | None = None,
               optimize_graph: bool = True, **kwargs: Any) -> Any:
    """Compute ``keys`` of dask graph ``dsk`` on lambdaexec workers (a dask ``scheduler=``).

    ::

        import dask, dask.array as da
        from lambdaexec_dask import lambda_get

        x = da.random.random((4000, 4000), chunks=(500, 500))
        dask.compute(x.mean(), scheduler=lambda_get)
        with dask.config.set(scheduler=lambda_get):
            x.T.sum(axis=0).compute()

    ``executor=`` runs on that executor; otherwise ``num_workers=`` picks a shared executor
    with that many workers, and without either the shared ``lambdaexec.default_executor()``
    is used. As with dask's own schedulers: ``cache=`` (or ``dask.config.set(cache=...)``) is a
    dict of values already computed, which are not computed again, and it is filled as
    ``dask.local`` fills it (literals, then the requested keys' values; released keys leave it);
    a graph that reads a key it neither defines nor finds in the cache raises
    ``ValueError("Missing dependency ...")`` before anything runs. Linear chains of tasks are
    fused into one call unless ``optimize_graph=False`` is passed here or to ``dask.compute``.
    dask's local callbacks (``dask.diagnostics.ProgressBar``, ``callbacks=``) get the graph and
    ``dask.local``'s state (see :mod:`lambdaexec_dask.state`); a fused chain is one task to
    ``pretask``/``posttask``, which get the value of a requested key and ``None`` otherwise.
    Other keywords dask passes to schedulers are accepted and ignored.
    A task's exception is raised here as itself, with the remote traceback as its cause.
    """
    ex = executor if executor is not None else _executor_for(num_workers)
    fuse = optimize_graph and not _computed_unoptimized(dsk)
    if not isinstance(dsk, Mapping):
        dsk = dsk.__dask_graph__()
    if cache is None:
        cache = dask.config.get("cache", None)
    if cache is None:
        cache = {}
    dsk = convert_legacy_graph(dict(dsk), all_keys=set(dsk) | set(cache))
    wanted = set(flatten(keys)) if isinstance(keys, list) else {keys}
    with local_callbacks(callbacks) as active:
        _Run(ex, dsk, wanted, cache, fuse, active).run()
    return nested_get(keys, cache)


def _computed_unoptimized(dsk: Any) -> bool:
    """Whether ``dsk`` is the expression ``dask.compute(..., optimize_graph=False)`` made of
    graph-backed collections (the flag itself does not reach the scheduler)."""
    try:
        from dask._expr import Expr, HLGExpr
    except ImportError:  # older dask: collections give graphs, already optimized or not
        return False
    if not isinstance(dsk, Expr):
        return False
    graphs = [e for e in dsk.walk() if isinstance(e, HLGExpr)]
    return bool(graphs) and all(e.low_level_optimizer is None for e in graphs)


class _Run:
    """One execution of a graph on an executor."""

    def __init__(self, executor: LambdaExecutor, dsk: dict, wanted: set, cache: dict, fuse: bool,
                 callbacks: list):
        self.ex, self.dsk, self.wanted, self.cache, self.fuse = executor, dsk, wanted, cache, fuse
        self.callbacks = callbacks
        _, _, self.pretasks, self.posttasks, _ = unpack_callbacks(callbacks)
        self.spec = executor.storage.spec
        self.base = f"{executor.prefix}/dask/{uuid.uuid4().hex[:16]}"
        self.freer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lambdaexec-dask-free")
        self.data_inputs: dict[Hashable, tuple[str, Any]] = {}
        self.outstanding: set[concurrent.futures.Future] = set()
        self.done: queue.SimpleQueue = queue.SimpleQueue()
        self.state: dict[str, Any] = {}  # dask.local's state once the graph is checked
        self.plan: Plan | None = None

    def _prepare(self) -> None:
        """Check the graph as dask.local does, and make the plan of calls."""
        cached = set(self.cache)
        dsk = {key: DataNode(key, self.cache[key]) if key in cached else node for key, node in self.dsk.items()}
        priority = order(dsk)
        self.local = LocalState(dsk, self.cache, self.wanted, priority.get)
        self.state = self.local.state
        keys = self.state["dependencies"].keys() | self.state["dependents"].keys()  # what ``wanted`` needs
        needed = {key: DataNode(key, self.cache[key]) if key in self.cache else dsk[key]
                  for key in keys if key in dsk or key in self.cache}
        self.plan = work = plan(needed, self.wanted, priority, self.fuse)
        self.wanted_tasks = {source for kind, source in work.sources.values() if kind == "task"}
        self.reads = {key: {s for kind, s in srcs.values() if kind == "task"} for key, srcs in work.inputs.items()}
        self.waiting = {key: len(sources) for key, sources in self.reads.items()}
        self.readers = {key: len(dependents) for key, dependents in work.dependents.items()}

    def storage_key(self, key: Hashable) -> str:
        return f"{self.base}/{hashlib.sha1(repr(key).encode()).hexdigest()[:24]}"

    def _data_input(self, key: Hashable) -> tuple[str, Any]:
        """A literal as a call input: inline when small, else stored once and read by key."""
        if key not in self.data_inputs:
            value = self.plan.data[key]
            if sizeof(value) <= INLINE_LIMIT:
                self.data_inputs[key] = ("value", value)
            else:
                where = f"{self.base}/data/{hashlib.sha1(repr(key).encode()).hexdigest()[:24]}"
                self.ex.storage.put(where, serialize.dumps(value))
                self.data_inputs[key] = ("ref", where)
        return self.data_inputs[key]

    def _submit(self, keys: list[Hashable]) -> None:
        for key in sorted(keys, key=self.plan.priority.__getitem__):
            inputs = {dep: self._data_input(source) if kind == "data" else ("ref", self.storage_key(source))
                      for dep, (kind, source) in self.plan.inputs[key].items()}
            out_key = self.storage_key(key) if self.plan.dependents[key] else None
            future = self.ex.submit(run_task, self.spec, self.plan.tasks[key], inputs, out_key,
                                    key in self.wanted_tasks)
            self.outstanding.add(future)
            self.local.submitted(self.plan.covers[key])
            for pretask in self.pretasks:
                pretask(key, self.dsk, self.state)
            future.add_done_callback(lambda f, k=key: self.done.put((k, f)))

    def _release_inputs(self, key: Hashable) -> None:
        """``key``'s call has finished: delete the outputs no other call still has to read."""
        unread = []
        for source in self.reads[key]:
            self.readers[source] -= 1
            if self.readers[source] == 0:
                unread.append(self.storage_key(source))
        if unread:
            self.freer.submit(self.ex.storage.delete_keys, unread)

    def _clean_up(self) -> None:
        """Delete what the graph stored; after a failure, once its running calls have ended."""
        self.freer.shutdown(wait=True)
        if self.plan is None:
            return  # the graph was refused before anything was stored
        running = [f for f in self.outstanding if not f.cancel()]
        if not running:
            self.ex.storage.delete(self.base + "/")
            return
        threading.Thread(target=_delete_after, args=(running, self.ex.storage, self.base + "/"),
                         name="lambdaexec-dask-cleanup", daemon=True).start()

    def run(self) -> None:
        """Run every call; the requested keys' values end in the cache, as with dask.local."""
        started = []
        failed = True
        try:
            for callback in self.callbacks:
                if callback[0]:
                    callback[0](self.dsk)
                started.append(callback)
            self._prepare()
            for _, start_state, _, _, _ in self.callbacks:
                if start_state:
                    start_state(self.dsk, self.state)
            if self.state["waiting"] and not self.state["ready"]:
                raise ValueError("Found no accessible jobs in dask")
            self.local.finished(self.plan.data_aliases, {k: self.plan.data[self.plan.sources[k][1]]
                                                         for k in self.plan.data_aliases if k in self.wanted})
            self._submit([key for key, n in self.waiting.items() if n == 0])
            while self.outstanding:
                key, future = self.done.get()
                self.outstanding.discard(future)
                _, value = future.result()
                self._release_inputs(key)
                covers = self.plan.covers[key]
                self.local.finished(covers, {k: value for k in covers[covers.index(key):]}
                                    if key in self.wanted_tasks else {})
                for posttask in self.posttasks:
                    posttask(key, value, self.dsk, self.state, future.stats.get("worker"))
                ready = []
                for dependent in self.plan.dependents[key]:
                    self.waiting[dependent] -= 1
                    if self.waiting[dependent] == 0:
                        ready.append(dependent)
                self._submit(ready)
            failed = False
        finally:
            self._clean_up()
            for _, _, _, _, finish in started:
                if finish:
                    finish(self.dsk, self.state, failed)


def _delete_after(futures: list[concurrent.futures.Future], storage: Any, prefix: str) -> None:
    """Wait for calls that could not be cancelled, then delete ``prefix`` (their outputs too)."""
    concurrent.futures.wait(futures)
    storage.delete(prefix)
