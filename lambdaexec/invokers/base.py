"""How calls get started: the interface between the executor's monitor and an invoker.

The monitor hands an invoker :class:`Dispatch` units (some calls of one job) and asks it, over
and over, what happened (:meth:`Invoker.poll`). An invoker answers with :class:`Done` (the call's
result object is in storage) and :class:`Lost` (the call will never produce one: its worker died,
it timed out, or it was never started). The monitor decides what to retry.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Callable, Union

from lambdaexec.wire.protocol import Event


@dataclasses.dataclass
class Dispatch:
    """Calls of one job to start, with a callback that builds their event.

    ``make_event(calls)`` claims the calls that are still wanted (a future cancelled before it
    started is dropped) and returns the event for them, or None if none is left.
    """

    job_prefix: str
    calls: list[int]
    attempt: int
    make_event: Callable[[list[int], int], Event | None]
    taken: int = 0

    def take(self, n: int) -> list[int]:
        """The next ``n`` calls not yet taken (in O(n): a job may have 100,000 calls)."""
        out = self.calls[self.taken : self.taken + n]
        self.taken += len(out)
        return out

    @property
    def left(self) -> list[int]:
        """The calls not yet taken."""
        return self.calls[self.taken :]

    @property
    def exhausted(self) -> bool:
        """Whether every call has been taken."""
        return self.taken >= len(self.calls)


@dataclasses.dataclass(frozen=True)
class Done:
    """The call's result has been written, in the object at ``key`` (a batch's, perhaps:
    :mod:`lambdaexec.wire.protocol`), or at the call's own key when ``key`` is empty."""

    job_prefix: str
    call: int
    key: str = ""


@dataclasses.dataclass(frozen=True)
class Lost:
    """The call will not produce a result. ``started``: whether user code may have run;
    ``fatal``: retrying cannot help (workers cannot even start), so fail it now; ``cause``: how
    its worker ended, when the invoker knows (``"SIGKILL"``, ``"exit status 3"``: see
    :mod:`lambdaexec.runtime.blame`)."""

    job_prefix: str
    call: int
    reason: str
    timed_out: bool = False
    started: bool = True
    fatal: bool = False
    cause: str = ""


Notice = Union[Done, Lost]


class Invoker(abc.ABC):
    """Starts calls and reports on them. Used from two threads: the executor's flusher calls
    :meth:`invoke`; the monitor calls :meth:`poll` (and :meth:`invoke` for retries)."""

    @abc.abstractmethod
    def invoke(self, dispatch: Dispatch) -> None:
        """Start the calls of ``dispatch`` (soon; must not block on the calls running)."""

    @abc.abstractmethod
    def poll(self, timeout: float) -> list[Notice]:
        """Wait up to ``timeout`` seconds for news; return what happened since the last poll."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop every worker and thread this invoker started; in-flight calls are abandoned."""

    #: whether :meth:`terminate` stops the calls running (local processes) or can only abandon
    #: them (AWS Lambda, where a call cannot be stopped from outside)
    can_stop_calls = True

    def terminate(self, kill: bool) -> None:
        """Stop now, calls in flight included (``terminate_workers``, ``kill_workers``, Ctrl-C):
        SIGTERM, or SIGKILL with ``kill``, where the invoker owns the processes. By default, :meth:`close`."""
        self.close()

    def wake(self) -> None:
        """Make a blocked :meth:`poll` return early."""
