"""Straggler mitigation (lambdaexec.runtime.speculation): a call far slower than its peers near the end
of a job gets a backup copy, and the first copy to finish completes the future."""

from __future__ import annotations

import os
import time

import pytest

from lambdaexec import ConfigError, LambdaExecutor
from lambdaexec.config import load_config


def slow_first_time(i, marker, seconds):
    """Call 0 is a straggler on its first attempt only (it leaves ``marker``); the rest are quick."""
    if i == 0 and not os.path.exists(marker):
        open(marker, "w").close()
        time.sleep(seconds)
        return "original"
    time.sleep(0.05)
    return "backup" if i == 0 else i


def test_a_straggler_is_finished_by_its_backup_copy(tmp_path):
    marker = str(tmp_path / "started")
    with LambdaExecutor(max_workers=2, speculative=True, storage_path=str(tmp_path / "store")) as ex:
        futures = ex.map_futures(slow_first_time, range(12), [marker] * 12, [120] * 12)
        # the original would sleep 120 s; its backup, started once its peers are done, returns at once
        assert futures[0].result(timeout=60) == "backup"
        assert [f.result(timeout=60) for f in futures[1:]] == list(range(1, 12))


def test_without_speculation_the_straggler_finishes_alone(tmp_path):
    marker = str(tmp_path / "started")
    with LambdaExecutor(max_workers=2, speculative=False, storage_path=str(tmp_path / "store")) as ex:
        futures = ex.map_futures(slow_first_time, range(12), [marker] * 12, [3] * 12)
        assert futures[0].result(timeout=60) == "original"


def test_speculative_defaults_on_for_lambda_off_for_local():
    assert load_config({}, environ={}).speculative == "false"
    lam = load_config({"backend": "lambda", "storage": "s3", "bucket": "b"}, environ={})
    assert lam.speculative == "true"
    assert load_config({"backend": "lambda", "storage": "s3", "bucket": "b", "speculative": False},
                       environ={}).speculative == "false"
    with pytest.raises(ConfigError, match="speculative"):
        load_config({"speculative": "sometimes"}, environ={})


def test_on_the_lambda_backend_by_default_a_straggler_is_finished_by_its_backup(tmp_path, s3_settings):
    from lambda_helpers import EmulatorProcess

    from lambdaexec.aws.package import build_package

    package = str(tmp_path / "lambdaexec-worker.zip")
    build_package(package)
    emu = EmulatorProcess(package, concurrency=4, timeout=60)
    marker = str(tmp_path / "started")  # the emulator's workers share this machine's disk
    try:
        with LambdaExecutor(backend="lambda", lambda_endpoint_url=emu.url, timeout=60, max_workers=4,
                            **s3_settings) as ex:
            futures = ex.map_futures(slow_first_time, range(12), [marker] * 12, [50] * 12)
            assert futures[0].result(timeout=45) == "backup"
            assert [f.result(timeout=60) for f in futures[1:]] == list(range(1, 12))
            # the backup took no slot for good: a later map still gets all of its calls in flight
            assert list(ex.map(slow_first_time, range(1, 9), [marker] * 8, [0] * 8, timeout=60)) == \
                list(range(1, 9))
    finally:
        emu.stop()
