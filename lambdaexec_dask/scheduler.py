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
from collections.abc import Hashable
from typing import Any

from dask.callbacks import local_callbacks, unpack_callbacks
from dask.local import nested_get
from dask.sizeof import sizeof

import lambdaexec
from lambdaexec import LambdaExecutor
from lambdaexec.wire import serialize
from lambdaexec_dask.graph import Plan, plan
from lambdaexec_dask.remote import run_task

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
               num_workers: int | None = None, callbacks: Any = None, **kwargs: Any) -> Any:
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
    is used. dask's local callbacks (``dask.diagnostics.ProgressBar``, ``callbacks=``) see one
    task per call (a fused chain counts once) and get ``None`` as each task's result. Other
    keywords dask passes to schedulers are accepted and ignored.
    A task's exception is raised here as itself, with the remote traceback as its cause.
    """
    ex = executor if executor is not None else _executor_for(num_workers)
    work = plan(dsk, keys)
    with local_callbacks(callbacks) as active:
        values = _Run(ex, work, unpack_callbacks(active)).run()
    return nested_get(keys, values)


class _Run:
    """One execution of a plan on an executor."""

    def __init__(self, executor: LambdaExecutor, work: Plan, callbacks: tuple = ((),) * 5):
        self.ex, self.plan = executor, work
        self.starts, self.start_states, self.pretasks, self.posttasks, self.finishes = callbacks
        self.spec = executor.storage.spec
        self.base = f"{executor.prefix}/dask/{uuid.uuid4().hex[:16]}"
        self.wanted_tasks = {source for kind, source in work.sources.values() if kind == "task"}
        self.reads = {key: {s for kind, s in srcs.values() if kind == "task"} for key, srcs in work.inputs.items()}
        self.waiting = {key: len(sources) for key, sources in self.reads.items()}
        self.readers = {key: len(dependents) for key, dependents in work.dependents.items()}
        self.freer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lambdaexec-dask-free")
        self.data_inputs: dict[Hashable, tuple[str, Any]] = {}
        self.results: dict[Hashable, Any] = {}
        self.outstanding: set[concurrent.futures.Future] = set()
        self.done: queue.SimpleQueue = queue.SimpleQueue()
        # what dask's callbacks look at (dask.local's state, reduced to what they read)
        self.state: dict[str, Any] = {"ready": [], "waiting": {k: n for k, n in self.waiting.items() if n},
                                      "running": set(), "finished": set(), "cache": {}}

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
            self.state["waiting"].pop(key, None)
            self.state["running"].add(key)
            for pretask in self.pretasks:
                pretask(key, self.plan.tasks, self.state)
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
        running = [f for f in self.outstanding if not f.cancel()]
        if not running:
            self.ex.storage.delete(self.base + "/")
            return
        threading.Thread(target=_delete_after, args=(running, self.ex.storage, self.base + "/"),
                         name="lambdaexec-dask-cleanup", daemon=True).start()

    def run(self) -> dict[Hashable, Any]:
        """Run every call; return the requested keys' values."""
        failed = True
        try:
            for start in self.starts:
                start(self.plan.tasks)
            for start_state in self.start_states:
                start_state(self.plan.tasks, self.state)
            self._submit([key for key, n in self.waiting.items() if n == 0])
            while self.outstanding:
                key, future = self.done.get()
                self.outstanding.discard(future)
                _, value = future.result()
                if key in self.wanted_tasks:
                    self.results[key] = value
                self._release_inputs(key)
                self.state["running"].discard(key)
                self.state["finished"].add(key)
                for posttask in self.posttasks:
                    posttask(key, None, self.plan.tasks, self.state, future.stats.get("worker"))
                ready = []
                for dependent in self.plan.dependents[key]:
                    self.waiting[dependent] -= 1
                    if self.waiting[dependent] == 0:
                        ready.append(dependent)
                self._submit(ready)
            failed = False
        finally:
            self._clean_up()
            for finish in self.finishes:
                finish(self.plan.tasks, self.state, failed)
        return {key: self.results[source] if kind == "task" else self.plan.data[source]
                for key, (kind, source) in self.plan.sources.items()}


def _delete_after(futures: list[concurrent.futures.Future], storage: Any, prefix: str) -> None:
    """Wait for calls that could not be cancelled, then delete ``prefix`` (their outputs too)."""
    concurrent.futures.wait(futures)
    storage.delete(prefix)
