"""Straggler mitigation: near the end of a job, a call running much longer than its peers gets a
backup copy, and whichever copy finishes first completes the future (MapReduce's backup tasks).

One slow machine, a cold container or a noisy neighbour can hold a whole map up for the sake of
one call. The monitor tells the :class:`Speculator` how long each finished call took and asks it,
once a second, which running calls to start again::

    monitor: call finished ──> Speculator.finished(job, seconds)    (peers' durations, per job)
    monitor: each second   ──> Speculator.stragglers(job, now) ──> calls to dispatch once more

A call is a straggler when most of its job is done (:data:`TAIL`), it has run more than
:data:`SLOWER` times the median of its finished peers and at least :data:`MIN_EXTRA` seconds
longer than that median. It gets one backup; the first result completes the future, the other
copy's result is ignored (both write the same result object, so a reader sees a whole result
either way). A function with side effects may so run twice, as it may on a retry. The losing
copy cannot be stopped from here: it runs on until it ends or times out (on the local backend
it holds a worker that long; a result it writes after its job's data was deleted is removed
with the executor's data, or on S3 by the bucket's lifecycle rule).

The ``speculative`` setting turns it on (default: on for the ``lambda`` backend, off for
``local``, whose workers are alike and whose calls the user can see running).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

#: a call is a straggler past this many times its peers' median duration ...
SLOWER = 3.0
#: ... and at least this many seconds past it (tiny calls jitter by more than 3x)
MIN_EXTRA = 1.0
#: speculate only once this fraction of a job's calls is finished ...
TAIL = 0.75
#: ... and at least this many have finished (a median needs peers)
MIN_PEERS = 3
#: seconds between looks at the running calls
INTERVAL = 1.0


class Speculator:
    """Peers' durations per job, and which calls already have a backup."""

    def __init__(self) -> None:
        self._durations: dict[str, list[float]] = {}
        self._backed: dict[str, set[int]] = {}
        self._next_look = 0.0

    def finished(self, job: Any, seconds: float) -> None:
        """Note that a call of ``job`` finished after running ``seconds``."""
        self._durations.setdefault(job.prefix, []).append(seconds)

    def forget(self, job: Any) -> None:
        """``job`` is over: drop what was kept about it."""
        self._durations.pop(job.prefix, None)
        self._backed.pop(job.prefix, None)

    def due(self, now: float) -> bool:
        """Whether it is time for another look (at most every :data:`INTERVAL` seconds)."""
        if now < self._next_look:
            return False
        self._next_look = now + INTERVAL
        return True

    def near_end(self, job: Any) -> bool:
        """Whether ``job`` is far enough along (:data:`TAIL`) to look for stragglers in it."""
        return job.remaining <= (1 - TAIL) * len(job.futures) and \
            len(self._durations.get(job.prefix, ())) >= MIN_PEERS

    def stragglers(self, job: Any, running: dict[int, float], now: float | None = None) -> list[int]:
        """The calls of ``job`` to back up now, given its running calls (call -> start time)."""
        done = self._durations.get(job.prefix, ())
        total = len(job.futures)
        if len(done) < MIN_PEERS or len(done) < TAIL * total:
            return []
        median = statistics.median(done)
        limit = max(SLOWER * median, median + MIN_EXTRA)
        now = time.time() if now is None else now
        backed = self._backed.setdefault(job.prefix, set())
        out = [c for c, start in running.items() if c not in backed and now - start > limit]
        backed.update(out)
        return out
