"""Results written in batches (lambdaexec.wire.protocol, worker/results.py): many calls' results in
one object, announced once, and every reader of results still finds each call's own."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import time

import pytest

from lambdaexec import LambdaExecutor
from lambdaexec.storage import open_storage, signed
from lambdaexec.wire import protocol, serialize
from worker.handler import handler


def _square(x):
    return x * x


def _fail_some(x):
    if x % 5 == 3:
        raise ValueError(f"no {x}")
    return x


def _gated(gate, slow, x):
    """Return ``x``; call ``slow`` first waits (up to a minute) for the file ``gate``."""
    if x == slow:
        deadline = time.monotonic() + 60
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.01)
    return x


def _result_objects(ex: LambdaExecutor) -> list[str]:
    return [k for k in ex.storage.list(ex.prefix + "/") if "/calls/" in k]


def _wait_done(futures, seconds=60):
    deadline = time.monotonic() + seconds
    while not all(f.done() for f in futures) and time.monotonic() < deadline:
        time.sleep(0.01)
    return all(f.done() for f in futures)


def test_2000_call_map_on_s3_is_correct_with_far_fewer_objects_and_requests_than_calls(s3_settings, seaweed):
    n = 2000
    with LambdaExecutor(max_workers=2, keep_data=True, job_record=False, **s3_settings) as ex:
        before = seaweed.request_counts()
        assert list(ex.map(_square, range(n))) == [x * x for x in range(n)]
        after = seaweed.request_counts()
        keys = _result_objects(ex)
        ex.storage.delete(ex.prefix + "/")
    assert sorted(protocol.keys_by_call(keys)) == list(range(n))  # every call's result is in one of them
    assert len(keys) < n / 4, f"{len(keys)} result objects for {n} calls"
    requests = sum(after.values()) - sum(before.values())  # client and workers, counted by the server
    assert requests < n / 2, f"{requests} S3 requests for {n} calls: {after} - {before}"


def test_a_batch_with_failed_and_successful_calls_completes_each_future(every_storage):
    n = 300
    with LambdaExecutor(max_workers=1, keep_data=True, **every_storage) as ex:
        futures = ex.map_futures(_fail_some, range(n))
        assert _wait_done(futures)
        for i, f in enumerate(futures):
            if i % 5 == 3:
                with pytest.raises(ValueError, match=f"^no {i}$"):
                    f.result()
                assert "ValueError" in f.remote_traceback
            else:
                assert f.result() == i and f.exception() is None
        mixed = [k for k in _result_objects(ex)
                 if {c % 5 == 3 for c in protocol.calls_of_key(k)} == {True, False}]
        ex.storage.delete(ex.prefix + "/")
    assert mixed, "no result object held both a failed and a successful call"


def test_a_long_call_does_not_hold_back_the_results_before_it(storage_settings, tmp_path):
    gate = str(tmp_path / "gate")
    n, slow = 400, 300
    with LambdaExecutor(max_workers=1, **storage_settings) as ex:
        futures = ex.map_futures(_gated, [gate] * n, [slow] * n, range(n))
        try:
            # the calls before the slow one are done while it still runs, though some of them
            # ran in its event and their results wait in its worker's batch
            assert _wait_done(futures[:slow]), "calls before the long one did not finish while it ran"
            assert not futures[slow].done()
        finally:
            open(gate, "w").close()
        assert [f.result(timeout=60) for f in futures] == list(range(n))


class _Context:
    """What the local pool's context gives the handler: a notice per result object."""

    def __init__(self):
        self.announced: list[tuple[list[int], str]] = []

    def calls_done(self, calls, key, busy):
        self.announced.append((calls, key))


def _gated_event(tmp_path, mark_start: bool):
    """A signed store holding a job of five ``_gated`` calls, of which call 3 waits for the
    gate file; the event for all five; the gate's path."""
    secret = signed.new_secret()  # objects are signed as an executor signs them (storage/signed.py)
    store = signed.SignedStorage(open_storage({"kind": "local", "path": str(tmp_path / "store")}), secret)
    gate = str(tmp_path / "gate")
    store.put("p/f", serialize.dumps_function(_gated))
    chunks, calls, digests, offset = [], [], [], 0
    for i in range(5):
        blob = serialize.dumps_call((gate, 3, i), {})
        size = serialize.size_of(blob)
        chunks.extend(blob)
        calls.append([i, offset, offset + size])
        digests.append(signed.digest(blob))
        offset = serialize.pad(chunks, offset + size)
    store.put("p/job/args", chunks)
    event = {"storage": store.spec, "job_prefix": "p/job", "func_key": "p/f", "args_key": "p/job/args",
             "calls": calls, "attempt": 0, "versions": protocol.versions(), "max_result_size": 1 << 20,
             "mark_start": mark_start, "secret": secret.hex(), "args_digests": digests}
    return store, event, gate


def test_handler_writes_short_results_while_a_long_call_of_its_event_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMBDAEXEC_IN_WORKER", "1")  # the handler sets it; restored after the test
    store, event, gate = _gated_event(tmp_path, mark_start=False)
    context = _Context()
    run = threading.Thread(target=handler, args=(event, context))
    run.start()
    try:
        deadline = time.monotonic() + 30
        while sum(len(c) for c, _ in context.announced) < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        # calls 0-2 are written, as one batch or a few, while call 3 waits; 4 has not run
        assert sorted(c for cs, _ in context.announced for c in cs) == [0, 1, 2]
        for cs, key in context.announced:
            assert protocol.calls_of_key(key) == cs
            for c in cs:
                status, value = protocol.read_result(store, key, c)
                assert status["ok"] and serialize.loads(value) == c
    finally:
        open(gate, "w").close()
        run.join(60)
    assert sorted(c for cs, _ in context.announced for c in cs) == [0, 1, 2, 3, 4]
    assert any(len(cs) > 1 for cs, _ in context.announced), "no batch was written"
    assert len(store.list("p/job/calls/")) == len(context.announced)  # one object per announcement


def test_start_markers_only_for_the_first_call_and_calls_running_long(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMBDAEXEC_IN_WORKER", "1")
    store, event, gate = _gated_event(tmp_path, mark_start=True)  # as the lambda backend asks
    run = threading.Thread(target=handler, args=(event, _Context()))
    run.start()
    try:
        deadline = time.monotonic() + 30
        while len(store.list("p/job/started/")) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        # the first call's marker says the invocation started; call 3, still running after
        # protocol.MARK_SECONDS, has its own; the short calls 1 and 2 wrote none
        assert sorted(store.list("p/job/started/")) == [protocol.started_key("p/job", c, 0) for c in (0, 3)]
    finally:
        open(gate, "w").close()
        run.join(60)
    assert len(store.list("p/job/started/")) == 2  # call 4 ran short: no marker
    assert sorted(protocol.keys_by_call(store.list("p/job/calls/"))) == [0, 1, 2, 3, 4]


def _kilobytes(x):
    return bytes([x % 256]) * 2000


def _first_bytes(values):
    return sum(v[0] for v in values)


def test_reduce_reads_its_inputs_from_batch_objects(storage_settings):
    n = 300
    with LambdaExecutor(max_workers=2, keep_data=True, **storage_settings) as ex:
        futures = ex.map_futures(_kilobytes, range(n))
        total = ex.reduce(_first_bytes, futures)
        assert total.result(timeout=120) == sum(x % 256 for x in range(n))
        # its call carried where the inputs are (600 KB of values), and its worker read them
        assert total.stats["bytes_in"] < 100_000
        keys = [k for k in _result_objects(ex) if k.startswith(f"{ex.prefix}/000000/")]
        ex.storage.delete(ex.prefix + "/")
    assert sorted(protocol.keys_by_call(keys)) == list(range(n))
    assert any(len(protocol.calls_of_key(k)) > 1 for k in keys), "no batch object to read"


_CHILD = """
import pickle, sys
futures = pickle.load(sys.stdin.buffer)
print(sum(f.result(timeout=120) for f in futures), flush=True)
"""


def test_pickled_futures_complete_from_batch_objects_in_another_process(storage_settings):
    n = 300
    with LambdaExecutor(max_workers=2, **storage_settings) as ex:
        futures = ex.map_futures(_square, range(n))
        blob = pickle.dumps(futures)  # unfinished ones pin the job: its objects stay
        assert [f.result(timeout=60) for f in futures] == [x * x for x in range(n)]
        keys = _result_objects(ex)
        child = subprocess.run([sys.executable, "-c", _CHILD], input=blob, capture_output=True, timeout=180)
    assert child.returncode == 0, child.stderr.decode()[-3000:]
    assert int(child.stdout) == sum(x * x for x in range(n))
    assert any(len(protocol.calls_of_key(k)) > 1 for k in keys), "no batch object to read"


def test_batches_of_scattered_calls_are_cut_before_their_keys_grow_too_long(tmp_path):
    from worker.results import Writer

    store = open_storage({"kind": "local", "path": str(tmp_path / "store")})
    announced = []
    writer = Writer(store, "p/job", lambda calls, key, busy: announced.append((calls, key)))
    calls = [100_000 + 3 * i for i in range(300)] + [7, 5]  # no two in a row; two out of order
    for c in calls:
        writer.add(c, {"ok": True}, serialize.dumps(c))
    writer.close()
    keys = store.list("p/job/calls/")
    assert sorted(keys) == sorted(k for _, k in announced)
    assert all(len(k.rpartition("/")[2]) <= protocol.MAX_RUNS_CHARS for k in keys)
    assert sorted(protocol.keys_by_call(keys)) == sorted(calls)
    for c, key in protocol.keys_by_call(keys).items():
        status, value = protocol.read_result(store, key, c)
        assert status["ok"] and serialize.loads(value) == c
