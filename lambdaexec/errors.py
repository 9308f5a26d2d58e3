"""lambdaexec's own exception types. User code's exceptions are re-raised as themselves."""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import pickle


class LambdaExecError(Exception):
    """Base of every error lambdaexec raises for its own (not the user's) reasons."""


class ConfigError(LambdaExecError, ValueError):
    """A setting is unknown, malformed or missing. The message names the key and the fix."""


class UnpicklableError(LambdaExecError, pickle.PicklingError):
    """The function or an argument cannot be serialized; the message gives the path to it."""


class CallLostError(LambdaExecError):
    """A call did not produce a result; ``attempts`` says how many times it was started."""

    def __init__(self, message: str, attempts: int = 0):
        super().__init__(message)
        self.attempts = attempts


class WorkerDiedError(CallLostError, concurrent.futures.process.BrokenProcessPool):
    """The worker running the call exited (crash, ``os._exit``, out of memory, killed), after
    ``retries``. A ``BrokenProcessPool`` too, as ``ProcessPoolExecutor`` raises when a worker
    dies, so code that catches that keeps working; the executor itself stays usable."""


class OutOfMemoryError(WorkerDiedError, MemoryError):
    """The call needed more memory than the ``memory`` setting (Lambda's memory size, and each
    local worker's data limit); its worker stopped, as Lambda stops an environment that exceeds
    it. Final: not retried. Also a ``MemoryError``, as the call itself saw it."""


class BrokenWorkersError(WorkerDiedError, concurrent.futures.process.BrokenProcessPool):
    """Workers cannot start at all (the runtime fails to import), so the executor cannot run
    calls: a ``BrokenProcessPool``, as code written for ``ProcessPoolExecutor`` expects. A
    worker that died and was replaced is a plain :class:`WorkerDiedError`, not this."""


class CallStoppedError(CallLostError, concurrent.futures.process.BrokenProcessPool):
    """The call was running when ``terminate_workers()``, ``kill_workers()`` or Ctrl-C stopped
    the executor: its local worker got SIGTERM or SIGKILL. A ``BrokenProcessPool``, as the
    futures of ``ProcessPoolExecutor``'s running calls are then."""


class CallAbandonedError(CallStoppedError):
    """The call was running on AWS Lambda when the executor was terminated (``terminate_workers``,
    ``kill_workers``, Ctrl-C). A Lambda call cannot be stopped from outside: it may run on to its
    end (``timeout`` at most, billed); its result is discarded and the job's data deleted."""


class CallTimeoutError(CallLostError):
    """The call ran past the per-call ``timeout`` and its worker was stopped."""


class WorkerEnvironmentError(LambdaExecError):
    """The worker's Python or cloudpickle version differs from the client's."""


class WorkerStorageError(LambdaExecError):
    """The worker cannot read or write the job storage (credentials, permissions, endpoint).

    Found by the trial call a Lambda executor makes when it starts, so it surfaces within
    seconds, not at the call deadline; the message names the step that failed and the fix."""


class InvokeEndpointError(LambdaExecError, ConnectionError):
    """No connection can be made to the Lambda Invoke endpoint (connection refused, a host name
    that does not resolve, a TLS failure): the calls fail within seconds, the message naming the
    URL and the network error, instead of waiting for their start deadline."""


class ResultTooLargeError(LambdaExecError):
    """A call's result is larger than ``max_result_size``."""


class StorageError(LambdaExecError, OSError):
    """The store failed an operation and kept failing after retries with backoff (an outage
    longer than the retry budget, a full disk, a denied request). The message names the store."""


class MissingObjectError(StorageError, KeyError):
    """An object that lambdaexec wrote is not in the store (it expired, was deleted, or a
    server without persistence restarted). A ``KeyError`` too, as ``Storage.get`` promises."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class RemoteTraceback(Exception):
    """Carries a worker-side traceback; set as ``__cause__`` of a re-raised user exception."""

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


class ResultUnpicklingError(LambdaExecError, concurrent.futures.process.BrokenProcessPool):
    """A call's result (or the exception it raised) was stored but cannot be unpickled on the
    client (its unpickling raised or exited). Only that call fails; a ``BrokenProcessPool`` as
    ``ProcessPoolExecutor`` raises there."""


class RemoteError(LambdaExecError):
    """A user exception that could not be sent back as itself (it was not picklable)."""


class InitializerError(LambdaExecError, concurrent.futures.process.BrokenProcessPool):
    """The executor's ``initializer`` raised in a worker. As with ``ProcessPoolExecutor``, the
    executor is then broken: every call not finished fails with it, and so does ``submit``."""


class BudgetExceededError(LambdaExecError):
    """The ``max_cost`` budget would be exceeded, so the call was not started.

    ``spent``: dollars of the calls finished when the budget tripped; ``projected``: what all
    submitted calls were on course to cost."""

    def __init__(self, message: str, spent: float = 0.0, projected: float = 0.0):
        super().__init__(message)
        self.spent, self.projected = spent, projected


class AttachError(LambdaExecError):
    """``lambdaexec.attach`` cannot apply to this job (for instance, it ran on local workers)."""


class IntegrityError(LambdaExecError):
    """An object read from storage does not carry a valid signature of this executor's secret:
    someone without the secret wrote it, or it was altered, truncated or copied from another
    key. It is never unpickled, and the call or future that needed it fails (not retried)."""
