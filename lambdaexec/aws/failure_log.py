"""What the Lambda emulator prints about failed and dropped invocations: one line per kind.

A job whose every call fails would otherwise print a traceback per invocation (385 failed
invocations once printed 7,283 lines). So :class:`FailureLog` prints the first failure of each
kind (Lambda's ``errorType``: ``KeyError``, ``Runtime.ExitError``, ``Sandbox.Timedout``, ...)
with its message and the end of its traceback, then only counts: one line per kind whose count
grew, at most every ``interval`` seconds, and a last one when the emulator stops. Every
invocation's full output stays in the function's log file. And the emulator's servers
(:class:`QuietServer`) print no traceback when a peer goes away mid-request.
"""

from __future__ import annotations

import collections
import http.server
import sys
import threading
import time
from typing import IO, Any

_TRACE_LINES = 8  # lines of the first traceback of a kind that are printed


class FailureLog:
    """Counts failures of function ``name`` by kind and prints them to ``stream`` (stderr)."""

    def __init__(self, name: str, log_path: str = "", stream: IO[str] | None = None, interval: float = 10.0):
        self.name, self.log_path, self.interval = name, log_path, interval
        self.stream = stream
        self.counts: collections.Counter[str] = collections.Counter()
        self.printed: collections.Counter[str] = collections.Counter()  # counts already reported
        self.lock = threading.Lock()
        self.closed = threading.Event()
        threading.Thread(target=self._loop, name=f"emulator-{name}-failures", daemon=True).start()

    def add(self, kind: str, message: str, request_id: str = "", trace: list[str] | None = None) -> None:
        """Count one failure of ``kind``; print it in full if it is the first of its kind."""
        with self.lock:
            if self.closed.is_set():
                return
            self.counts[kind] += 1
            first = self.counts[kind] == 1
            if first:
                self.printed[kind] = 1
        if first:
            where = f" (the function's log: {self.log_path})" if self.log_path else ""
            lines = [f"[{self.name}] {kind}: {message}" + (f" [RequestId: {request_id}]" if request_id else "")]
            lines += [f"    {line.rstrip()}" for line in (trace or [])[-_TRACE_LINES:]]
            lines.append(f"[{self.name}] further {kind} ones are counted, not printed{where}")
            self._write(lines)

    def flush(self, final: bool = False) -> None:
        """Print one line per kind whose count grew since it was last printed."""
        with self.lock:
            grown = [(k, n, n - self.printed[k]) for k, n in sorted(self.counts.items()) if n > self.printed[k]]
            for k, n, _ in grown:
                self.printed[k] = n
        lines = [f"[{self.name}] {k}: {n} in all ({new} since the last report)" for k, n, new in grown]
        if final and self.counts:
            lines.append(f"[{self.name}] failed or dropped invocations, by kind: "
                         + ", ".join(f"{k} {n}" for k, n in sorted(self.counts.items())))
        self._write(lines)

    def close(self) -> None:
        """Print the last counts; print nothing after."""
        if not self.closed.is_set():
            self.flush(final=True)
            self.closed.set()

    def _loop(self) -> None:
        last = time.monotonic()
        while not self.closed.wait(1.0):
            if time.monotonic() - last >= self.interval:
                last = time.monotonic()
                self.flush()

    def _write(self, lines: list[str]) -> None:
        if not lines:
            return
        stream = self.stream or sys.stderr
        try:
            stream.write("".join(line + "\n" for line in lines))
            stream.flush()
        except (OSError, ValueError):  # stderr closed or a pipe nobody reads any more
            pass


class QuietServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server on daemon threads that does not print a traceback when a peer
    goes away mid-request (a client killed, an environment killed, the emulator stopping)."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore a connection the peer closed; print any other error in one line."""
        err = sys.exc_info()[1]
        if isinstance(err, (ConnectionError, TimeoutError)) or (isinstance(err, ValueError) and "closed" in str(err)):
            return  # the peer went away, or the socket was closed under the request
        try:
            sys.stderr.write(f"emulator: request from {client_address[0]}:{client_address[1]} failed: "
                             f"{type(err).__name__}: {err}\n")
        except (OSError, ValueError):
            pass
