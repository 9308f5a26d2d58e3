"""The embedded default: a pool of long-lived local worker processes, like warm Lambda containers.

Each process runs :mod:`lambdaexec.invokers.local_runtime`, which calls the same
``worker.handler`` that Lambda runs (processes are forked from a pre-imported template,
:mod:`lambdaexec.invokers.zygote`, so a new one costs a fork, not an interpreter start), reading
inputs from and writing results to storage. The pool only carries events out and "call finished"
notices back, over one socket pair per process.

Events go to idle workers only, one at a time, as ``ProcessPoolExecutor``'s workers take calls
from one shared queue: a per-worker queue would make short calls wait behind a long one while
another worker sits idle. The thread that invokes calls sends them itself when a worker is idle
(a warm round trip then crosses no thread hand-off on its way out); else the monitor's thread
sends them as workers finish. One lock guards the queue and the workers' state.

To keep tiny calls cheap, an event carries several calls of a job only once that job's calls
are known to be short (their measured time, per job): about
``_GROUP_SECONDS`` of work, and, near the end of a job, a share of what is left so that every
worker gets some, but never fewer calls than run in the time an event costs beyond its calls
(its storage round trips, measured too: with S3 storage, milliseconds), since splitting finer
would only add requests and latency. A worker writes the results of an event's calls in
batches and announces each batch with one message (:mod:`worker.results`).

Like a Lambda worker, a local worker sees a minimal environment, not the client's: the runtime's
variables, the storage's credentials and what ``worker_env`` names (:mod:`.environment`).

Like Lambda, each worker is limited to ``memory`` MB (its data size, ``RLIMIT_DATA``): a call that
grows past it gets a ``MemoryError`` naming the setting, not the kernel's OOM killer.

The pool also plays Lambda's part in keeping time: a call that runs past ``timeout`` has its
process killed, and a process that dies (``os._exit``, a crash, the OOM killer) is replaced;
either way its calls are reported :class:`Lost` for the monitor to retry or fail.
"""

from __future__ import annotations

import collections
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import wait

from lambdaexec.invokers import zygote
from lambdaexec.invokers.base import Dispatch, Done, Invoker, Lost, Notice
from lambdaexec.invokers.environment import runtime_part, worker_environment
from lambdaexec.invokers.local_runtime import send

_START_FAILURES = 3  # processes in a row that exit before they are ready: the runtime is broken
_MAX_GROUP = 128  # calls of one job sent in one event when many are waiting
_GROUP_SECONDS = 0.02  # at most about this much work per event (so none waits long behind another)
_TERM_GRACE = 2.0  # seconds terminate_workers() gives workers to exit on SIGTERM before SIGKILL

_BLAS_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                     "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


class _Worker:
    """One worker process and what it has been sent."""

    def __init__(self, env: dict[str, str], timeout: float, memory_mb: int):
        ours, theirs = socket.socketpair()
        self.log = tempfile.TemporaryFile()
        # forked from the pre-imported template (see zygote.py) when it runs; else a new interpreter
        t = zygote.template(runtime_part(env))  # storage credentials and worker_env go to the worker only
        pid = t.spawn(theirs, self.log, env, (timeout, memory_mb)) if t is not None else None
        if pid is not None:
            self.popen: subprocess.Popen | zygote.Forked = zygote.Forked(t, pid)
        else:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "lambdaexec.invokers.local_runtime", str(theirs.fileno()), str(timeout),
                 str(memory_mb)],
                pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL,
                stdout=self.log, stderr=self.log, start_new_session=True,
            )
        theirs.close()
        self.sock = ours
        self.buffer = b""
        self.ready = False
        self.retiring = False  # it said it exits after its event (out of memory): send it nothing more
        self.inflight: collections.deque[list] = collections.deque()  # [seq, job, [calls]]
        self.clock = 0.0  # when its current call started (approximately: last progress)
        self.calls_sent = 0
        self.cause = ""  # how it ended (set by exit_reason): "SIGKILL", "exit status 3"

    def fileno(self) -> int:
        return self.sock.fileno()

    def frames(self) -> list | None:
        """Read what arrived; return the complete frames, or None if the process is gone."""
        try:
            data = self.sock.recv(1 << 16)
        except OSError:
            data = b""
        if not data:
            return None
        self.buffer += data
        out = []
        while len(self.buffer) >= 4:
            (n,) = struct.unpack_from("<I", self.buffer)
            if len(self.buffer) < 4 + n:
                break
            out.append(pickle.loads(self.buffer[4 : 4 + n]))
            self.buffer = self.buffer[4 + n :]
        return out

    def exit_reason(self) -> str:
        code = zygote.wait_or_kill(self.popen)
        if code < 0:
            name = self.cause = signal.Signals(-code).name
            why = f"was killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
        else:
            self.cause = f"exit status {code}"
            why = f"exited with status {code} (os._exit or sys.exit outside a call?)"
        self.log.seek(0, os.SEEK_END)
        size = self.log.tell()
        self.log.seek(max(0, size - 2000))
        tail = self.log.read().decode(errors="replace").strip()
        return f"worker process {self.popen.pid} {why}" + (f"; its last output:\n{tail}" if tail else "")

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.kill_group()
        else:
            try:
                send(self.sock, None)
            except OSError:
                pass
        self.sock.close()
        zygote.wait_or_kill(self.popen)
        self.kill_group()  # children its calls started (Popen, fork) end with it
        self.log.close()

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the process and whatever its calls started (its session's process group)."""
        try:
            os.killpg(self.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class LocalInvoker(Invoker):
    """Runs calls on ``workers`` local processes; see the module docstring."""

    def __init__(self, workers: int, timeout: float, max_tasks_per_child: int | None = None,
                 memory_mb: int = 2048, env: dict[str, str] | None = None):
        self.timeout = timeout
        self.memory_mb = memory_mb  # each worker's data limit, as Lambda's ``memory``
        self.max_tasks = max_tasks_per_child
        # what a Lambda worker would have, not the client's whole environment (see environment.py)
        self.env = dict(worker_environment() if env is None else env)
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        for var in _BLAS_THREAD_VARS:  # like loky: cores shared out, not oversubscribed
            self.env.setdefault(var, threads)
        self._pending: collections.deque[Dispatch] = collections.deque()
        self._pending_calls = 0
        self._lock = threading.RLock()  # the queue and every worker's state
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._seq = 0
        self._closed = False
        self._start_failures = 0
        self._call_seconds: dict[str, float] = {}  # job -> measured seconds per call (recent jobs)
        self._event_seconds: dict[str, float] = {}  # job -> measured cost of an event beyond its calls
        self._workers = [_Worker(self.env, timeout, memory_mb) for _ in range(workers)]

    def invoke(self, dispatch: Dispatch) -> None:
        with self._lock:
            self._pending.append(dispatch)
            self._pending_calls += len(dispatch.calls)
            self._dispatch()  # from this thread: no hand-off to the monitor's when a worker is idle
            if not self._pending:
                return
        self.wake()

    def wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass

    def _next_event(self, cap: int) -> tuple[str, dict] | None:
        with self._lock:
            while self._pending:
                unit = self._pending[0]
                per_call = self._call_seconds.get(unit.job_prefix)
                if per_call is None or per_call > _GROUP_SECONDS / 2:
                    group = 1  # long (or not yet measured) calls: one per event
                else:
                    per_call = max(per_call, 1e-5)
                    share = max(self._pending_calls // (4 * len(self._workers)),
                                int(self._event_seconds.get(unit.job_prefix, 0.0) / per_call))
                    group = max(1, min(_MAX_GROUP, cap, share, int(_GROUP_SECONDS / per_call)))
                calls = unit.take(group)
                self._pending_calls -= len(calls)
                if unit.exhausted:
                    self._pending.popleft()
                event = unit.make_event(calls, unit.attempt)
                if event is not None:
                    return unit.job_prefix, event
        return None

    def _dispatch(self) -> None:
        """Send one waiting event to each idle worker (see the module docstring; lock held)."""
        now = time.monotonic()
        for w in self._workers:
            if not w.ready or w.inflight or w.retiring:
                continue
            cap = self.max_tasks - w.calls_sent if self.max_tasks else _MAX_GROUP
            if cap <= 0:
                continue
            item = self._next_event(cap)
            if item is None:
                return
            job, event = item
            w.calls_sent += len(event["calls"])
            self._seq += 1
            w.clock = now
            w.inflight.append([self._seq, job, [c[0] for c in event["calls"]]])
            try:
                send(w.sock, (self._seq, event))
            except OSError:
                pass  # it died; poll() notices the end of its stream

    def _measured(self, job: str, seconds: float, overhead: float) -> None:
        """Note that a call of ``job`` took ``seconds`` and its event's storage round trips
        ``overhead`` (running averages per job)."""
        for table, value in ((self._call_seconds, seconds), (self._event_seconds, overhead)):
            old = table.get(job)
            table[job] = value if old is None else 0.7 * old + 0.3 * value
            if len(table) > 256:
                del table[next(iter(table))]

    def _lose(self, w: _Worker, reason: str, timed_out: bool, notices: list[Notice]) -> None:
        first = True
        for _, job, calls in w.inflight:
            for call in calls:
                notices.append(Lost(job, call, reason, timed_out=timed_out and first, started=first,
                                    cause="" if timed_out else w.cause))
                first = False
        w.inflight.clear()

    def _fail_pending(self, reason: str, notices: list[Notice]) -> None:
        """Fail every call not yet sent: the worker runtime cannot start, so nothing would run."""
        with self._lock:
            pending, self._pending, self._pending_calls = list(self._pending), collections.deque(), 0
        for unit in pending:
            notices.extend(Lost(unit.job_prefix, c, reason, fatal=True) for c in unit.left)

    def _replace(self, w: _Worker) -> None:
        i = self._workers.index(w)
        w.kill_group()  # children of its calls die with it, as they would with a Lambda container
        w.log.close()
        w.sock.close()
        if not self._closed:
            self._workers[i] = _Worker(self.env, self.timeout, self.memory_mb)

    def _read(self, ready: list, notices: list[Notice]) -> bool:
        """Take in what the ``ready`` sockets say (lock held): finished calls, workers ready or
        gone; return whether the wake socket was among them."""
        woken = False
        for r in ready:
            if r is self._wake_r:
                try:
                    while self._wake_r.recv(4096):
                        pass
                except BlockingIOError:
                    pass
                woken = True  # new work was dispatched above, or the monitor is stopping
                continue
            frames = r.frames()
            if frames is None:
                reason = r.exit_reason()
                self._lose(r, reason, False, notices)
                # a worker that exited before it was ready (its runtime did not import) counts
                # towards a broken runtime; one killed by a signal (kill, OOM) does not
                if not r.ready and r.popen.returncode is not None and r.popen.returncode >= 0:
                    self._start_failures += 1
                    if self._start_failures >= _START_FAILURES:
                        self._fail_pending(f"{self._start_failures} worker processes in a row exited "
                                           f"before they were ready (is lambdaexec installed for "
                                           f"{sys.executable}?); the last: {reason}", notices)
                self._replace(r)
                continue
            for frame in frames:
                if frame[0] == "ready":
                    r.ready = True
                    self._start_failures = 0
                elif frame[0] == "retiring":
                    r.retiring = True
                else:  # ("done", seq, calls, key, busy): one result object written
                    _, seq, calls, key, busy = frame
                    head = r.inflight[0]
                    left = head[2]
                    for call in calls:
                        left.remove(call)
                        notices.append(Done(head[1], call, key))
                    now = time.monotonic()
                    self._measured(head[1], busy / len(calls), max(0.0, now - r.clock - busy))
                    r.clock = now
                    if not left:
                        r.inflight.popleft()
            if self.max_tasks and r.calls_sent >= self.max_tasks and not r.inflight and r in self._workers:
                r.stop()  # it has done its share: a fresh process takes its place
                self._replace(r)
        return woken

    def _stop_overdue(self, now: float, notices: list[Notice]) -> None:
        """Stop and replace each worker whose call has run past the timeout (lock held)."""
        for w in list(self._workers):
            if w.inflight and now - w.clock > self.timeout:
                w.stop(kill=True)
                self._lose(w, f"the call ran longer than the timeout of {self.timeout:g} s "
                              f"and worker process {w.popen.pid} was stopped", True, notices)
                self._replace(w)

    def poll(self, timeout: float) -> list[Notice]:
        notices: list[Notice] = []
        end = time.monotonic() + timeout
        woken = False
        while not notices and not woken:
            with self._lock:
                self._dispatch()
                now = time.monotonic()
                busy = [w.clock + self.timeout for w in self._workers if w.inflight]
                watched = [self._wake_r, *self._workers]
            wait_for = max(0.0, min([end - now, *(b - now for b in busy)]))
            ready = wait(watched, timeout=wait_for)
            with self._lock:  # invoke() may send events from another thread meanwhile
                woken = self._read(ready, notices)
                now = time.monotonic()
                self._stop_overdue(now, notices)
            if now >= end:
                break
        with self._lock:
            self._dispatch()  # workers that just finished start their next event before we return
        return notices

    def close(self, kill: bool = False) -> None:
        """Stop the workers (at once with ``kill``, abandoning their calls) and their children."""
        self._closed = True
        for w in self._workers:
            w.stop(kill)
        self._wake_r.close()
        self._wake_w.close()

    def abort(self) -> None:
        """Kill every worker now, calls in flight included (the client was interrupted)."""
        self.close(kill=True)

    def terminate(self, kill: bool) -> None:
        """Stop every worker now, calls in flight included: SIGTERM (or SIGKILL with ``kill``) to
        each worker's process group (the worker and what its calls started), as
        ``ProcessPoolExecutor.terminate_workers`` / ``kill_workers`` signal their workers; what
        is still alive ``_TERM_GRACE`` seconds after a SIGTERM gets SIGKILL. Returns once every
        worker has exited."""
        self._closed = True
        with self._lock:
            workers = list(self._workers)
        for w in workers:
            w.kill_group(signal.SIGKILL if kill else signal.SIGTERM)
        end = time.monotonic() + _TERM_GRACE
        for w in workers:
            w.sock.close()
            zygote.wait_or_kill(w.popen, max(0.0, end - time.monotonic()))
            w.kill_group()  # children that ignored SIGTERM, or outlived their worker
            w.log.close()
        self._wake_r.close()
        self._wake_w.close()
