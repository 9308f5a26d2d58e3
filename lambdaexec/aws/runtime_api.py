"""Execution environments of the local Lambda emulator, each run by AWS's own runtime client.

Every container is ``python -m awslambdaric worker.handler.handler`` (the runtime interface
client from PyPI, exactly as a container image runs it) in the unzipped package, with Lambda's
environment variables, talking to its own small server of the Lambda Runtime API::

    emulator (Invoke API)          RuntimeApi (127.0.0.1:<port>)           awslambdaric process
    Container.run(event) ── inbox ──► GET  /2018-06-01/runtime/invocation/next ◄── polls
                         ◄─ result ── POST .../invocation/<id>/response  ◄──── handler returned
                         ◄─ error ─── POST .../invocation/<id>/error     ◄──── handler raised
                         ◄─ failed ── POST /2018-06-01/runtime/init/error ◄──── import failed

Limits, enforced from outside the process as Lambda enforces them: the function ``timeout``
(the environment is killed: ``Sandbox.Timedout``), the ``memory`` size (resident memory of the
environment's process tree sampled every 20 ms; above it the environment is killed:
``Runtime.OutOfMemory``), and, for ``ephemeral_storage``, a private ``TMPDIR`` per environment
with ``RLIMIT_FSIZE`` so no file written there (or anywhere) grows past it. Each invocation's
output, framed by ``START``/``END``/``REPORT`` lines as in CloudWatch, goes to the function's log
and is kept for ``X-Amz-Log-Type: Tail``.
"""

from __future__ import annotations

import collections
import http.server
import json
import os
import queue
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any, Callable

from lambdaexec.aws.failure_log import FailureLog, QuietServer
from lambdaexec.errors import ConfigError

#: the emulator's counters (accepted, completed, error, died, oom, throttled, dropped, expired, abandoned, sync)
STATS: collections.Counter = collections.Counter()
_PREFIX = "/2018-06-01/runtime"
_TAIL = 4096  # bytes of log returned with X-Amz-Log-Type: Tail, as Lambda does


class FunctionDied(Exception):
    """The environment exited, was killed, timed out or ran out of memory during an invocation;
    ``kind`` is Lambda's error type (``Runtime.ExitError``, ``Runtime.OutOfMemory``, ...)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class _Invocation:
    """One invocation handed to a container: its event, and how it ended."""

    def __init__(self, event: bytes, request_id: str, deadline: float):
        self.event, self.request_id, self.deadline = event, request_id, deadline
        self.done = threading.Event()
        self.outcome: tuple[str, bytes] = ("", b"")  # ("response" | "error", body)


class _Api(http.server.BaseHTTPRequestHandler):
    """The Runtime API of one container (its ``AWS_LAMBDA_RUNTIME_API``)."""

    protocol_version = "HTTP/1.1"
    container: Container

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        if self.path != f"{_PREFIX}/invocation/next":
            return self._reply(404, b'{"errorType": "NotFound"}')
        c = self.container
        c.ready.set()
        inv = c.inbox.get()
        if inv is None:  # the container is stopping
            return self._reply(410, b"{}")
        fn = c.fn
        self._reply(200, inv.event, {
            "Lambda-Runtime-Aws-Request-Id": inv.request_id,
            "Lambda-Runtime-Deadline-Ms": str(int(inv.deadline * 1000)),
            "Lambda-Runtime-Invoked-Function-Arn": fn.arn,
            "Lambda-Runtime-Trace-Id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0"})

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        c = self.container
        if self.path == f"{_PREFIX}/init/error":
            c.init_error = body
            c.ready.set()
            return self._reply(202, b'{"status": "OK"}')
        parts = self.path[len(_PREFIX):].split("/")  # ["", "invocation", <id>, "response"|"error"]
        inv = c.current
        if len(parts) != 4 or parts[3] not in ("response", "error") or inv is None or parts[2] != inv.request_id:
            return self._reply(400, b'{"errorType": "InvalidRequestID"}')
        inv.outcome = (parts[3], body)
        inv.done.set()
        self._reply(202, b'{"status": "OK"}')


class Container:
    """One execution environment: a warm ``awslambdaric`` process and its Runtime API server."""

    def __init__(self, fn: Function):
        self.fn = fn
        self.stream = f"{time.strftime('%Y/%m/%d')}/[$LATEST]{uuid.uuid4().hex}"
        self.inbox: queue.Queue[_Invocation | None] = queue.Queue()
        self.ready = threading.Event()
        self.init_error: bytes | None = None
        self.current: _Invocation | None = None
        self.output = bytearray()  # what the current invocation printed
        self.oom = False
        self.peak_mb = 0.0
        api = type("Api", (_Api,), {"container": self})
        self.server = QuietServer(("127.0.0.1", 0), api)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
        self.tmp = tempfile.mkdtemp(prefix="tmp-", dir=fn.scratch)
        env = {**fn.base_env, "AWS_LAMBDA_LOG_STREAM_NAME": self.stream, "TMPDIR": self.tmp,
               "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{self.server.server_address[1]}"}
        fsize = fn.ephemeral_storage * 2**20
        self.proc = subprocess.Popen(
            [sys.executable, "-s", "-m", "awslambdaric", fn.handler], env=env, cwd=fn.root,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize)))
        with fn.lock:
            stopping = fn.stopping
            if not stopping:
                fn.containers.add(self)
        if stopping:  # the emulator is stopping: this one would outlive it
            self.kill()
            raise FunctionDied("Runtime.ExitError", "the emulator is stopping")
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._watch, daemon=True).start()
        end = time.monotonic() + fn.init_timeout
        while not self.ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > end:
                break
        if self.init_error is not None or not self.ready.is_set():
            self.kill()
            doc = _error_doc(self.init_error or b"")
            raise FunctionDied(doc.get("errorType", "Runtime.ExitError"), doc.get("errorMessage") or (
                f"the runtime did not start within {fn.init_timeout:g} s" if self.proc.returncode is None
                else f"Runtime exited with error: exit status {self.proc.returncode}"))

    def _pump(self) -> None:
        """Copy the process's output to the function's log and to the current invocation's."""
        for line in iter(self.proc.stdout.readline, b""):
            self.fn.write_log(line)
            if self.current is not None:
                self.output += line

    def _watch(self) -> None:
        """Kill the environment when its processes' resident memory exceeds the memory size;
        end the current invocation when the process exits."""
        limit = self.fn.memory
        while self.proc.poll() is None:
            mb = _resident_mb(self.proc.pid)
            self.peak_mb = max(self.peak_mb, mb)
            if mb > limit:
                self.oom = True
                self.kill()
                break
            time.sleep(0.02)
        self.proc.wait()
        inv = self.current
        if inv is not None:
            inv.done.set()

    def run(self, event: bytes, request_id: str) -> tuple[str, bytes]:
        """Run one invocation: ``("response" | "error", body)``; raise :class:`FunctionDied`."""
        fn = self.fn
        inv = _Invocation(event, request_id, time.time() + fn.timeout)
        self.output = bytearray()
        self.current = inv
        start = time.monotonic()
        fn.write_log(f"START RequestId: {request_id} Version: $LATEST\n".encode())
        self.inbox.put(inv)
        finished = inv.done.wait(fn.timeout)
        elapsed = (time.monotonic() - start) * 1000
        self._drain()
        try:
            if not finished:
                self.kill()
                raise FunctionDied("Sandbox.Timedout", f"Task timed out after {fn.timeout:.2f} seconds")
            if not inv.outcome[0]:
                if self.oom:
                    raise FunctionDied("Runtime.OutOfMemory", f"RequestId: {request_id} Error: Runtime exited with "
                                       f"error: signal: killed (memory size {fn.memory} MB exceeded)")
                raise FunctionDied("Runtime.ExitError", f"RequestId: {request_id} Error: Runtime exited with error: "
                                   f"exit status {self.proc.returncode}")
            return inv.outcome
        finally:
            self.current = None
            fn.write_log(f"END RequestId: {request_id}\nREPORT RequestId: {request_id}\tDuration: {elapsed:.2f} ms"
                         f"\tMemory Size: {fn.memory} MB\tMax Memory Used: {self.peak_mb:.0f} MB\n".encode())
            self.tail = bytes(self.output[-_TAIL:])

    def _drain(self, limit: float = 0.5) -> None:
        """Let the output the runtime wrote before answering reach the invocation's log."""
        end = time.monotonic() + limit
        while time.monotonic() < end and self.proc.poll() is None:
            if not select.select([self.proc.stdout], [], [], 0)[0]:
                time.sleep(0.01)  # the last line read may still be on its way into ``output``
                return
            time.sleep(0.005)

    def kill(self) -> None:
        """Stop the process, its server and its scratch space."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        self.inbox.put(None)
        self.server.shutdown()
        self.server.server_close()
        with self.fn.lock:
            self.fn.containers.discard(self)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _resident_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, in MB."""
    pages, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                pages += int(f.read().split()[1])
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (OSError, IndexError, ValueError):  # it exited meanwhile
            continue
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _error_doc(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body or b"{}")
        return doc if isinstance(doc, dict) else {}
    except ValueError:
        return {"errorMessage": body[:500].decode(errors="replace")}


class Function:
    """A function: its unzipped package, settings, containers and async event queue.

    ``credentials``: the AWS credential variables its environments get, as a Lambda role's
    (default: this process's). ``client_gone(client)``: whether the client that queued an
    event has gone, so the event is dropped instead of run (default: never).
    """

    def __init__(self, name: str, package: str, concurrency: int = 4, timeout: float = 300,
                 memory: int = 2048, ephemeral_storage: int = 512, region: str = "us-east-1",
                 handler: str = "worker.handler.handler", max_event_age: float = 21600, log_file: str | None = None,
                 credentials: dict[str, str] | None = None, client_gone: Callable[[str], bool] | None = None):
        import importlib.util

        from lambdaexec.aws.package import unpack_package

        if importlib.util.find_spec("awslambdaric") is None:
            raise ConfigError("the Lambda emulator runs each environment under AWS's runtime interface client, "
                              "which is not installed: pip install 'lambdaexec[emulate]'")
        self.name, self.timeout, self.concurrency, self.handler = name, timeout, concurrency, handler
        self.memory, self.ephemeral_storage = memory, ephemeral_storage
        self.max_event_age, self.init_timeout = max_event_age, 60.0
        self.client_gone = client_gone or (lambda client: False)
        self.stopping = False
        self.scratch = tempfile.mkdtemp(prefix=f"lambda-{name}-")
        self.root = os.path.join(self.scratch, "task")
        try:
            unpack_package(package, self.root)
        except BaseException:
            shutil.rmtree(self.scratch, ignore_errors=True)
            raise
        self.arn = f"arn:aws:lambda:{region}:000000000000:function:{name}"
        self.log_path = log_file or os.path.join(self.scratch, f"{name}.log")
        self.log = open(self.log_path, "ab")
        self.failures = FailureLog(name, self.log_path if log_file else "")
        if credentials is None:
            credentials = {k: v for k, v in os.environ.items()
                           if k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
        self.base_env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "en_US.UTF-8", "TZ": ":UTC", "HOME": self.scratch,
            "LAMBDA_TASK_ROOT": self.root, "LAMBDA_RUNTIME_DIR": os.path.dirname(sys.executable),
            "PYTHONPATH": self.root, "_HANDLER": handler, "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_python{sys.version_info[0]}.{sys.version_info[1]}",
            "AWS_LAMBDA_FUNCTION_NAME": name, "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory), "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
            "AWS_REGION": region, "AWS_DEFAULT_REGION": region, "PYTHONUNBUFFERED": "1", **credentials,
        }
        self.slots = threading.BoundedSemaphore(concurrency)
        self.idle: list[Container] = []
        self.containers: set[Container] = set()
        self.lock = threading.Lock()
        self.events: queue.Queue = queue.Queue()
        for i in range(concurrency):
            threading.Thread(target=self._async_loop, name=f"emulator-{name}-{i}", daemon=True).start()

    def write_log(self, data: bytes) -> None:
        """Append to the function's log (its CloudWatch log group, here one file)."""
        with self.lock:
            if not self.log.closed:
                self.log.write(data)
                self.log.flush()

    def invoke(self, event: bytes, request_id: str) -> tuple[str, bytes, bytes]:
        """Run on an idle container or a new one (a slot is held): ``(kind, body, log tail)``
        with kind ``response`` or ``error``. A failed invocation is counted by its error type,
        the first of each type printed to stderr (:mod:`lambdaexec.aws.failure_log`); a
        container that died is not reused."""
        with self.lock:
            container = self.idle.pop() if self.idle else None
        tail = b""
        try:
            if container is None:
                container = Container(self)
            kind, body = container.run(event, request_id)
            tail = container.tail
            with self.lock:
                self.idle.append(container)
        except FunctionDied as err:
            kind, body = "error", json.dumps({"errorType": err.kind, "errorMessage": str(err)}).encode()
            tail = getattr(container, "tail", b"") if container else b""
            STATS["oom" if err.kind == "Runtime.OutOfMemory" else "died"] += 1
        if kind == "error" and not self.stopping:
            doc = _error_doc(body)
            self.failures.add(str(doc.get("errorType", "Error")), str(doc.get("errorMessage", "")), request_id,
                              [str(line) for line in doc.get("stackTrace") or []])
        return kind, body, tail

    def _async_loop(self) -> None:
        while True:
            item = self.events.get()
            if item is None or self.stopping:
                return
            event, request_id, queued, client = item
            with self.slots:
                if self.stopping:
                    return
                if time.monotonic() - queued > self.max_event_age:
                    STATS["expired"] += 1
                    self.failures.add("EventAgeExceeded", f"an event waited longer than the maximum event age "
                                      f"({self.max_event_age:g} s) and was dropped", request_id)
                    continue
                if self.client_gone(client):
                    STATS["abandoned"] += 1
                    self.failures.add("ClientGone", f"queued event dropped: its client at {client} has closed "
                                      "every connection (--keep-orphan-events runs such events)", request_id)
                    continue
                kind, _, _ = self.invoke(event, request_id)  # MaximumRetryAttempts=0: a failure is dropped
                STATS["completed" if kind == "response" else "error"] += 1

    def stop(self) -> None:
        """Stop taking events, kill every container, print the failure counts and delete the
        unzipped package (and the log, unless it was given as ``log_file``)."""
        with self.lock:
            self.stopping = True
            every = list(self.containers)
            self.idle.clear()
        self.failures.close()
        for _ in range(self.concurrency):
            self.events.put(None)
        for c in every:
            c.kill()
        with self.lock:
            self.log.close()
        shutil.rmtree(self.scratch, ignore_errors=True)

