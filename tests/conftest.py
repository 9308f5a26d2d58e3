"""Shared fixtures: real servers (SeaweedFS S3, Redis) and executors on each storage."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from servers import RedisServer, SeaweedS3  # noqa: E402

from lambdaexec import LambdaExecutor  # noqa: E402

SLOW_CASES = {"test_2000_tiny_tasks[s3]"}  # slow on one storage only: marked here, by name


def pytest_collection_modifyitems(items):
    for item in items:
        if item.name in SLOW_CASES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def seaweed():
    """A SeaweedFS S3 server for the whole session."""
    server = SeaweedS3()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server():
    """A redis-server for the whole session."""
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_settings(seaweed):
    """Executor keywords for S3 storage on the session's SeaweedFS."""
    return seaweed.settings()


@pytest.fixture(params=["local", "s3"])
def storage_settings(request, tmp_path):
    """Executor keywords for each storage the contract must hold on."""
    if request.param == "local":
        return {"storage": "local", "storage_path": str(tmp_path / "store")}
    return request.getfixturevalue("s3_settings")


@pytest.fixture(params=["local", "s3", "redis"])
def every_storage(request, tmp_path):
    """Executor keywords for each of the three stores: local, S3 (SeaweedFS) and Redis."""
    if request.param == "local":
        return {"storage": "local", "storage_path": str(tmp_path / "store")}
    if request.param == "s3":
        return request.getfixturevalue("s3_settings")
    return {"storage": "redis", "redis_url": request.getfixturevalue("redis_server").url}


@pytest.fixture
def executor(storage_settings):
    """A default executor (local workers) on each storage; shut down after the test."""
    ex = LambdaExecutor(max_workers=2, **storage_settings)
    yield ex
    ex.shutdown(wait=True, cancel_futures=True)
