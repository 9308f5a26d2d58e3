"""The ``lambda`` backend end to end, with no AWS account: the invoker's real HTTP code path
against the Lambda emulator (running the deployment package ``deploy`` builds, in separate
processes) and SeaweedFS's S3. The core's concurrent.futures contract tests are re-run here
with ``backend="lambda"`` (this module's ``executor`` and ``storage_settings`` fixtures)."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import time

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config as BotoConfig
from botocore.credentials import Credentials
from lambda_helpers import EmulatorProcess
from test_executor import (  # noqa: F401  (re-run here on the lambda backend)
    test_50_mb_argument_and_result,
    test_cancel_pending_call_never_runs,
    test_closure_over_numpy_array,
    test_context_manager_waits,
    test_failing_initializer_breaks_calls,
    test_first_exception_wait,
    test_initializer_runs_once_per_worker,
    test_job_data_deleted_after_results,
    test_keep_data_keeps_results,
    test_kwargs_and_builtins,
    test_map_futures_all_at_once,
    test_map_keeps_order_and_zip_semantics,
    test_result_too_large_is_a_clear_error,
    test_shutdown_cancel_futures,
    test_shutdown_semantics,
    test_stdout_and_stats_are_kept,
    test_submit_returns_real_futures,
    test_unpicklable_argument_refused_at_submit,
    test_unpicklable_exception_becomes_remote_error,
    test_user_exception_reraised_with_remote_traceback,
    test_version_mismatch_names_both_versions,
    test_wait_as_completed_and_callbacks,
)
from test_pywren_compat import test_pickled_future_resolves_in_a_child_process  # noqa: F401
from workloads import die_once, exit_via_kill, hang

import lambdaexec
from lambdaexec import LambdaExecutor
from lambdaexec.aws.inflight import MAX_UNSTARTED, grace
from lambdaexec.aws.invoker import LambdaInvoker
from lambdaexec.aws.package import build_package
from lambdaexec.aws.senders import Boto3Sender, HttpSender
from lambdaexec.config import load_config
from lambdaexec.storage.sigv4 import SigV4Signer
from lambdaexec.wire import protocol


@pytest.fixture(scope="session")
def lambda_package(tmp_path_factory):
    """The deployment zip, as ``lambdaexec deploy`` builds it."""
    path = str(tmp_path_factory.mktemp("package") / "lambdaexec-worker.zip")
    build_package(path)
    return path


def start(package, **options):
    return EmulatorProcess(package, **options)


@pytest.fixture(scope="module")
def emulator(lambda_package, seaweed):
    emu = start(lambda_package, concurrency=6, timeout=30)
    yield emu
    emu.stop()


@pytest.fixture(scope="module")
def lambda_settings(emulator, s3_settings):
    return {"backend": "lambda", "lambda_endpoint_url": emulator.url, "timeout": 30, "start_deadline": 20,
            **s3_settings}


@pytest.fixture
def storage_settings(lambda_settings):
    """Overrides conftest's: the contract tests' executors run on the lambda backend."""
    return lambda_settings


@pytest.fixture
def executor(lambda_settings):
    """Overrides conftest's: two calls in flight on the emulator."""
    ex = LambdaExecutor(max_workers=2, **lambda_settings)
    yield ex
    ex.shutdown(wait=False, cancel_futures=True)


def square(x):
    return x * x


def worker_facts():
    import lambdaexec
    import worker.handler

    keys = ("AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_REGION",
            "AWS_LAMBDA_LOG_STREAM_NAME", "LAMBDA_TASK_ROOT", "AWS_ACCESS_KEY_ID")
    return {"env": {k: os.environ.get(k) for k in keys}, "lambdaexec": lambdaexec.__file__,
            "handler": worker.handler.__file__, "pid": os.getpid()}


# --- the worker runs the package, in a Lambda-like environment ---------------------------------
def test_worker_runs_the_package_with_lambda_environment(executor):
    facts = executor.submit(worker_facts).result(timeout=60)
    env = facts["env"]
    root = env["LAMBDA_TASK_ROOT"]
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "lambdaexec-worker" and env["AWS_REGION"] == "us-east-1"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] and env["AWS_LAMBDA_LOG_STREAM_NAME"]
    assert env["AWS_ACCESS_KEY_ID"] == os.environ["AWS_ACCESS_KEY_ID"]  # from its environment
    assert facts["lambdaexec"].startswith(root + os.sep) and facts["handler"].startswith(root + os.sep)
    assert facts["pid"] != os.getpid()


def test_events_carry_keys_not_data_or_credentials(lambda_settings, monkeypatch):
    sent = []
    real = HttpSender.invoke

    def spy(self, payload, invocation_type="Event"):
        sent.append(payload)
        return real(self, payload, invocation_type)

    monkeypatch.setattr(HttpSender, "invoke", spy)
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]  # what this client (and its S3 store) signs with
    executor = LambdaExecutor(max_workers=2, **lambda_settings)
    blob = os.urandom(300_000)
    assert executor.submit(len, blob).result(timeout=60) == 300_000
    assert sent and all(len(p) < 2048 for p in sent)
    executor.shutdown()
    for p in sent:
        event = json.loads(p)
        assert secret not in p.decode() and "credentials" not in event["storage"]
        assert event["mark_start"] is True and event["calls"][0][2] - event["calls"][0][1] > 300_000


def test_many_calls_and_chunksize(lambda_settings, emulator):
    # no backup copies of slow invocations (speculation), so that invocations can be counted
    with LambdaExecutor(**{**lambda_settings, "speculative": False}) as ex:
        before = emulator.stats().get("accepted", 0)
        assert list(ex.map(square, range(300), chunksize=20)) == [x * x for x in range(300)]
        assert emulator.stats()["accepted"] - before == 15  # 20 items per invocation
        assert sum(ex.map(square, range(200))) == sum(x * x for x in range(200))


# --- several calls per invocation once a job's calls are measured short (aws/grouping.py) -------
def test_many_short_calls_share_invocations_and_result_objects(lambda_settings, emulator):
    n = 400
    # two slots and 400 calls waiting: once the first results show the calls are short, an
    # invocation carries many of them (no backup copies, so that invocations can be counted)
    with LambdaExecutor(**{**lambda_settings, "speculative": False, "max_workers": 2, "keep_data": True}) as ex:
        before = emulator.stats().get("accepted", 0)
        futures = ex.map_futures(square, range(n))
        assert [f.result(timeout=120) for f in futures] == [x * x for x in range(n)]
        invocations = emulator.stats()["accepted"] - before
        stats = ex._monitor.invoker.stats
        markers = ex.storage.list(futures[0]._home.job_prefix + "/started/")
    assert invocations == stats["accepted"] and stats["calls"] == n
    assert invocations <= n // 4, f"{invocations} invocations for {n} short calls"
    objects = {f.stats["result_key"] for f in futures}
    # fewer than calls: a batch is written 5 ms after its oldest result (protocol.BATCH_SECONDS),
    # so how many calls share one depends on the machine's speed
    assert len(objects) < n and any(len(protocol.calls_of_key(k)) > 1 for k in objects)
    assert all(f.attempts == 1 for f in futures)
    # one start marker per invocation (its first call's): the later calls end before
    # protocol.MARK_SECONDS, so they write none
    assert len(markers) == invocations
    # the cost model counts what happened: invocations, result objects, a start marker per invocation
    report = lambdaexec.cost(futures)
    assert report.invocations == invocations
    assert report.requests["PUT"] == len(objects) + invocations + 2  # results, markers, function + inputs
    assert report.requests["GET"] == invocations + len(objects) + len({f.stats["worker"] for f in futures})


def test_long_calls_go_one_per_invocation(lambda_settings, emulator):
    n = 8
    with LambdaExecutor(**{**lambda_settings, "speculative": False, "max_workers": 2}) as ex:
        before = emulator.stats().get("accepted", 0)
        assert list(ex.map(hang, [0.3] * n)) == ["woke up"] * n  # measured, but not short
        assert emulator.stats()["accepted"] - before == n
        assert ex._monitor.invoker.stats["measured"] >= 1
        before = emulator.stats().get("accepted", 0)
        # short calls, but no more waiting than there are slots: one each, every slot used
        assert list(ex.map(square, range(3))) == [0, 1, 4]
        assert emulator.stats()["accepted"] - before == 3


def slow_once(i, marker, victim, seconds):
    """``i``, but the first run of call ``victim`` sleeps ``seconds`` first."""
    if i == victim and not os.path.exists(marker):
        open(marker, "w").close()
        time.sleep(seconds)
        open(marker + ".woke", "w").close()
    return i


@pytest.mark.slow
def test_a_straggler_does_not_hold_back_the_calls_grouped_behind_it(lambda_settings, emulator, tmp_path):
    n, victim, marker = 300, 150, str(tmp_path / "slow")
    # speculation is on by default on the lambda backend: near the job's end, the straggler and
    # the calls waiting behind it in its invocation get backup copies, each in its own invocation
    with LambdaExecutor(**{**lambda_settings, "max_workers": 2}) as ex:
        futures = ex.map_futures(slow_once, range(n), [marker] * n, [victim] * n, [25] * n)
        assert [f.result(timeout=60) for f in futures] == list(range(n))
        assert os.path.exists(marker) and not os.path.exists(marker + ".woke"), \
            "every result should come before the straggler wakes"
        assert ex._monitor.invoker.stats["accepted"] < n  # the calls were grouped


def test_a_group_over_the_async_payload_limit_is_split(lambda_settings, emulator, monkeypatch):
    from lambdaexec.aws import grouping
    from lambdaexec.invokers.base import Dispatch

    sent = []
    real = HttpSender.invoke

    def spy(self, payload, invocation_type="Event", tail=False):
        sent.append(payload)
        return real(self, payload, invocation_type, tail)

    monkeypatch.setattr(HttpSender, "invoke", spy)
    job, n = "lambdaexec/payload-test/000000", 40

    def make_event(calls, attempt):  # 20 KB a call: 40 calls would be 800 KB, over the limit
        return {"job_prefix": job, "calls": [[c, 0, 0] for c in calls], "attempt": attempt,
                "pad": "x" * 20_000 * len(calls)}

    config = load_config({**lambda_settings, "max_workers": 1, "start_deadline": 0.5})
    invoker = LambdaInvoker(config)
    try:
        invoker._timings._per_call[job] = 0.001  # as if measured short: one group of all 40
        invoker.invoke(Dispatch(job, list(range(n)), 0, make_event))
        deadline = time.monotonic() + 60
        while invoker.stats["calls"] < n and time.monotonic() < deadline:
            invoker.poll(0.5)  # the calls never start (no storage in these events): their
            # start deadline frees the one slot for the next group
        events = [json.loads(p) for p in sent if b'"pad"' in p]
        assert sorted(c[0] for e in events for c in e["calls"]) == list(range(n))  # each sent once
        assert all(len(p) <= grouping.PAYLOAD_LIMIT for p in sent) and max(len(e["calls"]) for e in events) > 1
        assert invoker.stats["accepted"] == len(events)  # none refused as too large
    finally:
        invoker.close()


def test_backend_from_environment(lambda_settings, monkeypatch):
    for key, value in lambda_settings.items():
        monkeypatch.setenv(f"LAMBDAEXEC_{key.upper()}", str(value))
    with LambdaExecutor() as ex:
        assert isinstance(ex._monitor.invoker, LambdaInvoker)
        assert ex.submit(worker_facts).result(timeout=60)["env"]["LAMBDA_TASK_ROOT"]


def test_unknown_function_fails_with_the_fix(lambda_settings):
    with LambdaExecutor(**{**lambda_settings, "function_name": "no-such-function"}) as ex:
        with pytest.raises(lambdaexec.LambdaExecError, match=r"ResourceNotFoundException.*lambdaexec deploy"):
            ex.submit(square, 2).result(timeout=60)


# --- throttling, dead workers, overruns, lost events -------------------------------------------
@pytest.mark.slow
def test_half_of_invocations_throttled_every_call_completes(lambda_package, s3_settings):
    emu = start(lambda_package, concurrency=6, timeout=30, throttle_rate=0.5)
    try:
        # no backup copies (speculation), which a call delayed by throttling backoff may get:
        # then every invocation completed is one call, once
        with LambdaExecutor(backend="lambda", lambda_endpoint_url=emu.url, speculative=False,
                            **s3_settings) as ex:
            assert list(ex.map(square, range(150))) == [x * x for x in range(150)]
            stats = ex._monitor.invoker.stats
        assert stats["throttled"] > 0 and emu.stats()["throttled"] == stats["throttled"]
        assert emu.stats()["completed"] == 150
    finally:
        emu.stop()


@pytest.fixture(scope="module")
def short_emulator(lambda_package, seaweed):
    """Functions time out after 3 s."""
    emu = start(lambda_package, concurrency=4, timeout=3)
    yield emu
    emu.stop()


@pytest.mark.slow
def test_worker_killed_mid_call_is_retried(short_emulator, s3_settings, tmp_path):
    with LambdaExecutor(backend="lambda", lambda_endpoint_url=short_emulator.url, timeout=3, **s3_settings) as ex:
        f = ex.submit(die_once, str(tmp_path / "died"))
        others = ex.map_futures(square, range(10))
        assert f.result(timeout=90) == "second time lucky"
        assert f.attempts == 2
        assert [o.result(timeout=60) for o in others] == [x * x for x in range(10)]
    assert short_emulator.stats()["died"] >= 1


def square_or_die_once(x, marker, victim, after=0.0):
    """``x * x``, but the first run of call ``victim`` kills its worker ``after`` seconds in."""
    if x == victim and not os.path.exists(marker):
        open(marker, "w").close()
        time.sleep(after)
        exit_via_kill()
    return x * x


@pytest.mark.slow
@pytest.mark.parametrize("after", [protocol.MARK_SECONDS + 0.5, 0.0], ids=["after-its-marker", "at-once"])
def test_killed_invocation_of_several_calls_is_retried_call_by_call(short_emulator, s3_settings, tmp_path,
                                                                     monkeypatch, after):
    sent = []
    real = HttpSender.invoke

    def spy(self, payload, invocation_type="Event", tail=False):
        sent.append(json.loads(payload))
        return real(self, payload, invocation_type, tail)

    monkeypatch.setattr(HttpSender, "invoke", spy)
    n, victim, marker = 300, 200, str(tmp_path / "died")
    timeout, start_deadline, retries = 3, 10, 1
    # Each wait is bounded by the calls' own deadlines, not by how idle the machine is: a call's
    # attempt ends within MAX_UNSTARTED start-deadline misses and then its timeout + grace
    # (lambdaexec.aws.inflight); twice that, as it may first wait for a slot behind others.
    bound = 2 * (retries + 1) * (MAX_UNSTARTED * start_deadline + timeout + grace(timeout))
    with LambdaExecutor(backend="lambda", lambda_endpoint_url=short_emulator.url, timeout=timeout,
                        start_deadline=start_deadline, retries=retries, max_workers=2, speculative=False,
                        **s3_settings) as ex:
        futures = ex.map_futures(square_or_die_once, range(n), [marker] * n, [victim] * n, [after] * n)
        assert [f.result(timeout=bound) for f in futures] == [x * x for x in range(n)]
    assert short_emulator.stats()["died"] >= 1
    events = [[c[0] for c in e["calls"]] for e in sent if "calls" in e]
    killed = next(calls for calls in events if victim in calls)
    assert len(killed) > 1, "the victim should have shared its invocation"
    after_it = killed[killed.index(victim) + 1:]
    # The call that killed its invocation used an attempt if its start marker was written: an
    # event's first call marks at once, a later one once it has run protocol.MARK_SECONDS. One
    # that crashed sooner cannot be told from its mates that never began: it is invoked again,
    # alone (where its marker goes first), without using an attempt.
    charged = after > protocol.MARK_SECONDS or killed[0] == victim
    assert futures[victim].attempts == (2 if charged else 1)
    # no other call used an attempt, but the event's first, if its result was still waiting
    # to be written with a batch when its worker died
    assert [i for i, f in enumerate(futures) if f.attempts != 1 and i not in (victim, killed[0])] == []
    later = [c for calls in events[events.index(killed) + 1:] for c in calls]
    assert all(c in later for c in after_it)  # invoked again, each
    assert [e for e in events if e == [victim]], "the retry went alone"


@pytest.mark.slow
def test_overrunning_call_fails_with_timeout_error(short_emulator, s3_settings):
    with LambdaExecutor(backend="lambda", lambda_endpoint_url=short_emulator.url, timeout=3, retries=1,
                        **s3_settings) as ex:
        stuck = ex.submit(hang, 60)
        fine = ex.submit(hang, 0.1)
        with pytest.raises(lambdaexec.CallTimeoutError, match="timeout of 3 s") as info:
            stuck.result(timeout=90)
        assert info.value.attempts == 2
        assert fine.result(timeout=30) == "woke up"


def test_never_started_call_is_invoked_again(lambda_package, s3_settings):
    emu = start(lambda_package, concurrency=2, timeout=30, drop_events=2)
    try:
        with LambdaExecutor(backend="lambda", lambda_endpoint_url=emu.url, start_deadline=5, retries=0,
                            **s3_settings) as ex:
            assert ex.submit(square, 12).result(timeout=60) == 144
        assert emu.stats()["dropped"] == 2 and emu.stats()["accepted"] == 1
    finally:
        emu.stop()


@pytest.mark.slow
def test_call_that_never_starts_fails_within_a_bound(lambda_package, s3_settings):
    emu = start(lambda_package, concurrency=2, timeout=30, drop_events=1000)
    try:
        with LambdaExecutor(backend="lambda", lambda_endpoint_url=emu.url, start_deadline=0.5, retries=1,
                            **s3_settings) as ex:
            f = ex.submit(square, 3)
            with pytest.raises(lambdaexec.WorkerDiedError, match="never started") as info:
                f.result(timeout=60)
            assert info.value.attempts == 2
        assert emu.stats()["dropped"] == 6  # 3 start-deadline misses per attempt, 2 attempts
    finally:
        emu.stop()


def test_in_flight_calls_are_capped(lambda_settings, emulator):
    def peak_probe(seconds):
        time.sleep(seconds)
        return os.getpid()

    with LambdaExecutor(max_workers=3, **lambda_settings) as ex:
        futures = ex.map_futures(peak_probe, [0.3] * 12)
        invoker = ex._monitor.invoker
        peak = 0
        while not all(f.done() for f in futures):
            peak = max(peak, invoker._inflight)
            time.sleep(0.01)
        assert 0 < peak <= 3
        assert all(isinstance(f.result(), int) for f in futures)


# --- the emulator speaks the Invoke API as AWS documents it -----------------------------------
def _lambda_client(url):
    return boto3.client("lambda", endpoint_url=url, region_name="us-east-1",
                        config=BotoConfig(retries={"max_attempts": 0}))


def test_emulator_status_codes(emulator, lambda_settings):
    client = _lambda_client(emulator.url)
    resp = client.invoke(FunctionName="lambdaexec-worker", InvocationType="DryRun", Payload=b"{}")
    assert resp["StatusCode"] == 204
    resp = client.invoke(FunctionName="lambdaexec-worker", Payload=b"{}")  # RequestResponse
    assert resp["StatusCode"] == 200 and resp["FunctionError"] == "Unhandled"
    assert json.loads(resp["Payload"].read())["errorType"] == "KeyError"
    with pytest.raises(client.exceptions.RequestTooLargeException):
        client.invoke(FunctionName="lambdaexec-worker", InvocationType="Event",
                      Payload=json.dumps({"x": "y" * 300_000}).encode())
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName="nope", InvocationType="Event", Payload=b"{}")
    with pytest.raises(client.exceptions.InvalidRequestContentException):
        client.invoke(FunctionName="lambdaexec-worker", Payload=b"not json")
    arn = "arn:aws:lambda:us-east-1:000000000000:function:lambdaexec-worker"
    assert client.invoke(FunctionName=arn, InvocationType="Event", Payload=b"{}")["StatusCode"] == 202


def test_emulator_429_when_concurrency_is_exhausted(lambda_package, s3_settings):
    emu = start(lambda_package, concurrency=1, timeout=30)
    try:
        with LambdaExecutor(backend="lambda", lambda_endpoint_url=emu.url, **s3_settings) as ex:
            f = ex.submit(hang, 4)
            while not ex.storage.list(ex.prefix + "/"):  # wait until the only container is busy
                time.sleep(0.05)
            deadline = time.monotonic() + 30
            while not any(k.split("/")[-2] == "started" for k in ex.storage.list(ex.prefix + "/")):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            client = _lambda_client(emu.url)
            with pytest.raises(client.exceptions.TooManyRequestsException) as info:
                client.invoke(FunctionName="lambdaexec-worker", Payload=b"{}")
            assert info.value.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
            assert f.result(timeout=60) == "woke up"
    finally:
        emu.stop()


# --- the senders ------------------------------------------------------------------------------
@pytest.mark.parametrize("token", [None, "session-token-xyz"])
@pytest.mark.parametrize("name", ["lambdaexec-worker", "arn:aws:lambda:eu-west-1:123456789012:function:w"])
def test_sigv4_signature_matches_botocore(token, name):
    import urllib.parse

    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    path = f"/2015-03-31/functions/{urllib.parse.quote(name, safe='')}/invocations"
    body = b'{"job_prefix": "p/x/000001", "calls": [[0, 0, 10]]}'
    request = AWSRequest("POST", f"https://lambda.eu-west-1.amazonaws.com{path}", data=body,
                         headers={"X-Amz-Invocation-Type": "Event"})
    SigV4Auth(creds, "lambda", "eu-west-1").add_auth(request)
    ours = SigV4Signer("eu-west-1", "lambda").sign(
        creds.get_frozen_credentials(), "POST", "lambda.eu-west-1.amazonaws.com", urllib.parse.quote(path, safe="/~"),
        {"X-Amz-Invocation-Type": "Event"}, hashlib.sha256(body).hexdigest(), amz_date=request.headers["X-Amz-Date"])
    assert ours["Authorization"] == request.headers["Authorization"]
    assert datetime.datetime.strptime(ours["X-Amz-Date"], "%Y%m%dT%H%M%SZ")


@pytest.mark.parametrize("kind", [HttpSender, Boto3Sender])
def test_senders_report_status_codes(kind, emulator, lambda_package, s3_settings):
    config = load_config({"backend": "lambda", "lambda_endpoint_url": emulator.url, **s3_settings})
    sender = kind(config)
    assert sender.invoke(b"{}").status == 202
    missing = kind(load_config({**config.__dict__, "function_name": "missing"})).invoke(b"{}")
    assert (missing.status, missing.error, missing.retriable) == (404, "ResourceNotFoundException", False)
    throttling = start(lambda_package, concurrency=1, throttle_rate=1.0)
    try:
        throttled = kind(load_config({**config.__dict__, "lambda_endpoint_url": throttling.url})).invoke(b"{}")
        assert (throttled.status, throttled.error, throttled.retriable) == (429, "TooManyRequestsException", True)
    finally:
        throttling.stop()
    sender.close()


def test_missing_region_and_credentials_are_explained(monkeypatch, s3_settings, tmp_path):
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    settings = {**s3_settings, "backend": "lambda", "region": ""}
    with pytest.raises(lambdaexec.ConfigError, match="no AWS region"):
        HttpSender(load_config(settings))
    with pytest.raises(lambdaexec.ConfigError, match="no AWS credentials.*aws configure"):
        HttpSender(load_config({**settings, "region": "us-east-1"}))


def test_a_retry_is_not_taken_for_started_by_an_earlier_attempts_marker(lambda_package, s3_settings):
    from lambdaexec.invokers.base import Dispatch, Lost
    from lambdaexec.storage import open_storage

    emu = start(lambda_package, concurrency=2, timeout=30, drop_events=1)  # attempt 1's event is lost
    invoker = None
    try:
        config = load_config({"backend": "lambda", "lambda_endpoint_url": emu.url, "timeout": 60,
                              "start_deadline": 0.5, **s3_settings})
        store = open_storage(config.storage_spec())
        job = "lambdaexec/stale-marker-test/000000"
        store.put(protocol.started_key(job, 0, 0), b"")  # attempt 0 started, then its worker died
        event = {"storage": store.spec, "job_prefix": job, "calls": [[0, 0, 0]], "attempt": 1}
        invoker = LambdaInvoker(config)
        invoker.invoke(Dispatch(job, [0], 1, lambda calls, attempt: event))
        deadline, lost = time.monotonic() + 20, []
        while not lost and time.monotonic() < deadline:
            lost = [n for n in invoker.poll(0.5) if isinstance(n, Lost)]
        # reported at the start deadline as never started, not after the 60 s run deadline
        assert lost and not lost[0].started and "never started" in lost[0].reason
        store.delete(job + "/")
    finally:
        if invoker is not None:
            invoker.close()
        emu.stop()


# --- the execution environment: awslambdaric, memory, /tmp, logs, storage access ----------------
def test_environment_runs_awslambdaric_with_a_private_tmpdir(executor):
    def facts():
        import sys
        import tempfile

        return {"main": sys.modules["__main__"].__spec__.name, "tmp": tempfile.gettempdir(),
                "runtime_api": os.environ.get("AWS_LAMBDA_RUNTIME_API", "")}

    got = executor.submit(facts).result(timeout=60)
    assert got["main"] == "awslambdaric.__main__" and got["runtime_api"].startswith("127.0.0.1:")
    assert got["tmp"] != "/tmp" and os.path.basename(got["tmp"]).startswith("tmp-")


def write_file_of(mb):
    import tempfile

    with tempfile.NamedTemporaryFile() as f:
        for _ in range(mb):
            f.write(b"x" * 2**20)
            f.flush()
    return mb


def allocate(mb):
    import numpy as np

    return int(np.ones(mb * 2**20, dtype=np.uint8).sum() // 2**20)


def allocate_shared(mb):
    import mmap

    block = mmap.mmap(-1, mb * 2**20)  # shared memory: outside the worker's own cap, so Lambda's kill
    for i in range(0, mb * 2**20, 4096):
        block[i] = 1
    return mb


@pytest.fixture(scope="module")
def small_emulator(lambda_package, seaweed):
    """Functions of 256 MB, writing files of at most 8 MB, timing out after 10 s."""
    emu = start(lambda_package, concurrency=2, timeout=10, memory=256, ephemeral_storage=8)
    yield emu
    emu.stop()


def test_a_call_over_the_memory_size_fails_typed_naming_it(small_emulator, s3_settings):
    with LambdaExecutor(backend="lambda", lambda_endpoint_url=small_emulator.url, timeout=10, memory=256,
                        **s3_settings) as ex:
        assert ex.submit(allocate, 20).result(timeout=60) == 20
        with pytest.raises(lambdaexec.OutOfMemoryError, match=r"memory size, 256 MB.*LAMBDAEXEC_MEMORY") as info:
            ex.submit(allocate, 400).result(timeout=60)
        assert isinstance(info.value, lambdaexec.WorkerDiedError)
        assert ex.submit(allocate, 20).result(timeout=60) == 20  # a fresh environment takes over
    assert "Runtime.ExitError" in small_emulator.stderr()  # the environment ended, as Lambda's does


def test_memory_is_enforced_from_outside_too(small_emulator, s3_settings):
    before = small_emulator.stats().get("oom", 0)
    with LambdaExecutor(backend="lambda", lambda_endpoint_url=small_emulator.url, timeout=10, retries=0,
                        **s3_settings) as ex:
        with pytest.raises(lambdaexec.CallTimeoutError, match="out of memory"):
            ex.submit(allocate_shared, 400).result(timeout=90)
    assert small_emulator.stats()["oom"] == before + 1
    assert "Runtime.OutOfMemory" in small_emulator.stderr()


def test_files_are_limited_to_ephemeral_storage(small_emulator, s3_settings):
    with LambdaExecutor(backend="lambda", lambda_endpoint_url=small_emulator.url, timeout=10, **s3_settings) as ex:
        assert ex.submit(write_file_of, 4).result(timeout=60) == 4
        with pytest.raises(OSError, match="File too large"):
            ex.submit(write_file_of, 9).result(timeout=60)


def test_log_tail_of_a_synchronous_invocation(emulator):
    import base64

    resp = _lambda_client(emulator.url).invoke(FunctionName="lambdaexec-worker", Payload=b'{"x": 1}', LogType="Tail")
    assert resp["FunctionError"] == "Unhandled"
    tail = base64.b64decode(resp["LogResult"]).decode()
    assert "KeyError" in tail and "'storage'" in tail
    assert "KeyError" in emulator.stderr()  # each handler error is printed by the emulator


@pytest.mark.parametrize("credentials", ["wrong", "missing"])
def test_a_worker_that_cannot_reach_storage_fails_the_first_call_fast(lambda_package, s3_settings, credentials):
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    if credentials == "wrong":
        env.update(AWS_ACCESS_KEY_ID=os.environ["AWS_ACCESS_KEY_ID"], AWS_SECRET_ACCESS_KEY="not-the-secret")
    emu = start(lambda_package, concurrency=2, timeout=300, env=env)
    try:
        # deadlines far beyond the wait below: only the trial call can fail these calls in time
        with LambdaExecutor(backend="lambda", lambda_endpoint_url=emu.url, timeout=300, start_deadline=120,
                            **s3_settings) as ex:
            futures = ex.map_futures(square, range(3))
            with pytest.raises(lambdaexec.WorkerStorageError, match=r"could not write s3://.*AWS_SECRET_ACCESS_KEY"):
                futures[0].result(timeout=60)
            assert all(isinstance(f.exception(timeout=30), lambdaexec.WorkerStorageError) for f in futures)
        assert "StorageAccessError" in emu.stderr()
    finally:
        emu.stop()
