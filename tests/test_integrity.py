"""Signed objects: whoever can write to the store (a local directory, a SeaweedFS bucket, a
Redis) cannot make the workers or the client unpickle bytes of their choosing.

Each attack writes through a plain, unsigned store on the same server (what someone with write
access to the bucket has); the executor must refuse with IntegrityError naming the key, and the
attacker's value or code must never reach the user.
"""

from __future__ import annotations

import functools
import os
import pathlib
import stat
import struct
import time

import pytest

import lambdaexec
from lambdaexec import IntegrityError, LambdaExecutor
from lambdaexec.storage import open_storage
from lambdaexec.wire import protocol, serialize


def _attacker(ex: LambdaExecutor):
    """A plain store on the same server: what anyone who can write to the bucket holds."""
    return open_storage(ex.storage.spec)


def _before_collect(ex: LambdaExecutor, attack) -> None:
    """Run ``attack(result_key, first call in it)`` once a result object is stored, before the
    client reads it (so the timing of the overwrite is certain, not a race)."""
    collect = ex._monitor._collect

    def hooked(job, key, calls):
        attack(key, calls[0])
        collect(job, key, calls)

    ex._monitor._collect = hooked


def _wait_for(store, key: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while key not in store.list(key):
        assert time.monotonic() < end, f"{key} never appeared"
        time.sleep(0.02)


def _forged_result(value) -> list:
    return protocol.pack_result({"ok": True, "worker": "attacker"}, serialize.dumps(value))


def identity(x):
    return x


def slow_identity(x):
    time.sleep(0.3 * x)
    return x


def wait_for_gate(path: str):
    end = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < end:
        time.sleep(0.02)
    return "opened"


def test_a_result_overwritten_with_another_valid_result_is_refused(every_storage):
    with LambdaExecutor(max_workers=1, progress=False, **every_storage) as ex:
        attacker = _attacker(ex)
        _before_collect(ex, lambda key, c: attacker.put(key, _forged_result("attacker's value")))
        future = ex.submit(identity, 42)
        with pytest.raises(IntegrityError) as info:
            future.result(timeout=60)
        key = protocol.result_key(f"{ex.prefix}/000000", 0)
        message = str(info.value)
        assert repr(key) in message and ex.storage.describe() in message
        assert "without this executor's secret" in message and "docs/security.md" in message


def test_a_result_copied_from_another_calls_key_is_refused(every_storage):
    with LambdaExecutor(max_workers=2, progress=False, **every_storage) as ex:
        attacker = _attacker(ex)

        def copy_call_0(key, c):
            if c == 1:  # call 1's result replaced by call 0's, a valid object of this very executor
                other = key.rsplit("/", 1)[0] + "/0"
                _wait_for(attacker, other)
                attacker.put(key, attacker.get(other))

        _before_collect(ex, copy_call_0)
        first, second = ex.map_futures(slow_identity, [0, 1])
        assert first.result(timeout=60) == 0
        with pytest.raises(IntegrityError, match=r"calls/1'"):
            second.result(timeout=60)


def test_a_truncated_result_is_refused(every_storage):
    with LambdaExecutor(max_workers=1, progress=False, **every_storage) as ex:
        attacker = _attacker(ex)
        _before_collect(ex, lambda key, c: attacker.put(key, bytes(attacker.get(key))[:-7]))
        with pytest.raises(IntegrityError, match="calls/0"):
            ex.submit(identity, "x" * 1000).result(timeout=60)


def test_a_swapped_function_object_never_runs(every_storage, tmp_path):
    marker = tmp_path / "pwned"
    evil = functools.partial(pathlib.Path.touch, marker)  # touch(marker, <the call's argument>)
    # a fresh worker per call, so the second call reads the function object again
    with LambdaExecutor(max_workers=1, max_tasks_per_child=1, progress=False, **every_storage) as ex:
        attacker = _attacker(ex)
        assert ex.submit(identity, 1).result(timeout=60) == 1
        (func_key,) = attacker.list(f"{ex.prefix}/funcs/")
        attacker.put(func_key, serialize.dumps_function(evil))
        future = ex.submit(identity, 2)
        with pytest.raises(IntegrityError, match=func_key) as info:
            future.result(timeout=60)
        assert "the worker could not load the job" in str(info.value)
        assert future.attempts == 1  # failed for good, not retried
    assert not marker.exists()


def test_tampered_arguments_are_refused(every_storage, tmp_path):
    gate = tmp_path / "gate"
    with LambdaExecutor(max_workers=1, progress=False, **every_storage) as ex:
        attacker = _attacker(ex)
        busy = ex.submit(wait_for_gate, str(gate))  # holds the only worker while the args are altered
        victim = ex.submit(identity, 111111)
        args_key = f"{ex.prefix}/000001/args"
        _wait_for(attacker, args_key)
        data = bytearray(attacker.get(args_key))
        at = data.find(struct.pack("<i", 111111))
        assert at > 0
        data[at : at + 4] = struct.pack("<i", 666666)  # still a valid pickle: 666666
        attacker.put(args_key, data)
        gate.touch()
        assert busy.result(timeout=60) == "opened"
        with pytest.raises(IntegrityError, match=f"{args_key}'"):
            victim.result(timeout=60)


def count_words(item):
    if item != "fast":  # the path of a gate to wait for
        wait_for_gate(item)
        return {"b": 1}
    return {"a": 111111}


def add(key, values):
    return sum(values)


def _first_map_output(attacker, ex):
    """The key of the first mapper's shuffle output, once it is written (within 60 s)."""
    end = time.monotonic() + 60
    while not (keys := [k for k in attacker.list(f"{ex.prefix}/shuffle/") if k.endswith("/map/000000")]):
        assert time.monotonic() < end
        time.sleep(0.02)
    (key,) = keys
    return key


def test_a_tampered_shuffle_output_fails_map_reduce(every_storage, tmp_path):
    gate = tmp_path / "gate"
    # two workers, two reducers: the reducers start once both mappers are done
    with LambdaExecutor(max_workers=2, progress=False, **every_storage) as ex:
        attacker = _attacker(ex)
        out = ex.map_reduce(count_words, ["fast", str(gate)], add, reducers=2)
        key = _first_map_output(attacker, ex)
        data = bytearray(attacker.get(key))
        at = data.find(struct.pack("<i", 111111))
        data[at : at + 4] = struct.pack("<i", 999999)  # the pair ("a", 999999), a valid pickle
        attacker.put(key, data)
        gate.touch()
        with pytest.raises(IntegrityError, match=key):
            out.result(timeout=120)


def test_a_shuffle_index_pointed_at_another_partition_is_refused(every_storage, tmp_path):
    # a mapper's object has no whole-object tag (each partition's tag, in the index, binds the
    # partition's number and bounds): swapping two index entries must still be refused
    gate = tmp_path / "gate"
    with LambdaExecutor(max_workers=2, progress=False, **every_storage) as ex:
        attacker = _attacker(ex)
        out = ex.map_reduce(count_words, ["fast", str(gate)], add, reducers=2)
        key = _first_map_output(attacker, ex)
        data = bytearray(attacker.get(key))
        data[0:96] = data[48:96] + data[0:48]  # entry 0 <-> entry 1
        attacker.put(key, data)
        gate.touch()
        with pytest.raises(IntegrityError, match=key):
            out.result(timeout=120)


def test_the_secret_never_enters_storage_and_stays_private(every_storage):
    with LambdaExecutor(max_workers=1, progress=False, keep_data=True, **every_storage) as ex:
        secret = ex.storage.secret
        path = pathlib.Path(lambdaexec.storage.signed.SECRETS_DIR) / ex.executor_id
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_bytes() == secret
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert list(ex.map(identity, range(5))) == list(range(5))
        b = ex.broadcast(list(range(100)))
        assert ex.submit(lambda: sum(b.value)).result(timeout=60) == 4950
        store = _attacker(ex)
        keys = store.list(ex.config.prefix + "/")
        assert keys
        for key in keys:
            data = bytes(store.get(key))
            assert secret not in data and secret.hex().encode() not in data, key
        store.delete(ex.prefix + "/")
    assert path.exists()  # keep_data: its results stay readable from another process
    lambdaexec.storage.signed.forget(ex.executor_id)


def test_the_secret_file_goes_with_the_data(tmp_path):
    with LambdaExecutor(max_workers=1, progress=False, storage_path=str(tmp_path)) as ex:
        path = pathlib.Path(lambdaexec.storage.signed.SECRETS_DIR) / ex.executor_id
        assert ex.submit(identity, 3).result(timeout=60) == 3
        assert path.exists()
    assert not path.exists()


def test_a_future_unpickled_in_another_process_checks_the_result(tmp_path):
    import pickle
    import subprocess
    import sys

    with LambdaExecutor(max_workers=1, progress=False, storage_path=str(tmp_path)) as ex:
        futures = ex.map_futures(wait_for_gate, [str(tmp_path / "gate")] * 2)
        blob = pickle.dumps(futures)  # unfinished: the other process reads their results from storage
        (tmp_path / "gate").touch()
        assert [f.result(timeout=60) for f in futures] == ["opened", "opened"]
        attacker = _attacker(ex)
        attacker.put(protocol.result_key(f"{ex.prefix}/000000", 1), _forged_result("attacker's value"))
        code = ("import pickle, sys; a, b = pickle.loads(sys.stdin.buffer.read()); print(a.result(timeout=60)); "
                "print(type(b.exception(timeout=60)).__name__, b.exception())")
        proc = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, timeout=120)
        assert proc.returncode == 0, proc.stderr.decode()
        first, second = proc.stdout.decode().splitlines()
        assert first == "opened"
        assert second.startswith("IntegrityError") and "calls/1'" in second


def test_a_secrets_directory_others_can_open_is_refused(tmp_path, monkeypatch):
    shared = tmp_path / "secrets"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    monkeypatch.setattr(lambdaexec.storage.signed, "SECRETS_DIR", str(shared))
    with pytest.raises(lambdaexec.ConfigError, match="mode 0700"):
        LambdaExecutor(max_workers=1, progress=False, storage_path=str(tmp_path / "store"))
    assert list(shared.iterdir()) == []
