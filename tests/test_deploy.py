"""deploy / teardown / doctor against moto's server mode (control plane only: IAM, STS, S3,
Lambda CreateFunction / UpdateFunctionCode / PutFunctionEventInvokeConfig), and the package."""

from __future__ import annotations

import io
import json
import sys
import urllib.request
import zipfile

import boto3
import pytest
from lambda_helpers import EmulatorProcess
from servers import free_port

from lambdaexec import ConfigError
from lambdaexec.aws.doctor import doctor, roundtrip
from lambdaexec.aws.package import HANDLER, build_package, code_sha256, lambda_runtime, package_bytes
from lambdaexec.aws.provision import deploy, role_name, teardown
from lambdaexec.cli import main
from lambdaexec.config import load_config

BUCKET = "lambdaexec-deploy-test"


@pytest.fixture(scope="module")
def moto_url():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws(moto_url, monkeypatch):
    """A fresh moto account; every boto3 client of the test (IAM, STS, logs too) goes to it."""
    urllib.request.urlopen(urllib.request.Request(moto_url + "/moto-api/reset", method="POST")).read()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")

    def client(service):
        return boto3.client(service, endpoint_url=moto_url, region_name="eu-west-1")

    return client


@pytest.fixture
def config(moto_url):
    return load_config({"backend": "lambda", "storage": "s3", "bucket": BUCKET, "region": "eu-west-1",
                        "endpoint_url": moto_url, "lambda_endpoint_url": moto_url, "timeout": 120,
                        "memory": 1769, "ephemeral_storage": 1024, "architecture": "arm64",
                        "lifecycle_days": 3, "start_deadline": 90})


def test_deploy_makes_private_bucket_least_privilege_role_and_function(aws, config):
    lines = []
    conf = deploy(config, log=lines.append)
    s3, iam, lam = aws("s3"), aws("iam"), aws("lambda")
    block = s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]
    assert block == {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
                     "RestrictPublicBuckets": True}
    (rule,) = s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    assert rule["Expiration"]["Days"] == 3 and rule["Filter"]["Prefix"] == "lambdaexec/"
    assert rule["Status"] == "Enabled"
    assert s3.get_bucket_location(Bucket=BUCKET)["LocationConstraint"] == "eu-west-1"

    role = iam.get_role(RoleName=role_name(config))["Role"]
    trust = role["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    assert trust["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}
    assert iam.list_role_policies(RoleName=role_name(config))["PolicyNames"] == ["lambdaexec-worker"]
    assert iam.list_attached_role_policies(RoleName=role_name(config))["AttachedPolicies"] == []
    doc = iam.get_role_policy(RoleName=role_name(config), PolicyName="lambdaexec-worker")["PolicyDocument"]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    actions = {a for s in doc["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert actions == {"s3:GetObject", "s3:PutObject", "s3:ListBucket", "logs:CreateLogGroup",
                       "logs:CreateLogStream", "logs:PutLogEvents"}
    resources = [r for s in doc["Statement"] for r in ([s["Resource"]] if isinstance(s["Resource"], str)
                                                       else s["Resource"])]
    assert f"arn:aws:s3:::{BUCKET}/lambdaexec/*" in resources and "*" not in resources
    assert all(r.startswith(f"arn:aws:s3:::{BUCKET}") or ":log-group:/aws/lambda/lambdaexec-worker" in r
               for r in resources)

    fn = lam.get_function_configuration(FunctionName="lambdaexec-worker")
    assert fn["Runtime"] == lambda_runtime() and fn["Handler"] == HANDLER == "worker.handler.handler"
    assert (fn["MemorySize"], fn["Timeout"], fn["EphemeralStorage"]["Size"]) == (1769, 120, 1024)
    assert fn["Architectures"] == ["arm64"] and fn["Role"] == role["Arn"]
    assert fn["CodeSha256"] == code_sha256(package_bytes()) == conf["CodeSha256"]
    invoke_config = lam.get_function_event_invoke_config(FunctionName="lambdaexec-worker")
    assert invoke_config["MaximumRetryAttempts"] == 0 and invoke_config["MaximumEventAgeInSeconds"] == 90
    assert any("created" in line for line in lines)


def test_deploy_is_idempotent_and_updates_settings(aws, config):
    deploy(config, log=lambda line: None)
    again = []
    deploy(config, log=again.append)
    assert not any("code updated" in line for line in again)
    assert any("configuration unchanged" in line for line in again)
    assert any(f"role {role_name(config)}: updated" in line for line in again)
    layer = aws("lambda").publish_layer_version(LayerName="numpy", Content={"ZipFile": package_bytes()},
                                                CompatibleRuntimes=[lambda_runtime()])["LayerVersionArn"]
    changed = load_config({**config.__dict__, "memory": 4096, "timeout": 300, "layers": layer})
    third = []
    deploy(changed, log=third.append)
    assert any("configuration updated" in line for line in third)
    fn = aws("lambda").get_function_configuration(FunctionName="lambdaexec-worker")
    assert (fn["MemorySize"], fn["Timeout"]) == (4096, 300)
    assert [x["Arn"] for x in fn["Layers"]] == [layer]
    assert len(aws("lambda").list_functions()["Functions"]) == 1
    assert len(aws("s3").get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]) == 1


def test_deploy_gives_the_function_the_worker_env_local_workers_get(aws, config, monkeypatch):
    monkeypatch.setenv("API_URL", "https://api.example")
    monkeypatch.setenv("SECRET_TOKEN", "not asked for")
    with_env = load_config({**config.__dict__, "worker_env": "API_URL,MODE=fast"})
    deploy(with_env, log=lambda line: None)
    fn = aws("lambda").get_function_configuration(FunctionName="lambdaexec-worker")
    assert fn["Environment"]["Variables"] == {"API_URL": "https://api.example", "MODE": "fast"}
    again = []
    deploy(with_env, log=again.append)
    assert any("configuration unchanged" in line for line in again)


def test_teardown_removes_what_deploy_made(aws, config):
    deploy(config, log=lambda line: None)
    aws("s3").put_object(Bucket=BUCKET, Key="lambdaexec/x/000000/args", Body=b"data")
    teardown(config, log=lambda line: None)
    lam, iam, s3 = aws("lambda"), aws("iam"), aws("s3")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_configuration(FunctionName="lambdaexec-worker")
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_role(RoleName=role_name(config))
    assert BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    teardown(config, log=lambda line: None)  # twice is fine


def test_teardown_keeps_a_bucket_deploy_did_not_make(aws, config):
    s3 = aws("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": [
        {"ID": "theirs", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 30}}]})
    s3.put_object(Bucket=BUCKET, Key="their/data", Body=b"keep me")
    deploy(config, log=lambda line: None)
    assert {r["ID"] for r in s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]} == {
        "theirs", "lambdaexec-expire-job-data"}
    s3.put_object(Bucket=BUCKET, Key="lambdaexec/x/000000/args", Body=b"job data")
    teardown(config, log=lambda line: None)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert keys == ["their/data"]
    assert [r["ID"] for r in s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]] == ["theirs"]


def test_doctor_says_what_is_wrong_and_how_to_fix_it(aws, config):
    before = []
    assert doctor(config, roundtrip_check=False, out=before.append) is False
    assert before[0].startswith("ok") and "region: eu-west-1" in before[0]
    assert any(line.startswith("ok") and "credentials" in line for line in before)
    bad = [line for line in before if line.startswith("FAIL")]
    assert bad and all("-> fix: lambdaexec deploy" in line for line in bad)
    assert any("bucket" in line for line in bad) and any("function" in line for line in bad)
    deploy(config, log=lambda line: None)
    after = []
    assert doctor(config, roundtrip_check=False, out=after.append) is True
    names = [line.split(":")[0].split()[-1] for line in after]
    assert all(line.startswith("ok") for line in after)
    assert {"region", "credentials", "bucket", "role", "function", "versions", "retries"} <= set(names)
    aws("lambda").delete_function_event_invoke_config(FunctionName="lambdaexec-worker")
    aws("lambda").update_function_configuration(FunctionName="lambdaexec-worker", Runtime="python3.9")
    drifted = []
    assert doctor(config, roundtrip_check=False, out=drifted.append) is False
    fails = [line for line in drifted if line.startswith("FAIL")]
    assert any("runtime python3.9 but this Python needs" in line for line in fails)
    assert any("async retries: no event invoke config" in line for line in fails)
    assert all(line.endswith("-> fix: lambdaexec deploy") for line in fails)


def test_doctor_round_trip_runs_a_call(seaweed, s3_settings, tmp_path):
    package = str(tmp_path / "pkg.zip")
    build_package(package)
    emu = EmulatorProcess(package, concurrency=1, timeout=30)
    try:
        cfg = load_config({"backend": "lambda", "lambda_endpoint_url": emu.url, **s3_settings})
        assert roundtrip(cfg, timeout=60).startswith("hello 42 from ")
    finally:
        emu.stop()


def test_doctor_round_trip_names_a_worker_without_storage_access(seaweed, s3_settings, tmp_path):
    import os

    import lambdaexec

    package = str(tmp_path / "pkg.zip")
    build_package(package)
    env = {**os.environ, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}  # the worker's, not the client's
    emu = EmulatorProcess(package, concurrency=1, timeout=300, env=env)
    try:
        cfg = load_config({"backend": "lambda", "lambda_endpoint_url": emu.url, "timeout": 300, **s3_settings})
        with pytest.raises(lambdaexec.WorkerStorageError, match=r"could not write s3://.*lambdaexec deploy"):
            roundtrip(cfg, timeout=60)
    finally:
        emu.stop()


def test_no_matching_runtime_is_refused_clearly():
    assert lambda_runtime((3, 12)) == "python3.12"
    with pytest.raises(ConfigError, match=r"no Python 3\.8 runtime.*python|Python 3\.8") as info:
        lambda_runtime((3, 8))
    assert "3.11" in str(info.value) and "image_uri" in str(info.value)


def test_settings_deploy_cannot_honour_are_refused(aws, config):
    with pytest.raises(ConfigError, match="900 s"):
        deploy(load_config({**config.__dict__, "timeout": 1000}))
    with pytest.raises(ConfigError, match="architecture"):
        load_config({**config.__dict__, "architecture": "sparc"})
    with pytest.raises(ConfigError, match="memory"):
        load_config({**config.__dict__, "memory": 64})


def test_package_holds_worker_lambdaexec_cloudpickle_and_is_reproducible(tmp_path):
    data = package_bytes()
    assert data == package_bytes()
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    for needed in ("worker/handler.py", "lambdaexec/__init__.py", "lambdaexec/storage/s3.py",
                   "cloudpickle/__init__.py", "cloudpickle/cloudpickle.py"):
        assert needed in names
    assert not any(n.endswith(".pyc") or "__pycache__" in n for n in names)
    path = tmp_path / "out" / "worker.zip"
    assert main(["deploy", "--package-only", str(path)]) == 0
    assert path.read_bytes() == data


def test_cli_registers_aws_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in ("deploy", "teardown", "doctor", "emulate"))
    assert sys.modules["lambdaexec.aws.commands"]


def test_aws_code_is_one_subpackage_without_an_import_cycle():
    import ast
    import pathlib

    import lambdaexec

    root = pathlib.Path(lambdaexec.__file__).parent
    for old in ("deploy.py", "lambda_emulator.py", "aws_http.py", "invokers/aws_lambda.py"):
        assert not (root / old).exists()
    for path in (root / "aws").glob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path
        imported = {n.module for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ImportFrom)}
        assert "lambdaexec.cli" not in imported, path  # the CLI reads aws.commands, never the reverse
