"""Benchmark: the mean of a 4,000 x 4,000 dask array in 500 x 500 chunks (64 chunks, 128 MB),
computed with ``lambda_get`` and with dask's own ``processes`` scheduler, in the same run.

dask's ``processes`` scheduler starts a new process pool for every compute, so it is compared
with ``lambda_get`` on a new executor each time (worker start-up included, "cold"). ``lambda_get``
on its shared executor, already started ("warm"), is how it runs after the first compute, and is
printed too. Each figure is the best of ``--repeat`` runs.

    python bench/bench_dask.py [--workers 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable

import dask
import dask.array as da

from lambdaexec import LambdaExecutor
from lambdaexec_dask import lambda_get


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of ``fn()``."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="worker processes for both schedulers")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    x = da.random.random((4000, 4000), chunks=(500, 500))
    mean = x.mean()
    expected = dask.compute(mean, scheduler="sync")[0]

    shutdowns: list[float] = []

    def cold() -> float:
        with LambdaExecutor(max_workers=args.workers) as ex:
            value = dask.compute(mean, scheduler=lambda_get, executor=ex)[0]
            start = time.perf_counter()
        shutdowns.append(time.perf_counter() - start)
        return value

    shared = LambdaExecutor(max_workers=args.workers)
    times: dict[str, list[float]] = {"cold": [], "warm": [], "processes": []}
    results = []
    for _ in range(args.repeat):
        for name, fn in (
            ("cold", cold),
            ("warm", lambda: dask.compute(mean, scheduler=lambda_get, executor=shared)[0]),
            ("processes", lambda: dask.compute(mean, scheduler="processes", num_workers=args.workers)[0]),
        ):
            seconds, value = timed(fn)
            times[name].append(seconds)
            results.append(value)
    shared.shutdown()
    same = "identical" if all(r == expected for r in results) else "DIFFERENT"
    cold_t, warm_t, theirs = min(times["cold"]), min(times["warm"]), min(times["processes"])
    print(f"dask.array mean, 4000x4000 in 500x500 chunks, {args.workers} workers, best of {args.repeat}, "
          f"results {same}")
    shut = shutdowns[times["cold"].index(cold_t)]
    print(f"  lambda_get, new executor: {cold_t:.2f} s (start, compute, {shut:.2f} s shutdown)   "
          f"processes: {theirs:.2f} s   ratio {cold_t / theirs:.2f}")
    print(f"  lambda_get, warm executor: {warm_t:.2f} s   processes: {theirs:.2f} s   ratio {warm_t / theirs:.2f}")


if __name__ == "__main__":
    main()
