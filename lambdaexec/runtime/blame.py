"""Whether a call that was on a dying worker is the cause of the death, or a bystander.

A worker process can die for the call it runs (a segfault in native code, ``os._exit``, a
signal the call sends itself, memory the kernel kills it for) or for reasons that have nothing
to do with it (an operator's or a cluster's kill storm, the OOM killer picking another
process). A call that dies ``retries + 1`` times used to fail as a poison call; under a storm
that kills a worker every 0.02 s, some bystander calls are on a killed worker three times by
chance alone. So a death counts against the call only when the evidence points at it:

* the worker ended itself (``exit status N``, or a signal only a process raises against
  itself: SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGSYS, SIGTRAP): every such death
  counts, as before; the call fails after ``retries + 1`` of them;
* the worker was killed from outside (SIGKILL, SIGTERM, ...), or died of a cause the invoker
  cannot name: if no other call's worker has died lately, the call fails after ``retries + 1``
  deaths, as before. If others die too (a storm), it fails only once its deaths are too many to
  be chance: with ``p`` the share of other calls' retries (each runs alone) that died lately, it
  fails after ``k`` deaths once ``max(victims, 100) * p ** (k - 1) < 1%`` (``victims``: other
  calls that died lately), and in any case after :data:`MAX_DEATHS`, so that nothing retries
  forever where every call dies.

``retries=0`` keeps its meaning, never run a call twice: the first death fails it.
"""

from __future__ import annotations

import collections
import threading

#: signals a process raises against itself (a crash, ``abort()``): the call's own doing
SELF_SIGNALS = frozenset({"SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGABRT", "SIGSYS", "SIGTRAP"})
#: the most deaths a call may see while other calls' workers die too (its last attempt's included)
MAX_DEATHS = 16
#: recent deaths and retry outcomes kept to estimate how often bystanders die
WINDOW = 512
#: chance of blaming a bystander that the rule accepts, over all the calls a storm hits
FALSE_BLAME = 0.01


def self_inflicted(cause: str) -> bool:
    """Whether a worker that ended with ``cause`` (``"SIGSEGV"``, ``"exit status 3"``, ...)
    ended itself, rather than being killed from outside."""
    return cause.startswith("exit status") or cause in SELF_SIGNALS


class Blame:
    """Decides, death by death, whether a call is the cause of its workers' deaths (see the
    module docstring). Thread-safe: the monitor and its fetch threads report to it."""

    def __init__(self, retries: int):
        self.retries = retries
        self._lock = threading.Lock()
        self._deaths: dict[tuple[str, int], list[str]] = {}  # call -> causes of its workers' deaths
        self._retried: set[tuple[str, int]] = set()  # calls run again after a death, outcome not yet known
        self._recent: collections.deque[tuple[str, int]] = collections.deque(maxlen=WINDOW)  # calls that died
        self._outcomes: collections.deque[tuple[tuple[str, int], bool]] = collections.deque(maxlen=WINDOW)

    def died(self, job: str, call: int, cause: str) -> str | None:
        """Call ``call`` of ``job`` was on a worker that died of ``cause``: ``None`` if it should
        run again, else why the call itself is to blame (for its error message)."""
        me = (job, call)
        with self._lock:
            causes = self._deaths.setdefault(me, [])
            causes.append(cause)
            if me in self._retried:  # a retry that died: a data point on how often bystanders die
                self._retried.discard(me)
                self._outcomes.append((me, True))
            if not self_inflicted(cause):
                self._recent.append(me)
            verdict = self._verdict(me, causes)
            if verdict is None:
                self._retried.add(me)
            else:
                del self._deaths[me]
            return verdict

    def finished(self, job: str, call: int, survived: bool) -> None:
        """Call ``call`` of ``job`` is over; ``survived``: its worker did not die under it."""
        me = (job, call)
        if not self._retried and not self._deaths:
            return
        with self._lock:
            self._deaths.pop(me, None)
            if me in self._retried:
                self._retried.discard(me)
                self._outcomes.append((me, not survived))

    def _verdict(self, me: tuple[str, int], causes: list[str]) -> str | None:
        """(lock held) See :meth:`died`."""
        own = [c for c in causes if self_inflicted(c)]
        outside = [c for c in causes if not self_inflicted(c)]
        if len(own) > self.retries:
            how = f"the same way ({own[0]})" if len(set(own)) == 1 else f"({_tally(own)})"
            return (f"its worker ended itself {how} on {len(own)} of its {len(causes)} attempts: the call itself "
                    "crashes or exits its worker (a crash in native code, os._exit, abort)")
        k = len(outside)
        if k <= self.retries:
            return None
        cause = _tally(outside)
        if self.retries == 0:
            return f"retries=0: a call whose worker dies is not run again ({cause})"
        victims = len({c for c in self._recent if c != me})
        if victims == 0:
            return (f"its worker died the same way on each of its {k} attempts ({cause}) while no other call's "
                    "worker died: the call itself is the likely cause (out of memory? a signal it sends itself?)")
        others = [died for who, died in self._outcomes if who != me]
        p = (sum(others) + 1) / (len(others) + 2)
        if max(victims, 100) * p ** (k - 1) < FALSE_BLAME:
            return (f"its worker died on each of its {k} attempts ({cause}) while only {sum(others)} of "
                    f"{len(others)} recent retries of other calls died: too often to be chance, so the call "
                    "itself is the likely cause (out of memory? a signal it sends itself?)")
        if k >= MAX_DEATHS:
            return (f"its worker died on each of its {k} attempts ({cause}), the most lambdaexec makes while "
                    f"other calls' workers die too ({victims} lately): workers are being killed from outside, "
                    "or every call kills its worker")
        return None


def _tally(causes: list[str]) -> str:
    """``"SIGSEGV x3"``, or ``"SIGKILL x2, exit status 1 x1"``."""
    return ", ".join(f"{c or 'unknown cause'} x{n}" for c, n in collections.Counter(causes).most_common())
