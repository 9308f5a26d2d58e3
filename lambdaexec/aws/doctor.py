"""``doctor``: check every piece of an AWS setup and print, for each, ``ok`` or what is wrong
and the command that fixes it; finish with a synchronous round trip through the executor."""

from __future__ import annotations

import sys
import time
from typing import Callable

from lambdaexec.aws.clients import AwsClients, aws_failure
from lambdaexec.aws.clients import error_code as _code
from lambdaexec.aws.package import code_sha256, lambda_runtime, package_bytes
from lambdaexec.aws.provision import LIFECYCLE_ID, POLICY_NAME, check_deployable, lifecycle_rules, role_name
from lambdaexec.config import Config, load_config
from lambdaexec.errors import ConfigError


def _hello(x: int) -> str:
    import os as _os

    return f"hello {x} from {_os.environ.get('AWS_LAMBDA_LOG_STREAM_NAME', 'somewhere')}"


def roundtrip(config: Config, timeout: float = 120) -> str:
    """Run one call on the deployed function through the executor; return its greeting."""
    from lambdaexec.executor import LambdaExecutor

    settings = {f: getattr(config, f) for f in Config.__dataclass_fields__}
    settings.update(backend="lambda", retries=0, start_deadline=min(config.start_deadline, timeout),
                    max_workers=config.max_workers or None)  # the setting's 0 (the default) is None here
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
        aws = AwsClients(config)
        line(True, "region", aws.region)
    except ConfigError as err:
        line(False, "region", str(err), "aws configure set region <region>  (or LAMBDAEXEC_REGION=...)")
        return False
    try:
        line(True, "credentials", aws.identity()["Arn"])
    except Exception as err:
        failure = aws_failure(err)
        if failure is not None and failure[0] == "network":  # not the credentials' fault: say so
            line(False, "network", failure[1].split(": check", 1)[0],
                 "check the network (and any proxy), the region, and AWS_ENDPOINT_URL_STS if you use a local STS")
        else:
            line(False, "credentials", failure[1].split(": run", 1)[0] if failure else str(err),
                 "aws configure  (or aws sso login, or set AWS_PROFILE)")
        return False
    try:
        check_deployable(config)
        runtime = lambda_runtime() if not config.image_uri else ""
        line(True, "settings", f"storage s3, bucket {config.bucket}, function {config.function_name}")
    except ConfigError as err:
        line(False, "settings", str(err), "set the named setting (LAMBDAEXEC_...)")
        return False
    s3 = aws.client("s3")
    try:
        s3.head_bucket(Bucket=config.bucket)
        block = s3.get_public_access_block(Bucket=config.bucket)["PublicAccessBlockConfiguration"]
        rules = [r for r in lifecycle_rules(s3, config.bucket) if r.get("ID") == LIFECYCLE_ID]
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

