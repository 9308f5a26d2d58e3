"""lambdaexec.replay(future) and `lambdaexec replay CALL_ID`: a failed call run again here."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import traceback

import pytest

import lambdaexec
from lambdaexec import LambdaExecutor


def parse(text):
    number = int(text)  # raises ValueError for "x"
    return number * 2


def _cli(args, store, **kw):
    env = {**os.environ, "LAMBDAEXEC_STORAGE_PATH": store}
    return subprocess.run([sys.executable, "-m", "lambdaexec.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120, **kw)


def test_replay_in_process_raises_with_a_local_traceback(tmp_path):
    with LambdaExecutor(max_workers=1, storage_path=str(tmp_path / "s")) as ex:
        bad, good = ex.submit(parse, "x"), ex.submit(parse, "4")
        assert isinstance(bad.exception(), ValueError)
        with pytest.raises(ValueError, match="invalid literal") as info:
            lambdaexec.replay(bad)
        frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
        assert frames[-1] == "parse"  # the call's own frame, here: pdb.post_mortem steps into it
        assert info.value.__traceback__.tb_next is not None
        assert good.result() == 8
        with pytest.raises(KeyError, match="succeeded"):
            lambdaexec.replay(good)


def test_replay_from_the_command_line(tmp_path):
    store = str(tmp_path / "s")
    with LambdaExecutor(max_workers=1, storage_path=store) as ex:
        bad = ex.submit(parse, "x")
        bad.exception()
        call_id = bad.call_id
    out = _cli(["replay", call_id], store)
    assert out.returncode == 1
    assert "Traceback" in out.stderr and "ValueError: invalid literal" in out.stderr and "in parse" in out.stderr
    # from storage, in this process too (the future's own inputs are not needed)
    with pytest.raises(ValueError):
        _replay_by_id(call_id, store)
    logs = _cli(["logs", call_id.split("/")[0]], store)
    assert call_id in logs.stdout
    dbg = _cli(["replay", call_id, "--pdb"], store, input="p text\nq\n")
    assert dbg.returncode == 1 and "'x'" in dbg.stdout  # the debugger stopped in parse, where text is 'x'


def _replay_by_id(call_id, store):
    from lambdaexec.runtime.replay import replay
    from lambdaexec.storage import open_storage

    return replay(call_id, open_storage({"kind": "local", "path": store}), "lambdaexec")


def test_unknown_or_cleaned_call_id_is_one_line(tmp_path):
    store = str(tmp_path / "s")
    for call_id in ("0123456789ab-000000/3", "not-a-call"):
        out = _cli(["replay", call_id], store)
        assert out.returncode == 1
        assert "Traceback" not in out.stderr and call_id in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
    with LambdaExecutor(max_workers=1, storage_path=store) as ex:
        bad = ex.submit(parse, "x")
        bad.exception()
    time.sleep(1.1)  # records are dated to the second
    assert _cli(["clean", "--older-than", "0s"], store).returncode == 0
    out = _cli(["replay", bad.call_id], store)
    assert out.returncode == 1 and "Traceback" not in out.stderr and bad.call_id in out.stderr
