"""A local endpoint implementing the AWS Lambda Invoke REST API, for tests and offline work.

It runs a deployment package (the zip ``lambdaexec deploy`` uploads, unzipped) as Lambda does:
a pool of warm execution environments per function, at most ``concurrency`` of them, each
``python -m awslambdaric worker.handler.handler`` (AWS's runtime interface client) served by
its own Lambda Runtime API, with Lambda's environment variables (``AWS_LAMBDA_FUNCTION_NAME``,
``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``, ``AWS_REGION``, ``AWS_LAMBDA_LOG_STREAM_NAME``,
``LAMBDA_TASK_ROOT``, ... and the AWS credential variables the emulator itself was given, as a
Lambda role's are), its memory size, timeout and a bound on file sizes enforced
(:mod:`lambdaexec.aws.runtime_api`). Every failed invocation is printed to stderr, as Lambda
writes it to the function's log.

``POST /2015-03-31/functions/<name>/invocations`` answers as AWS documents it:

- ``X-Amz-Invocation-Type: Event``: 202, the event queued and run when a container is free;
  like an async invocation with ``MaximumRetryAttempts=0`` it is dropped, not retried, if its
  container dies or times out, or if it waited longer than ``max_event_age``;
- ``RequestResponse`` (the default): 200 with the handler's JSON result, or with
  ``X-Amz-Function-Error: Unhandled`` and an ``errorMessage``/``errorType`` document
  (``Sandbox.Timedout``, ``Runtime.OutOfMemory``, ``Runtime.ExitError`` when the environment
  died); with ``X-Amz-Log-Type: Tail`` the last 4 KB of its log in ``X-Amz-Log-Result``;
  429 ``TooManyRequestsException`` when every container is busy;
- ``DryRun``: 204;
- 413 ``RequestTooLargeException`` over 256 KB (Event) or 6 MB (RequestResponse),
  400 ``InvalidRequestContentException`` for a payload that is not JSON,
  404 ``ResourceNotFoundException`` for an unknown function.

For tests, ``throttle_rate`` answers that share of invocations with 429 at random,
``drop_events`` silently drops the first N async events (as if they had aged out of Lambda's
queue), and ``GET /_emulator/stats`` returns counters. Not emulated: signature checks and IAM,
the control plane (CreateFunction etc.), layers (the host's site-packages stand in for them
and for the runtime's boto3), a read-only file system outside ``/tmp``, CPU shares.

Run it::

    lambdaexec emulate --package build/lambdaexec-worker.zip --port 9001
    LAMBDAEXEC_BACKEND=lambda LAMBDAEXEC_LAMBDA_ENDPOINT_URL=http://127.0.0.1:9001 python my_job.py
"""

from __future__ import annotations

import argparse
import base64
import http.server
import json
import os
import random
import signal
import sys
import threading
import time
import urllib.parse
import uuid
from typing import Any

from lambdaexec.aws.runtime_api import STATS, Function

ASYNC_LIMIT = 256 * 1024
SYNC_LIMIT = 6 * 1024 * 1024


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
            json.loads(body or b"{}")
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
                fn.events.put((body or b"{}", self.request_id, time.monotonic()))
            return self._reply(202)
        if not fn.slots.acquire(blocking=False):
            STATS["throttled"] += 1
            return self._throttle("ReservedFunctionConcurrentInvocationLimitExceeded")
        try:
            STATS["sync"] += 1
            kind, out, tail = fn.invoke(body or b"{}", self.request_id)
        finally:
            fn.slots.release()
        headers = {"X-Amz-Executed-Version": "$LATEST"}
        if self.headers.get("X-Amz-Log-Type") == "Tail":
            headers["X-Amz-Log-Result"] = base64.b64encode(tail).decode()
        if kind == "error":
            headers["X-Amz-Function-Error"] = "Unhandled"
        return self._reply(200, out, headers)

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
    p.add_argument("--memory", type=int, default=None,
                   help="memory size, MB: an environment using more is killed (default: the memory setting)")
    p.add_argument("--ephemeral-storage", type=int, default=None,
                   help="largest file an environment may write, MB (default: the ephemeral_storage setting)")
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
                   ephemeral_storage=args.ephemeral_storage or cfg.ephemeral_storage,
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
    parser = argparse.ArgumentParser(prog="python -m lambdaexec.aws.emulator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
