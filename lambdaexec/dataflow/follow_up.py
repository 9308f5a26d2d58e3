"""How an operator submits the calls that wait on its earlier calls (a reduce after its inputs,
reducers after their mappers): like ``map_futures``, but accepted even once ``shutdown`` has
begun, for as long as the operator's result future is held by the engine
(:meth:`Engine.hold <lambdaexec.runtime.engine.Engine.hold>`). So ``with LambdaExecutor() as ex:
r = ex.reduce(...)`` followed by ``r.result()`` after the block works, as it would with any
pending future of ``ProcessPoolExecutor``.
"""

from __future__ import annotations

import time
from concurrent.futures import Executor  # a LambdaExecutor: this layer sits below it
from typing import Any, Callable, Iterable

from lambdaexec.future import LambdaFuture
from lambdaexec.wire import serialize


def hold(ex: Executor, result: LambdaFuture) -> None:
    """Let ``ex`` accept follow-up calls (and ``shutdown`` wait) until ``result`` is done."""
    ex._engine.hold(result)


def follow_up(ex: Executor, fn: Callable[..., Any], *iterables: Iterable) -> list[LambdaFuture]:
    """``fn`` over ``zip(*iterables)`` as calls of ``ex``; one future per call, in order."""
    blob = serialize.dumps_function(fn)
    now = time.time()
    futures, batch = [], []
    for args in zip(*iterables):
        future = LambdaFuture(now)
        futures.append(future)
        batch.append((blob, serialize.dumps_call(args, {}), future))
    ex._engine.enqueue(batch, follow_up=True)
    return futures
