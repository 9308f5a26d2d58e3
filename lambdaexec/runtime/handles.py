"""Futures that travel: a pickled :class:`~lambdaexec.future.LambdaFuture` unpickles, in any
process that can open the same storage, as a handle on the same call (PyWren's futures did).

::

    process A                              storage                         process B
    f = ex.submit(fn, x)
    pickle.dumps(f) ── CallHome ─────────────────────────────────────────► pickle.loads(...)
      (job prefix pinned: not deleted        <job>/calls/<i>  ◄── lists ── poller thread
                                             (or a batch of calls)
       when A collects the result)                                        completes B's future

A future already finished when pickled carries its outcome (value or exception, its output
and stats) and needs no storage. An unfinished one carries its :class:`CallHome`: the storage
spec (never credentials), its job's prefix, its call index and a wall-clock time after which
waiting is pointless (every retry and deadline of the call spent). Pickling it pins the job
(:meth:`Pins.hold <lambdaexec.runtime.pins.Pins.hold>`, the monitor's pins, which also keep a
reduce's inputs): the executor then leaves that job's objects in storage (the bucket's
lifecycle rule expires them on S3) so that the other process can still read the result after
this one has.

In the unpickling process one daemon thread lists each pending job's ``calls/`` prefix (one
request per job per round, 0.1 s backing off to 2 s) and completes the futures whose result
appeared (a batch object's key names the calls it holds: :mod:`lambdaexec.wire.protocol`; each
object is read once per round); past the time limit a future fails with :class:`~lambdaexec.errors.CallLostError`.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from lambdaexec.future import LambdaFuture
from lambdaexec.runtime.pins import Pins


def patience(config: Any) -> float:
    """Seconds after which a call of ``config``'s executor has certainly finished or failed:
    every attempt's start deadline (missed three times) and timeout, with a margin."""
    return (config.retries + 1) * (3 * config.start_deadline + config.timeout + 15) + 60


class CallHome:
    """Where a job's calls write their results, shared by the job's futures."""

    __slots__ = ("storage", "job_prefix", "patience", "pins")

    def __init__(self, storage: dict[str, Any], job_prefix: str, patience: float, pins: Pins):
        #: the storage spec (no credentials), the job's prefix, seconds a call can take at most
        self.storage, self.job_prefix, self.patience = storage, job_prefix, patience
        self.pins = pins  # the executor's monitor's: a job pickled unfinished is held there

    def reduce(self, future: LambdaFuture, details: dict[str, Any]) -> tuple:
        """``future.__reduce__`` while its call runs: a handle that another process completes
        from storage. The job is pinned: its objects outlive this executor."""
        self.pins.hold(self.job_prefix)
        call = int(future.call_id.rpartition("/")[2])
        return _pending, (details, self.storage, self.job_prefix, call, time.time() + self.patience)


def _pending(details: dict[str, Any], storage: dict[str, Any], job_prefix: str, call: int, give_up: float) -> Any:
    future = LambdaFuture()
    for name, value in details.items():
        setattr(future, name, value)
    future.set_running_or_notify_cancel()
    _poller().watch(storage, job_prefix, call, give_up, future)
    return future


class _Poller:
    """The one thread of this process that completes unpickled futures from storage."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiting: dict[tuple[str, str], list[tuple[int, float, Any]]] = {}
        self.stores: dict[str, Any] = {}
        self.news = threading.Event()
        self.thread: threading.Thread | None = None

    def watch(self, storage: dict[str, Any], job_prefix: str, call: int, give_up: float, future: Any) -> None:
        key = repr(sorted(storage.items()))
        with self.lock:
            self.stores.setdefault(key, storage)
            self.waiting.setdefault((key, job_prefix), []).append((call, give_up, future))
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="lambdaexec-handles", daemon=True)
                self.thread.start()
        self.news.set()

    def _run(self) -> None:
        from lambdaexec.storage import Storage, shared_storage, signed
        from lambdaexec.wire import protocol

        interval = 0.1
        while True:
            with self.lock:
                jobs = {k: list(v) for k, v in self.waiting.items()}
            progressed = False
            for (store_key, prefix), calls in jobs.items():
                try:  # the results are signed with their executor's secret (storage/signed.py)
                    store = shared_storage(self.stores[store_key], signed.secret_for(signed.owner_of(prefix)))
                except Exception as err:
                    store = err
                try:
                    listed = protocol.keys_by_call(store.list(f"{prefix}/calls/")) if isinstance(store, Storage) else {}
                except Exception:  # a storage hiccup: the next round will see it
                    listed = {}
                read: dict[str, Any] = {}  # this round's objects, each read once
                for call, give_up, future in calls:
                    key = listed.get(call)
                    if not isinstance(store, Storage):  # no secret to check its result with
                        future.set_exception(store)
                    elif key is not None:
                        _complete(store, key, call, future, read)
                    elif time.time() > give_up:
                        from lambdaexec.errors import CallLostError

                        future.set_exception(CallLostError(
                            f"call {future.call_id}: no result appeared in storage under {prefix}/ before every "
                            "deadline of the call had passed (the executor that ran it stopped before it "
                            "finished, or its data was deleted)", attempts=future.attempts))
                    else:
                        continue
                    progressed = True
                    with self.lock:
                        self.waiting[(store_key, prefix)].remove((call, give_up, future))
                        if not self.waiting[(store_key, prefix)]:
                            del self.waiting[(store_key, prefix)]
            interval = 0.1 if progressed else min(2.0, interval * 1.5)
            self.news.wait(interval)
            self.news.clear()


def _complete(store: Any, key: str, call: int, future: Any, read: dict[str, Any]) -> None:
    from lambdaexec.errors import IntegrityError, LambdaExecError
    from lambdaexec.runtime.outcome import decode_result, record_status
    from lambdaexec.wire import protocol

    try:
        if key not in read:
            read[key] = protocol.unpack_results(key, store.get(key))
        status, payload = read[key][call]
    except IntegrityError as err:
        future.set_exception(err)
        return
    except Exception as err:
        future.set_exception(LambdaExecError(f"the result of call {future.call_id} cannot be read from {key}: {err!r}"))
        return
    record_status(future, status, key)
    ok, outcome = decode_result(status, payload, future.call_id)
    future.set_result(outcome) if ok else future.set_exception(outcome)


_the_poller: _Poller | None = None
_poller_lock = threading.Lock()


def _poller() -> _Poller:
    global _the_poller
    with _poller_lock:
        if _the_poller is None:
            _the_poller = _Poller()
        return _the_poller
