"""``deploy`` and ``teardown``: the S3 bucket, the IAM role and the Lambda function.

:func:`deploy` (idempotent; run it again after upgrading lambdaexec) makes or updates:

- the S3 bucket: private (public access blocked), encrypted, tagged ``lambdaexec=deploy``
  when deploy created it, with a lifecycle rule expiring job data under ``prefix`` after
  ``lifecycle_days`` days;
- the IAM role ``<function_name>-role``, assumable by Lambda only, whose one inline policy allows
  reading and writing objects under ``s3://<bucket>/<prefix>/``, listing that prefix, and
  writing the function's own CloudWatch logs; nothing else;
- the function ``function_name``: the package :func:`~lambdaexec.aws.package.package_bytes`
  makes on the Lambda Python runtime of the local Python's minor version, handler
  ``worker.handler.handler``, with ``memory``, ``timeout``, ``ephemeral_storage``,
  ``architecture`` and ``layers`` from the settings, or the container image ``image_uri``;
  Lambda's own async retries off (``MaximumRetryAttempts=0``: the client owns retries) and
  events older than ``start_deadline`` dropped (the client re-invokes them).

:func:`teardown` removes the function, the role and the logs, and the bucket if deploy made it
(otherwise only the job data under ``prefix`` and deploy's lifecycle rule).

Example::

    from lambdaexec.config import load_config
    from lambdaexec.aws import deploy, doctor
    cfg = load_config({"backend": "lambda", "storage": "s3", "bucket": "my-lambdaexec"})
    deploy(cfg)
    assert doctor(cfg)
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from lambdaexec.aws.clients import AwsClients, DeployError
from lambdaexec.aws.clients import error_code as _code
from lambdaexec.aws.package import HANDLER, code_sha256, lambda_runtime, package_bytes
from lambdaexec.config import Config, load_config
from lambdaexec.errors import ConfigError
from lambdaexec.invokers.environment import parse_worker_env

POLICY_NAME = "lambdaexec-worker"
TAG = {"lambdaexec": "deploy"}
LIFECYCLE_ID = "lambdaexec-expire-job-data"


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


def check_deployable(config: Config) -> None:
    """Refuse settings deploy cannot honour (no S3 bucket, a timeout over Lambda's 900 s)."""
    if config.storage != "s3" or not config.bucket:
        raise ConfigError("deploy needs S3 storage with a bucket: set storage='s3' and bucket= "
                          "(LAMBDAEXEC_STORAGE=s3, LAMBDAEXEC_BUCKET=<a globally unique name>)")
    if config.timeout > 900:
        raise ConfigError(f"timeout is {config.timeout:g} s but Lambda stops functions after 900 s: "
                          "set timeout <= 900 (LAMBDAEXEC_TIMEOUT)")


# --- deploy -------------------------------------------------------------------------------------
def _ensure_bucket(aws: AwsClients, config: Config, log: Callable[[str], None]) -> None:
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
    rules = [r for r in lifecycle_rules(s3, config.bucket) if r.get("ID") != LIFECYCLE_ID]
    rules.append({"ID": LIFECYCLE_ID, "Status": "Enabled", "Filter": {"Prefix": config.prefix.strip("/") + "/"},
                  "Expiration": {"Days": config.lifecycle_days},
                  "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}})
    s3.put_bucket_lifecycle_configuration(Bucket=config.bucket, LifecycleConfiguration={"Rules": rules})
    log(f"bucket {config.bucket}: public access blocked, job data expires after {config.lifecycle_days} days")


def lifecycle_rules(s3: Any, bucket: str) -> list[dict[str, Any]]:
    """The bucket's lifecycle rules (``[]`` when it has none)."""
    try:
        return s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except Exception as err:
        if _code(err) == "NoSuchLifecycleConfiguration":
            return []
        raise


def _ensure_role(aws: AwsClients, config: Config, log: Callable[[str], None]) -> tuple[str, bool]:
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
        # the worker_env setting, as local workers get it (lambdaexec.invokers.environment)
        "Environment": {"Variables": parse_worker_env(config.worker_env)},
    }
    if not config.image_uri:
        settings.update(Runtime=lambda_runtime(), Handler=HANDLER,
                        Layers=[a.strip() for a in config.layers.split(",") if a.strip()])
    return settings


def _ensure_function(aws: AwsClients, config: Config, role_arn: str, new_role: bool,
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
        current = {**current, "Environment": {"Variables": current.get("Environment", {}).get("Variables", {})}}
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
    check_deployable(config)
    if not config.image_uri:
        lambda_runtime()
    aws = AwsClients(config)
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
    aws = AwsClients(config)
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


def _teardown_bucket(aws: AwsClients, config: Config, keep_bucket: bool, log: Callable[[str], None]) -> None:
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
    rules = [r for r in lifecycle_rules(s3, config.bucket) if r.get("ID") != LIFECYCLE_ID]
    if rules:
        s3.put_bucket_lifecycle_configuration(Bucket=config.bucket, LifecycleConfiguration={"Rules": rules})
    else:
        s3.delete_bucket_lifecycle(Bucket=config.bucket)
    log(f"bucket {config.bucket}: kept ({'asked to' if keep_bucket else 'deploy did not create it'}); "
        f"job data under {prefix} and the lifecycle rule removed")

