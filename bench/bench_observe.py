"""What watching costs: W1 (1,000 tiny tasks) with a progress bar and the job record on, beside
the same executor settings with both off, in the same run. Prints figures only.

    python bench/bench_observe.py [--rounds N] [--storage-path DIR]

Target: on <= 5% slower than off. Each round runs W1 on both executors, alternating which goes
first; the medians of the rounds are compared. The bar draws to /dev/null (tqdm formats and
writes it exactly as it would to a terminal).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import os
import statistics
import time

from lambdaexec import LambdaExecutor


def tiny(x: int) -> int:
    return x + 1


def w1(ex: cf.Executor, n: int = 1000) -> tuple[float, float]:
    """Tasks per second by ``map`` and by per-item ``submit``."""
    t = time.perf_counter()
    assert sum(ex.map(tiny, range(n))) == n * (n + 1) // 2
    by_map = n / (time.perf_counter() - t)
    t = time.perf_counter()
    futures = [ex.submit(tiny, i) for i in range(n)]
    assert sum(f.result() for f in futures) == n * (n + 1) // 2
    return by_map, n / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--storage-path", default=None)
    args = parser.parse_args()
    common = {"max_workers": 2, **({"storage_path": args.storage_path} if args.storage_path else {})}
    results: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
        on = LambdaExecutor(progress=True, job_record=True, **common)
        off = LambdaExecutor(progress=False, job_record=False, **common)
        with on, off:
            for ex in (on, off):
                list(ex.map(tiny, range(200)))  # warm workers
            for r in range(args.rounds):
                order = [("on", on), ("off", off)] if r % 2 == 0 else [("off", off), ("on", on)]
                for name, ex in order:
                    results[name].append(w1(ex))
    print(f"W1, 1,000 tiny tasks, 2 local workers, median of {args.rounds} alternating rounds")
    print(f"{'':<28} {'progress+record on':>20} {'off':>12} {'on/off':>8}")
    for i, what in enumerate(("via map", "via per-item submit")):
        a = statistics.median(x[i] for x in results["on"])
        b = statistics.median(x[i] for x in results["off"])
        print(f"{what:<28} {a:>14,.0f} tasks/s {b:>6,.0f} tasks/s {a / b:>8.3f}   ({(1 - a / b) * 100:+.1f}% slower)")


if __name__ == "__main__":
    main()
