"""``reduce(ex, fn, futures)``: one call of ``fn(results)`` once every input future is done,
whose worker reads the inputs' results from storage itself.

::

    client                                 storage                         reduce's worker
    futures done ── (pinned: their ───────  <job>/calls/<i>  ◄── read ──── fn([r0, r1, ...])
    result objects are kept) ── submit ─►   or a batch holding              └► its result
    (keys only, never the values)           several calls' results

The monitor normally deletes a job's objects once all of its results are in; :meth:`Monitor.pin
<lambdaexec.runtime.monitor.Monitor.pin>` keeps them until the reduce has run. An input whose objects
were already cleaned up before ``reduce`` was called (it finished earlier, and ``keep_data`` is
off) or that did not come from this executor has no object to read: its value travels with
the reduce's call instead.
"""

from __future__ import annotations

import concurrent.futures
import functools
import threading
import time
from concurrent.futures import Executor  # a LambdaExecutor: this layer sits below it
from typing import Any, Callable, Iterable

from lambdaexec.dataflow.follow_up import follow_up, hold
from lambdaexec.errors import LambdaExecError
from lambdaexec.future import LambdaFuture
from lambdaexec.wire import protocol, serialize


def reduce(ex: Executor, fn: Callable[[list], Any], futures: Iterable[concurrent.futures.Future]) -> LambdaFuture:
    """Run ``fn(list_of_results)`` on one worker once every future in ``futures`` is done.

    The list is in the order of ``futures``. If an input fails (or is cancelled), the reduce's
    future fails with that input's exception and ``fn`` does not run::

        with LambdaExecutor() as ex:
            parts = ex.map_futures(lambda i: i * i, range(1000))
            total = ex.reduce(sum, parts)
            print(total.result())  # 332833500

    Like any pending future, the reduce is waited for by ``shutdown(wait=True)`` (it is
    submitted when its inputs are done, even if ``shutdown`` has begun by then).
    """
    if not callable(fn):
        raise TypeError(f"reduce needs a callable taking a list of results, got {fn!r}")
    futures = list(futures)
    for f in futures:
        if not isinstance(f, concurrent.futures.Future):
            raise TypeError(f"reduce takes futures (from submit or map_futures), got {type(f).__name__}: {f!r}")
    if ex._shutdown:
        raise RuntimeError("cannot schedule new futures after shutdown")
    out = LambdaFuture(time.time())
    monitor = ex._monitor
    monitor.pin(futures)
    state = {"left": len(futures), "over": False}
    lock = threading.Lock()

    def finish(inner: concurrent.futures.Future | None, exc: BaseException | None) -> None:
        monitor.unpin(futures)
        if inner is not None:
            out.stats.update(getattr(inner, "stats", {}))
            out.call_id, out.stdout, out.stderr = (getattr(inner, a, "") for a in ("call_id", "stdout", "stderr"))
            out.remote_traceback = getattr(inner, "remote_traceback", None)
            exc = inner.exception() if not inner.cancelled() else concurrent.futures.CancelledError()
        if not out.set_running_or_notify_cancel():
            return
        if exc is not None:
            out.set_exception(exc)
        else:
            out.set_result(inner.result())  # type: ignore[union-attr]

    def launch() -> None:
        if out.cancelled():
            monitor.unpin(futures)
            return
        sources: list[tuple[str, Any]] = []
        for f in futures:
            key = monitor.pinned_key(f) if isinstance(f, LambdaFuture) and f.call_id else None
            sources.append(("key", key) if key else ("value", f.result()))  # key: (object, call)
        try:
            inner = follow_up(ex, functools.partial(_run_reduce, ex.storage.spec, fn), [sources])[0]
        except Exception as err:  # shut down meanwhile, or fn cannot be pickled
            finish(None, err)
            return
        inner.add_done_callback(lambda inner: finish(inner, None))

    def input_done(f: concurrent.futures.Future) -> None:
        with lock:
            if state["over"]:
                return
            failed = f.cancelled() or f.exception() is not None
            state["left"] -= 1
            if failed or state["left"] == 0:
                state["over"] = True
            else:
                return
        try:
            if failed:
                finish(None, f.exception() if not f.cancelled() else concurrent.futures.CancelledError(
                    "an input of the reduce was cancelled"))
            else:
                launch()
        except BaseException as err:  # a callback's exception would be lost: fail the reduce instead
            if not out.done():
                finish(None, err)

    hold(ex, out)  # shutdown waits for the reduce, which may be submitted after it began
    if not futures:
        launch()
    for f in futures:
        f.add_done_callback(input_done)
    return out


def _run_reduce(spec: dict[str, Any], fn: Callable[[list], Any], sources: list[tuple[str, Any]]) -> Any:
    """On the worker: read each input's result object, then call ``fn`` with the values."""
    from lambdaexec.storage import shared_storage

    store = shared_storage(spec)
    values = [value if kind == "value" else None for kind, value in sources]
    # each object read once, whole, though a batch may hold several inputs
    wanted: dict[str, list[tuple[int, int]]] = {}
    for i, (kind, where) in enumerate(sources):
        if kind == "key":
            key, call = where
            wanted.setdefault(key, []).append((i, call))

    def load(key: str) -> None:
        results = protocol.unpack_results(key, store.get(key))
        for i, call in wanted[key]:
            if call not in results:
                raise LambdaExecError(f"the reduce's input, call {call}, is not in its result object {key}")
            status, payload = results[call]
            if not status.get("ok"):
                raise LambdaExecError(f"the reduce's input {key} (call {call}) holds no result: "
                                      f"{status.get('message', status)}")
            values[i] = serialize.loads(payload)

    if store.concurrency > 1 and len(wanted) > 1:
        with concurrent.futures.ThreadPoolExecutor(min(store.concurrency, len(wanted))) as pool:
            list(pool.map(load, wanted))
    else:
        for key in wanted:
            load(key)
    return fn(values)


_run_reduce.lambdaexec_wraps = 1  # type: ignore[attr-defined]  # the job record names ``fn``
