"""Execution environments of the local Lambda emulator: a function's warm containers, each a
fresh interpreter running the deployment package's handler, with Lambda's environment variables.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from typing import Any

#: the emulator's counters (accepted, completed, error, died, throttled, dropped, expired, sync)
STATS: collections.Counter = collections.Counter()

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


