"""The durable job record and the CLI that reads it (``lambdaexec jobs``, ``logs``, ``plot``,
``clean``), run as a user would, in subprocesses, on local, S3 (SeaweedFS) and Redis storage."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

JOB_SCRIPT = textwrap.dedent("""
    import concurrent.futures as cf, logging, lambdaexec

    def work(i):
        print(f"working on {i}")
        logging.warning("warned by %d", i)
        if i == 2:
            raise ValueError(f"item {i} is bad")
        return i * i

    with lambdaexec.LambdaExecutor(max_workers=2) as ex:
        futures = ex.map_futures(work, range(5))
        cf.wait(futures)
    print("client done")
""")


@pytest.fixture(params=["local", "s3", "redis"])
def env(request, tmp_path):
    """Environment variables pointing lambdaexec at one storage, with a prefix of its own."""
    server = request.getfixturevalue({"s3": "seaweed", "redis": "redis_server"}.get(request.param, "tmp_path"))
    base = {**os.environ, "LAMBDAEXEC_PREFIX": f"rec-{uuid.uuid4().hex[:8]}", "LAMBDAEXEC_PROGRESS": "false",
            "LAMBDAEXEC_CONFIG": str(tmp_path / "none.ini")}
    if request.param == "local":
        return {**base, "LAMBDAEXEC_STORAGE": "local", "LAMBDAEXEC_STORAGE_PATH": str(tmp_path / "store")}
    if request.param == "s3":
        return {**base, **{f"LAMBDAEXEC_{k.upper()}": v for k, v in server.settings().items()}}
    return {**base, "LAMBDAEXEC_STORAGE": "redis", "LAMBDAEXEC_REDIS_URL": server.url}


def run(env, *args, check=True):
    cmd = [sys.executable, "-m", "lambdaexec.cli", *args] if args[0] != "-c" else [sys.executable, *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_jobs_logs_plot_clean(env, tmp_path):
    assert "client done" in run(env, "-c", JOB_SCRIPT).stdout
    listing = run(env, "jobs").stdout.splitlines()
    assert len(listing) == 2, listing  # header + the one job
    job_id, *_ = listing[1].split()
    cols = listing[1].split()
    assert cols[3:9] == ["__main__.work", "failed", "5", "4", "1", "0"], cols  # function, state, counts
    assert float(cols[-1]) > 0  # its cost in dollars

    failed = run(env, "logs", job_id).stdout
    assert "call 2: failed" in failed and "ValueError: item 2 is bad" in failed
    assert "working on 2" in failed and "warned by 2" in failed and "working on 1" not in failed
    one = run(env, "logs", job_id.split("-")[1], "3").stdout  # a unique part of the id will do
    assert "call 3: done" in one and "working on 3" in one and "[WARNING]" in one and "warned by 3" in one
    bad = run(env, "logs", job_id, "9", check=False)
    assert bad.returncode == 1 and "has calls 0 to 4, not 9" in bad.stderr
    missing = run(env, "logs", "no-such-job", check=False)
    assert missing.returncode == 1 and "no job record matches 'no-such-job'" in missing.stderr

    png = tmp_path / "job.png"
    assert "wrote" in run(env, "plot", job_id, "-o", str(png)).stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert "deleted 0 job record(s) older than 30 days" in run(env, "clean").stdout  # all younger
    dry = run(env, "clean", "--older-than", "0s", "--dry-run").stdout
    assert f"would delete {job_id}" in dry
    assert job_id in run(env, "jobs").stdout  # a dry run deletes nothing
    assert f"deleted {job_id}" in run(env, "clean", "--older-than", "0s").stdout
    assert "no job records" in run(env, "jobs").stdout
    assert "not an age" in run(env, "clean", "--older-than", "soon", check=False).stderr


def test_record_outlives_job_data(tmp_path):
    import lambdaexec
    from lambdaexec.observe import jobs

    with lambdaexec.LambdaExecutor(max_workers=1, storage_path=str(tmp_path), prefix="keep",
                                   progress=False) as ex:
        assert list(ex.map(abs, [-1, -2, -3])) == [1, 2, 3]
        store = ex.storage
    (job_id,) = jobs.job_ids(store, "keep")  # written within a moment; at shutdown at the latest
    job = jobs.read_job(store, "keep", job_id)
    assert store.list(job.manifest["job_prefix"] + "/") == []  # the bulk data is gone
    assert job.state == "finished" and job.counts()["done"] == 3
    m = job.manifest
    assert m["function"] == "builtins.abs" and m["calls"] == 3 and m["python"] and m["host"]
    assert "cloudpickle" in m["packages"] and len(m["code_hash"]) == 32
    assert [c["state"] for c in job.calls] == ["done"] * 3
    assert all("func_start" in c["stats"] for c in job.calls)


def test_one_call_jobs_in_a_burst_share_record_objects(tmp_path):
    # a loop of submit -> result makes a job per call: a job that ends before the record writer's
    # next round keeps its calls record inside its manifest, and the round writes the records of
    # the jobs created in the same second as one object, not one per call
    import lambdaexec
    from lambdaexec.observe import jobs
    from lambdaexec.observe.clean import clean

    n = 60
    with lambdaexec.LambdaExecutor(max_workers=1, storage_path=str(tmp_path), prefix="burst",
                                   progress=False) as ex:
        assert [ex.submit(abs, -i).result() for i in range(n)] == list(range(n))
        store = ex.storage
    ids = jobs.job_ids(store, "burst")
    assert len(ids) == n
    records = [jobs.read_job(store, "burst", i) for i in ids]
    assert [r.job_id for r in records] == ids
    assert [r.calls[0]["state"] for r in records] == ["done"] * n
    assert [r.calls[0]["stats"]["result_key"].rsplit("/", 3)[1] for r in records] == [i[-6:] for i in ids]
    assert all(r.manifest["calls"] == 1 and "calls_record" not in r.manifest for r in records)
    assert [r.job_id for r in jobs.list_jobs(store, "burst", limit=5)] == ids[::-1][:5]
    objects = store.list("burst/jobs/")
    assert len(objects) <= n // 2  # the records of many jobs per object
    assert all(k.endswith(("/manifest", "/calls")) for k in objects)
    assert clean(store, "burst", older_than=-1) == ids  # expired together, object by object
    assert store.list("burst/jobs/") == []


def test_records_past_retention_expire_after_an_executor_closes(tmp_path):
    import json

    import lambdaexec
    from lambdaexec.observe import jobs
    from lambdaexec.storage import open_storage

    store = open_storage({"kind": "local", "path": str(tmp_path)})
    old_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime(time.time() - 40 * 86400)) + "-0ld0exec-000000"
    store.put(f"expire/jobs/{old_id}/manifest", json.dumps({"job_id": old_id, "calls": 1}).encode())
    with lambdaexec.LambdaExecutor(max_workers=1, storage_path=str(tmp_path), prefix="expire",
                                   job_retention_days=30, progress=False) as ex:
        assert ex.submit(abs, -1).result() == 1
    # expired in the background once the executor closed: its own record, a young one, stays
    deadline = time.monotonic() + 60
    while old_id in jobs.job_ids(store, "expire") and time.monotonic() < deadline:
        time.sleep(0.05)
    ids = jobs.job_ids(store, "expire")
    assert old_id not in ids and len(ids) == 1


def test_job_record_can_be_turned_off(tmp_path):
    import lambdaexec

    with lambdaexec.LambdaExecutor(max_workers=1, storage_path=str(tmp_path), prefix="off",
                                   job_record=False, progress=False) as ex:
        assert ex.submit(abs, -1).result() == 1
    assert not os.path.exists(tmp_path / "off" / "jobs")


def nap_and_say(seconds, i):
    import time

    print(f"call {i} says hi")
    time.sleep(seconds)
    return i


def test_a_running_job_from_another_terminal(tmp_path):
    import lambdaexec

    env = {**os.environ, "LAMBDAEXEC_STORAGE": "local", "LAMBDAEXEC_STORAGE_PATH": str(tmp_path),
           "LAMBDAEXEC_PREFIX": "live", "LAMBDAEXEC_CONFIG": str(tmp_path / "none.ini")}
    # calls 2 and 3 overrun a short timeout (so the test ends soon) while the CLI looks at the job
    with lambdaexec.LambdaExecutor(max_workers=1, storage_path=str(tmp_path), prefix="live", timeout=8,
                                   retries=0, progress=False) as ex:
        futures = ex.map_futures(nap_and_say, [0, 0, 30, 30], range(4))
        assert futures[1].result(timeout=60) == 1
        for _ in range(20):  # the recorder writes in the background: the manifest follows shortly
            listing = run(env, "jobs").stdout.splitlines()
            if len(listing) > 1:
                break
            time.sleep(0.5)
        cols = listing[1].split()
        # state, calls, done, failed, queued, running (one worker)
        assert cols[4:10] == ["running", "4", "2", "0", "1", "1"], listing
        assert "call 1 says hi" in run(env, "logs", cols[0], "1").stdout
        assert "call 3 has not finished" in run(env, "logs", cols[0], "3").stdout
        ex.shutdown(cancel_futures=True)
    assert "failed" in run(env, "jobs").stdout.splitlines()[1]


def fail_with_payload_or_nap(i):
    import time

    class Payload:  # defined here, so the client gets it by value and can take a weak reference
        pass

    if i == 0:
        raise ValueError(Payload())
    time.sleep(3)
    return i


def test_the_record_keeps_no_failure_alive_while_its_job_runs(tmp_path):
    import gc
    import weakref

    import lambdaexec
    from lambdaexec.observe import jobs

    with lambdaexec.LambdaExecutor(max_workers=2, storage_path=str(tmp_path), prefix="lean",
                                   progress=False) as ex:
        futures = ex.map_futures(fail_with_payload_or_nap, range(2))
        payload = weakref.ref(futures[0].exception(timeout=60).args[0])
        del futures[0]
        gc.collect()
        assert not futures[0].done()  # the job still runs, and its record is not written yet
        assert payload() is None  # the record kept the failure's text, not the exception
        assert futures[0].result(timeout=60) == 1
        store = ex.storage
    (job_id,) = jobs.job_ids(store, "lean")
    calls = jobs.read_job(store, "lean", job_id).calls
    assert [c["state"] for c in calls] == ["failed", "done"]
    assert calls[0]["error"].startswith("ValueError: <") and "Payload object" in calls[0]["error"]


KILLED_CLIENT = textwrap.dedent("""
    import sys, time, lambdaexec

    def setup():
        pass

    def nap(i):
        time.sleep(120)

    ex = lambdaexec.LambdaExecutor(max_workers=2, initializer=setup, keep_data=sys.argv[1] == "keep")
    ex.map_futures(nap, range(4))
    while not any(ex.executor_id in k for k in ex.storage.list(ex.config.prefix + "/jobs/")):
        time.sleep(0.05)  # its job's manifest (which names this client) is written
    print(ex.prefix, flush=True)
    time.sleep(300)
""")

def _init_live(tag):
    os.environ["INITIALIZED_BY"] = tag


def _initialized_by(x):
    return x, os.environ.get("INITIALIZED_BY")


def test_clean_removes_a_killed_clients_objects_and_never_a_live_executors(env, monkeypatch):
    """A SIGKILLed client leaves funcs/, init and its job's data; `lambdaexec clean` (default
    age) removes them because its process is gone, keeps them with keep_data, and never
    touches the objects of an executor whose client (this test) is alive."""
    import signal

    import lambdaexec

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    # a live executor: an initializer object, a function object; each call on a fresh worker,
    # so every call reads both again after `clean`
    live = lambdaexec.LambdaExecutor(max_workers=1, initializer=_init_live, initargs=("live",),
                                     max_tasks_per_child=1)
    try:
        assert live.submit(_initialized_by, 1).result(timeout=60) == (1, "live")
        clients = {keep: subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, keep], env=env,
                                          stdout=subprocess.PIPE, text=True) for keep in ("keep", "clean")}
        prefixes = {}
        try:
            for keep, client in clients.items():
                prefixes[keep] = client.stdout.readline().strip()
                assert prefixes[keep], f"the {keep} client did not start its job"
                os.kill(client.pid, signal.SIGKILL)  # no exit hook, no finally
                client.wait(timeout=30)
        finally:
            for client in clients.values():
                if client.poll() is None:
                    client.kill()
                    client.wait()
                client.stdout.close()
        store = live.storage
        left = store.list(prefixes["clean"] + "/")
        assert any("/funcs/" in k for k in left) and any(k.endswith("/init") for k in left), left

        dry = run(env, "clean", "--dry-run").stdout
        assert f"would delete the objects of executor {prefixes['clean'].rsplit('/', 1)[1]}" in dry
        assert store.list(prefixes["clean"] + "/") == left  # a dry run deletes nothing
        out = run(env, "clean").stdout
        assert f"objects of executor {prefixes['clean'].rsplit('/', 1)[1]}" in out
        assert store.list(prefixes["clean"] + "/") == []  # nothing of the killed client is left
        assert store.list(prefixes["keep"] + "/") != []  # ... unless it asked to keep its data
        mine = store.list(live.prefix + "/")
        assert any("/funcs/" in k for k in mine) and any(k.endswith("/init") for k in mine), mine
        assert live.prefix.rsplit("/", 1)[1] not in out
        # the live executor goes on: new workers read its initializer and function objects again
        assert list(live.map(_initialized_by, [2, 3])) == [(2, "live"), (3, "live")]
        assert "objects of executor" not in run(env, "clean").stdout  # done once, then nothing to do
        # expiring every record by age leaves a live client's objects alone too
        assert "deleted" in run(env, "clean", "--older-than", "0s").stdout
        mine = store.list(live.prefix + "/")
        assert any("/funcs/" in k for k in mine) and any(k.endswith("/init") for k in mine), mine
        assert list(live.map(_initialized_by, [4])) == [(4, "live")]
    finally:
        live.shutdown()
