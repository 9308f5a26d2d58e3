"""A local endpoint implementing the AWS Lambda Invoke REST API, for tests and offline work.

It runs a deployment package (the zip ``lambdaexec deploy`` uploads, unzipped) in separate
worker processes, like Lambda's execution environments: a pool of warm "containers" per
function, at most ``concurrency`` of them, each a fresh interpreter started with Lambda's
environment variables (``AWS_LAMBDA_FUNCTION_NAME``, ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``,
``AWS_REGION``, ``AWS_LAMBDA_LOG_STREAM_NAME``, ``LAMBDA_TASK_ROOT``, ... and the AWS
credential variables the emulator itself was given, as a Lambda role's are), the package
directory first on ``sys.path`` and the handler named ``worker.handler.handler``.

``POST /2015-03-31/functions/<name>/invocations`` answers as AWS documents it:

- ``X-Amz-Invocation-Type: Event``: 202, the event queued and run when a container is free;
  like an async invocation with ``MaximumRetryAttempts=0`` it is dropped, not retried, if its
  container dies or times out, or if it waited longer than ``max_event_age``;
- ``RequestResponse`` (the default): 200 with the handler's JSON result, or with
  ``X-Amz-Function-Error: Unhandled`` and an ``errorMessage``/``errorType`` document;
  429 ``TooManyRequestsException`` when every container is busy;
- ``DryRun``: 204;
- 413 ``RequestTooLargeException`` over 256 KB (Event) or 6 MB (RequestResponse),
  400 ``InvalidRequestContentException`` for a payload that is not JSON,
  404 ``ResourceNotFoundException`` for an unknown function.

For tests, ``throttle_rate`` answers that share of invocations with 429 at random,
``drop_events`` silently drops the first N async events (as if they had aged out of Lambda's
queue), and ``GET /_emulator/stats`` returns counters. Not emulated: signature checks, the
control plane (CreateFunction etc.), ``X-Amz-Log-Type: Tail``, layers (the host's
site-packages stand in for them and for the runtime's boto3), memory limits.

Run it::

    lambdaexec emulate --package build/lambdaexec-worker.zip --port 9001
    LAMBDAEXEC_BACKEND=lambda LAMBDAEXEC_LAMBDA_ENDPOINT_URL=http://127.0.0.1:9001 python my_job.py
"""

from __future__ import annotations

import argparse
import collections
import http.server
import json
import os
import queue
import random
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
import zipfile
from typing import Any

ASYNC_LIMIT = 256 * 1024
SYNC_LIMIT = 6 * 1024 * 1024

# Runs inside each container: a minimal Lambda runtime loop over two pipes. It imports nothing
# from the host's lambdaexec: the handler comes from the package in LAMBDA_TASK_ROOT.
_BOOTSTRAP = r"""
import importlib, json, os, struct, sys, time, traceback
root = os.environ["LAMBDA_TASK_ROOT"]
sys.path.insert(0, root)
os.chdir(root)
rfd, wfd = int(sys.argv[1]), int(sys.argv[2])
def read(n):
    data = b""
    while len(data) < n:
        part = os.read(rfd, n - len(data))
        if not part:
            sys.exit(0)
        data += part
    return data
def send(obj):
    data = json.dumps(obj).encode()
    os.write(wfd, struct.pack("<I", len(data)) + data)
class Context:
    function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
    function_version = os.environ["AWS_LAMBDA_FUNCTION_VERSION"]
    memory_limit_in_mb = int(os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"])
    log_group_name = os.environ["AWS_LAMBDA_LOG_GROUP_NAME"]
    log_stream_name = os.environ["AWS_LAMBDA_LOG_STREAM_NAME"]
    def __init__(self, request_id, deadline, arn):
        self.aws_request_id, self._deadline, self.invoked_function_arn = request_id, deadline, arn
    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.time()) * 1000))
def error(exc):
    return {"errorMessage": str(exc), "errorType": type(exc).__name__,
            "stackTrace": traceback.format_tb(exc.__traceback__)}
try:
    module, _, name = os.environ["_HANDLER"].rpartition(".")
    handler = getattr(importlib.import_module(module), name)
except Exception as exc:
    send({"init_error": error(exc)})
    sys.exit(1)
send({"ready": os.getpid()})
while True:
    (n,) = struct.unpack("<I", read(4))
    msg = json.loads(read(n))
    ctx = Context(msg["request_id"], msg["deadline"], msg["arn"])
    try:
        out = {"result": handler(msg["event"], ctx)}
        json.dumps(out)
    except Exception as exc:
        out = {"error": error(exc)}
    sys.stdout.flush(); sys.stderr.flush()
    send(out)
"""


class FunctionDied(Exception):
    """The container exited or was stopped during an invocation."""


class Container:
    """One execution environment: a warm worker process running the package's handler."""

    def __init__(self, fn: Function):
        self.fn = fn
        self.stream = f"{time.strftime('%Y/%m/%d')}/[$LATEST]{uuid.uuid4().hex}"
        env = {**fn.base_env, "AWS_LAMBDA_LOG_STREAM_NAME": self.stream}
        to_child_r, self._w = os.pipe()
        self._r, from_child_w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _BOOTSTRAP, str(to_child_r), str(from_child_w)],
            pass_fds=(to_child_r, from_child_w), env=env, cwd=fn.root, stdin=subprocess.DEVNULL,
            stdout=fn.log, stderr=fn.log, start_new_session=True)
        os.close(to_child_r)
        os.close(from_child_w)
        with fn.idle_lock:
            fn.containers.add(self)
        first = self._recv(fn.init_timeout)
        if "init_error" in first:
            self.kill()
            raise FunctionDied(f"Runtime.ImportModuleError: {first['init_error']['errorMessage']}")

    def _recv(self, timeout: float) -> dict[str, Any]:
        end = time.monotonic() + timeout
        data = b""
        need = 4
        length_known = False
        while len(data) < need:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                self.kill()
                raise TimeoutError
            part = os.read(self._r, need - len(data))
            if not part:
                self.kill()
                raise FunctionDied(f"Runtime.ExitError: process exited with status {self.proc.wait()}")
            data += part
            if not length_known and len(data) == 4:
                need, data, length_known = struct.unpack("<I", data)[0], b"", True
        return json.loads(data)

    def run(self, event: Any, request_id: str) -> dict[str, Any]:
        """Run one invocation; raise :class:`FunctionDied` or :class:`TimeoutError`."""
        msg = json.dumps({"event": event, "request_id": request_id, "arn": self.fn.arn,
                          "deadline": time.time() + self.fn.timeout}).encode()
        try:
            os.write(self._w, struct.pack("<I", len(msg)) + msg)
        except OSError:
            self.kill()
            raise FunctionDied("Runtime.ExitError: the process had exited") from None
        return self._recv(self.fn.timeout)

    def kill(self) -> None:
        """Stop the process and close its pipes."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        with self.fn.idle_lock:
            self.fn.containers.discard(self)
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._r = self._w = -1


class Function:
    """A function: its unzipped package, settings, containers and async event queue."""

    def __init__(self, name: str, package: str, concurrency: int = 4, timeout: float = 300,
                 memory: int = 2048, region: str = "us-east-1", handler: str = "worker.handler.handler",
                 max_event_age: float = 21600, log_dir: str | None = None):
        self.name, self.timeout, self.concurrency = name, timeout, concurrency
        self.max_event_age, self.init_timeout = max_event_age, 60.0
        self.root = tempfile.mkdtemp(prefix=f"lambda-{name}-")
        if os.path.isdir(package):
            shutil.copytree(package, self.root, dirs_exist_ok=True)
        else:
            with zipfile.ZipFile(package) as z:
                z.extractall(self.root)
        self.arn = f"arn:aws:lambda:{region}:000000000000:function:{name}"
        self.log = open(os.path.join(log_dir or self.root, f"{name}.log"), "ab")
        self.base_env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "en_US.UTF-8", "TZ": ":UTC",
            "LAMBDA_TASK_ROOT": self.root, "LAMBDA_RUNTIME_DIR": os.path.dirname(sys.executable),
            "_HANDLER": handler, "AWS_EXECUTION_ENV": f"AWS_Lambda_python{sys.version_info[0]}.{sys.version_info[1]}",
            "AWS_LAMBDA_FUNCTION_NAME": name, "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory), "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
            "AWS_REGION": region, "AWS_DEFAULT_REGION": region, "PYTHONUNBUFFERED": "1",
            **{k: v for k, v in os.environ.items() if k in (
                "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")},
        }
        self.slots = threading.BoundedSemaphore(concurrency)
        self.idle: list[Container] = []
        self.containers: set[Container] = set()
        self.idle_lock = threading.Lock()
        self.events: queue.Queue = queue.Queue()
        for i in range(concurrency):
            threading.Thread(target=self._async_loop, name=f"emulator-{name}-{i}", daemon=True).start()

    def _run(self, event: Any, request_id: str) -> dict[str, Any]:
        """Run on an idle container or a new one (a slot is held); keep it warm unless it died."""
        with self.idle_lock:
            container = self.idle.pop() if self.idle else None
        if container is None:
            container = Container(self)
        try:
            out = container.run(event, request_id)
        except TimeoutError:
            raise TimeoutError(f"Task timed out after {self.timeout:.2f} seconds") from None
        with self.idle_lock:
            self.idle.append(container)
        return out

    def _async_loop(self) -> None:
        while True:
            item = self.events.get()
            if item is None:
                return
            event, request_id, queued = item
            with self.slots:
                if time.monotonic() - queued > self.max_event_age:
                    STATS["expired"] += 1
                    continue
                try:
                    out = self._run(event, request_id)
                    STATS["error" if "error" in out else "completed"] += 1
                except (FunctionDied, TimeoutError) as err:  # MaximumRetryAttempts=0: dropped
                    STATS["died"] += 1
                    self.log.write(f"async invocation {request_id} failed: {err}\n".encode())
                    self.log.flush()

    def stop(self) -> None:
        """Kill every container and delete the unzipped package."""
        for _ in range(self.concurrency):
            self.events.put(None)
        with self.idle_lock:
            every = list(self.containers)
            self.idle.clear()
        for c in every:
            c.kill()
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)


STATS: collections.Counter = collections.Counter()


class Emulator:
    """The endpoint: ``functions`` by name, served on ``host:port`` (0: a free port).

    >>> emu = Emulator({"lambdaexec-worker": "build/lambdaexec-worker.zip"})  # doctest: +SKIP
    >>> emu.url  # doctest: +SKIP
    'http://127.0.0.1:40123'
    """

    def __init__(self, packages: dict[str, str], host: str = "127.0.0.1", port: int = 0,
                 throttle_rate: float = 0.0, drop_events: int = 0, seed: int | None = None, **settings: Any):
        self.functions = {name: Function(name, path, **settings) for name, path in packages.items()}
        self.throttle_rate, self.drop_events = throttle_rate, drop_events
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        emulator = self

        class Handler(_Handler):
            emu = emulator

        self.server = http.server.ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 1024
        self.url = f"http://{host}:{self.server.server_address[1]}"

    def serve_forever(self) -> None:
        """Answer requests until :meth:`stop`."""
        self.server.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        """Stop serving and kill every container."""
        self.server.shutdown()
        self.server.server_close()
        for fn in self.functions.values():
            fn.stop()


def _function_name(raw: str) -> str:
    name = urllib.parse.unquote(raw)
    if name.startswith("arn:"):
        name = name.split(":function:", 1)[-1]
    return name.split(":")[0]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    emu: Emulator

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _reply(self, status: int, body: Any = b"", headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", self.request_id)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, kind: str, message: str, **extra: Any) -> None:
        self._reply(status, {"Type": "User", "message": message, **extra}, {"x-amzn-ErrorType": kind})

    def do_GET(self) -> None:  # noqa: N802
        self.request_id = str(uuid.uuid4())
        if self.path == "/_emulator/stats":
            return self._reply(200, dict(STATS))
        self._error(404, "UnknownOperationException", f"unknown operation GET {self.path}")

    def do_POST(self) -> None:  # noqa: N802
        self.request_id = str(uuid.uuid4())
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        parts = urllib.parse.urlsplit(self.path).path.split("/")
        if len(parts) != 5 or parts[1] != "2015-03-31" or parts[2] != "functions" or parts[4] != "invocations":
            return self._error(404, "UnknownOperationException", f"unknown operation POST {self.path}")
        emu = self.emu
        fn = emu.functions.get(_function_name(parts[3]))
        if fn is None:
            return self._error(404, "ResourceNotFoundException",
                               f"Function not found: arn:aws:lambda:us-east-1:000000000000:function:{parts[3]}")
        kind = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        if kind not in ("Event", "RequestResponse", "DryRun"):
            return self._error(400, "InvalidParameterValueException", f"unknown InvocationType {kind!r}")
        limit = ASYNC_LIMIT if kind == "Event" else SYNC_LIMIT
        if len(body) > limit:
            return self._error(413, "RequestTooLargeException",
                               f"{len(body)} byte payload is too large for the {kind} invocation type "
                               f"(limit {limit} bytes)")
        try:
            event = json.loads(body or b"{}")
        except ValueError:
            return self._error(400, "InvalidRequestContentException", "Could not parse request body into json")
        if kind == "DryRun":
            return self._reply(204)
        with emu.lock:
            throttled = emu.throttle_rate and emu.random.random() < emu.throttle_rate
        if throttled:
            STATS["throttled"] += 1
            return self._throttle()
        if kind == "Event":
            with emu.lock:
                drop = emu.drop_events > 0
                emu.drop_events -= drop
            STATS["dropped" if drop else "accepted"] += 1
            if not drop:
                fn.events.put((event, self.request_id, time.monotonic()))
            return self._reply(202)
        if not fn.slots.acquire(blocking=False):
            STATS["throttled"] += 1
            return self._throttle("ReservedFunctionConcurrentInvocationLimitExceeded")
        try:
            STATS["sync"] += 1
            try:
                out = fn._run(event, self.request_id)
            except (FunctionDied, TimeoutError) as err:
                kind_name = "Sandbox.Timedout" if isinstance(err, TimeoutError) else "Runtime.ExitError"
                out = {"error": {"errorMessage": str(err), "errorType": kind_name}}
        finally:
            fn.slots.release()
        headers = {"X-Amz-Executed-Version": "$LATEST"}
        if "error" in out:
            headers["X-Amz-Function-Error"] = "Unhandled"
            return self._reply(200, out["error"], headers)
        return self._reply(200, out["result"], headers)

    def _throttle(self, reason: str = "CallerRateLimitExceeded") -> None:
        self._reply(429, {"Type": "User", "message": "Rate Exceeded.", "Reason": reason},
                    {"x-amzn-ErrorType": "TooManyRequestsException", "Retry-After": "0"})


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``lambdaexec emulate``."""
    p.add_argument("--package", required=True, help="deployment package: a zip or an unzipped directory "
                   "(`lambdaexec deploy --package-only PATH` builds it)")
    p.add_argument("--function-name", default=None, help="function name (default: the function_name setting)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9001, help="port (0: any free port; default 9001)")
    p.add_argument("--concurrency", type=int, default=os.cpu_count() or 4, help="containers (default: cores)")
    p.add_argument("--timeout", type=float, default=None, help="function timeout, s (default: the timeout setting)")
    p.add_argument("--memory", type=int, default=None, help="reported memory size, MB")
    p.add_argument("--region", default=None)
    p.add_argument("--max-event-age", type=float, default=21600, help="async events older than this are dropped")
    p.add_argument("--throttle-rate", type=float, default=0.0, help="share of invocations answered 429 (testing)")
    p.add_argument("--drop-events", type=int, default=0, help="drop the first N async events (testing)")
    p.add_argument("--seed", type=int, default=None, help="seed of the throttling dice")


def run(args: argparse.Namespace) -> int:
    """``lambdaexec emulate``: serve until interrupted; print the URL first."""
    from lambdaexec.config import load_config

    cfg = load_config()
    name = args.function_name or cfg.function_name
    emu = Emulator({name: args.package}, host=args.host, port=args.port, throttle_rate=args.throttle_rate,
                   drop_events=args.drop_events, seed=args.seed, concurrency=args.concurrency,
                   timeout=args.timeout or min(cfg.timeout, 900), memory=args.memory or cfg.memory,
                   region=args.region or cfg.region or "us-east-1", max_event_age=args.max_event_age)
    print(f"lambda emulator for function {name!r} listening on {emu.url}", flush=True)
    signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=emu.server.shutdown).start())
    try:
        emu.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        emu.server.server_close()
        for fn in emu.functions.values():
            fn.stop()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m lambdaexec.lambda_emulator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
