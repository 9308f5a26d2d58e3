"""Every storage backend behaves the same: atomic put, ranged get, prefix list and delete."""

from __future__ import annotations

import os
import threading

import pytest

from lambdaexec.storage import open_storage


@pytest.fixture(params=["local", "s3", "redis"])
def store(request, tmp_path):
    if request.param == "local":
        return open_storage({"kind": "local", "path": str(tmp_path)})
    if request.param == "s3":
        s = request.getfixturevalue("s3_settings")
        return open_storage({"kind": "s3", "bucket": s["bucket"], "endpoint_url": s["endpoint_url"],
                             "region": s["region"]})
    return open_storage({"kind": "redis", "url": request.getfixturevalue("redis_server").url})


def test_put_get_range_list_delete(store, request):
    base = f"t-{request.node.name}/"
    assert store.put(base + "a/x", [b"hello ", memoryview(b"world")]) == 11
    store.put(base + "a/y", b"")
    store.put(base + "b/z", b"zzz")
    assert bytes(store.get(base + "a/x")) == b"hello world"
    assert bytes(store.get(base + "a/x", 6)) == b"world"
    assert bytes(store.get(base + "a/x", 0, 5)) == b"hello"
    assert bytes(store.get(base + "a/x", 3, 3)) == b""
    assert isinstance(store.get(base + "a/x"), bytearray)
    assert store.get(base + "a/y") == bytearray()
    assert sorted(store.list(base + "a/")) == [base + "a/x", base + "a/y"]
    assert store.exists(base + "b/z") and not store.exists(base + "b/nope")
    with pytest.raises(KeyError):
        store.get(base + "missing")
    store.put(base + "a/xx", b"longer name, same prefix")
    store.delete_keys([base + "a/x", base + "a/gone"])  # exact keys: a/xx stays, absent ones are fine
    assert store.list(base + "a/") == [base + "a/xx", base + "a/y"]
    store.delete(base + "a/")
    assert store.list(base) == [base + "b/z"]
    store.delete(base)
    assert store.list(base) == []


def test_large_object_round_trip(store, request):
    key = f"t-{request.node.name}/big"
    data = os.urandom(40 * 2**20)  # over S3's single-put size here: a multipart upload
    chunks = [memoryview(data)[i : i + 7 * 2**20] for i in range(0, len(data), 7 * 2**20)]
    assert store.put(key, chunks) == len(data)
    assert store.get(key) == data
    assert store.get(key, 2**20, 2**20 + 10) == data[2**20 : 2**20 + 10]
    store.delete(key)


def test_an_object_of_thousands_of_chunks_round_trips(store, request):
    # a batch of results or a job's inputs: many small chunks (some empty), more than one
    # writev may take at once on local storage
    key = f"t-{request.node.name}/many"
    data = os.urandom(300_000)
    cuts = sorted({0, len(data), *(int.from_bytes(os.urandom(3), "little") % len(data) for _ in range(3000))})
    chunks = [memoryview(data)[a:b] for a, b in zip(cuts, cuts[1:])] + [memoryview(b"")]
    assert len(chunks) > 2048
    assert store.put(key, chunks) == len(data)
    assert store.get(key) == data
    store.delete(key)


def test_s3_reads_a_large_object_in_parallel_parts(s3_settings, seaweed):
    from lambdaexec.storage import s3

    store = open_storage({"kind": "s3", **{k: v for k, v in s3_settings.items() if k != "storage"}})
    data = os.urandom(2 * s3._GET_PART + 12345)
    store.put("t-parts/big", data)
    before = seaweed.request_counts().get("GET", 0)
    assert store.get("t-parts/big") == data
    assert seaweed.request_counts().get("GET", 0) - before == 3  # its first part, then two at once
    small = b"x" * 1000
    store.put("t-parts/small", small)
    before = seaweed.request_counts().get("GET", 0)
    assert store.get("t-parts/small") == small
    assert seaweed.request_counts().get("GET", 0) - before == 1  # a small object: one request, as ever
    store.delete("t-parts/")


def test_readers_never_see_a_partial_object(tmp_path):
    store = open_storage({"kind": "local", "path": str(tmp_path)})
    a, b = b"a" * 4_000_000, b"b" * 4_000_000
    store.put("k", a)
    stop, bad = threading.Event(), []

    def read():
        while not stop.is_set():
            v = store.get("k")
            if v != a and v != b:
                bad.append(len(v))

    reader = threading.Thread(target=read)
    reader.start()
    for _ in range(30):
        store.put("k", b)
        store.put("k", a)
    stop.set()
    reader.join()
    assert bad == []


def test_keys_cannot_escape_the_local_store(tmp_path):
    store = open_storage({"kind": "local", "path": str(tmp_path)})
    with pytest.raises(ValueError, match="inside the store"):
        store.put("../outside", b"x")


def test_unknown_kind_is_named():
    with pytest.raises(ValueError, match="unknown storage kind 'ftp'"):
        open_storage({"kind": "ftp"})


def test_missing_bucket_is_named_at_construction(s3_settings):
    from lambdaexec import ConfigError, LambdaExecutor

    with pytest.raises(ConfigError, match="bucket 'no-such-bucket-here' does not exist"):
        LambdaExecutor(**{**s3_settings, "bucket": "no-such-bucket-here"})


def test_missing_credentials_are_named_at_construction(s3_settings, monkeypatch, tmp_path):
    from lambdaexec import ConfigError, LambdaExecutor
    from lambdaexec.storage import s3

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(s3, "_clients", {})  # a fresh client, which looks for credentials anew
    with pytest.raises(ConfigError, match="no AWS credentials found.*AWS_ACCESS_KEY_ID"):
        LambdaExecutor(**s3_settings)


def test_s3_reads_and_writes_are_signed_by_us_and_checked_by_the_server(s3_settings, monkeypatch):
    # SeaweedFS checks every request's SigV4 signature, as AWS does: reads and writes go
    # through our own signer (not boto3) and are accepted; with a wrong secret they are
    # refused, so the acceptance means something
    from lambdaexec.storage import s3

    spec = {"kind": "s3", "bucket": s3_settings["bucket"], "endpoint_url": s3_settings["endpoint_url"],
            "region": s3_settings["region"]}
    store = open_storage(spec)
    store.put("signed/a b+c~d", b"0123456789")  # a key that needs URL encoding
    assert bytes(store.get("signed/a b+c~d")) == b"0123456789"
    assert bytes(store.get("signed/a b+c~d", 2, 5)) == b"234"
    assert bytes(store.get("signed/a b+c~d", 7)) == b"789"
    with pytest.raises(KeyError):
        store.get("signed/missing")
    assert store.stats == {"signed_gets": 3, "boto3_gets": 0, "signed_puts": 1, "boto3_puts": 0}

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    monkeypatch.setattr(s3, "_clients", {})  # a fresh client, which reads the credentials anew
    impostor = open_storage(spec)
    with pytest.raises(Exception, match="SignatureDoesNotMatch"):
        impostor.get("signed/a b+c~d")
    with pytest.raises(Exception, match="SignatureDoesNotMatch"):
        impostor.put("signed/a b+c~d", b"overwritten")
    assert impostor.stats["boto3_gets"] == impostor.stats["boto3_puts"] == 1  # refused by hand, then by boto3
    assert bytes(store.get("signed/a b+c~d")) == b"0123456789"


@pytest.mark.parametrize("token", [None, "session-token"])
def test_s3_signature_matches_botocore(token):
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from lambdaexec.storage.sigv4 import EMPTY_SHA256, SigV4Signer

    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    path = "/lambdaexec/ab12/000003/calls/17%20x~y"
    request = AWSRequest("GET", f"https://my-bucket.s3.eu-west-1.amazonaws.com{path}",
                         headers={"Range": "bytes=0-99", "X-Amz-Content-SHA256": EMPTY_SHA256})
    S3SigV4Auth(creds, "s3", "eu-west-1").add_auth(request)
    ours = SigV4Signer("eu-west-1", "s3").sign(
        creds.get_frozen_credentials(), "GET", "my-bucket.s3.eu-west-1.amazonaws.com", path,
        {"Range": "bytes=0-99", "X-Amz-Content-SHA256": EMPTY_SHA256}, EMPTY_SHA256,
        amz_date=request.headers["X-Amz-Date"])
    assert ours["Authorization"] == request.headers["Authorization"]


def test_unreachable_endpoint_is_named(s3_settings):
    from servers import free_port

    from lambdaexec import ConfigError, LambdaExecutor

    bad = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConfigError, match="cannot reach S3 at"):
        LambdaExecutor(**{**s3_settings, "endpoint_url": bad})


def test_unreachable_redis_is_named():
    from servers import free_port

    from lambdaexec import ConfigError, LambdaExecutor

    with pytest.raises(ConfigError, match="cannot reach Redis"):
        LambdaExecutor(storage="redis", redis_url=f"redis://127.0.0.1:{free_port()}/0")


def test_executor_runs_through_redis_storage(redis_server):
    from lambdaexec import LambdaExecutor

    with LambdaExecutor(max_workers=2, storage="redis", redis_url=redis_server.url) as ex:
        assert list(ex.map(pow, range(20), [2] * 20)) == [i * i for i in range(20)]
        with pytest.raises(ZeroDivisionError):
            ex.submit(divmod, 1, 0).result(timeout=30)
