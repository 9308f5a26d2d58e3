"""The ``lambda`` backend's calls in flight: which invocation carries each, and their deadlines.

One :class:`Job` per job with calls in flight holds a :class:`Call` per call, and each call
points to the :class:`Invocation` that carries it (several calls may share one:
:mod:`lambdaexec.aws.grouping`). An invocation holds one of the ``max_workers`` slots until
its last call is reported Done or Lost. Deadlines are per call, timed by its invocation::

    invocation not started (no start marker of any of its calls seen)
        past start_deadline after it was sent      -> Lost, not started: invoke again
    invocation started, past timeout + grace after that (Lambda's timeout bounds the invocation)
        the call's own start marker seen            -> Lost, started, timed out (an attempt)
        not seen: it never began (a batch-mate      -> Lost, not started: invoke again
        overran or crashed the worker), or it
        crashed it within MARK_SECONDS

A worker writes the marker of an event's first call at once, and that of a later call only once
it has run :data:`~lambdaexec.wire.protocol.MARK_SECONDS` (a marker per short call would cost more
than the calls). So a grouped call that crashes its worker sooner than that counts as never
started: it is invoked again, alone, where its marker goes first. A call reported not started
:data:`MAX_UNSTARTED` times in a row counts as a failed attempt.
"""

from __future__ import annotations

from lambdaexec.invokers.base import Lost

MAX_UNSTARTED = 3  # start-deadline misses of one call before it counts as an attempt


def grace(timeout: float) -> float:
    """Seconds past ``timeout`` before a started call without a result is reported lost: room
    for Lambda's own timing, the listing interval and storage latency."""
    return max(2.0, min(15.0, 0.25 * timeout))


class Invocation:
    """One invocation in flight: when it was sent, when its first start marker was seen, and
    how many of its calls are not yet reported (it holds a slot until that reaches 0)."""

    __slots__ = ("invoked", "started", "left")

    def __init__(self, invoked: float):
        self.invoked = invoked
        self.started = 0.0
        self.left = 0


class Call:
    """One call in flight: its invocation, its attempt, when its own start marker was seen."""

    __slots__ = ("invocation", "started", "attempt")

    def __init__(self, invocation: Invocation, attempt: int):
        self.invocation = invocation
        self.started = 0.0
        self.attempt = attempt


class Job:
    """The calls of one job that are in flight, and how often each missed its start deadline.
    Methods that end a call return how many invocation slots that freed."""

    __slots__ = ("inflight", "misses", "unstarted")

    def __init__(self) -> None:
        self.inflight: dict[int, Call] = {}
        self.misses: dict[int, int] = {}
        self.unstarted = 0  # calls in flight whose start marker has not been seen

    def add(self, calls: list[int], attempt: int, now: float) -> Invocation:
        """Track ``calls``, just sent in one invocation. A call already in flight (a backup
        copy: speculation) keeps its one record; the first result ends both copies."""
        invocation = Invocation(now)
        for c in calls:
            if c not in self.inflight:
                self.inflight[c] = Call(invocation, attempt)
                invocation.left += 1
                self.unstarted += 1
        return invocation

    def forget(self, c: int) -> int:
        """Stop tracking call ``c``; 1 if that was its invocation's last call, else 0."""
        info = self.inflight.pop(c)
        if not info.started:
            self.unstarted -= 1
        info.invocation.left -= 1
        return int(not info.invocation.left)

    def done(self, c: int) -> int:
        """Call ``c``'s result was listed."""
        self.misses.pop(c, None)
        return self.forget(c)

    def mark_started(self, c: int, attempt: int, now: float) -> bool:
        """The start marker of ``attempt`` of ``c`` was listed; whether that is news."""
        info = self.inflight.get(c)
        if info is None or info.attempt != attempt or info.started:
            return False
        info.started = now
        if not info.invocation.started:
            info.invocation.started = now
        self.unstarted -= 1
        return True

    def overdue(self, prefix: str, now: float, timeout: float, grace: float, start_deadline: float,
                notices: list) -> int:
        """Report the calls past their start or run deadline (module docstring) in ``notices``."""
        freed = 0
        for c, info in list(self.inflight.items()):
            invocation = info.invocation
            if invocation.started:
                if now - invocation.started <= timeout + grace:
                    continue
                if info.started:
                    notices.append(Lost(prefix, c, (
                        f"it started on Lambda but wrote no result within its timeout of {timeout:g} s "
                        f"(+{grace:g} s): Lambda stopped it at the timeout, or its worker crashed or "
                        "ran out of memory (see the function's CloudWatch logs)"), timed_out=True, started=True))
                else:
                    notices.append(self._missed(prefix, c, (
                        "its invocation started other calls first but ended without starting it "
                        f"within the timeout of {timeout:g} s (+{grace:g} s): one of them overran or "
                        "crashed its worker")))
            elif now - invocation.invoked > start_deadline:
                notices.append(self._missed(prefix, c, (
                    f"never started within start_deadline ({start_deadline:g} s): Lambda dropped or "
                    "delayed the event (throttling, or the function failed to initialize: see its "
                    "CloudWatch logs)")))
            else:
                continue
            freed += self.forget(c)
        return freed

    def _missed(self, prefix: str, c: int, why: str) -> Lost:
        """The notice for call ``c``, which never started: invoke it again, until it has missed
        :data:`MAX_UNSTARTED` times, which counts as a failed attempt."""
        misses = self.misses[c] = self.misses.get(c, 0) + 1
        final = misses >= MAX_UNSTARTED
        if final:
            del self.misses[c]
        return Lost(prefix, c, f"it was invoked {misses} time(s) but {why}", started=final)
