"""The flagship demo: many single-threaded DGEMM calls, aggregate GFLOPS and a timeline.

Each call multiplies ``n x n`` random matrices drawn with its own standard deviation
``loops`` times (PyWren's compute benchmark) and reports its flops and the product's spread.
"""

from __future__ import annotations

import statistics
import time
from typing import Any


def dgemm(n: int, loops: int, std: float, seed: int) -> dict[str, float]:
    """Multiply two ``n x n`` normal(0, std) matrices ``loops`` times; return flops and stats."""
    import numpy as np

    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, std, (n, n))
    b = rng.normal(0.0, std, (n, n))
    start = time.perf_counter()
    for _ in range(loops):
        c = a @ b
    elapsed = time.perf_counter() - start
    return {"flops": 2.0 * n**3 * loops, "seconds": elapsed, "std_in": std, "std_out": float(c.std())}


def run(executor: Any, calls: int = 16, n: int = 1024, loops: int = 4) -> dict[str, Any]:
    """Run the demo on ``executor``; return aggregate figures and a per-call timeline summary."""
    stds = [0.5 + i / max(1, calls - 1) for i in range(calls)]
    start = time.time()
    futures = executor.map_futures(dgemm, [n] * calls, [loops] * calls, stds, range(calls))
    results = [f.result() for f in futures]
    wall = time.time() - start
    flops = sum(r["flops"] for r in results)
    stats = [f.stats for f in futures]

    def spread(key_from: str, key_to: str) -> list[float]:
        return [s[key_to] - s[key_from] for s in stats if key_from in s and key_to in s]

    return {
        "calls": calls, "n": n, "loops": loops, "wall_seconds": wall,
        "gflops": flops / wall / 1e9,
        "gflops_per_call": statistics.median(r["flops"] / r["seconds"] / 1e9 for r in results),
        "queue_delay": spread("submitted", "func_start"),
        "compute": spread("func_start", "func_end"),
        "return_delay": spread("func_end", "seen"),
        "first_start": min(s["func_start"] for s in stats) - start,
        "last_end": max(s["func_end"] for s in stats) - start,
        "workers": len({s["worker"] for s in stats}),
        "std_out": [r["std_out"] for r in results],
        "std_in": stds,
        "futures": futures, "flops": [r["flops"] for r in results],
    }


def report(summary: dict[str, Any]) -> str:
    """Human-readable lines for :func:`run`'s summary."""

    def q(values: list[float]) -> str:
        v = sorted(values)
        return f"min {v[0]:.3f}  median {statistics.median(v):.3f}  max {v[-1]:.3f} s"

    s = summary
    return "\n".join([
        f"{s['calls']} DGEMM calls of {s['n']}x{s['n']} x {s['loops']} loops on {s['workers']} workers "
        f"in {s['wall_seconds']:.2f} s",
        f"aggregate: {s['gflops']:.2f} GFLOPS  (median per call {s['gflops_per_call']:.2f} GFLOPS)",
        "timeline:",
        f"  waiting to start  {q(s['queue_delay'])}",
        f"  computing         {q(s['compute'])}",
        f"  result to client  {q(s['return_delay'])}",
        f"  first call started {s['first_start']:.3f} s, last call ended {s['last_end']:.3f} s after submit",
        f"std in -> out: {s['std_in'][0]:.2f} -> {s['std_out'][0]:.1f} ... "
        f"{s['std_in'][-1]:.2f} -> {s['std_out'][-1]:.1f} (std of A@B grows as n^0.5 * std^2)",
    ])
