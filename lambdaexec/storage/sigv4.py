"""The two AWS requests lambdaexec sends by hand, Lambda ``Invoke`` (the invoker) and S3
``GetObject`` (result downloads): Signature Version 4 signing and keep-alive connections.

botocore signs the same way but spends milliseconds of Python per request building its model
of the call; at thousands of requests per second that is the client's bottleneck. The tests
check that this signer and botocore's produce the same ``Authorization`` header.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import http.client
import ssl
import threading
import urllib.parse
import urllib.request
from typing import Any

#: the payload hash of a request without a body
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class SigV4Signer:
    """Signs requests for one region and service; the signing key is cached per day.

    >>> from botocore.credentials import Credentials
    >>> creds = Credentials("AKID", "secret").get_frozen_credentials()
    >>> headers = SigV4Signer("us-east-1", "s3").sign(creds, "GET", "b.s3.amazonaws.com", "/k", {}, EMPTY_SHA256)
    >>> headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKID/")
    True
    """

    def __init__(self, region: str, service: str):
        self.region, self.service = region, service
        self._key: tuple[str, str, bytes] = ("", "", b"")

    def _signing_key(self, secret: str, day: str) -> bytes:
        if self._key[:2] != (secret, day):
            k = hmac.new(("AWS4" + secret).encode(), day.encode(), hashlib.sha256).digest()
            for part in (self.region, self.service, "aws4_request"):
                k = hmac.new(k, part.encode(), hashlib.sha256).digest()
            self._key = (secret, day, k)
        return self._key[2]

    def sign(self, creds: Any, method: str, host: str, canonical_path: str, headers: dict[str, str],
             payload_hash: str, amz_date: str | None = None) -> dict[str, str]:
        """Return ``headers`` plus ``Host``, ``X-Amz-Date``, ``X-Amz-Security-Token`` (when the
        credentials have a token) and ``Authorization``, every header signed.

        ``canonical_path`` is the path as AWS canonicalizes it: S3 takes the path as sent,
        other services encode it once more. Requests without a query string only.
        """
        amz_date = amz_date or datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        day = amz_date[:8]
        out = {"Host": host, "X-Amz-Date": amz_date, **headers}
        if creds.token:
            out["X-Amz-Security-Token"] = creds.token
        canon = sorted((k.lower(), " ".join(v.split())) for k, v in out.items())
        signed = ";".join(k for k, _ in canon)
        request = "\n".join([method, canonical_path, "", *(f"{k}:{v}" for k, v in canon), "", signed, payload_hash])
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(request.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(creds.secret_key, day), to_sign.encode(), hashlib.sha256).hexdigest()
        out["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, "
                                f"SignedHeaders={signed}, Signature={signature}")
        return out


def proxied(url: str) -> bool:
    """Whether the environment sends requests to ``url`` through an HTTP(S) proxy (then
    boto3, which speaks to proxies, sends them instead of us)."""
    parts = urllib.parse.urlsplit(url)
    return bool(urllib.request.getproxies().get(parts.scheme)) and not urllib.request.proxy_bypass(parts.hostname or "")


class Connections:
    """One keep-alive HTTP(S) connection to ``host`` per thread (a connection is not thread-safe)."""

    def __init__(self, host: str, https: bool, timeout: float):
        self.host, self.https, self.timeout = host, https, timeout
        self._ssl = ssl.create_default_context() if https else None
        self._local = threading.local()

    def get(self) -> http.client.HTTPConnection:
        """This thread's connection, opened on first use."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.https:
                conn = http.client.HTTPSConnection(self.host, timeout=self.timeout, context=self._ssl)
            else:
                conn = http.client.HTTPConnection(self.host, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def drop(self) -> None:
        """Close this thread's connection (after an error); the next :meth:`get` opens another."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
