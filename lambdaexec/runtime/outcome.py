"""A call's outcome as its worker wrote it (a status and a payload: :mod:`lambdaexec.wire.protocol`),
turned into what its future shows: stats, output, and a value or an exception.

The monitor completes futures this way, and so do a pickled future's handle
(:mod:`lambdaexec.runtime.handles`) and :func:`lambdaexec.attach`.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any, Callable, ContextManager

from lambdaexec import errors
from lambdaexec.future import LambdaFuture
from lambdaexec.wire import serialize

_INFRA_ERRORS: dict[str, type[Exception]] = {
    "WorkerEnvironmentError": errors.WorkerEnvironmentError,
    "ResultTooLargeError": errors.ResultTooLargeError,
    "UnpicklableError": errors.UnpicklableError,
    "InitializerError": errors.InitializerError,
    "WorkerStorageError": errors.WorkerStorageError,
    "OutOfMemoryError": errors.OutOfMemoryError,
    "StorageError": errors.StorageError,
    "MissingObjectError": errors.StorageError,
    "IntegrityError": errors.IntegrityError,
    "InvokeEndpointError": errors.InvokeEndpointError,
}


def record_status(future: LambdaFuture, status: dict[str, Any], key: str) -> None:
    """Copy a call's stats, output and traceback from its status to its future, and which
    object (``key``) held it (:mod:`lambdaexec.observe.cost` counts objects, not calls)."""
    future.stats.update({k: status[k] for k in (
        "received", "func_start", "func_end", "result_written", "worker", "bytes_in",
        "bytes_out", "attempt", "memory", "peak_memory") if k in status})
    future.stats["seen"] = time.time()
    future.stats["result_key"] = key
    future.stdout, future.stderr = status.get("stdout", ""), status.get("stderr", "")
    future.attempts = status.get("attempt", 0) + 1
    future.remote_traceback = status.get("traceback")


#: what each echo is written inside of, set while a progress bar is drawn
#: (:mod:`lambdaexec.observe.progress`): the bar is cleared, the call's output written, the bar
#: drawn again below it, so the two never share a line of the terminal
_echo_guard: Callable[[Any], ContextManager] | None = None


def set_echo_guard(guard: Callable[[Any], ContextManager] | None) -> None:
    """Wrap every echo of a call's output in ``guard(stream)`` (None: write it plainly)."""
    global _echo_guard
    _echo_guard = guard


def echo_output(future: LambdaFuture) -> None:
    """Print what the call printed on this process's stdout and stderr (the ``echo_output``
    setting), each in one write, so calls finishing together do not interleave their lines."""
    for text, stream in ((future.stdout, sys.stdout), (future.stderr, sys.stderr)):
        if text and stream is not None:
            guard = _echo_guard
            try:
                with guard(stream) if guard is not None else contextlib.nullcontext():
                    stream.write(text if text.endswith("\n") else text + "\n")
                    stream.flush()
            except (OSError, ValueError):  # a closed or broken stream: the output stays on the future
                pass


def decode_result(status: dict[str, Any], payload: memoryview, call_id: str) -> tuple[bool, Any]:
    """``(True, value)`` or ``(False, exception)`` from a call's status and payload: a user
    exception as itself with the remote traceback as its ``__cause__``, an infrastructure
    failure as lambdaexec's own type."""
    if status["ok"]:
        try:
            return True, serialize.loads(payload)
        except (Exception, SystemExit) as err:  # a result whose unpickling exits fails this call only
            return False, errors.ResultUnpicklingError(
                f"the result of call {call_id} cannot be unpickled here: {err!r}")
    if "error_type" in status:
        kind = _INFRA_ERRORS.get(status["error_type"], errors.LambdaExecError)
        exc = kind(status["message"] if kind is not errors.LambdaExecError
                   else f"{status['error_type']}: {status['message']}")
    else:
        try:
            exc = serialize.loads(payload)
        except (Exception, SystemExit) as err:
            exc = errors.RemoteError(f"the call raised an exception that cannot be unpickled here: {err!r}")
    if status.get("traceback"):
        exc.__cause__ = errors.RemoteTraceback(status["traceback"])
    return False, exc
