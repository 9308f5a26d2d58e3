"""What a new user meets in the first hour (issue 26): ``--version``, settings checked at
construction, errors that name the setting and the fix, a dead Lambda endpoint, PyWren's API in
``lambdaexec.pywren``, and the jobs table. Real servers (SeaweedFS, the local pool), run as a
user would, in subprocesses where the user would use a shell."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from servers import free_port

import lambdaexec
from lambdaexec import LambdaExecutor


def cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lambdaexec.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


# --- item 6: one version --------------------------------------------------------------------------
def test_version_is_one_and_the_same_everywhere():
    from importlib import metadata

    out = cli("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"lambdaexec {lambdaexec.__version__}"
    assert metadata.version("lambdaexec") == lambdaexec.__version__  # setup.cfg reads __init__.py's


# --- item 5: keyword settings checked as the environment's ---------------------------------------
@pytest.mark.parametrize("settings, named", [
    ({"max_workers": "four"}, "max_workers"),
    ({"timeout": "slow"}, "timeout"),
    ({"memory": "lots"}, "memory"),
    ({"retries": -1}, "retries"),
    ({"max_tasks_per_child": "x"}, "max_tasks_per_child"),
    ({"max_workers": 0}, "max_workers"),
])
def test_bad_keyword_settings_are_config_errors_naming_the_key(settings, named, tmp_path):
    with pytest.raises(lambdaexec.ConfigError, match=named):
        LambdaExecutor(storage_path=str(tmp_path), **settings)


def test_the_same_setting_from_the_environment_says_the_same(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "import lambdaexec; lambdaexec.LambdaExecutor()"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "LAMBDAEXEC_MAX_WORKERS": "four"})
    assert "ConfigError" in proc.stderr and "max_workers must be int, got 'four'" in proc.stderr


@pytest.mark.parametrize("settings, fix", [
    ({"storage": "s3", "bucket": "s3://my-bucket/prefix"}, "bucket='my-bucket' and prefix='prefix'"),
    ({"storage": "s3", "bucket": "my-bucket/runs"}, "bucket='my-bucket' and prefix='runs'"),
    ({"storage": "redis", "redis_url": "http://127.0.0.1:6379"}, "redis://"),
    ({"storage": "s3", "bucket": "b-1", "endpoint_url": "127.0.0.1:8333"}, "http://127.0.0.1:8333"),
])
def test_bucket_and_url_shapes_are_checked_at_construction(settings, fix):
    with pytest.raises(lambdaexec.ConfigError) as info:
        LambdaExecutor(**settings)
    assert fix in str(info.value)


def read_database_url(x):
    import os

    return os.environ["DATABASE_URL"]


def test_a_variable_the_worker_lacks_gets_a_note_naming_worker_env(tmp_path):
    with LambdaExecutor(max_workers=1, storage_path=str(tmp_path)) as ex:
        with pytest.raises(KeyError) as info:
            ex.submit(read_database_url, 1).result(timeout=60)
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "worker_env" in notes and "DATABASE_URL" in notes
    with LambdaExecutor(max_workers=1, storage_path=str(tmp_path), worker_env="DATABASE_URL=postgres://x") as ex:
        assert ex.submit(read_database_url, 1).result(timeout=60) == "postgres://x"


def grow(mb):
    return b"y" * (mb << 20)


def test_an_argument_or_result_past_memory_is_an_out_of_memory_error_naming_memory(tmp_path):
    with LambdaExecutor(max_workers=1, memory=160, storage_path=str(tmp_path), retries=0) as ex:
        with pytest.raises(lambdaexec.OutOfMemoryError, match="memory setting of 160 MB"):
            ex.submit(len, b"x" * (250 << 20)).result(timeout=120)
        with pytest.raises(lambdaexec.OutOfMemoryError, match="memory setting"):
            ex.submit(grow, 200).result(timeout=120)  # the call itself
        with pytest.raises(lambdaexec.OutOfMemoryError, match="the call's result did not fit"):
            ex.submit(grow, 100).result(timeout=120)  # its result, as it is written
        assert ex.submit(len, b"x" * 1000).result(timeout=60) == 1000  # a new worker took over


# --- item 2: a dead invoke endpoint ------------------------------------------------------------
def test_a_dead_lambda_endpoint_fails_the_calls_within_seconds_naming_it(s3_settings):
    port = free_port()  # nothing listens there
    start = time.monotonic()
    with LambdaExecutor(backend="lambda", lambda_endpoint_url=f"http://127.0.0.1:{port}", start_deadline=60,
                        retries=0, **s3_settings) as ex:
        futures = ex.map_futures(abs, [-1, -2, -3])
        done, not_done = concurrent.futures.wait(futures, timeout=30)
        assert not not_done, "the calls waited for their start deadline"
        for f in futures:
            err = f.exception()
            assert isinstance(err, lambdaexec.InvokeEndpointError) and isinstance(err, ConnectionError)
            assert f"127.0.0.1:{port}" in str(err) and "connection refused" in str(err).lower()
            assert "start_deadline" not in str(err)
    assert time.monotonic() - start < 30


# --- item 4: PyWren's API ---------------------------------------------------------------------
def plus_one(x):
    return x + 1


def read_env(name):
    import os

    return os.environ.get(name)


def test_pywrens_map_pattern_through_lambdaexec_pywren():
    import lambdaexec.pywren as pywren

    pwex = pywren.default_executor(max_workers=2)
    try:
        futures = pwex.map(plus_one, range(10))
        assert all(isinstance(f, concurrent.futures.Future) for f in futures)
        assert pywren.get_all_results(futures) == list(range(1, 11))
        done, not_done = pywren.wait(futures, return_when=pywren.ALL_COMPLETED)
        assert len(done) == 10 and not not_done
        assert pywren.wait(pwex.map(plus_one, [1]), return_when=pywren.ANY_COMPLETED).done
        assert pywren.ALWAYS and pwex.call_async(plus_one, 41).result(timeout=60) == 42
        assert pwex.map(read_env, ["PYWREN_X"], extra_env={"PYWREN_X": "y"})[0].result(timeout=60) == "y"
        assert pwex.reduce(sum, pwex.map(plus_one, range(4))).result(timeout=60) == 10
    finally:
        pwex.shutdown()
    local = pywren.local_executor(max_workers=1)
    with local:
        assert pywren.get_all_results(local.map(plus_one, [1, 2])) == [2, 3]


def test_import_lambdaexec_stays_concurrent_futures():
    ex = lambdaexec.default_executor()
    assert type(ex) is LambdaExecutor
    assert list(ex.map(plus_one, [1, 2])) == [2, 3]  # results, as concurrent.futures' map
    for name in ("ALL_COMPLETED", "ANY_COMPLETED", "ALWAYS", "wait", "get_logs", "get_all_results",
                 "default_executor"):
        assert name in lambdaexec.__all__ and getattr(lambdaexec, name) is not None
    assert lambdaexec.get_all_results(ex.map_futures(plus_one, [5])) == [6]
    with pytest.raises(TypeError, match="lambdaexec.pywren"):  # PyWren's pattern on the plain executor
        lambdaexec.get_all_results(ex.map(plus_one, [1, 2]))


# --- item 7: the jobs table -------------------------------------------------------------------
def record_env(tmp_path) -> dict:
    return {**os.environ, "LAMBDAEXEC_STORAGE": "local", "LAMBDAEXEC_STORAGE_PATH": str(tmp_path),
            "LAMBDAEXEC_PREFIX": "first", "LAMBDAEXEC_CONFIG": str(tmp_path / "none.ini")}


def jobs_rows(env) -> list[dict]:
    out = cli("jobs", env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header = lines[0].split()
    rows = []
    for line in lines[1:]:
        if not line.startswith("20"):
            continue
        cols = line.split()
        # JOB, CREATED (two words), FUNCTION, STATE, CALLS, DONE, FAILED, QUEUED, RUNNING, SECONDS, COST
        rows.append(dict(zip(["JOB", "DATE", "TIME", *header[3:]], cols)))
    return rows


def a_function_with_a_rather_long_descriptive_name(x):
    return x


def test_the_jobs_table_names_the_users_function_not_a_wrapper(tmp_path):
    env = record_env(tmp_path)
    script = textwrap.dedent(f"""
        import lambdaexec, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_first_contact import a_function_with_a_rather_long_descriptive_name as f
        with lambdaexec.LambdaExecutor(max_workers=2) as ex:
            assert list(ex.map(f, range(10), chunksize=3)) == list(range(10))
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (row,) = jobs_rows(env)
    assert row["FUNCTION"] == "a_function_with_a_rather_long_descriptive_name"  # not _run_chunk, its wrapper
    assert row["STATE"] == "finished" and row["DONE"] == "4"


def test_a_long_function_name_keeps_its_right_end():
    from lambdaexec.cli import function_cell

    assert function_cell("__main__.f") == "__main__.f"
    assert function_cell("pkg.module.Klass.a_method_whose_name_is_long", 33) == "Klass.a_method_whose_name_is_long"
    assert function_cell("pkg.module.Klass.a_method_whose_name_is_long", 30) == "a_method_whose_name_is_long"
    assert function_cell("m." + "x" * 40 + "_end", 20) == "..." + ("x" * 40 + "_end")[-17:]


def test_a_killed_clients_job_is_lost_and_queued_is_told_from_running(tmp_path):
    env = record_env(tmp_path)
    script = textwrap.dedent("""
        import lambdaexec, time
        ex = lambdaexec.LambdaExecutor(max_workers=2)
        futures = ex.map_futures(time.sleep, [20] * 6)
        print("submitted", flush=True)
        time.sleep(600)
    """)
    client = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() == "submitted"
        for _ in range(40):
            rows = jobs_rows(env)
            if rows:
                break
            time.sleep(0.25)
        (row,) = rows
        assert (row["STATE"], row["CALLS"], row["QUEUED"], row["RUNNING"]) == ("running", "6", "4", "2")
    finally:
        os.kill(client.pid, signal.SIGKILL)
        client.wait()
        client.stdout.close()
    (row,) = jobs_rows(env)
    assert row["STATE"] == "lost" and row["RUNNING"] == "0" and row["QUEUED"] == "0"
    out = cli("clean", env=env)
    assert out.returncode == 0, out.stderr
    assert jobs_rows(env)[0]["STATE"] == "lost"  # still lost once clean deleted its objects


# --- item 7: the plot and the terminal ----------------------------------------------------------
def nap_or_fail(i):
    import time

    time.sleep(0.05)
    if i == 2:
        raise ValueError("call 2 fails")
    return i


def test_plot_draws_failed_calls_apart_and_no_flat_panel(tmp_path):
    from matplotlib.collections import LineCollection

    with LambdaExecutor(max_workers=2, storage_path=str(tmp_path / "s"), progress=False, retries=0) as ex:
        futures = ex.map_futures(nap_or_fail, range(5))
        concurrent.futures.wait(futures)
    fig = lambdaexec.plot_timeline(futures, str(tmp_path / "t.png"))
    top, bottom = fig.axes[:2]
    lines = {c.get_label(): c for c in top.collections if isinstance(c, LineCollection)}
    assert "running, then failed (1)" in lines and len(lines["running, then failed (1)"].get_segments()) == 1
    assert len(lines["running"].get_segments()) == 4
    assert lines["running, then failed (1)"].get_colors()[0].tolist() != lines["running"].get_colors()[0].tolist()
    assert "running, then failed (1)" in [t.get_text() for t in top.get_legend().get_texts()]
    assert max(bottom.lines[0].get_ydata()) == 2  # 5 calls on 2 workers: the panel shows them running


def test_call_output_never_shares_the_progress_bars_line(tmp_path):
    import pty

    script = textwrap.dedent(f"""
        import lambdaexec, time
        def talk(i):
            time.sleep(0.2)
            print(f"call {{i}} says hi")
            return i
        with lambdaexec.LambdaExecutor(max_workers=2, storage_path={str(tmp_path / 's')!r}, progress=True) as ex:
            assert list(ex.map(talk, range(6))) == list(range(6))
    """)
    import fcntl
    import struct
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # the child: a client on a terminal (stdout and stderr both the pty), 120 columns
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        os.execv(sys.executable, [sys.executable, "-c", script])
    out = b""
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        out += data
    os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    assert "lambdaexec:" in text and text.count("says hi") == 6, text
    for line in text.replace("\r\n", "\n").split("\n"):
        shown = line.split("\r")[-1]  # what the terminal shows of the line once it is written
        assert not ("says hi" in shown and "lambdaexec:" in shown), repr(line)


# --- item 5: deploy/teardown/doctor failures, one line each -------------------------------------
def aws_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LAMBDAEXEC_"))}
    return {**env, "LAMBDAEXEC_STORAGE": "s3", "LAMBDAEXEC_BUCKET": "first-contact", "LAMBDAEXEC_REGION": "us-east-1",
            "LAMBDAEXEC_CONFIG": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_EC2_METADATA_DISABLED": "true", **extra}


def test_doctor_tells_a_network_failure_from_missing_credentials():
    port = free_port()
    out = cli("doctor", env=aws_env(AWS_ACCESS_KEY_ID="a", AWS_SECRET_ACCESS_KEY="b",
                                    AWS_ENDPOINT_URL_STS=f"http://127.0.0.1:{port}"))
    assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr
    assert "FAIL  network: cannot reach AWS" in out.stdout and str(port) in out.stdout
    assert "aws configure" not in out.stdout
    out = cli("doctor", env=aws_env())
    assert "FAIL  credentials" in out.stdout and "aws configure" in out.stdout


def test_teardown_without_credentials_is_one_line():
    out = cli("teardown", env=aws_env())
    assert out.returncode == 1 and "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("lambdaexec teardown: no usable AWS credentials") and "aws configure" in line
