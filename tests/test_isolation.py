"""Local workers see what a Lambda worker would: the runtime's variables, their storage's
credentials and what ``worker_env`` names, never the rest of the client's environment
(issue 12 item 14). Real worker processes, real SeaweedFS."""

from __future__ import annotations

import os

import pytest

from lambdaexec import ConfigError, LambdaExecutor


def _environment(_=None):
    """What a call can learn of its environment: os.environ and the process's initial block."""
    with open("/proc/self/environ", "rb") as f:
        initial = f.read().decode(errors="replace")
    return dict(os.environ), initial


@pytest.fixture
def secrets(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "client-aws-secret-do-not-leak")
    monkeypatch.setenv("SECRET_TOKEN", "client-token-do-not-leak")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, ["/opt/isolation-test",
                                                                    os.environ.get("PYTHONPATH")])))


def test_local_storage_workers_do_not_see_the_clients_secrets(tmp_path, secrets):
    with LambdaExecutor(max_workers=2, storage_path=str(tmp_path / "store")) as ex:
        results = list(ex.map(_environment, range(4)))
    for env, initial in results:
        assert "SECRET_TOKEN" not in env and "AWS_SECRET_ACCESS_KEY" not in env
        assert "do-not-leak" not in initial  # not even in the block the process started with
        # what the runtime needs still arrives: the interpreter's path and settings, the locale
        assert env["PATH"] == os.environ["PATH"]
        assert env["PYTHONPATH"].startswith("/opt/isolation-test")
        assert env.get("HOME") == os.environ.get("HOME")


def test_s3_storage_workers_get_the_storages_credentials_only(seaweed, secrets, monkeypatch):
    # the SeaweedFS identity's secret: the workers must have it to reach the bucket
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed_secret(seaweed))
    with LambdaExecutor(max_workers=2, **seaweed.settings()) as ex:
        results = list(ex.map(_environment, range(4)))
    for env, initial in results:
        assert env["AWS_SECRET_ACCESS_KEY"] == seaweed_secret(seaweed)
        assert "SECRET_TOKEN" not in env and "do-not-leak" not in initial


def seaweed_secret(server) -> str:
    import json

    with open(os.path.join(server.dir, "s3-identities.json")) as f:
        return json.load(f)["identities"][0]["credentials"][0]["secretKey"]


def test_variables_named_by_worker_env_reach_the_workers(tmp_path, secrets, monkeypatch):
    monkeypatch.setenv("API_URL", "https://api.example")
    with LambdaExecutor(max_workers=1, storage_path=str(tmp_path / "store"),
                        worker_env="API_URL, MODE=fast,SECRET_TOKEN") as ex:
        env, _ = ex.submit(_environment).result(timeout=60)
    assert env["API_URL"] == "https://api.example" and env["MODE"] == "fast"
    assert env["SECRET_TOKEN"] == "client-token-do-not-leak"  # asked for by name: the user's choice
    assert "AWS_SECRET_ACCESS_KEY" not in env


def test_worker_env_is_read_from_the_environment_like_every_setting(tmp_path, secrets, monkeypatch):
    monkeypatch.setenv("LAMBDAEXEC_WORKER_ENV", "SECRET_TOKEN")
    with LambdaExecutor(max_workers=1, storage_path=str(tmp_path / "store")) as ex:
        env, _ = ex.submit(_environment).result(timeout=60)
    assert env["SECRET_TOKEN"] == "client-token-do-not-leak"


@pytest.mark.parametrize("bad", ["1ABC", "A-B=1", "=x", "A B"])
def test_a_malformed_worker_env_is_a_config_error_naming_it(tmp_path, bad):
    with pytest.raises(ConfigError, match="worker_env must be comma-separated NAME or NAME=value"):
        LambdaExecutor(max_workers=1, storage_path=str(tmp_path / "store"), worker_env=bad)
