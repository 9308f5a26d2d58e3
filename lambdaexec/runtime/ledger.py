"""The failure ledger of a map: which calls failed, with what, and running only those again.

::

    futures = ex.map_futures(simulate, seeds)
    for call in lambdaexec.failed(futures):           # waits for the calls to finish
        print(call.position, seeds[call.position], repr(call.exception))
    futures = ex.retry_failed(futures)                # the failed ones run again; others kept
    results = lambdaexec.get_all_results(futures)

A call's serialized inputs stay with its future until it succeeds (as ``ProcessPoolExecutor``
keeps a call's work item until it completes), so a failed call can run again without the
caller resubmitting it; a call that succeeded or was cancelled holds nothing.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from concurrent.futures import Executor  # a LambdaExecutor: this layer sits below it
from typing import Iterable

from lambdaexec.future import LambdaFuture


@dataclasses.dataclass(frozen=True)
class FailedCall:
    """One failed call: its ``position`` in the futures given (the input's position in a map),
    its ``future``, and the ``exception`` it failed with."""

    position: int
    future: concurrent.futures.Future
    exception: BaseException


def failed(futures: Iterable[concurrent.futures.Future], timeout: float | None = None) -> list[FailedCall]:
    """Wait for ``futures`` (up to ``timeout`` seconds, ``None``: until all are done); return the
    calls that raised, in order. Cancelled and unfinished calls are not listed.

    >>> [(c.position, type(c.exception).__name__) for c in failed(ex.map_futures(int, ["1", "x"]))]  # doctest: +SKIP
    [(1, 'ValueError')]
    """
    futures = list(futures)
    concurrent.futures.wait(futures, timeout=timeout)
    out = []
    for i, f in enumerate(futures):
        if f.done() and not f.cancelled() and f.exception() is not None:
            out.append(FailedCall(i, f, f.exception()))
    return out


def retry_failed(executor: Executor, futures: Iterable[concurrent.futures.Future],
                 timeout: float | None = None) -> list[concurrent.futures.Future]:
    """Run the failed calls among ``futures`` again on ``executor``; return the list with each
    failed call's future replaced by its new one (the others as they were), in order.

    Waits for ``futures`` as :func:`failed` does. Raises ``ValueError`` for a failed future that
    cannot run again (not made by ``submit`` or ``map``/``map_futures`` with ``chunksize=1``).
    """
    futures = list(futures)
    retry = failed(futures, timeout)
    calls, fresh = [], {}
    for call in retry:
        recipe = getattr(call.future, "_recipe", None)
        if not isinstance(call.future, LambdaFuture) or recipe is None:
            raise ValueError(f"the call at position {call.position} cannot run again: only futures of "
                             "LambdaExecutor.submit, or of map/map_futures with chunksize=1, keep their inputs")
        new = LambdaFuture(time.time())
        calls.append((recipe[0], recipe[1], new))
        fresh[call.position] = new
    if calls:
        executor._engine.enqueue(calls)
    return [fresh.get(i, f) for i, f in enumerate(futures)]
