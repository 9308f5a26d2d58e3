"""One Lambda ``Invoke`` request, sent two ways: :class:`HttpSender` signs it by hand
(:mod:`lambdaexec.storage.sigv4`) over a keep-alive connection per thread, about four times
faster than boto3's client; :class:`Boto3Sender` uses boto3's Lambda client, when an HTTP(S)
proxy is configured. Neither raises for network or HTTP errors: each returns an
:class:`InvokeResult` the invoker decides on (retry, back off, or fail the calls)."""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import socket
import ssl
import urllib.parse
from typing import Any

from lambdaexec.aws.clients import aws_session, resolve_region
from lambdaexec.config import Config
from lambdaexec.errors import ConfigError
from lambdaexec.storage.sigv4 import Connections, SigV4Signer, proxied

MAX_THREADS = 96  # sender threads: enough for ~3,000 invocations/s at AWS's ~30 ms latency


class InvokeResult:
    """What one Invoke request returned: HTTP status (0: no answer), error type and message;
    for a synchronous call also the function's answer (``payload``), ``function_error``
    (``Unhandled`` when the handler raised) and the end of its log (``log``, asked with Tail)."""

    __slots__ = ("status", "error", "message", "retry_after", "payload", "function_error", "log", "unreachable")

    def __init__(self, status: int, error: str = "", message: str = "", retry_after: float = 0.0,
                 payload: bytes = b"", function_error: str = "", log: str = "", unreachable: bool = False):
        self.status, self.error, self.message, self.retry_after = status, error, message, retry_after
        self.payload, self.function_error, self.log = payload, function_error, log
        #: no connection could be made at all (refused, no such host, TLS failure, no route): the
        #: endpoint is wrong or down, not busy; ``message`` then names the URL and the error
        self.unreachable = unreachable

    @property
    def retriable(self) -> bool:
        """Throttling, a server error or no answer: worth sending again after a pause."""
        return self.status in (0, 429) or self.status >= 500

    def __repr__(self) -> str:
        return f"InvokeResult({self.status}, {self.error!r}, {self.message!r})"


#: errno values of a connection that could not be made (the endpoint is not there)
_UNREACHABLE_ERRNOS = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL}


def unreachable(err: BaseException) -> bool:
    """Whether ``err`` means no connection to the endpoint could be made: refused, a name that
    does not resolve, a TLS handshake or certificate failure, no route to the host."""
    if isinstance(err, (ConnectionRefusedError, socket.gaierror, ssl.SSLError, ssl.CertificateError)):
        return True
    return isinstance(err, OSError) and err.errno in _UNREACHABLE_ERRNOS


def unreachable_result(url: str, err: BaseException) -> InvokeResult:
    """The :class:`InvokeResult` of an Invoke request to ``url`` that could not connect."""
    text = str(err) or type(err).__name__
    kind = {ConnectionRefusedError: "connection refused", socket.gaierror: "the host name does not resolve"}.get(
        type(err), "no connection could be made")
    if isinstance(err, (ssl.SSLError, ssl.CertificateError)):
        kind = "the TLS connection failed"
    return InvokeResult(0, type(err).__name__, f"cannot connect to the Lambda Invoke endpoint {url}: {kind} "
                        f"({type(err).__name__}: {text}); check lambda_endpoint_url (LAMBDAEXEC_LAMBDA_ENDPOINT_URL), "
                        "the region and the network, or that the emulator runs (`lambdaexec emulate`)",
                        unreachable=True)


def _log_tail(header: str | None) -> str:
    """The text of an ``X-Amz-Log-Result`` header (base64 of the log's last 4 KB)."""
    import base64

    return base64.b64decode(header).decode(errors="replace") if header else ""


def invoke_url(config: Config, region: str) -> str:
    """The URL of the Invoke API for ``config.function_name``."""
    base = (config.lambda_endpoint_url or f"https://lambda.{region}.amazonaws.com").rstrip("/")
    return f"{base}/2015-03-31/functions/{urllib.parse.quote(config.function_name, safe='')}/invocations"


def _credentials(session: Any) -> Any:
    creds = session.get_credentials()
    if creds is None:
        raise ConfigError("no AWS credentials found for Lambda: set AWS_ACCESS_KEY_ID and "
                          "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run `aws configure` / `aws sso login`")
    return creds


class HttpSender:
    """Sends Invoke requests over one keep-alive HTTP(S) connection per thread."""

    def __init__(self, config: Config, session: Any = None):
        session = session or aws_session(config)
        self.region = resolve_region(config, session)
        self.url = invoke_url(config, self.region)
        parts = urllib.parse.urlsplit(self.url)
        self.host, self.path = parts.netloc, parts.path
        self.canonical_path = urllib.parse.quote(self.path, safe="/~")  # Lambda's: encoded once more
        self.credentials = _credentials(session)
        self.signer = SigV4Signer(self.region, "lambda")
        self.connections = Connections(self.host, parts.scheme == "https", timeout=30)

    def invoke(self, payload: bytes, invocation_type: str = "Event", tail: bool = False) -> InvokeResult:
        """Send one invocation (``tail``: ask for the end of its log); never raises for network
        or HTTP errors."""
        creds = self.credentials.get_frozen_credentials()
        amz = {"X-Amz-Invocation-Type": invocation_type, **({"X-Amz-Log-Type": "Tail"} if tail else {})}
        headers = self.signer.sign(creds, "POST", self.host, self.canonical_path, amz,
                                   hashlib.sha256(payload).hexdigest())
        headers["Content-Type"] = "application/json"
        conn = self.connections.get()
        try:
            conn.request("POST", self.path, body=payload, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as err:
            self.connections.drop()
            if unreachable(err):
                return unreachable_result(self.url, err)
            return InvokeResult(0, type(err).__name__, str(err))
        if resp.status < 300:
            return InvokeResult(resp.status, payload=body, function_error=resp.getheader("X-Amz-Function-Error") or "",
                                log=_log_tail(resp.getheader("X-Amz-Log-Result")))
        error = (resp.getheader("x-amzn-ErrorType") or "").split(":")[0]
        try:
            doc = json.loads(body)
            message = doc.get("message") or doc.get("Message") or ""
            error = error or doc.get("__type", "") or doc.get("Type", "")
        except ValueError:
            message = body[:300].decode(errors="replace")
        try:
            retry_after = float(resp.getheader("Retry-After") or 0)
        except ValueError:
            retry_after = 0.0
        return InvokeResult(resp.status, error or f"HTTP{resp.status}", message, retry_after)

    def close(self) -> None:
        """Nothing to do: connections belong to the sender threads, which end with the invoker."""


class Boto3Sender:
    """Sends Invoke requests with boto3's Lambda client (used when a proxy is configured)."""

    def __init__(self, config: Config, session: Any = None, pool: int = MAX_THREADS):
        from botocore.config import Config as BotoConfig

        session = session or aws_session(config)
        self.region = resolve_region(config, session)
        _credentials(session)
        self.client = session.client(
            "lambda", region_name=self.region, endpoint_url=config.lambda_endpoint_url or None,
            config=BotoConfig(max_pool_connections=pool, retries={"max_attempts": 0},
                              connect_timeout=10, read_timeout=30))
        self.function_name = config.function_name
        self.url = invoke_url(config, self.region)

    def invoke(self, payload: bytes, invocation_type: str = "Event", tail: bool = False) -> InvokeResult:
        """Send one invocation (``tail``: ask for the end of its log); never raises for network
        or HTTP errors."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = self.client.invoke(FunctionName=self.function_name, InvocationType=invocation_type,
                                      Payload=payload, LogType="Tail" if tail else "None")
            body = resp["Payload"].read() if "Payload" in resp else b""
            return InvokeResult(resp["StatusCode"], payload=body, function_error=resp.get("FunctionError", ""),
                                log=_log_tail(resp.get("LogResult")))
        except ClientError as err:
            meta = err.response.get("ResponseMetadata", {})
            headers = meta.get("HTTPHeaders", {})
            try:
                retry_after = float(headers.get("retry-after") or 0)
            except ValueError:
                retry_after = 0.0
            return InvokeResult(meta.get("HTTPStatusCode", 0), err.response["Error"].get("Code", ""),
                                err.response["Error"].get("Message", ""), retry_after)
        except BotoCoreError as err:
            from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, SSLError

            cause = err.kwargs.get("error") if hasattr(err, "kwargs") else None
            if isinstance(err, (EndpointConnectionError, SSLError)) and not isinstance(err, ConnectTimeoutError):
                return unreachable_result(self.url, cause if isinstance(cause, BaseException) else err)
            return InvokeResult(0, type(err).__name__, str(err))

    def close(self) -> None:
        """Close the client's connection pool."""
        self.client.close()


def make_sender(config: Config) -> HttpSender | Boto3Sender:
    """The fast :class:`HttpSender`, or :class:`Boto3Sender` when an HTTP(S) proxy is set."""
    if proxied(invoke_url(config, config.region or "us-east-1")):
        return Boto3Sender(config)
    return HttpSender(config)

