"""PyWren's own tests (pywren/pywren tests/test_simple.py, test_pickle.py, test_modules.py),
their bodies run with ``import lambdaexec as pywren``, plus the PyWren names lambdaexec adds:
``wait`` and its constants, ``call_async``, ``succeeded``/``errored``, ``get_logs`` and futures
that pickle as handles on their call.

Adapted where PyWren differs on purpose: its ``executor.map`` returned futures, ours is
``concurrent.futures``' (results), so the bodies call ``map_futures``; ``pywren.wren.X`` is
``pywren.X``; sleeps of ``x`` seconds are ``x / 10``. Left out: tests of PyWren internals
(runtime caching and sharding, conda paths, ``reduce``, ``dummy_executor``, version config,
``exclude_modules``). ``extmodule_otherencode`` (a Latin-1 source file) is written at test time.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest

import lambdaexec as pywren

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "pywren_modules"))
import extmodule  # noqa: E402
import extmoduleutf8  # noqa: E402

_LATIN1 = '# -*- coding: latin-1 -*-\nNAME = "caf\xe9"\n\n\ndef foo_add(x):\n    return x + 1\n'


@pytest.fixture(scope="module")
def extmodule_otherencode(tmp_path_factory):
    """A module in the user's own files saved in Latin-1 (PyWren's extmodule_otherencode.py)."""
    folder = tmp_path_factory.mktemp("otherencode")
    (folder / "extmodule_otherencode.py").write_bytes(_LATIN1.encode("latin-1"))
    sys.path.insert(0, str(folder))
    import extmodule_otherencode

    return extmodule_otherencode


@pytest.fixture(scope="module")
def wrenexec():
    ex = pywren.default_executor(max_workers=4)
    yield ex
    ex.shutdown(wait=False, cancel_futures=True)


# --- test_simple.py ----------------------------------------------------------------------------
def test_simple(wrenexec):
    def sum_list(x):
        return np.sum(x)

    x = np.arange(10)
    fut = wrenexec.call_async(sum_list, x)
    assert fut.result() == np.sum(x)


def test_exception(wrenexec):
    def throwexcept(x):
        raise Exception("Throw me out!")

    fut = wrenexec.call_async(throwexcept, None)
    with pytest.raises(Exception) as execinfo:
        fut.result()
    assert "Throw me out!" in str(execinfo.value)


def test_exception2(wrenexec):
    def throw_exception(x):
        return 1 / 0

    fut = wrenexec.call_async(throw_exception, None)
    try:
        throw_exception(1)
    except Exception:
        exc_type_true, exc_value_true, _ = sys.exc_info()
    try:
        fut.result()
    except Exception:
        exc_type_wren, exc_value_wren, _ = sys.exc_info()
    assert exc_type_wren == exc_type_true
    assert type(exc_value_wren) is type(exc_value_true)


def test_empty_map(wrenexec):
    futures = wrenexec.map_futures(lambda x: x, [])
    np.testing.assert_array_equal(np.array([f.result() for f in futures]), [])
    assert pywren.wait(futures) == ([], [])


def plus_one(x):
    return x + 1


def test_map_and_doublewait(wrenexec):
    x = np.arange(10)
    futures = wrenexec.map_futures(plus_one, x)
    result_count = 0
    while result_count < 10:
        fs_dones, fs_notdones = pywren.wait(futures)
        result_count = len(fs_dones)
    pywren.wait(futures)
    np.testing.assert_array_equal(np.array([f.result() for f in futures]), x + 1)


def test_get_all_results(wrenexec):
    x = np.arange(10)
    np.testing.assert_array_equal(np.array(pywren.get_all_results(wrenexec.map_futures(plus_one, x))), x + 1)


def test_serialize_futures(wrenexec):
    x = np.arange(10)
    futures_original = wrenexec.map_futures(plus_one, x)
    futures = pickle.loads(pickle.dumps(futures_original))
    result_count = 0
    while result_count < 10:
        fs_dones, fs_notdones = pywren.wait(futures, timeout=60)
        result_count = len(fs_dones)
    np.testing.assert_array_equal(np.array([f.result() for f in futures]), x + 1)


def wait_x_sec_and_plus_one(x):
    time.sleep(x / 10)
    return x + 1


def test_wait_all_complete(wrenexec):
    x = np.arange(10)
    futures = wrenexec.map_futures(wait_x_sec_and_plus_one, x)
    fs_dones, fs_notdones = pywren.wait(futures, return_when=pywren.ALL_COMPLETED)
    np.testing.assert_array_equal(np.array([f.result() for f in fs_dones]), x + 1)
    assert fs_notdones == []


def test_wait_any_complete(wrenexec):
    x = np.arange(10)
    futures = wrenexec.map_futures(wait_x_sec_and_plus_one, x)
    fs_notdones = futures
    rounds = 0
    while len(fs_notdones) > 0:
        fs_dones, fs_notdones = pywren.wait(fs_notdones, return_when=pywren.ANY_COMPLETED, WAIT_DUR_SEC=1)
        assert len(fs_dones) > 0
        rounds += 1
    assert rounds > 1  # calls of 0 to 0.9 s do not all end at once
    np.testing.assert_array_equal(np.array([f.result() for f in futures]), x + 1)


# --- test_pickle.py ----------------------------------------------------------------------------
class _PickleFails:
    """PyWren's CantPickle objects: pickling fails at dump or at load, as asked."""

    def __getstate__(self):
        if self.dump_fail:
            raise Exception("cannot pickle dump this object")
        return {"foo": self.foo, "dump_fail": self.dump_fail, "load_fail": self.load_fail}

    def __setstate__(self, arg):
        if arg["load_fail"]:
            raise Exception("cannot pickle load this object")
        self.__dict__.update(arg)


class CantPickle(_PickleFails):
    def __init__(self, foo, dump_fail=False, load_fail=False):
        self.foo, self.dump_fail, self.load_fail = foo, dump_fail, load_fail


class CantPickleException(_PickleFails, Exception):
    def __init__(self, foo, dump_fail=False, load_fail=False, skip_super=False):
        if not skip_super:
            super(Exception, self).__init__(str(foo))
        self.foo, self.dump_fail, self.load_fail = foo, dump_fail, load_fail


def test_subprocess_fail(wrenexec):
    def uname(x):
        return subprocess.check_output("fakecommand", shell=True, stderr=subprocess.DEVNULL)

    with pytest.raises(Exception) as execinfo:
        wrenexec.call_async(uname, None).result()
    assert "Command 'fakecommand' returned" in str(execinfo.value)


@pytest.mark.parametrize("how", ["dump_fail", "load_fail"])
def test_unpickleable_return(wrenexec, how):
    def f(x):
        return CantPickle(x, **{how: True})

    with pytest.raises(Exception) as execinfo:
        wrenexec.call_async(f, None).result()
    assert f"cannot pickle {how.split('_')[0]} this object" in str(execinfo.value)


def test_unpickleable_raise_except(wrenexec):
    def dump_fail(x):
        raise CantPickleException(x, dump_fail=True)

    def load_fail(x):
        raise CantPickleException(x, load_fail=True)

    def nosuper(x):
        raise CantPickleException(x, skip_super=True)

    with pytest.raises(CantPickleException):
        wrenexec.call_async(dump_fail, None).result()
    with pytest.raises(Exception, match="cannot pickle load this object"):  # noqa: B017
        wrenexec.call_async(load_fail, None).result()
    with pytest.raises(CantPickleException):
        wrenexec.call_async(nosuper, "Fun exception").result()


# --- test_modules.py ---------------------------------------------------------------------------
def test_modules(wrenexec, extmodule_otherencode):
    assert wrenexec.call_async(lambda x: extmodule.foo_add(x), 1.0).result() == 2.0
    assert wrenexec.call_async(lambda x: extmoduleutf8.foo_add(x), 1.0).result() == 2.0
    assert wrenexec.call_async(lambda x: extmoduleutf8.unicode_str(x), 1.0).result() == extmoduleutf8.TEST_STR
    assert wrenexec.call_async(lambda x: extmodule_otherencode.foo_add(x), 1.0).result() == 2.0


def test_modules_interactive(tmp_path):
    """PyWren's InteractiveTest: a module function mapped from ``python -c``."""
    code = ("import lambdaexec as pywren, extmodule; pwex = pywren.default_executor(); "
            "results = pwex.map_futures(extmodule.foo_add, [0]); print(results[0].result(timeout=60))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [os.path.join(os.path.dirname(__file__), "pywren_modules"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert out.stdout.decode().strip() == "1"


# --- the names lambdaexec adds for PyWren users ------------------------------------------------
def test_succeeded_errored_and_always(wrenexec):
    slow = wrenexec.call_async(time.sleep, 1.5)
    bad = wrenexec.call_async(int, "x")
    fs_dones, fs_notdones = pywren.wait([slow, bad], return_when=pywren.ALWAYS)
    assert slow in fs_notdones and not slow.succeeded() and not slow.errored()
    pywren.wait([slow, bad])
    assert slow.succeeded() and not slow.errored()
    assert bad.errored() and not bad.succeeded()
    with pytest.raises(ValueError, match="return_when"):
        pywren.wait([slow], return_when="SOMETIMES")


def chatty(x):
    print(f"working on {x}")
    print("a warning", file=sys.stderr)
    if x < 0:
        raise ValueError(x)
    return x


def test_get_logs(wrenexec):
    assert pywren.get_logs(wrenexec.call_async(chatty, 3)) == "working on 3\na warning\n"
    assert "working on -1" in pywren.get_logs(wrenexec.call_async(chatty, -1))
    with pytest.raises(TypeError, match="lambdaexec returned"):
        pywren.get_logs(object())


_CHILD = """
import pickle, sys
futures = pickle.load(sys.stdin.buffer)
print([f.result(timeout=120) for f in futures], futures[-1].stdout.strip(), flush=True)
"""


def test_pickled_future_resolves_in_a_child_process(storage_settings):
    """An unfinished future, pickled and sent to another process, resolves there from storage,
    even though this process collects (and would otherwise delete) the result first."""
    with pywren.LambdaExecutor(max_workers=2, **storage_settings) as ex:
        futures = ex.map_futures(wait_x_sec_and_plus_one, [10, 5]) + [ex.call_async(chatty, 7)]
        blob = pickle.dumps(futures)
        assert not futures[0].done()
        assert [f.result(timeout=60) for f in futures] == [11, 6, 7]
        child = subprocess.run([sys.executable, "-c", _CHILD], input=blob, capture_output=True, timeout=180)
    assert child.returncode == 0, child.stderr.decode()[-3000:]
    assert child.stdout.decode().strip() == "[11, 6, 7] working on 7"
    done = pickle.loads(pickle.dumps(futures[0]))  # finished: carries its value, needs no storage
    assert done.result() == 11 and done.succeeded()
