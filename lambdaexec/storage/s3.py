"""Storage in an S3 bucket through boto3; ``endpoint_url`` points it at any S3-compatible store.

Credentials come from boto3's own chain (environment, profile, instance or Lambda role) and are
never written into a job or an invocation event.
"""

from __future__ import annotations

import hashlib
import http.client
import threading
import urllib.parse
from collections.abc import Sequence
from typing import Any

from lambdaexec.errors import ConfigError
from lambdaexec.storage.base import ChunkReader, Chunks, Storage, as_chunks, read_exactly
from lambdaexec.storage.sigv4 import EMPTY_SHA256, Connections, SigV4Signer, proxied

_SINGLE_PUT_LIMIT = 16 * 2**20
#: a whole-object read asks for this much first; a bigger object's rest comes in parts this big
_GET_PART = 16 * 2**20
#: parts of one large object read at once
_PARTS_IN_FLIGHT = 8
_READ_CHUNK = 2**20
_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()


def s3_client(region: str | None = None, endpoint_url: str | None = None, pool: int = 50) -> Any:
    """A boto3 S3 client, made once per process and settings (clients are thread-safe)."""
    key = (region, endpoint_url, pool)
    with _clients_lock:
        if key not in _clients:
            import boto3
            from botocore.config import Config

            config = Config(
                max_pool_connections=pool,
                # one quick retry here; the store's own retries (storage.base) go on with backoff
                # until the call's deadline: one retry policy, bounded by the time the call has left
                retries={"max_attempts": 2, "mode": "standard"},
                s3={"addressing_style": "path"} if endpoint_url else {},
            )
            _clients[key] = boto3.session.Session().client(
                "s3", region_name=region, endpoint_url=endpoint_url, config=config
            )
        return _clients[key]


def _explain(err: Exception, bucket: str) -> Exception:
    """Turn boto3's credential and bucket errors into one that says what to do."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(err, NoCredentialsError):
        return ConfigError(
            "no AWS credentials found for S3 storage: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run `aws configure`"
        )
    if isinstance(err, EndpointConnectionError):
        return ConfigError(f"cannot reach S3 at {err.kwargs.get('endpoint_url')}: check endpoint_url "
                           "(LAMBDAEXEC_ENDPOINT_URL) and your network")
    code = err.response["Error"]["Code"] if isinstance(err, ClientError) else ""
    if code in ("NoSuchBucket", "404"):
        return ConfigError(
            f"S3 bucket {bucket!r} does not exist: create it (`lambdaexec deploy` does) or set "
            "LAMBDAEXEC_BUCKET to an existing bucket"
        )
    if code in ("403", "AccessDenied", "Forbidden"):
        return ConfigError(f"access to S3 bucket {bucket!r} is denied: use credentials allowed to read "
                           "and write it (`lambdaexec doctor` checks the setup)")
    return err


class _SignedRequests:
    """``GetObject`` and single-part ``PutObject`` over one keep-alive HTTP(S) connection per
    thread, signed with :class:`~lambdaexec.storage.sigv4.SigV4Signer`: about a seventh of boto3's
    client CPU per request, which is what bounds how fast a client collects many small results
    (and how much CPU a worker spends writing one).

    It answers ``None`` whenever it is not sure (a redirect, any error but a missing key, a
    broken connection) and the caller asks boto3 instead, which retries and explains errors.
    After an answer that means the request itself is wrong here (a redirect to another region,
    a malformed request), it stops trying. Not used behind an HTTP(S) proxy.
    """

    def __init__(self, url: str, path_style: bool, bucket: str, region: str, credentials: Any):
        parts = urllib.parse.urlsplit(url)
        if path_style:
            self.host, self.base = parts.netloc, f"{parts.path.rstrip('/')}/{bucket}/"
        else:
            self.host, self.base = f"{bucket}.{parts.netloc}", f"{parts.path.rstrip('/')}/"
        self.credentials = credentials
        self.signer = SigV4Signer(region, "s3")
        self.broken = False
        self.connections = Connections(self.host, parts.scheme == "https", timeout=60)

    @classmethod
    def for_client(cls, client: Any, bucket: str, endpoint_url: str | None) -> _SignedRequests | None:
        """One for ``client``'s endpoint, region and credentials; ``None`` where boto3 must do it."""
        url = client.meta.endpoint_url
        if proxied(url):
            return None
        # the client's own credentials (its chain, refreshed as they expire)
        credentials = getattr(getattr(client, "_request_signer", None), "_credentials", None)
        if credentials is None or not client.meta.region_name:
            return None
        # boto3's own choice of addressing: path style when we set it (custom endpoints), or
        # when the bucket name cannot be a host name label
        path_style = bool(endpoint_url) or "." in bucket or bucket.lower() != bucket
        return cls(url, path_style, bucket, client.meta.region_name, credentials)

    def put(self, key: str, chunks: list[memoryview], size: int) -> bool | None:
        """Store ``chunks`` at ``key``: ``True``, or ``None``: ask boto3."""
        digest = hashlib.sha256()
        for chunk in chunks:
            digest.update(chunk)
        payload_hash = digest.hexdigest()
        headers = {"Content-Length": str(size), "X-Amz-Content-SHA256": payload_hash}
        return self._send("PUT", key, headers, payload_hash, chunks) is not None

    def get(self, key: str, byte_range: str | None, info: dict[str, Any] | None = None) -> bytearray | None:
        """The object (or its ``byte_range``); ``KeyError`` if it does not exist; ``None``: ask
        boto3. ``info`` receives the object's ``size`` (from ``Content-Range``)."""
        headers = {"X-Amz-Content-SHA256": EMPTY_SHA256}
        if byte_range:
            headers["Range"] = byte_range
        return self._send("GET", key, headers, EMPTY_SHA256, (), info)

    def _send(self, method: str, key: str, headers: dict[str, str], payload_hash: str,
              body: list[memoryview] | tuple, info: dict[str, Any] | None = None) -> bytearray | None:
        """The response body of a success; ``KeyError`` for a missing key; ``None`` otherwise."""
        if self.broken:
            return None
        path = self.base + urllib.parse.quote(key, safe="/~")
        headers = self.signer.sign(self.credentials.get_frozen_credentials(), method, self.host, path,
                                   headers, payload_hash)
        conn = self.connections.get()
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.endheaders()
            for chunk in body:
                conn.send(chunk)
            resp = conn.getresponse()
            if info is not None and resp.status == 416:  # a range of an empty object
                resp.read()
                info["size"] = 0
                return bytearray()
            if resp.status not in (200, 206):
                text = resp.read()
                if resp.status == 404 and b"<Code>NoSuchKey</Code>" in text:
                    raise KeyError(key)
                if resp.status in (301, 307, 400):
                    self.broken = True
                return None
            length = resp.getheader("Content-Length")
            if length is None:  # not S3's way, but then read to the end
                buf = bytearray(resp.read())
            else:
                buf = read_exactly(resp.readinto, int(length), f"S3 object {key!r}")
                resp.read()  # ends the response (an empty one too), so the connection can be reused
            if info is not None:
                info["size"] = _object_size(resp.getheader("Content-Range"), len(buf))
            return buf
        except (OSError, http.client.HTTPException):
            self.connections.drop()
            return None


def _object_size(content_range: str | None, got: int) -> int:
    """The whole object's size from a ``Content-Range: bytes 0-99/1234`` header (``got``
    bytes came: without the header, the whole object did)."""
    if content_range and "/" in content_range:
        total = content_range.rpartition("/")[2]
        if total.isdigit():
            return int(total)
    return got


class S3Storage(Storage):
    """Keys are object keys in ``bucket``. Ranged reads; large objects are uploaded in parts
    (boto3's transfer manager) and read in parts, :data:`_PARTS_IN_FLIGHT` at a time.

    A whole-object read asks for its first :data:`_GET_PART` bytes: an object no bigger (every
    result, batch and job object but large data) arrives in that one request, as with a plain
    GET; for a bigger one the answer tells its size, and the rest comes as ranged GETs in
    parallel, each into its place in the one buffer. Hand-signed requests rather than boto3's
    ``download_fileobj``, which would first send a HEAD (a second request for every small
    object, or the first part twice for a large one) and costs several times the client CPU
    per request (``bench/bench_s3.py``).
    """

    concurrency = 32

    def __init__(self, bucket: str, region: str | None = None, endpoint_url: str | None = None):
        if not bucket:
            raise ConfigError("S3 storage needs a bucket: set bucket= or LAMBDAEXEC_BUCKET")
        self.bucket = bucket
        self.spec = {"kind": "s3", "bucket": bucket, "region": region, "endpoint_url": endpoint_url}
        self.client = s3_client(region, endpoint_url)
        self._signed = _SignedRequests.for_client(self.client, bucket, endpoint_url)
        #: how reads and single-part writes were sent, for benchmarks and tests
        self.stats = {"signed_gets": 0, "boto3_gets": 0, "signed_puts": 0, "boto3_puts": 0}

    def check(self) -> None:
        """Credentials present and the bucket reachable: one HEAD request."""
        self._call("head_bucket")

    def _call(self, op: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, op)(Bucket=self.bucket, **kwargs)
        except Exception as err:
            explained = _explain(err, self.bucket)
            if explained is err:
                raise
            raise explained from err

    def put(self, key: str, data: Chunks) -> int:
        chunks = as_chunks(data)
        size = sum(len(c) for c in chunks)
        if size <= _SINGLE_PUT_LIMIT:
            if self._signed is not None and self._signed.put(key, chunks, size):
                self.stats["signed_puts"] += 1
                return size
            self.stats["boto3_puts"] += 1
            body = bytes(chunks[0]) if len(chunks) == 1 else b"".join(chunks)
            self._call("put_object", Key=key, Body=body)
        else:
            from boto3.s3.transfer import TransferConfig

            try:
                self.client.upload_fileobj(
                    ChunkReader(chunks), self.bucket, key,
                    Config=TransferConfig(multipart_chunksize=16 * 2**20, max_concurrency=4),
                )
            except Exception as err:
                raise _explain(err, self.bucket) from err
        return size

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytearray:
        if start is not None or end is not None:
            if end is not None and end <= (start or 0):
                return bytearray()
            return self._get_range(key, f"bytes={start or 0}-{'' if end is None else end - 1}")
        info: dict[str, Any] = {}
        first = self._get_range(key, f"bytes=0-{_GET_PART - 1}", info)
        size = info.get("size", len(first))
        if size <= len(first):
            return first
        buf = bytearray(size)
        buf[: len(first)] = first
        del first
        view = memoryview(buf)

        def part(lo: int) -> None:
            hi = min(lo + _GET_PART, size)
            data = self._get_range(key, f"bytes={lo}-{hi - 1}")
            if len(data) != hi - lo:
                raise OSError(f"S3 object {key!r} changed while read: bytes {lo}-{hi - 1} came as {len(data)}")
            view[lo:hi] = data

        import concurrent.futures

        starts = range(_GET_PART, size, _GET_PART)
        with concurrent.futures.ThreadPoolExecutor(min(_PARTS_IN_FLIGHT, len(starts))) as pool:
            for _ in pool.map(part, starts):
                pass
        return buf

    def _get_range(self, key: str, byte_range: str, info: dict[str, Any] | None = None) -> bytearray:
        """Bytes ``byte_range`` of ``key``; ``info`` receives the object's ``size``."""
        if self._signed is not None:
            data = self._signed.get(key, byte_range, info)
            if data is not None:
                self.stats["signed_gets"] += 1
                return data
        self.stats["boto3_gets"] += 1
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=key, Range=byte_range)
        except self.client.exceptions.NoSuchKey:
            raise KeyError(key) from None
        except Exception as err:
            code = getattr(err, "response", {}).get("Error", {}).get("Code")
            if info is not None and code == "InvalidRange":  # the first bytes of an empty object
                info["size"] = 0
                return bytearray()
            raise _explain(err, self.bucket) from err
        if info is not None:
            info["size"] = _object_size(resp.get("ContentRange"), resp["ContentLength"])
        buf = bytearray(resp["ContentLength"])
        body, got = resp["Body"], 0
        while got < len(buf):
            chunk = body.read(min(_READ_CHUNK, len(buf) - got))
            if not chunk:
                raise OSError(f"S3 object {key!r} ended after {got} of {len(buf)} bytes")
            buf[got : got + len(chunk)] = chunk
            got += len(chunk)
        return buf

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        token = None
        while True:
            kwargs = {"Prefix": prefix, "MaxKeys": 1000}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("list_objects_v2", **kwargs)
            keys.extend(o["Key"] for o in page.get("Contents", ()))
            if not page.get("IsTruncated"):
                return keys
            token = page["NextContinuationToken"]

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except Exception:
            return False

    def delete_keys(self, keys: Sequence[str]) -> None:
        for i in range(0, len(keys), 1000):  # DeleteObjects takes up to 1,000 keys
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            self._call("delete_objects", Delete={"Objects": batch, "Quiet": True})
