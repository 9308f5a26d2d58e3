"""The ``lambda`` backend: calls run as asynchronous AWS Lambda invocations of the worker function.

How a call travels:

1. A pool of sender threads takes calls from the monitor's :class:`Dispatch` units, builds each
   invocation's event (keys and ids only, never data or credentials: Lambda's async payload
   limit is 256 KB) and sends it with ``InvocationType=Event`` (:mod:`lambdaexec.aws.senders`).
   At most ``max_workers`` invocations (default 1000, the default account concurrency) are in
   flight at once. An invocation carries one call, or, once a job's calls are measured short
   and more of them wait than there are slots, several calls of that job, about half a second
   of work (:mod:`lambdaexec.aws.grouping` has the rule and why); its worker writes their
   results as batch objects.
2. Throttling (429 ``TooManyRequestsException``), 5xx answers and broken connections are retried
   with exponential backoff and full jitter: a throttled call is delayed, never lost. An
   invocation Lambda refuses for good (no such function, access denied, ...) fails its calls
   with a :class:`~lambdaexec.errors.LambdaExecError` naming the fix.
3. The worker writes ``started/<call>.<attempt>`` when it starts an event's first call (a later
   call's once it has run ``protocol.MARK_SECONDS``) and ``calls/<call>`` when done
   (or ``calls/<runs>``, a batch holding several calls' results: :mod:`lambdaexec.wire.protocol`).
   :meth:`LambdaInvoker.poll` lists those prefixes (:mod:`lambdaexec.aws.listing`: one request
   per 1,000 keys; one listing of the executor's prefix when many jobs are active) at an
   adaptive interval, 0.1 s after news up to 2 s when idle, and reports :class:`Done` for every
   new result.
4. Every call terminates, and deadlines stay per call even when calls share an invocation
   (Lambda's ``timeout`` bounds the invocation, so a call's run deadline counts from its
   invocation's start). A call whose invocation has not started within ``start_deadline`` is
   invoked again (the deployed function drops events older than that, so the old one will not
   also run); after three such misses it counts as a failed attempt. A call started
   but without a result ``timeout`` + :func:`grace` seconds after its invocation started
   (Lambda stopped it at its timeout, or it crashed, or ran out of memory) is reported lost;
   the monitor retries it ``retries`` times, then fails it with
   :class:`~lambdaexec.errors.CallTimeoutError`. A call whose invocation started but ended by
   then without starting it (a batch-mate crashed or overran) never ran: it is invoked again
   as a start-deadline miss is (:mod:`lambdaexec.aws.inflight`). Retries go one call per
   invocation.

Grouping was verified against the local Lambda emulator (:mod:`lambdaexec.aws.emulator`, which
runs the worker under AWS's own runtime interface client), not against AWS itself.
"""

from __future__ import annotations

import collections
import json
import random
import threading
import time
from typing import Any

from lambdaexec.aws import grouping, listing
from lambdaexec.aws.inflight import Job, grace
from lambdaexec.aws.senders import MAX_THREADS, InvokeResult, make_sender
from lambdaexec.config import Config
from lambdaexec.invokers.base import Dispatch, Done, Invoker, Lost, Notice
from lambdaexec.storage import Storage, open_storage
from lambdaexec.wire import protocol

_DEFAULT_INFLIGHT = 1000  # AWS's default account concurrency

_POLL_MIN, _POLL_MAX = 0.1, 2.0  # adaptive listing interval bounds, seconds
_BACKOFF_BASE, _BACKOFF_MAX = 0.05, 20.0  # exponential backoff bounds, seconds
_MAX_ERROR_RETRIES = 12  # 5xx / connection errors in a row before an invocation fails
_SWEEP_INTERVAL = 1.0  # seconds between deadline sweeps over every call in flight
_UNREACHABLE_SECONDS = 8.0  # an Invoke endpoint nothing can connect to for this long fails the calls


class LambdaInvoker(Invoker):
    """Runs calls as asynchronous invocations of the deployed worker function.

    Made by ``LambdaExecutor(backend="lambda")``; see the module docstring for how it works::

        with LambdaExecutor(backend="lambda", storage="s3", bucket="my-bucket") as ex:
            print(sum(ex.map(abs, range(-1000, 0))))
    """

    #: ask workers to write ``started/<call>.<attempt>`` markers, so never-started calls can be told apart
    mark_start = True

    def __init__(self, config: Config, sender: Any = None, storage: Storage | None = None):
        self.config = config
        self.sender = sender or make_sender(config)
        #: the executor's (signed) store: failure statuses written here must pass the client's check
        self.storage = storage or open_storage(config.storage_spec())
        self.cap = config.max_workers or _DEFAULT_INFLIGHT
        self.timeout, self.start_deadline = config.timeout, config.start_deadline
        self.grace = grace(config.timeout)
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # senders wait for calls and capacity
        self._news = threading.Event()  # wakes poll()
        self._pending: collections.deque[Dispatch] = collections.deque()
        self._waiting: collections.Counter[str] = collections.Counter()  # job -> its calls in _pending
        self._inflight = 0  # invocations being sent or sent with calls not yet reported Done or Lost
        self._timings = grouping.Timings()  # measured seconds per call, per job
        self._work_target = grouping.target(config.timeout)
        self._jobs: dict[str, Job] = {}
        self._notices: list[Notice] = []
        self._interval = _POLL_MIN
        self._next_scan = self._next_sweep = 0.0
        self._closed = False
        #: (error type, message) once the trial call showed that no call can succeed
        self._broken: tuple[str, str] | None = None
        #: counters, for benchmarks and tests: Invoke requests sent (retries included), invocations
        #: accepted and the calls they carried, requests retried after throttling or errors
        self.stats = {"invoked": 0, "accepted": 0, "calls": 0, "throttled": 0, "errors": 0, "scans": 0,
                      "list_requests": 0, "measured": 0}
        self._threads = [threading.Thread(target=self._send_loop, name=f"lambdaexec-invoke-{i}", daemon=True)
                         for i in range(min(MAX_THREADS, self.cap))]
        for t in self._threads:
            t.start()
        threading.Thread(target=self._trial, name="lambdaexec-trial", daemon=True).start()

    # --- Invoker interface --------------------------------------------------------------------
    def invoke(self, dispatch: Dispatch) -> None:
        """Queue the calls of ``dispatch``; sender threads invoke them as capacity allows."""
        with self._lock:
            self._pending.append(dispatch)
            self._waiting[dispatch.job_prefix] += len(dispatch.calls)
            self._work.notify(len(dispatch.calls))

    def wake(self) -> None:
        """Make a blocked :meth:`poll` return early."""
        self._news.set()

    def poll(self, timeout: float) -> list[Notice]:
        """Report results listed in storage, calls lost to deadlines, and refused invocations."""
        end = time.monotonic() + timeout
        while True:
            with self._lock:
                notices, self._notices = self._notices, []
                active = any(j.inflight for j in self._jobs.values())
            now = time.monotonic()
            if active and now >= self._next_scan:
                found = self._scan(notices)
                self._interval = _POLL_MIN if found else min(_POLL_MAX, self._interval * 1.5)
                self._next_scan = time.monotonic() + self._interval
            if notices or now >= end or self._closed:
                return notices
            self._news.wait(max(0.0, min(end, self._next_scan if active else end) - now))
            self._news.clear()

    def close(self) -> None:
        """Stop the sender threads; calls in flight on Lambda are abandoned."""
        with self._lock:
            self._closed = True
            self._work.notify_all()
        self._news.set()
        for t in self._threads:
            t.join(timeout=35)
        self.sender.close()

    can_stop_calls = False  # a Lambda call cannot be stopped from outside: terminate() abandons them

    def terminate(self, kill: bool) -> None:
        """Stop sending now (``kill`` changes nothing): calls not sent are dropped, senders get a
        second to end their request; calls running on Lambda run on, what they write goes unread."""
        with self._lock:
            self._closed = True
            self._pending.clear()
            self._waiting.clear()
            self._work.notify_all()
        self._news.set()
        end = time.monotonic() + 1.0
        for t in self._threads:
            t.join(timeout=max(0.0, end - time.monotonic()))
        self.sender.close()

    # --- sending ------------------------------------------------------------------------------
    def _take(self) -> tuple[Dispatch, list[int]] | None:
        """Wait for calls to send and a free slot; reserve the slot and take the calls of one
        job that the next invocation carries (:func:`grouping.group_size`)."""
        with self._lock:
            while not self._closed and (not self._pending or self._inflight >= self.cap):
                self._work.wait()
            if self._closed:
                return None
            unit = self._pending[0]
            n = grouping.group_size(self._timings.get(unit.job_prefix), sum(self._waiting.values()),
                                    self.cap, self._work_target)
            calls = self._taken(unit, unit.take(n))
            if unit.exhausted:
                self._pending.popleft()
            self._inflight += 1
            return unit, calls

    def _taken(self, unit: Dispatch, calls: list[int]) -> list[int]:
        """Note that ``calls`` of ``unit`` no longer wait (lock held); return them."""
        left = self._waiting[unit.job_prefix] - len(calls)
        if left > 0:
            self._waiting[unit.job_prefix] = left
        else:
            del self._waiting[unit.job_prefix]
        return calls

    def _release(self, n: int) -> None:
        """Free ``n`` invocation slots (lock held)."""
        self._inflight -= n
        self._work.notify(n)

    def _event(self, unit: Dispatch, calls: list[int]) -> tuple[list[int], bytes | None]:
        """The calls still wanted of ``calls`` and their event's payload (None: no call is left).
        An event over Lambda's payload limit is halved, the rest put back to wait (the group
        size keeps events far under it; this is the guard)."""
        while True:
            event = unit.make_event(calls, unit.attempt)
            if event is None:
                return [], None
            calls = [c[0] for c in event["calls"]]
            payload = json.dumps(event, separators=(",", ":")).encode()
            if len(payload) <= grouping.PAYLOAD_LIMIT or len(calls) == 1:
                return calls, payload
            calls, rest = calls[: len(calls) // 2], calls[len(calls) // 2 :]
            with self._lock:
                self._pending.appendleft(Dispatch(unit.job_prefix, rest, unit.attempt, unit.make_event))
                self._waiting[unit.job_prefix] += len(rest)
                self._work.notify(1)

    def _send_loop(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            unit, calls = taken
            calls, payload = self._event(unit, calls)
            if payload is None or self._broken:
                with self._lock:
                    self._release(1)
                if payload is not None and self._broken:
                    self._fail(unit.job_prefix, calls, *self._broken)
                continue
            result = self._send(payload)
            now = time.monotonic()
            with self._lock:
                if result is None:  # closing
                    self._release(1)
                    return
                if result.status < 300 and not self._broken:
                    self._sent(unit, calls, now)
                    continue
                self._release(1)
            if self._broken:
                self._fail(unit.job_prefix, calls, *self._broken)
            else:
                self._refused(unit.job_prefix, calls, result)

    def _sent(self, unit: Dispatch, calls: list[int], now: float) -> None:
        """Track the calls of an invocation Lambda accepted (lock held)."""
        self.stats["accepted"] += 1
        self.stats["calls"] += len(calls)
        job = self._jobs.get(unit.job_prefix)
        if job is None:
            job = self._jobs[unit.job_prefix] = Job()
        if not job.inflight:  # a job starting: look soon, whatever the interval was
            self._interval = _POLL_MIN
            self._next_scan = min(self._next_scan, now + _POLL_MIN)
        if not job.add(calls, unit.attempt, now).left:  # backup copies only: they hold no slot
            self._release(1)

    def _trial(self) -> None:
        """Make the trial call; if it shows that no call can succeed, fail them all at once."""
        from lambdaexec.aws.trial import trial_call

        try:
            broken = trial_call(self.sender, self.storage.spec, self.config.prefix, stats=self.stats)
        except Exception:  # the trial is a hint: the calls' own deadlines still hold
            return
        if broken is None:
            return
        with self._lock:
            self._broken = broken
            stranded = [(prefix, list(job.inflight)) for prefix, job in self._jobs.items()]
            for prefix, calls in stranded:
                job = self._jobs[prefix]
                self._release(sum(job.forget(c) for c in calls))
                job.misses.clear()
        for prefix, calls in stranded:
            self._fail(prefix, calls, *broken)

    def _send(self, payload: bytes) -> InvokeResult | None:
        """Invoke until accepted or refused for good; back off on throttling and errors. An
        endpoint no connection can be made to (refused, no such host, TLS) fails the invocation
        once that has lasted ``_UNREACHABLE_SECONDS``, not after the whole error budget."""
        throttles = errors = 0
        unreachable_since = None
        while not self._closed:
            result = self.sender.invoke(payload)
            self.stats["invoked"] += 1
            if not result.retriable:
                return result
            if result.unreachable:
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if now - unreachable_since >= _UNREACHABLE_SECONDS:
                    return result
            else:
                unreachable_since = None
            if result.status == 429:
                throttles += 1
                self.stats["throttled"] += 1
                n = throttles
            else:
                errors += 1
                self.stats["errors"] += 1
                if errors > _MAX_ERROR_RETRIES:
                    return result
                n = errors
            pause = random.uniform(0, min(_BACKOFF_MAX, _BACKOFF_BASE * 2 ** min(n, 20)))
            time.sleep(max(pause, min(result.retry_after, _BACKOFF_MAX)))
        return None

    def _refused(self, job_prefix: str, calls: list[int], result: InvokeResult) -> None:
        """Fail calls whose invocation Lambda refused, with a status object naming the fix."""
        if result.unreachable:
            self._fail(job_prefix, calls, "InvokeEndpointError", result.message)
            return
        hint = {
            "ResourceNotFoundException": "run `lambdaexec deploy` (or set function_name / LAMBDAEXEC_FUNCTION_NAME)",
            "AccessDeniedException": "give your AWS identity lambda:InvokeFunction on the function",
            "RequestTooLargeException": "the event is over Lambda's 256 KB async limit",
        }.get(result.error, "check `lambdaexec doctor`")
        message = (f"Lambda refused to invoke function {self.config.function_name!r}: HTTP {result.status} "
                   f"{result.error}: {result.message}; {hint}")
        self._fail(job_prefix, calls, "InvocationError", message)

    def _fail(self, job_prefix: str, calls: list[int], error_type: str, message: str) -> None:
        """Fail ``calls`` with a status object of ``error_type`` (mapped to lambdaexec's own
        exception types by the monitor) and ``message``."""
        status = {"ok": False, "error_type": error_type, "message": message}
        for c in calls:
            try:
                self.storage.put(protocol.result_key(job_prefix, c), protocol.pack_result(status, []))
                notice: Notice = Done(job_prefix, c)
            except Exception as err:
                notice = Lost(job_prefix, c, f"{message} (and its failure could not be stored: {err!r})")
            with self._lock:
                self._notices.append(notice)
        self._news.set()

    # --- watching -----------------------------------------------------------------------------
    def _listings(self) -> dict[str, list[str]]:
        """Keys under each active job's prefix (:func:`listing.list_jobs`)."""
        with self._lock:
            active = [p for p, j in self._jobs.items() if j.inflight]
            need_started = {p for p in active if self._jobs[p].unstarted}
        return listing.list_jobs(self.storage, active, need_started, self.stats)

    def _measure(self, listings: dict[str, list[str]]) -> None:
        """Learn the per-call seconds of jobs that have calls waiting, from one of their result
        objects listed now (a batch's if any): :class:`grouping.Timings`. Done
        before the listed results free slots, so the calls sent into those slots are grouped."""
        with self._lock:
            due = [p for p in listings if self._waiting.get(p) and self._timings.due(p)]
        for prefix in due:
            key = listing.measurable(listings[prefix])
            if key is not None:
                self._timings.measure(self.storage, prefix, key)
                self.stats["measured"] += 1

    def _scan(self, notices: list[Notice]) -> bool:
        """List storage, report finished and lost calls; return whether anything progressed.

        Finished and started calls are found from the listed keys; the deadline sweep over every
        call in flight runs at most once a second, so a scan costs O(keys listed), not O(calls).
        """
        self.stats["scans"] += 1
        try:
            listings = self._listings()
        except Exception:  # storage hiccup: the next scan will see it
            return False
        self._measure(listings)
        now = time.monotonic()
        sweep = now >= self._next_sweep
        if sweep:
            self._next_sweep = now + _SWEEP_INTERVAL
        progressed = False
        with self._lock:
            for prefix, keys in listings.items():
                job = self._jobs.get(prefix)
                if job is None:
                    continue
                # start markers first: a marker listed together with its call's result still starts
                # the invocation (the result ends the call's record), or the batch-mates that never
                # ran (their worker died) would wait for start_deadline instead of timeout + grace
                started, results = listing.sort_keys(keys)
                for call, attempt in started:
                    progressed |= job.mark_started(call, attempt, now)
                for k, calls in results:  # one call's result, or a batch's (its key names them)
                    for c in calls:
                        if c in job.inflight:
                            self._release(job.done(c))
                            notices.append(Done(prefix, c, k))
                            progressed = True
                if sweep:
                    self._release(job.overdue(prefix, now, self.timeout, self.grace, self.start_deadline, notices))
                if not job.inflight and not job.misses:
                    del self._jobs[prefix]
        return progressed
