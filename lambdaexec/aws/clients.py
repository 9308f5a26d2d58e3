"""boto3 sessions and clients for the AWS control plane (deploy, teardown, doctor), and the
region and credential lookups the invoker shares with them. boto3 is imported only when used."""

from __future__ import annotations

from typing import Any

from lambdaexec.config import Config
from lambdaexec.errors import ConfigError, LambdaExecError


class DeployError(LambdaExecError):
    """A deploy, teardown or doctor step failed; the message says which and what to do."""


def aws_session(config: Config) -> Any:
    """A boto3 session in ``config``'s region (its credential chain is boto3's own)."""
    import boto3

    return boto3.session.Session(region_name=config.region or None)


def resolve_region(config: Config, session: Any = None) -> str:
    """The AWS region: the ``region`` setting, else boto3's (``AWS_REGION``, profile, ...)."""
    region = config.region or (session or aws_session(config)).region_name
    if not region:
        raise ConfigError("no AWS region set: set region= or LAMBDAEXEC_REGION (or AWS_REGION, or a "
                          "region in your AWS profile: `aws configure set region us-east-1`)")
    return region


class AwsClients:
    """boto3 clients for ``config``: S3 and Lambda honour ``endpoint_url`` and
    ``lambda_endpoint_url``; other services honour boto3's ``AWS_ENDPOINT_URL_<SERVICE>``."""

    def __init__(self, config: Config):
        self.config = config
        self.session = aws_session(config)
        self.region = resolve_region(config, self.session)
        self._clients: dict[str, Any] = {}
        self._identity: dict[str, str] | None = None

    def client(self, service: str) -> Any:
        """The boto3 client for ``service`` (made once), retrying as boto3's standard mode does."""
        if service not in self._clients:
            from botocore.config import Config as BotoConfig

            endpoint = {"s3": self.config.endpoint_url, "lambda": self.config.lambda_endpoint_url}.get(service)
            extra = {"s3": {"addressing_style": "path"}} if service == "s3" and endpoint else {}
            self._clients[service] = self.session.client(
                service, region_name=self.region, endpoint_url=endpoint or None,
                config=BotoConfig(retries={"max_attempts": 6, "mode": "standard"}, **extra))
        return self._clients[service]

    def identity(self) -> dict[str, str]:
        """STS ``GetCallerIdentity`` (cached), or a ConfigError saying how to set credentials."""
        if self._identity is None:
            from botocore.exceptions import NoCredentialsError

            try:
                self._identity = self.client("sts").get_caller_identity()
            except NoCredentialsError:
                raise ConfigError("no AWS credentials found: run `aws configure` (or `aws sso login`), or set "
                                  "AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from None
        return self._identity

    @property
    def partition(self) -> str:
        """``aws``, ``aws-cn`` or ``aws-us-gov``: the partition of the caller's account."""
        return self.identity()["Arn"].split(":")[1]


def error_code(err: Exception) -> str:
    """The AWS error code of a botocore ``ClientError`` (``""`` for any other exception)."""
    return getattr(err, "response", {}).get("Error", {}).get("Code", "")


#: AWS error codes that mean the credentials themselves were refused
_BAD_CREDENTIALS = ("InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException",
                    "UnrecognizedClientException", "InvalidAccessKeyId", "AuthFailure", "RequestExpired")


def aws_failure(err: BaseException) -> tuple[str, str] | None:
    """``(kind, one-line message with the fix)`` for a network or credential failure talking to
    AWS (kind ``network`` or ``credentials``), else None. What ``deploy``, ``teardown`` and
    ``doctor`` print instead of botocore's traceback."""
    try:
        from botocore import exceptions as bx
    except ImportError:
        return None
    if isinstance(err, (bx.NoCredentialsError, bx.PartialCredentialsError, bx.CredentialRetrievalError)):
        return "credentials", (f"no usable AWS credentials ({type(err).__name__}: {err}): run `aws configure` (or "
                               "`aws sso login`), or set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if isinstance(err, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.SSLError, bx.ProxyConnectionError,
                        bx.ReadTimeoutError, bx.ConnectionClosedError)):
        return "network", (f"cannot reach AWS ({type(err).__name__}: {err}): check the network (and any proxy), "
                           "the region, and endpoint_url / lambda_endpoint_url if set")
    if error_code(err) in _BAD_CREDENTIALS:
        return "credentials", (f"AWS refused the credentials ({error_code(err)}: "
                               f"{getattr(err, 'response', {}).get('Error', {}).get('Message', err)}): check "
                               "AWS_PROFILE / AWS_ACCESS_KEY_ID, or renew them (`aws sso login`, `aws configure`)")
    return None
