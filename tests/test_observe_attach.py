"""``lambdaexec.attach``: a second process picks up the futures of a job whose client has
exited, on the Lambda emulator path; on the local backend, a clear AttachError."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid

import pytest
from test_aws_lambda import emulator, lambda_package, lambda_settings  # noqa: F401  (fixtures)

import lambdaexec
from lambdaexec import AttachError, LambdaExecutor

SUBMIT_AND_EXIT = textwrap.dedent("""
    import os, sys, time, lambdaexec
    from lambdaexec.observe import jobs

    def slow(i):
        import time
        time.sleep(3)
        print("slow call", i)
        if i == 3:
            raise KeyError("no key 3")
        return i * 10

    ex = lambdaexec.LambdaExecutor()
    futures = ex.map_futures(slow, range(4))
    started = ex.prefix + "/000000/started/"
    deadline = time.monotonic() + 60
    while (len(ex.storage.list(started)) < 4 or not jobs.job_ids(ex.storage, ex.config.prefix)) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    print(jobs.job_ids(ex.storage, ex.config.prefix)[-1], flush=True)
    os._exit(0)  # gone, without collecting anything: the calls run on
""")


def test_attach_from_a_second_process_after_the_client_exited(lambda_settings, emulator):  # noqa: F811
    prefix = f"attach-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "LAMBDAEXEC_PREFIX": prefix, "LAMBDAEXEC_PROGRESS": "false",
           **{f"LAMBDAEXEC_{k.upper()}": str(v) for k, v in lambda_settings.items()}}
    proc = subprocess.run([sys.executable, "-c", SUBMIT_AND_EXIT], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.split()[-1]
    invoked = emulator.stats()["accepted"]
    futures = lambdaexec.attach(job_id, prefix=prefix, **lambda_settings)
    assert len(futures) == 4
    assert [f.result(timeout=60) for f in futures[:3]] == [0, 10, 20]
    with pytest.raises(KeyError, match="no key 3") as info:
        futures[3].result(timeout=60)
    assert isinstance(info.value.__cause__, lambdaexec.errors.RemoteTraceback)
    assert [f.stdout for f in futures] == [f"slow call {i}\n" for i in range(4)]
    assert all(f.stats["func_end"] - f.stats["func_start"] >= 3 for f in futures)
    assert emulator.stats()["accepted"] == invoked  # attaching invoked nothing


def test_attach_to_a_local_job_says_why_not(tmp_path):
    with LambdaExecutor(max_workers=1, storage_path=str(tmp_path), prefix="loc", progress=False) as ex:
        ex.submit(abs, -1).result()
    with pytest.raises(AttachError, match="ran on the 'local' backend: .* stop when that client exits"):
        lambdaexec.attach("000000", storage_path=str(tmp_path), prefix="loc")
    with pytest.raises(lambdaexec.LambdaExecError, match="no job record matches 'nope'"):
        lambdaexec.attach("nope", storage_path=str(tmp_path), prefix="loc")
