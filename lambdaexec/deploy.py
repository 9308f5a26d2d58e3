"""``lambdaexec deploy``, ``teardown``, ``doctor`` and ``emulate``: the AWS side of the cloud button.

:func:`deploy` (idempotent; run it again after upgrading lambdaexec) makes or updates:

- the S3 bucket: private (public access blocked), encrypted, tagged ``lambdaexec=deploy``
  when deploy created it, with a lifecycle rule expiring job data under ``prefix`` after
  ``lifecycle_days`` days;
- the IAM role ``<function_name>-role``, assumable by Lambda only, whose one inline policy allows
  reading and writing objects under ``s3://<bucket>/<prefix>/``, listing that prefix, and
  writing the function's own CloudWatch logs; nothing else;
- the function ``function_name``: the package :func:`build_package` makes (``worker/`` +
  ``lambdaexec`` + cloudpickle) on the Lambda Python runtime of the local Python's minor version,
  handler ``worker.handler.handler``, with ``memory``, ``timeout``, ``ephemeral_storage``,
  ``architecture`` and ``layers`` (for numpy, scipy, ...) from the settings, or the container
  image ``image_uri`` (see ``worker/Dockerfile``); Lambda's own async retries off
  (``MaximumRetryAttempts=0``: the client owns retries) and events older than
  ``start_deadline`` dropped (the client re-invokes them).

:func:`teardown` removes the function, the role and the logs, and the bucket if deploy made it
(otherwise only the job data under ``prefix`` and deploy's lifecycle rule). :func:`doctor`
checks every piece and prints, for each, ``ok`` or what is wrong and the command that fixes it.

Example::

    from lambdaexec.config import load_config
    from lambdaexec.deploy import deploy, doctor
    cfg = load_config({"backend": "lambda", "storage": "s3", "bucket": "my-lambdaexec"})
    deploy(cfg)
    assert doctor(cfg)
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from typing import Any, Callable

from lambdaexec.cli import command
from lambdaexec.config import Config, load_config
from lambdaexec.errors import ConfigError, LambdaExecError

#: Python versions with a Lambda runtime (python3.9 was deprecated on 2025-12-15)
LAMBDA_PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14")
#: packages copied into the deployment package, if importable
PACKAGE_MODULES = ("worker", "lambdaexec", "cloudpickle", "lambdaexec_joblib", "lambdaexec_dask")
HANDLER = "worker.handler.handler"
POLICY_NAME = "lambdaexec-worker"
TAG = {"lambdaexec": "deploy"}
_LIFECYCLE_ID = "lambdaexec-expire-job-data"
_EPOCH = (1980, 1, 1, 0, 0, 0)


class DeployError(LambdaExecError):
    """A deploy, teardown or doctor step failed; the message says which and what to do."""


# --- the package ------------------------------------------------------------------------------
def lambda_runtime(version: tuple[int, int] | None = None) -> str:
    """The Lambda runtime matching this Python (``python3.11`` for 3.11), or a clear error.

    >>> lambda_runtime((3, 12))
    'python3.12'
    """
    major, minor = version or sys.version_info[:2]
    if f"{major}.{minor}" not in LAMBDA_PYTHONS:
        raise ConfigError(
            f"AWS Lambda has no Python {major}.{minor} runtime (it has {', '.join(LAMBDA_PYTHONS)}); the "
            "worker must run the client's Python minor version for pickles to load: run your client on one "
            f"of those, or deploy a container image with Python {major}.{minor} (worker/Dockerfile, image_uri=)")
    return f"python{major}.{minor}"


def _package_files() -> list[tuple[str, str]]:
    """(archive name, file path) of every file the package holds, sorted."""
    import importlib

    files = []
    for name in PACKAGE_MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            if name in ("worker", "lambdaexec", "cloudpickle"):
                raise
            continue
        root = os.path.dirname(mod.__file__ or "")
        base = os.path.dirname(root)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for f in filenames:
                if not f.endswith((".pyc", ".pyo")):
                    path = os.path.join(dirpath, f)
                    files.append((os.path.relpath(path, base), path))
    return sorted(files)


def package_bytes() -> bytes:
    """The deployment zip, byte-for-byte reproducible (so unchanged code is not re-uploaded)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for arcname, path in _package_files():
            info = zipfile.ZipInfo(arcname, _EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as f:
                z.writestr(info, f.read())
    return buf.getvalue()


def build_package(path: str) -> str:
    """Write the deployment zip to ``path``; return its ``CodeSha256`` (as Lambda reports it)."""
    data = package_bytes()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return code_sha256(data)


def code_sha256(data: bytes) -> str:
    """Lambda's ``CodeSha256`` of a zip: base64 of its SHA-256."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def build_image(config: Config, log: Callable[[str], None] = print) -> str:
    """Build ``worker/Dockerfile`` with numpy and scipy, push it to ECR, return its URI.

    Needs a docker engine; where there is none, build the image elsewhere and pass ``image_uri``.
    """
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "info"], capture_output=True).returncode != 0:
        raise DeployError("no docker engine here to build the worker image: build worker/Dockerfile on a "
                          "machine with docker and deploy with image_uri=<uri>, or use layers=<numpy layer ARN>")
    import cloudpickle

    aws = _Aws(config)
    repo = config.function_name
    try:
        uri = aws.client("ecr").create_repository(repositoryName=repo)["repository"]["repositoryUri"]
    except aws.client("ecr").exceptions.RepositoryAlreadyExistsException:
        uri = aws.client("ecr").describe_repositories(repositoryNames=[repo])["repositories"][0]["repositoryUri"]
    tag = f"{uri}:{code_sha256(package_bytes())[:12].replace('/', '_').replace('+', '-')}"
    with tempfile.TemporaryDirectory() as ctx:
        with zipfile.ZipFile(io.BytesIO(package_bytes())) as z:
            z.extractall(os.path.join(ctx, "package"))
        shutil.copy(os.path.join(os.path.dirname(_package_root("worker")), "worker", "Dockerfile"), ctx)
        py = f"{sys.version_info[0]}.{sys.version_info[1]}"
        platform = "linux/arm64" if config.architecture == "arm64" else "linux/amd64"
        log(f"building {tag} (python {py}, {platform})")
        subprocess.run([docker, "build", "--platform", platform, "--build-arg", f"PYTHON_VERSION={py}",
                        "--build-arg", f"CLOUDPICKLE_VERSION={cloudpickle.__version__}", "-t", tag, ctx], check=True)
    token = aws.client("ecr").get_authorization_token()["authorizationData"][0]
    user, password = base64.b64decode(token["authorizationToken"]).decode().split(":", 1)
    subprocess.run([docker, "login", "-u", user, "--password-stdin", token["proxyEndpoint"]],
                   input=password.encode(), check=True)
    subprocess.run([docker, "push", tag], check=True)
    return tag


def _package_root(name: str) -> str:
    import importlib

    return os.path.dirname(importlib.import_module(name).__file__ or "")


# --- AWS clients ------------------------------------------------------------------------------
class _Aws:
    """boto3 clients for ``config``: S3 and Lambda honour ``endpoint_url`` and
    ``lambda_endpoint_url``; other services honour boto3's ``AWS_ENDPOINT_URL_<SERVICE>``."""

    def __init__(self, config: Config):
        from lambdaexec.invokers.aws_lambda import aws_session, resolve_region

        self.config = config
        self.session = aws_session(config)
        self.region = resolve_region(config, self.session)
        self._clients: dict[str, Any] = {}
        self._identity: dict[str, str] | None = None

    def client(self, service: str) -> Any:
        if service not in self._clients:
            from botocore.config import Config as BotoConfig

            endpoint = {"s3": self.config.endpoint_url, "lambda": self.config.lambda_endpoint_url}.get(service)
            extra = {"s3": {"addressing_style": "path"}} if service == "s3" and endpoint else {}
            self._clients[service] = self.session.client(
                service, region_name=self.region, endpoint_url=endpoint or None,
                config=BotoConfig(retries={"max_attempts": 6, "mode": "standard"}, **extra))
        return self._clients[service]

    def identity(self) -> dict[str, str]:
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
        return self.identity()["Arn"].split(":")[1]


def _code(err: Exception) -> str:
    return getattr(err, "response", {}).get("Error", {}).get("Code", "")


def role_name(config: Config) -> str:
    """The IAM role deploy makes for the function."""
    return f"{config.function_name}-role"[:64]


def trust_policy() -> dict[str, Any]:
    """Who may assume the role: the Lambda service only."""
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


def worker_policy(config: Config, account: str, region: str, partition: str = "aws") -> dict[str, Any]:
    """Least privilege for the worker: objects under the bucket's prefix, its own logs."""
    prefix = config.prefix.strip("/")
    log_group = f"arn:{partition}:logs:{region}:{account}:log-group:/aws/lambda/{config.function_name}"
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "JobObjects", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
         "Resource": f"arn:{partition}:s3:::{config.bucket}/{prefix}/*"},
        {"Sid": "ListJobObjects", "Effect": "Allow", "Action": "s3:ListBucket",
         "Resource": f"arn:{partition}:s3:::{config.bucket}",
         "Condition": {"StringLike": {"s3:prefix": [f"{prefix}/*"]}}},
        {"Sid": "OwnLogs", "Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:CreateLogStream",
                                                         "logs:PutLogEvents"],
         "Resource": [log_group, f"{log_group}:*"]},
    ]}


def _check_deployable(config: Config) -> None:
    if config.storage != "s3" or not config.bucket:
        raise ConfigError("deploy needs S3 storage with a bucket: set storage='s3' and bucket= "
                          "(LAMBDAEXEC_STORAGE=s3, LAMBDAEXEC_BUCKET=<a globally unique name>)")
    if config.timeout > 900:
        raise ConfigError(f"timeout is {config.timeout:g} s but Lambda stops functions after 900 s: "
                          "set timeout <= 900 (LAMBDAEXEC_TIMEOUT)")


# --- deploy -----------------------------------------------------------------------------------
def _ensure_bucket(aws: _Aws, config: Config, log: Callable[[str], None]) -> None:
    s3 = aws.client("s3")
    try:
        s3.head_bucket(Bucket=config.bucket)
        log(f"bucket {config.bucket}: exists")
    except Exception as err:
        if _code(err) in ("403", "AccessDenied", "Forbidden"):
            raise DeployError(f"bucket {config.bucket!r} exists but this account cannot use it (another "
                              "account owns it?): choose another name (LAMBDAEXEC_BUCKET)") from err
        if _code(err) not in ("404", "NoSuchBucket", "NotFound"):
            raise
        kwargs: dict[str, Any] = {}
        if aws.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": aws.region}
        try:
            s3.create_bucket(Bucket=config.bucket, **kwargs)
        except s3.exceptions.BucketAlreadyExists as exc:
            raise DeployError(f"bucket name {config.bucket!r} is taken by another account: choose another "
                              "(LAMBDAEXEC_BUCKET)") from exc
        s3.put_bucket_tagging(Bucket=config.bucket, Tagging={"TagSet": [{"Key": k, "Value": v}
                                                                        for k, v in TAG.items()]})
        log(f"bucket {config.bucket}: created")
    s3.put_public_access_block(Bucket=config.bucket, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True})
    s3.put_bucket_encryption(Bucket=config.bucket, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    rules = [r for r in _lifecycle_rules(s3, config.bucket) if r.get("ID") != _LIFECYCLE_ID]
    rules.append({"ID": _LIFECYCLE_ID, "Status": "Enabled", "Filter": {"Prefix": config.prefix.strip("/") + "/"},
                  "Expiration": {"Days": config.lifecycle_days},
                  "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}})
    s3.put_bucket_lifecycle_configuration(Bucket=config.bucket, LifecycleConfiguration={"Rules": rules})
    log(f"bucket {config.bucket}: public access blocked, job data expires after {config.lifecycle_days} days")


def _lifecycle_rules(s3: Any, bucket: str) -> list[dict[str, Any]]:
    try:
        return s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except Exception as err:
        if _code(err) == "NoSuchLifecycleConfiguration":
            return []
        raise


def _ensure_role(aws: _Aws, config: Config, log: Callable[[str], None]) -> tuple[str, bool]:
    iam = aws.client("iam")
    name = role_name(config)
    trust = json.dumps(trust_policy())
    try:
        arn = iam.get_role(RoleName=name)["Role"]["Arn"]
        iam.update_assume_role_policy(RoleName=name, PolicyDocument=trust)
        created = False
    except iam.exceptions.NoSuchEntityException:
        arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust,
                              Description="lambdaexec worker: its bucket prefix and its own logs",
                              Tags=[{"Key": k, "Value": v} for k, v in TAG.items()])["Role"]["Arn"]
        created = True
    policy = worker_policy(config, aws.identity()["Account"], aws.region, aws.partition)
    iam.put_role_policy(RoleName=name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(policy))
    log(f"role {name}: {'created' if created else 'updated'}")
    return arn, created


def _wait_function(lam: Any, name: str, limit: float = 300) -> dict[str, Any]:
    end = time.monotonic() + limit
    while True:
        conf = lam.get_function_configuration(FunctionName=name)
        if conf.get("State", "Active") != "Pending" and conf.get("LastUpdateStatus", "Successful") != "InProgress":
            if conf.get("State") == "Failed" or conf.get("LastUpdateStatus") == "Failed":
                why = conf.get("StateReason") or conf.get("LastUpdateStatusReason")
                raise DeployError(f"function {name} failed to update: {why}")
            return conf
        if time.monotonic() > end:
            raise DeployError(f"function {name} is still updating after {limit:g} s: run `lambdaexec deploy` again")
        time.sleep(1)


def function_settings(config: Config, role_arn: str) -> dict[str, Any]:
    """The function's configuration, as CreateFunction / UpdateFunctionConfiguration take it."""
    settings: dict[str, Any] = {
        "Role": role_arn, "Timeout": int(max(1, min(900, -(-config.timeout // 1)))),
        "MemorySize": config.memory, "EphemeralStorage": {"Size": config.ephemeral_storage},
        "Description": "lambdaexec worker",
    }
    if not config.image_uri:
        settings.update(Runtime=lambda_runtime(), Handler=HANDLER,
                        Layers=[a.strip() for a in config.layers.split(",") if a.strip()])
    return settings


def _ensure_function(aws: _Aws, config: Config, role_arn: str, new_role: bool,
                     log: Callable[[str], None]) -> dict[str, Any]:
    lam = aws.client("lambda")
    name = config.function_name
    settings = function_settings(config, role_arn)
    zipped = None if config.image_uri else package_bytes()
    code = {"ImageUri": config.image_uri} if config.image_uri else {"ZipFile": zipped}
    try:
        current = lam.get_function_configuration(FunctionName=name)
    except lam.exceptions.ResourceNotFoundException:
        current = None
    if current is None:
        end = time.monotonic() + (90 if new_role else 0)
        while True:
            try:
                lam.create_function(FunctionName=name, Code=code, Architectures=[config.architecture],
                                    PackageType="Image" if config.image_uri else "Zip",
                                    Tags=TAG, **settings)
                break
            except lam.exceptions.InvalidParameterValueException as err:  # IAM not yet propagated
                if "role" not in str(err).lower() or time.monotonic() > end:
                    raise
                time.sleep(3)
        log(f"function {name}: created ({settings.get('Runtime', config.image_uri)}, {config.memory} MB, "
            f"{settings['Timeout']} s, {config.architecture})")
    else:
        _wait_function(lam, name)
        same_code = (current.get("CodeSha256") == code_sha256(zipped) if zipped is not None else False)
        if not same_code or current.get("Architectures", ["x86_64"]) != [config.architecture]:
            lam.update_function_code(FunctionName=name, Architectures=[config.architecture], **code)
            _wait_function(lam, name)
            log(f"function {name}: code updated")
        wanted = {k: v for k, v in settings.items() if k != "Layers"}
        have_layers = [layer["Arn"] for layer in current.get("Layers", [])]
        differs = any(current.get(k) != v for k, v in wanted.items()) or (
            "Layers" in settings and have_layers != settings["Layers"])
        if differs:
            lam.update_function_configuration(FunctionName=name, **settings)
            _wait_function(lam, name)
            log(f"function {name}: configuration updated ({config.memory} MB, {settings['Timeout']} s)")
        else:
            log(f"function {name}: configuration unchanged")
    lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0,
                                         MaximumEventAgeInSeconds=_event_age(config))
    log(f"function {name}: Lambda's async retries off, events dropped after {_event_age(config)} s")
    return _wait_function(lam, name)


def _event_age(config: Config) -> int:
    return int(min(21600, max(60, config.start_deadline)))


def deploy(config: Config | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Create or update the bucket, role and function for ``config`` (idempotent); return the
    function's configuration. See the module docstring."""
    config = config or load_config()
    _check_deployable(config)
    if not config.image_uri:
        lambda_runtime()
    aws = _Aws(config)
    ident = aws.identity()
    log(f"deploying as {ident['Arn']} in {aws.region}")
    _ensure_bucket(aws, config, log)
    role_arn, new_role = _ensure_role(aws, config, log)
    conf = _ensure_function(aws, config, role_arn, new_role, log)
    log(f"done: LAMBDAEXEC_BACKEND=lambda LAMBDAEXEC_STORAGE=s3 LAMBDAEXEC_BUCKET={config.bucket} "
        f"LAMBDAEXEC_REGION={aws.region} runs your executors on Lambda")
    return conf


# --- teardown ---------------------------------------------------------------------------------
def teardown(config: Config | None = None, keep_bucket: bool = False, log: Callable[[str], None] = print) -> None:
    """Remove what :func:`deploy` made: function, role, logs, and the bucket if deploy made it
    (otherwise, or with ``keep_bucket``, only job data under ``prefix`` and deploy's lifecycle
    rule). Missing pieces are skipped, so it can be run twice."""
    config = config or load_config()
    aws = _Aws(config)
    lam, iam = aws.client("lambda"), aws.client("iam")
    try:
        lam.delete_function(FunctionName=config.function_name)
        log(f"function {config.function_name}: deleted")
    except lam.exceptions.ResourceNotFoundException:
        log(f"function {config.function_name}: not found")
    name = role_name(config)
    try:
        iam.delete_role_policy(RoleName=name, PolicyName=POLICY_NAME)
    except iam.exceptions.NoSuchEntityException:
        pass
    try:
        iam.delete_role(RoleName=name)
        log(f"role {name}: deleted")
    except iam.exceptions.NoSuchEntityException:
        log(f"role {name}: not found")
    try:
        aws.client("logs").delete_log_group(logGroupName=f"/aws/lambda/{config.function_name}")
        log(f"log group /aws/lambda/{config.function_name}: deleted")
    except Exception as err:
        if _code(err) != "ResourceNotFoundException":
            log(f"log group /aws/lambda/{config.function_name}: not deleted ({err})")
    if config.bucket:
        _teardown_bucket(aws, config, keep_bucket, log)


def _teardown_bucket(aws: _Aws, config: Config, keep_bucket: bool, log: Callable[[str], None]) -> None:
    s3 = aws.client("s3")
    try:
        tags = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=config.bucket)["TagSet"]}
    except Exception as err:
        if _code(err) in ("NoSuchBucket", "404"):
            log(f"bucket {config.bucket}: not found")
            return
        tags = {}
    ours = all(tags.get(k) == v for k, v in TAG.items()) and not keep_bucket
    prefix = "" if ours else config.prefix.strip("/") + "/"
    paginator = s3.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=config.bucket, Prefix=prefix):
        objs = [{"Key": o["Key"], "VersionId": o["VersionId"]}
                for o in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        for i in range(0, len(objs), 1000):
            s3.delete_objects(Bucket=config.bucket, Delete={"Objects": objs[i:i + 1000], "Quiet": True})
    if ours:
        s3.delete_bucket(Bucket=config.bucket)
        log(f"bucket {config.bucket}: deleted")
        return
    rules = [r for r in _lifecycle_rules(s3, config.bucket) if r.get("ID") != _LIFECYCLE_ID]
    if rules:
        s3.put_bucket_lifecycle_configuration(Bucket=config.bucket, LifecycleConfiguration={"Rules": rules})
    else:
        s3.delete_bucket_lifecycle(Bucket=config.bucket)
    log(f"bucket {config.bucket}: kept ({'asked to' if keep_bucket else 'deploy did not create it'}); "
        f"job data under {prefix} and the lifecycle rule removed")


# --- doctor -----------------------------------------------------------------------------------
def _hello(x: int) -> str:
    import os as _os

    return f"hello {x} from {_os.environ.get('AWS_LAMBDA_LOG_STREAM_NAME', 'somewhere')}"


def roundtrip(config: Config, timeout: float = 120) -> str:
    """Run one call on the deployed function through the executor; return its greeting."""
    from lambdaexec import LambdaExecutor

    settings = {f: getattr(config, f) for f in Config.__dataclass_fields__}
    settings.update(backend="lambda", retries=0, start_deadline=min(config.start_deadline, timeout))
    ex = LambdaExecutor(**settings)
    try:
        return ex.submit(_hello, 42).result(timeout=timeout)
    finally:
        ex.shutdown(wait=False, cancel_futures=True)


def doctor(config: Config | None = None, roundtrip_check: bool = True, out: Callable[[str], None] = print) -> bool:
    """Check credentials, region, bucket, role, function, runtime and a round trip; print one line
    per check (``ok`` or what is wrong and the fix); return whether all passed."""
    config = config or load_config()
    ok = True
    fix = "lambdaexec deploy"

    def line(good: bool, what: str, detail: str, remedy: str = "") -> bool:
        nonlocal ok
        ok &= good
        out(f"{'ok  ' if good else 'FAIL'}  {what}: {detail}" + ("" if good or not remedy else f"  -> fix: {remedy}"))
        return good

    try:
        aws = _Aws(config)
        line(True, "region", aws.region)
    except ConfigError as err:
        line(False, "region", str(err), "aws configure set region <region>  (or LAMBDAEXEC_REGION=...)")
        return False
    try:
        line(True, "credentials", aws.identity()["Arn"])
    except Exception as err:
        line(False, "credentials", str(err), "aws configure  (or aws sso login, or set AWS_PROFILE)")
        return False
    try:
        _check_deployable(config)
        runtime = lambda_runtime() if not config.image_uri else ""
        line(True, "settings", f"storage s3, bucket {config.bucket}, function {config.function_name}")
    except ConfigError as err:
        line(False, "settings", str(err), "set the named setting (LAMBDAEXEC_...)")
        return False
    s3 = aws.client("s3")
    try:
        s3.head_bucket(Bucket=config.bucket)
        block = s3.get_public_access_block(Bucket=config.bucket)["PublicAccessBlockConfiguration"]
        rules = [r for r in _lifecycle_rules(s3, config.bucket) if r.get("ID") == _LIFECYCLE_ID]
        if not all(block.values()):
            line(False, "bucket", f"{config.bucket} does not block all public access", fix)
        elif not rules:
            line(False, "bucket", f"{config.bucket} has no lifecycle rule expiring job data", fix)
        else:
            line(True, "bucket", f"{config.bucket}: private, job data expires after "
                                 f"{rules[0]['Expiration']['Days']} days")
    except Exception as err:
        line(False, "bucket", f"{config.bucket}: {_code(err) or err}", fix)
    iam = aws.client("iam")
    try:
        role = iam.get_role(RoleName=role_name(config))["Role"]
        iam.get_role_policy(RoleName=role_name(config), PolicyName=POLICY_NAME)
        line(True, "role", role["Arn"])
    except Exception as err:
        line(False, "role", f"{role_name(config)}: {_code(err) or err}", fix)
    lam = aws.client("lambda")
    try:
        conf = lam.get_function_configuration(FunctionName=config.function_name)
    except Exception as err:
        line(False, "function", f"{config.function_name}: {_code(err) or err}", fix)
        return False
    problems = []
    if conf.get("State", "Active") != "Active":
        problems.append(f"state {conf.get('State')} ({conf.get('StateReason', '')})")
    if runtime and conf.get("Runtime") != runtime:
        problems.append(f"runtime {conf.get('Runtime')} but this Python needs {runtime}")
    if not config.image_uri and conf.get("CodeSha256") != code_sha256(package_bytes()):
        problems.append("its code differs from this lambdaexec's package (outdated?)")
    if conf.get("Timeout", 0) < min(900, config.timeout):
        problems.append(f"timeout {conf.get('Timeout')} s < the timeout setting {config.timeout:g} s")
    line(not problems, "function", f"{config.function_name} ({conf.get('Runtime', 'image')}, "
                                   f"{conf.get('MemorySize')} MB, {conf.get('Timeout')} s)"
         if not problems else "; ".join(problems), fix)
    line(not problems or not runtime, "versions", f"Python {sys.version_info[0]}.{sys.version_info[1]} "
         f"matches {conf.get('Runtime', 'the image')}", fix)
    try:
        retries = lam.get_function_event_invoke_config(FunctionName=config.function_name)["MaximumRetryAttempts"]
        line(retries == 0, "async retries", "off (the client retries)" if retries == 0
             else f"Lambda retries failed events {retries} times", fix)
    except Exception as err:
        line(False, "async retries", f"no event invoke config ({_code(err) or err})", fix)
    if roundtrip_check:
        t = time.monotonic()
        try:
            line(True, "round trip", f"{roundtrip(config)!r} in {time.monotonic() - t:.1f} s")
        except Exception as err:
            line(False, "round trip", f"{type(err).__name__}: {err}",
                 "see the function's CloudWatch logs: aws logs tail /aws/lambda/" + config.function_name)
    return ok


# --- commands ---------------------------------------------------------------------------------
def _deploy_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--package-only", metavar="PATH", help="only write the deployment zip to PATH")
    p.add_argument("--build-image", action="store_true",
                   help="build worker/Dockerfile (numpy, scipy) with docker, push it to ECR and deploy it")


@command("deploy", "create or update the S3 bucket, IAM role and Lambda worker function", _deploy_arguments)
def deploy_command(args: argparse.Namespace) -> int:
    """``lambdaexec deploy``."""
    if args.package_only:
        sha = build_package(args.package_only)
        print(f"wrote {args.package_only} (CodeSha256 {sha})")
        return 0
    config = load_config()
    if args.build_image:
        config = load_config({"image_uri": build_image(config)})
    deploy(config)
    return 0


@command("teardown", "delete what deploy made (function, role, logs, and its bucket)",
         lambda p: p.add_argument("--keep-bucket", action="store_true", help="keep the bucket (delete job data only)"))
def teardown_command(args: argparse.Namespace) -> int:
    """``lambdaexec teardown``."""
    teardown(load_config(), keep_bucket=args.keep_bucket)
    return 0


@command("doctor", "check the AWS setup, one line per check with the fix for each problem",
         lambda p: p.add_argument("--no-roundtrip", action="store_true", help="skip the hello-world invocation"))
def doctor_command(args: argparse.Namespace) -> int:
    """``lambdaexec doctor``."""
    return 0 if doctor(load_config(), roundtrip_check=not args.no_roundtrip) else 1


def _emulate_arguments(p: argparse.ArgumentParser) -> None:
    from lambdaexec import lambda_emulator

    lambda_emulator.add_arguments(p)


@command("emulate", "serve the Lambda Invoke API locally, running the deployment package", _emulate_arguments)
def emulate_command(args: argparse.Namespace) -> int:
    """``lambdaexec emulate``."""
    from lambdaexec import lambda_emulator

    return lambda_emulator.run(args)
