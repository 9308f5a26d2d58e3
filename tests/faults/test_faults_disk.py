"""Fault injection: local storage that runs out of room.

A full volume cannot be made without root (mounting a small tmpfs or a loop device needs it),
so the limit here is the kernel's ``RLIMIT_FSIZE``, set on a real client process and so
inherited by its workers: any write past 1 MiB fails with ``EFBIG``, as a write to a volume
with 1 MiB left fails with ``ENOSPC``. Both are an ``OSError`` from the same ``write``; what
is tested is that lambdaexec turns it into a typed error on the call's future and never
hands back a partial result.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import pytest

_CLIENT = """
import json, sys
from lambdaexec import LambdaExecutor

def payload(mb):
    return b"x" * (mb << 20)

out = {}
with LambdaExecutor(max_workers=1, storage_path=sys.argv[1], timeout=60) as ex:
    futures = {mb: ex.submit(payload, mb) for mb in (0, 4)}
    for mb, f in futures.items():
        try:
            value = f.result(timeout=120)
            out[mb] = ["ok", len(value)]
        except Exception as err:
            out[mb] = ["error", type(err).__name__, [c.__name__ for c in type(err).__mro__], str(err)]
    try:
        ex.submit(len, b"y" * (4 << 20)).result(timeout=120)  # an argument too large to store
        out["arg"] = ["ok"]
    except Exception as err:
        out["arg"] = ["error", type(err).__name__, [c.__name__ for c in type(err).__mro__], str(err)]
print(json.dumps(out), flush=True)
"""


def _limit_files():
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


@pytest.mark.slow
def test_storage_out_of_room_is_a_typed_error_and_no_partial_result(tmp_path):
    script = tmp_path / "client.py"
    script.write_text(_CLIENT)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "store")], capture_output=True,
                          text=True, timeout=240, preexec_fn=_limit_files)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["0"] == ["ok", 0]  # a call whose result fits is unaffected
    kind, name, mro, message = out["4"]
    assert kind == "error", "a 4 MiB result was accepted from a store that cannot hold it"
    assert "StorageError" in mro or "WorkerStorageError" in mro, (name, message)
    assert "File too large" in message or "No space" in message, message
    kind, name, mro, message = out["arg"]
    assert kind == "error" and "StorageError" in mro, (name, message)
