"""Every call's output lands in that call's future, on a reused worker too: print, stderr
writes and ``logging`` records (with level and UTC time), locally and on the Lambda path."""

from __future__ import annotations

import logging
import re
import sys

from test_aws_lambda import emulator, lambda_package, lambda_settings  # noqa: F401  (fixtures)

from lambdaexec import LambdaExecutor


def chatty(i):
    print(f"print from call {i}")
    print(f"stderr from call {i}", file=sys.stderr)
    logging.warning("hello from call %d", i)
    logging.getLogger("mylib").error("lib error in call %d", i)
    logging.info("not shown: below the root logger's level")
    return i


RECORD = re.compile(r"^\[(WARNING|ERROR)\]\t\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\t(root|mylib)\t(.*)$")


def check_outputs(futures):
    assert [f.result(timeout=60) for f in futures] == list(range(len(futures)))
    workers = {f.stats["worker"] for f in futures}
    assert len(workers) < len(futures)  # some worker ran several calls
    for i, f in enumerate(futures):
        assert f.stdout == f"print from call {i}\n"
        lines = f.stderr.splitlines()
        assert lines[0] == f"stderr from call {i}"
        records = [RECORD.match(line) for line in lines[1:]]
        assert all(records), f.stderr
        assert [(m.group(1), m.group(2), m.group(3)) for m in records] == [
            ("WARNING", "root", f"hello from call {i}"), ("ERROR", "mylib", f"lib error in call {i}")]


def test_logging_of_every_call_on_one_reused_worker(tmp_path):
    with LambdaExecutor(max_workers=1, storage_path=str(tmp_path)) as ex:
        futures = ex.map_futures(chatty, range(4))
        check_outputs(futures)
        assert len({f.stats["worker"] for f in futures}) == 1


def test_logging_of_every_call_on_the_lambda_path(lambda_settings):  # noqa: F811
    with LambdaExecutor(**lambda_settings, max_workers=2) as ex:
        futures = ex.map_futures(chatty, range(8))
        check_outputs(futures)
