"""lambdaexec: a ``concurrent.futures`` executor whose calls run on stateless cloud workers.

The public API, all in one place::

    import lambdaexec

    with lambdaexec.LambdaExecutor() as ex:          # local worker processes by default
        futures = [ex.submit(pow, 2, n) for n in range(10)]
        print(lambdaexec.get_all_results(futures))    # [1, 2, 4, ..., 512]

PyWren's API (``map`` returning futures, ``call_async``, ``get_all_results``) is in
:mod:`lambdaexec.pywren`: ``import lambdaexec.pywren as pywren``.

Set ``backend="lambda"`` (or ``LAMBDAEXEC_BACKEND=lambda``) and an S3 bucket to run the same code
on AWS Lambda.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Callable, Iterable

from lambdaexec.config import Config, load_config
from lambdaexec.dataflow import ShuffleAbortedError, hash_partition
from lambdaexec.dataflow.chunks import Chunk, chunks
from lambdaexec.errors import (
    AttachError,
    BrokenWorkersError,
    BudgetExceededError,
    CallAbandonedError,
    CallLostError,
    CallStoppedError,
    CallTimeoutError,
    ConfigError,
    InitializerError,
    IntegrityError,
    InvokeEndpointError,
    LambdaExecError,
    MissingObjectError,
    OutOfMemoryError,
    RemoteError,
    ResultTooLargeError,
    ResultUnpicklingError,
    StorageError,
    UnpicklableError,
    WorkerDiedError,
    WorkerEnvironmentError,
    WorkerStorageError,
)
from lambdaexec.executor import LambdaExecutor
from lambdaexec.future import LambdaFuture
from lambdaexec.iterative import Broadcast, BroadcastMissingError
from lambdaexec.iterative.params import ParameterMismatchError, ParameterServer, ParameterServerUnavailableError
from lambdaexec.pywren import ALL_COMPLETED, ALWAYS, ANY_COMPLETED, get_all_results, get_logs, wait
from lambdaexec.runtime.ledger import FailedCall, failed
from lambdaexec.version import __version__ as __version__  # the one source: lambdaexec/version.py

__all__ = [
    "ALL_COMPLETED", "ALWAYS", "ANY_COMPLETED", "AttachError", "Broadcast", "BroadcastMissingError",
    "BrokenWorkersError", "BudgetExceededError", "CallAbandonedError", "CallLostError", "CallStoppedError",
    "CallTimeoutError", "Chunk", "Config", "ConfigError", "CostReport", "FailedCall", "InitializerError",
    "IntegrityError", "InvokeEndpointError", "LambdaExecError", "LambdaExecutor", "LambdaFuture", "MissingObjectError",
    "OutOfMemoryError", "ParameterMismatchError", "ParameterServer", "ParameterServerUnavailableError", "RemoteError",
    "ResultTooLargeError", "ResultUnpicklingError", "ShuffleAbortedError", "StorageError", "UnpicklableError",
    "WorkerDiedError", "WorkerEnvironmentError", "WorkerStorageError", "attach", "chunks", "cost", "default_executor",
    "estimate", "failed", "get_all_results", "get_logs", "hash_partition", "load_config", "plot_timeline", "progress",
    "replay", "wait",
]

_default: LambdaExecutor | None = None

#: the observe functions, imported on first use (workers import this package and need none of them)
_LAZY = {"attach": "attach", "cost": "cost", "CostReport": "cost",
         "plot_timeline": "timeline", "progress": "progress"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"lambdaexec.observe.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lambdaexec' has no attribute {name!r}")


def default_executor(**settings: Any) -> LambdaExecutor:
    """The executor that the configuration describes: a plain :class:`LambdaExecutor`, whose
    ``map`` yields results (``concurrent.futures``). PyWren's, whose ``map`` returns futures, is
    :func:`lambdaexec.pywren.default_executor`.

    With no arguments it is created once and shared; with settings, a new one is made.
    """
    global _default
    if settings:
        return LambdaExecutor(**settings)
    if _default is None or _default._shutdown:
        _default = LambdaExecutor()
    return _default


def estimate(fn: Callable, items: Iterable, executor: LambdaExecutor | None = None, samples: int = 5,
             seed: int | None = None) -> Any:
    """Run ``samples`` calls of ``fn`` on items drawn at random from ``items`` and extrapolate
    the time and cost of ``executor.map(fn, items)`` (default: :func:`default_executor`), with a
    95% interval: :func:`lambdaexec.observe.cost.estimate`.

    >>> print(lambdaexec.estimate(work, range(10_000), executor=ex))  # doctest: +SKIP
    """
    from lambdaexec.observe.cost import estimate as run_estimate

    return run_estimate(executor if executor is not None else default_executor(), fn, items, samples, seed)


def replay(future: concurrent.futures.Future | str) -> Any:
    """Run a failed call again in this process, with the same function and inputs, and return
    its value or raise its exception with a local traceback (``pdb.post_mortem()`` steps in).

    ``future`` is the call's future (its inputs are read from it, or else from storage) or its
    ``call_id``; a call id from another process is read from storage, where failed calls stay
    until ``lambdaexec clean``. See :mod:`lambdaexec.runtime.replay`.

    >>> f = ex.submit(parse, "bad input")  # doctest: +SKIP
    >>> lambdaexec.replay(f)  # raises here: python -m pdb, or pdb.post_mortem()  # doctest: +SKIP
    """
    from lambdaexec.runtime.replay import replay as run_replay

    return run_replay(future)
