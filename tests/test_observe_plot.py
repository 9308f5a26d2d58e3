"""``lambdaexec.plot_timeline`` and ``lambdaexec demo --plot``: real PNG/SVG files whose
figure has one row per call."""

from __future__ import annotations

import concurrent.futures as cf
import os
import subprocess
import sys
import time

import pytest
from matplotlib.collections import LineCollection

import lambdaexec
from lambdaexec import LambdaExecutor

PNG = b"\x89PNG\r\n\x1a\n"


def test_one_row_per_call_and_a_png(tmp_path):
    with LambdaExecutor(max_workers=3, storage_path=str(tmp_path / "s"), progress=False) as ex:
        futures = ex.map_futures(time.sleep, [0.02] * 25)
        cf.wait(futures)
    path = tmp_path / "t.png"
    fig = lambdaexec.plot_timeline(futures, str(path))
    assert path.read_bytes()[:8] == PNG
    top, bottom = fig.axes[:2]
    phases = [c for c in top.collections if isinstance(c, LineCollection)]
    assert [c.get_label() for c in phases] == ["waiting to start", "running", "returning the result"]
    for c in phases:
        segments = c.get_segments()
        assert len(segments) == 25  # one row per call
        assert sorted(round(s[0][1]) for s in segments) == list(range(25))
    running = phases[1].get_segments()
    for f, seg in zip(futures, running):  # the running line spans the call's own function time
        assert seg[1][0] - seg[0][0] == pytest.approx(f.stats["func_end"] - f.stats["func_start"])
    assert max(bottom.lines[0].get_ydata()) <= 3  # never more calls running than workers
    svg = tmp_path / "t.svg"
    lambdaexec.plot_timeline(futures, str(svg))
    assert b"<svg" in svg.read_bytes()[:500]


def test_no_finished_call_is_a_clear_error():
    with pytest.raises(ValueError, match="nothing to plot"):
        lambdaexec.plot_timeline([lambdaexec.LambdaFuture()])


def test_demo_writes_its_plot(tmp_path):
    out = tmp_path / "demo.png"
    env = {**os.environ, "LAMBDAEXEC_STORAGE_PATH": str(tmp_path / "s"), "LAMBDAEXEC_MAX_WORKERS": "2",
           "LAMBDAEXEC_PROGRESS": "false"}
    proc = subprocess.run([sys.executable, "-m", "lambdaexec.cli", "demo", "--calls", "4", "--size", "128",
                           "--plot", str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "aggregate:" in proc.stdout and f"wrote {out}" in proc.stdout
    assert out.read_bytes()[:8] == PNG
