"""The timeline figure (matplotlib, extra ``[plot]``): what every call did, and when.

Top panel: one row per call (in submission order), a line from submitted to started (waiting),
from started to function done (running) and from done to result seen by the client
(returning); a call that failed runs in red, with its own legend entry. Bottom panel: calls
running over time (exact steps) and results arriving per second, and, when ``flops`` are given,
the aggregate GFLOPS reached. Times are seconds from the first submit.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from lambdaexec.errors import ConfigError

_PHASES = (("submitted", "func_start", "waiting to start", "#c7c7c7"),
           ("func_start", "func_end", "running", "#1f77b4"),
           ("func_end", "seen", "returning the result", "#ff7f0e"))


_FAILED_COLOR = "#d62728"


def _failed(future: Any) -> bool:
    """Whether a finished call raised (a recorded call's stand-in has no ``done``)."""
    done = getattr(future, "done", None)
    if done is not None and not done():
        return False
    return not future.cancelled() and future.exception() is not None


def _running(rows: list[tuple[int, dict]], t0: float) -> tuple[list[float], list[int]]:
    """The number of calls running, as a step function: its times and values."""
    events = sorted([(s["func_start"] - t0, 1) for _, s in rows] + [(s["func_end"] - t0, -1) for _, s in rows])
    times, values, n = [0.0], [0], 0
    for t, step in events:
        n += step
        if times[-1] == t:
            values[-1] = n
        else:
            times.append(t)
            values.append(n)
    return times, values


def _figure_class() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install 'lambdaexec[plot]'") from None
    return Figure


def plot_timeline(futures: Iterable[Any], path: str | None = None, *,
                  flops: Sequence[float] | None = None, title: str | None = None) -> Any:
    """Draw the timeline of finished ``futures``; return the matplotlib ``Figure``.

    ``path`` saves it too (the format from the extension: ``.png``, ``.svg``, ``.pdf``).
    ``flops[i]``, the floating-point operations of call ``i``, adds aggregate GFLOPS.
    Calls that never started (cancelled, refused) have no row.

    >>> fig = lambdaexec.plot_timeline(futures, "timeline.png")  # doctest: +SKIP
    """
    Figure = _figure_class()
    futures = list(futures)
    rows = [(i, f.stats) for i, f in enumerate(futures) if "func_start" in f.stats and "func_end" in f.stats]
    if not rows:
        raise ValueError("no call in futures has run yet: nothing to plot (wait for them first)")
    t0 = min(s.get("submitted", s["func_start"]) for _, s in rows)
    fig = Figure(figsize=(10, 7), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.4]})
    failed = {y for y, (i, _) in enumerate(rows) if _failed(futures[i])}
    linewidth = max(0.3, min(3.0, 300 / len(rows)))
    for start, end, label, color in _PHASES:
        spans = [(y, s[start] - t0, s[end] - t0) for y, (_, s) in enumerate(rows) if start in s and end in s]
        if start == "func_start":  # a failed call's run is drawn in its own colour
            bad = [sp for sp in spans if sp[0] in failed]
            spans = [sp for sp in spans if sp[0] not in failed]
            if bad:
                top.hlines([y for y, _, _ in bad], [a for _, a, _ in bad], [b for _, _, b in bad],
                           colors=_FAILED_COLOR, linewidth=linewidth, label=f"running, then failed ({len(bad)})")
        if spans:
            top.hlines([y for y, _, _ in spans], [a for _, a, _ in spans], [b for _, _, b in spans],
                       colors=color, linewidth=linewidth, label=label)
    top.set_ylabel("call (submission order)")
    top.set_ylim(len(rows), -1)
    top.legend(loc="upper right", fontsize="small")
    top.set_title(title or f"{len(rows)} calls on {len({s.get('worker') for _, s in rows})} workers")

    end = max(s.get("seen", s["func_end"]) for _, s in rows) - t0
    bins = max(1, min(200, len(rows)))
    width = max(end / bins, 1e-3)
    edges = [k * width for k in range(int(end / width) + 2)]
    times, running = _running(rows, t0)  # exact: a step at every start and end, never a sample between
    bottom.step(times, running, where="post", color="#1f77b4", label="calls running")
    bottom.set_ylim(0, max(running) * 1.15 + 0.5)
    bottom.set_ylabel("calls running")
    bottom.set_xlabel("seconds since the first submit")
    rate = bottom.twinx()
    seen = [s["seen"] - t0 for _, s in rows if "seen" in s]
    step = max(width, end / 15)  # results per second over wider bins: a rate, not a comb
    counts = [0] * (int(end / step) + 1)
    for t in seen:
        counts[min(len(counts) - 1, int(t / step))] += 1
    rate.plot([(k + 0.5) * step for k in range(len(counts))], [c / step for c in counts], color="#2ca02c",
              label="results / s")
    rate.set_ylabel("results per second")
    handles = bottom.get_legend_handles_labels()[0] + rate.get_legend_handles_labels()[0]
    if flops is not None:
        gflops = [sum(flops[i] / max(s["func_end"] - s["func_start"], 1e-9) / 1e9
                      for i, s in rows if s["func_start"] - t0 <= x < s["func_end"] - t0) for x in edges]
        rate.plot(edges, gflops, color="#d62728", label="aggregate GFLOPS")
        rate.set_ylabel("results per second / GFLOPS")
        handles = bottom.get_legend_handles_labels()[0] + rate.get_legend_handles_labels()[0]
    bottom.legend(handles=handles, loc="upper left", fontsize="small")
    if path:
        fig.savefig(path, dpi=120)
    return fig
