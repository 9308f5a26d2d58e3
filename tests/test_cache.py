"""The result cache (cache=True), on every storage and both backends; large arguments stored once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import lambdaexec
from lambdaexec import LambdaExecutor

np = pytest.importorskip("numpy")


def counted(path, x):
    """x squared; appends a line to ``path`` each time it really runs."""
    with open(path, "a") as f:
        f.write(f"{x}\n")
    return x * x


def counted_cube(path, x):
    with open(path, "a") as f:
        f.write(f"{x}\n")
    return x ** 3


def fails_on_three(path, x):
    with open(path, "a") as f:
        f.write(f"{x}\n")
    if x == 3:
        raise ValueError("three is bad")
    return x


def runs(path):
    try:
        with open(path) as f:
            return sorted(int(line) for line in f)
    except FileNotFoundError:
        return []


def test_rerun_runs_only_new_calls_on_every_storage(every_storage, tmp_path):
    log = str(tmp_path / "runs.log")
    with LambdaExecutor(max_workers=2, cache=True, **every_storage) as ex:
        assert list(ex.map(counted, [log] * 5, range(5))) == [0, 1, 4, 9, 16]
    assert runs(log) == [0, 1, 2, 3, 4]
    with LambdaExecutor(max_workers=2, cache=True, **every_storage) as ex:  # a later executor, same storage
        futures = ex.map_futures(counted, [log] * 7, range(7))
        assert [f.result() for f in futures] == [0, 1, 4, 9, 16, 25, 36]
        assert [bool(f.stats.get("cached")) for f in futures] == [True] * 5 + [False] * 2
        # another function, or other arguments, run
        assert ex.submit(counted_cube, log, 2).result() == 8
        assert ex.submit(counted, log, 10).result() == 100
    assert runs(log) == [0, 1, 2, 2, 3, 4, 5, 6, 10]


def test_failures_are_not_cached_and_cache_is_off_by_default(tmp_path):
    log, store = str(tmp_path / "runs.log"), str(tmp_path / "store")
    for _ in range(2):
        with LambdaExecutor(max_workers=2, cache=True, storage_path=store) as ex:
            futures = ex.map_futures(fails_on_three, [log] * 5, range(5))
            assert [f.exception() is not None for f in futures] == [False, False, False, True, False]
    assert runs(log) == [0, 1, 2, 3, 3, 4]  # the failed call ran both times, the others once
    with LambdaExecutor(max_workers=2, storage_path=store) as ex:  # no cache: everything runs
        assert ex.submit(counted, log, 1).result() == 1
        assert ex.submit(fails_on_three, log, 1).result() == 1
    assert runs(log) == [0, 1, 1, 1, 2, 3, 3, 4]


def test_cache_setting_from_environment_and_clean(tmp_path, monkeypatch):
    log, store = str(tmp_path / "runs.log"), str(tmp_path / "store")
    monkeypatch.setenv("LAMBDAEXEC_CACHE", "true")
    monkeypatch.setenv("LAMBDAEXEC_STORAGE_PATH", store)
    for _ in range(2):
        with LambdaExecutor(max_workers=1) as ex:
            assert ex.config.cache is True
            assert ex.submit(counted, log, 4).result() == 16
    assert runs(log) == [4]
    env = {**os.environ, "LAMBDAEXEC_STORAGE_PATH": store}
    out = subprocess.run([sys.executable, "-m", "lambdaexec.cli", "clean"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "cache holds 1 result(s)" in out.stdout
    out = subprocess.run([sys.executable, "-m", "lambdaexec.cli", "clean", "--cache"], env=env, capture_output=True,
                         text=True)
    assert out.returncode == 0 and "deleted the result cache: 1 result" in out.stdout, out
    with LambdaExecutor(max_workers=1) as ex:
        assert ex.submit(counted, log, 4).result() == 16
    assert runs(log) == [4, 4]


SCRIPT = """
import sys
from lambdaexec import LambdaExecutor

OFFSET = {offset}

def helper(x):
    return x + OFFSET

def work(x, log):
    with open(log, "a") as f:
        f.write(f"{{x}}\\n")
    return helper(x) * {factor}

if __name__ == "__main__":
    with LambdaExecutor(max_workers=2, cache=True, storage_path=sys.argv[2]) as ex:
        print(list(ex.map(work, range({n}), [sys.argv[1]] * {n})))
"""


def _script(tmp_path, offset=0, factor=2, n=4, comment=""):
    path = tmp_path / "job.py"
    path.write_text(comment + textwrap.dedent(SCRIPT.format(offset=offset, factor=factor, n=n)))
    return str(path)


def _run(script, log, store):
    out = subprocess.run([sys.executable, script, log, store], capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(script))
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_cache_across_processes_and_edited_code(tmp_path):
    log, store = str(tmp_path / "runs.log"), str(tmp_path / "store")
    assert _run(_script(tmp_path), log, store) == "[0, 2, 4, 6]"
    assert _run(_script(tmp_path, comment="# a comment, and two more inputs\n", n=6), log, store) == \
        "[0, 2, 4, 6, 8, 10]"
    assert runs(log) == [0, 1, 2, 3, 4, 5]  # a new process: only the two new inputs ran
    # the function edited: never served the old results
    assert _run(_script(tmp_path, factor=3), log, store) == "[0, 3, 6, 9]"
    # a helper it calls edited, or a global it reads changed: the same
    assert _run(_script(tmp_path, factor=3, offset=1), log, store) == "[3, 6, 9, 12]"
    assert runs(log) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 5]


def test_functions_pickled_by_reference_are_keyed_by_their_code():
    import json

    from lambdaexec.wire.fingerprint import fingerprint

    ns1, ns2 = {}, {}
    exec("def f(x):\n    return x + 1\n", ns1)
    exec("def f(x):\n    return x + 2\n", ns2)
    assert fingerprint(ns1["f"]) != fingerprint(ns2["f"])
    assert fingerprint(json.dumps) == fingerprint(json.dumps)
    ns3 = {}
    exec("\n\n# moved down, same code\ndef f(x):\n    return x + 1\n", ns3)
    assert fingerprint(ns1["f"]) == fingerprint(ns3["f"])


def test_joblib_gets_the_cache(tmp_path):
    joblib = pytest.importorskip("joblib")
    import lambdaexec_joblib  # noqa: F401  (registers the "lambda" backend)

    log, store = str(tmp_path / "runs.log"), str(tmp_path / "store")
    for _ in range(2):
        with joblib.parallel_backend("lambda", cache=True, storage_path=store, max_workers=2):
            out = joblib.Parallel()(joblib.delayed(counted)(log, i) for i in range(6))
        assert out == [i * i for i in range(6)]
    assert runs(log) == list(range(6))


def test_cache_on_the_lambda_backend(tmp_path, seaweed):
    from lambda_helpers import EmulatorProcess

    from lambdaexec.aws.package import build_package

    package = str(tmp_path / "worker.zip")
    build_package(package)
    emu = EmulatorProcess(package, concurrency=2, timeout=30)
    try:
        settings = {"backend": "lambda", "lambda_endpoint_url": emu.url, "timeout": 30, "start_deadline": 20,
                    **seaweed.settings()}
        with LambdaExecutor(max_workers=2, cache=True, **settings) as ex:
            assert list(ex.map(abs, range(-3, 0))) == [3, 2, 1]
        with LambdaExecutor(max_workers=2, cache=True, **settings) as ex:
            futures = ex.map_futures(abs, range(-4, 0))
            assert [f.result() for f in futures] == [4, 3, 2, 1]
            assert [bool(f.stats.get("cached")) for f in futures] == [False, True, True, True]
            assert futures[0].stats["memory"] == 1024  # the emulator's function memory
    finally:
        emu.stop()


# --- large arguments stored once ------------------------------------------------------------
def total(a, i):
    return float(a[i])


def test_one_large_array_passed_to_40_calls_is_stored_once(tmp_path):
    store = tmp_path / "store"
    a = np.arange(50 * 2**20 // 8, dtype=np.float64)  # 50 MB
    with LambdaExecutor(max_workers=2, storage_path=str(store), keep_data=True) as ex:
        futures = ex.map_futures(total, [a] * 40, range(40))
        assert [f.result() for f in futures] == [float(i) for i in range(40)]
        assert sum(f.stats["args_saved"] for f in futures) == 39 * a.nbytes
        assert futures[0].stats["large_argument_size"] == ex.config.large_argument_size
        later = ex.submit(total, a, 7)  # another job of the executor shares it too
        assert later.result() == 7.0 and later.stats["args_saved"] == a.nbytes
        prefix = ex.prefix
    stored = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(store / prefix) for f in fs)
    assert a.nbytes <= stored < 1.2 * a.nbytes


def scale(a, k):
    a *= k  # in place: each call has its own copy
    return float(a.sum())


def test_large_arguments_on_every_storage_and_in_place_changes_stay_in_their_call(every_storage):
    a = np.ones(2 * 2**20 // 8)
    with LambdaExecutor(max_workers=1, **every_storage) as ex:
        assert list(ex.map(scale, [a] * 4, [1, 2, 3, 4])) == [a.size * k for k in (1, 2, 3, 4)]


# --- peak memory and cost ---------------------------------------------------------------------
def allocate(mb):
    block = bytearray(mb * 2**20)
    block[:: 4096] = b"\1" * len(block[:: 4096])  # touch every page
    return len(block)


def test_peak_memory_is_per_call_and_cost_uses_the_memory_calls_ran_with(tmp_path):
    with LambdaExecutor(max_workers=1, memory=1024, storage_path=str(tmp_path / "s")) as ex:
        big = ex.submit(allocate, 300)
        big.result()
        small = ex.submit(allocate, 1)  # the same warm worker, after the big call
        small.result()
        assert big.stats["worker"] == small.stats["worker"]
    assert big.stats["peak_memory"] > 300 * 2**20
    assert small.stats["peak_memory"] < big.stats["peak_memory"] - 250 * 2**20
    assert big.stats["memory"] == small.stats["memory"] == 1024
    report = lambdaexec.cost([big, small])
    assert report.memory_mb == 1024
    assert report.gb_seconds == pytest.approx(report.billed_seconds * 1024 / 1024)
    assert report.peak_memory == big.stats["peak_memory"]
    assert "peak memory" in str(report)
    whatif = lambdaexec.cost([big, small], memory=2048)
    assert whatif.dollars["compute"] == pytest.approx(2 * report.dollars["compute"])


def test_cost_report_says_when_memory_could_be_lowered_or_was_hit():
    from lambdaexec.observe.cost import memory_advice

    assert "could be lowered" in memory_advice(100 * 2**20, 2048)
    assert "reached" in memory_advice(1000 * 2**20, 1024)
    assert memory_advice(700 * 2**20, 1024) == ""


def test_a_large_argument_is_found_in_the_cache_by_its_content(tmp_path):
    log, store = str(tmp_path / "runs.log"), str(tmp_path / "store")
    a = np.full(2 * 2**20 // 8, 3.0)
    for b in (a, a.copy()):  # another array of the same content: the same key
        with LambdaExecutor(max_workers=1, cache=True, storage_path=store) as ex:
            assert ex.submit(counted, log, b).result()[0] == 9.0
    assert len(runs_raw(log)) == 1
    with LambdaExecutor(max_workers=1, cache=True, storage_path=store) as ex:
        a[0] = 4.0  # other content: it runs
        assert ex.submit(counted, log, a).result()[0] == 16.0
    assert len(runs_raw(log)) == 2


def runs_raw(path):
    with open(path) as f:
        return [line for line in f if line.startswith("[")]
