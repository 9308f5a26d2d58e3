"""Code from the user's own files reaches workers by value; the CLI works as documented."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import cloudpickle

from lambdaexec import LambdaExecutor
from lambdaexec.wire import serialize


def test_function_from_a_user_module_travels_by_value(tmp_path, monkeypatch):
    (tmp_path / "mylab").mkdir()
    (tmp_path / "mylab" / "__init__.py").write_text("")
    (tmp_path / "mylab" / "physics.py").write_text(textwrap.dedent("""
        G = 6.674e-11

        class Body:
            def __init__(self, mass):
                self.mass = mass

        def force(a, b, r):
            return G * a.mass * b.mass / r**2
    """))
    monkeypatch.syspath_prepend(str(tmp_path))  # the client sees the files; workers do not
    from mylab import physics

    with LambdaExecutor(max_workers=1) as ex:
        got = ex.submit(physics.force, physics.Body(5.0), physics.Body(7.0), 2.0).result(timeout=30)
    assert got == physics.force(physics.Body(5.0), physics.Body(7.0), 2.0)


def test_user_code_inside_plain_containers_travels_by_value(tmp_path, monkeypatch):
    # plain pickle is used for plain values only: a function or instance of the user's files
    # nested in lists and dicts (as argument and as result) must still go by value
    (tmp_path / "mylab2.py").write_text(textwrap.dedent("""
        class Point:
            def __init__(self, x):
                self.x = x

        def double(p):
            return Point(2 * p.x)

        def apply_all(jobs):
            return [{"out": [job["fn"](job["arg"])]} for job in jobs]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))  # the client sees the file; workers do not
    import mylab2

    with LambdaExecutor(max_workers=1) as ex:
        jobs = [{"fn": mylab2.double, "arg": mylab2.Point(i)} for i in range(3)]
        got = ex.submit(mylab2.apply_all, jobs).result(timeout=30)
        plain = ex.submit(sum, [1, 2.5, 3]).result(timeout=30)
    assert [g["out"][0].x for g in got] == [0, 2, 4]
    assert plain == 6.5


def test_cli_hello(tmp_path):
    env_path = str(tmp_path / "store")
    out = subprocess.run([sys.executable, "-m", "lambdaexec.cli", "hello"], capture_output=True, text=True,
                         timeout=120, env={"PATH": "/usr/bin:/bin", "LAMBDAEXEC_STORAGE_PATH": env_path,
                                           "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "function returned: Hello world"


def test_cli_demo_reports_gflops_and_timeline(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lambdaexec.cli", "demo", "--calls", "4", "--size", "128"],
                         capture_output=True, text=True, timeout=300,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                              "LAMBDAEXEC_STORAGE_PATH": str(tmp_path / "store")})
    assert out.returncode == 0, out.stderr
    assert "4 DGEMM calls of 128x128" in out.stdout and "GFLOPS" in out.stdout
    assert "waiting to start" in out.stdout and "computing" in out.stdout
    store = tmp_path / "store"
    left = [p for p in store.rglob("*") if p.is_file() and "jobs" not in p.relative_to(store).parts]
    assert left == []  # job data deleted; the job record (lambdaexec/jobs/) stays


def test_cli_reports_config_errors_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lambdaexec.cli", "hello"], capture_output=True, text=True,
                         timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                          "LAMBDAEXEC_STORAGE": "s3"})
    assert out.returncode == 1
    assert "needs a bucket" in out.stderr and "Traceback" not in out.stderr


def test_user_modules_go_by_value_in_our_pickles_only(tmp_path, monkeypatch):
    (tmp_path / "mylab3.py").write_text("def triple(x):\n    return 3 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import mylab3

    with LambdaExecutor(max_workers=1) as ex:
        assert ex.submit(mylab3.triple, 2).result(timeout=30) == 6
    assert serialize.loads(b"".join(serialize.dumps(mylab3.triple))) is not mylab3.triple  # by value
    # other cloudpickle users in the process (joblib's loky, dask) still send it by reference,
    # so their workers import the module (and run its import-time code) as before
    assert pickle.loads(cloudpickle.dumps(mylab3.triple)) is mylab3.triple


def test_a_function_submitted_again_runs_with_its_globals_as_they_are_now(tmp_path, monkeypatch):
    (tmp_path / "mylab4.py").write_text(textwrap.dedent("""
        import math

        OFFSET = 1
        TABLE = {"k": 1}

        def helper(x):
            return x

        def add_offset(x):
            return math.floor(x + OFFSET)

        def add_table(x):
            return x + TABLE["k"]

        def via_helper(x):
            return helper(x)

        def with_default(x, y=1):
            return x + y

        class Unit:
            scale = 1

        def typed(x: Unit) -> int:
            return x
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import mylab4 as m

    pickled = []
    real = serialize.dumps_function
    monkeypatch.setattr(serialize, "dumps_function", lambda fn: pickled.append(fn) or real(fn))
    with LambdaExecutor(max_workers=1) as ex:
        def run(fn):
            return ex.submit(fn, 1).result(timeout=30)

        # a function of constants and modules, submitted again unchanged, is not pickled again
        assert [run(m.add_offset) for _ in range(3)] == [2, 2, 2] and pickled.count(m.add_offset) == 1
        m.OFFSET = 10  # ... but a global rebound is seen at the next submit
        assert run(m.add_offset) == 11
        m.TABLE["k"] = 5  # a dict changed in place, between two submits
        assert run(m.add_table) == 6 and run(m.add_table) == 6
        m.TABLE["k"] = 7
        assert run(m.add_table) == 8
        assert run(m.via_helper) == 1
        m.helper = lambda x: -x  # a function it calls, replaced
        assert run(m.via_helper) == -1
        assert run(m.with_default) == 2
        m.with_default.__defaults__ = (7,)
        assert run(m.with_default) == 8
        m.with_default.__code__ = m.add_table.__code__.replace(co_name="with_default")
        assert run(m.with_default) == 8  # x + TABLE["k"]
        # an annotation naming a class of the user's files (it goes by value, and can change in
        # place): pickled at every submit
        assert run(m.typed) == 1 and run(m.typed) == 1 and pickled.count(m.typed) == 2


def test_traceback_shows_source_of_a_file_the_worker_does_not_have(tmp_path):
    """A worker without the user's files (as on Lambda) still shows their lines in tracebacks."""
    (tmp_path / "gone.py").write_text(textwrap.dedent("""
        def helper(x):
            return 1 / x  # the line a user must see


        def entry(x):
            return helper(x)
    """))
    sys.path.insert(0, str(tmp_path))
    try:
        import gone

        blob = serialize.dumps_function(gone.entry)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("gone", None)
    (tmp_path / "gone.py").unlink()  # the worker's machine does not have it
    (tmp_path / "fn.bin").write_bytes(blob)
    script = textwrap.dedent(f"""
        import traceback
        from lambdaexec.wire import serialize
        fn = serialize.loads(open({str(tmp_path / "fn.bin")!r}, "rb").read())
        try:
            fn(0)
        except ZeroDivisionError:
            print(traceback.format_exc())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    where = str(tmp_path / "gone.py")
    assert f'File "{where}", line 7, in entry' in out.stdout
    assert f'File "{where}", line 3, in helper' in out.stdout
    assert "return 1 / x  # the line a user must see" in out.stdout
