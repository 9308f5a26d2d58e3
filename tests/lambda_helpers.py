"""Test helpers for the ``lambda`` backend: the Lambda emulator as a real server process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.request

from servers import stop_process


class EmulatorProcess:
    """``python -m lambdaexec.aws.emulator`` on 127.0.0.1 and a free port, stopped by its PID."""

    def __init__(self, package: str, *, function_name: str = "lambdaexec-worker", concurrency: int = 4,
                 timeout: float = 60, throttle_rate: float = 0.0, drop_events: int = 0,
                 max_event_age: float = 21600, memory: int = 1024, ephemeral_storage: int = 512,
                 env: dict[str, str] | None = None):
        self.log_path = tempfile.mktemp(prefix="lambda-emulator-", suffix=".log")
        self.log = open(self.log_path, "wb")
        args = [sys.executable, "-m", "lambdaexec.aws.emulator", "--package", package, "--port", "0",
                "--function-name", function_name, "--concurrency", str(concurrency), "--timeout", str(timeout),
                "--throttle-rate", str(throttle_rate), "--drop-events", str(drop_events),
                "--max-event-age", str(max_event_age), "--region", "us-east-1", "--seed", "7",
                "--memory", str(memory), "--ephemeral-storage", str(ephemeral_storage)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log,
                                     env=dict(os.environ) if env is None else env)
        line = self.proc.stdout.readline().decode()
        if "listening on " not in line:
            self.proc.kill()
            raise RuntimeError(f"the emulator did not start: {line!r}\n{open(self.log_path).read()[-3000:]}")
        self.url = line.rsplit(" ", 1)[1].strip()
        self.function_name = function_name

    def stats(self) -> dict[str, int]:
        """The emulator's counters (throttled, accepted, completed, died, dropped, ...)."""
        with urllib.request.urlopen(self.url + "/_emulator/stats", timeout=10) as r:
            return json.loads(r.read())

    def stderr(self) -> str:
        """What the emulator printed to its stderr so far (each failed invocation, for one)."""
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        stop_process(self.proc, grace=15)
        self.proc.stdout.close()
        self.log.close()
