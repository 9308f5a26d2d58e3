"""Progress: the executor's tqdm bar (``progress`` setting), ``lambdaexec.progress(futures)``,
and dask's callbacks driven by ``lambda_get``."""

from __future__ import annotations

import concurrent.futures as cf
import io
import re
import sys

import dask
import dask.bag as db
import pytest

import lambdaexec
from lambdaexec import ConfigError, LambdaExecutor
from lambdaexec_dask import lambda_get


def maybe_fail(i):
    if i % 10 == 3:
        raise ValueError(f"item {i}")
    return i


def last_bar(text):
    """The last state tqdm drew (it redraws the line with carriage returns)."""
    return re.split(r"[\r\n]+", text.strip())[-1]


def test_bar_final_counts_equal_the_calls(tmp_path, capsys):
    with LambdaExecutor(max_workers=2, storage_path=str(tmp_path), progress=True) as ex:
        futures = ex.map_futures(maybe_fail, range(40))
        cf.wait(futures)
        err = capsys.readouterr().err
        line = last_bar(err)
        assert "40/40" in line and "100%" in line, err
        assert "failed=4" in line and "running=0" in line, line
        # a later map (here through map with chunksize, then wait) gets a fresh bar of its own
        assert list(ex.map(abs, range(-9, 0), chunksize=2)) == list(range(9, 0, -1))
        assert "5/5" in last_bar(capsys.readouterr().err)  # 9 items in 5 chunk calls
        lambdaexec.get_all_results([ex.submit(abs, -1) for _ in range(3)])
    assert "3/3" in last_bar(capsys.readouterr().err)


@pytest.mark.parametrize("setting", [False, "auto"])
def test_no_bar_when_off_or_not_a_terminal(tmp_path, capsys, setting):
    with LambdaExecutor(max_workers=1, storage_path=str(tmp_path), progress=setting) as ex:
        assert list(ex.map(abs, [-1, -2])) == [1, 2]
    assert capsys.readouterr().err == ""


def test_progress_setting_is_validated(monkeypatch):
    with pytest.raises(ConfigError, match="progress must be 'auto', true or false"):
        lambdaexec.load_config({"progress": "sometimes"})
    monkeypatch.setitem(sys.modules, "tqdm", None)  # as if tqdm were not installed
    with pytest.raises(ConfigError, match=r"pip install 'lambdaexec\[progress\]'"):
        LambdaExecutor(progress=True)


def test_progress_yields_futures_as_they_complete(tmp_path):
    out = io.StringIO()
    with LambdaExecutor(max_workers=2, storage_path=str(tmp_path), progress=False) as ex:
        futures = ex.map_futures(maybe_fail, range(20))
        seen = list(lambdaexec.progress(futures, file=out))
    assert sorted(seen, key=futures.index) == futures and all(f.done() for f in seen)
    line = last_bar(out.getvalue())
    assert "20/20" in line and "failed=2" in line, line


def test_dask_callbacks_called_as_dask_calls_them(tmp_path):
    events = []
    callbacks = dask.callbacks.Callback(
        start=lambda dsk: events.append("start"),
        pretask=lambda key, dsk, state: events.append("pre"),
        posttask=lambda key, result, dsk, state, worker: events.append("post"),
        finish=lambda dsk, state, errored: events.append(("finish", errored)))
    bag = db.from_sequence(range(8), npartitions=4)
    with LambdaExecutor(max_workers=2, storage_path=str(tmp_path), progress=False) as ex:
        with callbacks:
            assert bag.filter(lambda i: i != 3).map(maybe_fail).sum().compute(scheduler=lambda_get, executor=ex) == 25
        assert events[0] == "start" and events[-1] == ("finish", False)
        assert events.count("pre") == events.count("post") > 0
        events.clear()
        with callbacks, pytest.raises(ValueError, match="item 3"):
            bag.map(maybe_fail).sum().compute(scheduler=lambda_get, executor=ex)
        assert events[0] == "start" and events[-1] == ("finish", True)


def test_joblib_verbose_output_keeps_working(tmp_path, capsys):
    from joblib import Parallel, delayed, parallel_backend

    import lambdaexec_joblib  # noqa: F401  (registers "lambda")

    with parallel_backend("lambda", max_workers=2, storage_path=str(tmp_path), progress=False):
        assert Parallel(n_jobs=-1, verbose=10)(delayed(abs)(-i) for i in range(12)) == list(range(12))
    err = capsys.readouterr().err
    assert "Using backend" in err
    assert "Done  12 out of  12" in err or "Done 12 out of 12" in err, err
