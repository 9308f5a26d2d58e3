"""Core benchmarks, each against ProcessPoolExecutor(2) in the same run. Prints figures only.

W1  1,000 tiny tasks, via map and via per-item submit          (target: >= PPE tasks/s)
W2  one warm round trip (submit -> result), median of 200      (target: <= 2 ms)
W3  eight single-threaded DGEMM tasks, aggregate GFLOPS        (target: >= 0.98 x PPE)
S   start-up: executor construction to first result            (target: <= 0.3 s)

    python bench/bench_core.py [--rounds N] [--storage-path DIR]

Each workload runs ``--rounds`` times on each executor, alternating, and each side's best round
is reported: this VM's speed drifts over minutes, and alternating keeps drift out of the ratio.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # single-threaded DGEMM on both sides, set before numpy loads

import argparse  # noqa: E402
import concurrent.futures as cf  # noqa: E402
import multiprocessing  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

from lambdaexec import LambdaExecutor  # noqa: E402
from lambdaexec.demo import dgemm  # noqa: E402


def tiny(x: int) -> int:
    return x + 1


def w1(ex: cf.Executor) -> tuple[float, float]:
    n = 1000
    list(ex.map(tiny, range(50)))  # warm
    t = time.perf_counter()
    assert sum(ex.map(tiny, range(n))) == n * (n + 1) // 2
    by_map = n / (time.perf_counter() - t)
    t = time.perf_counter()
    futures = [ex.submit(tiny, i) for i in range(n)]
    assert sum(f.result() for f in futures) == n * (n + 1) // 2
    by_submit = n / (time.perf_counter() - t)
    return by_map, by_submit


def w2(ex: cf.Executor) -> float:
    for i in range(20):
        ex.submit(tiny, i).result()
    times = []
    for i in range(200):
        t = time.perf_counter()
        ex.submit(tiny, i).result()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def w3(ex: cf.Executor, n: int = 1024, loops: int = 8) -> float:
    list(ex.map(dgemm, [64] * 2, [1] * 2, [1.0] * 2, [0, 1]))  # warm numpy in every worker
    t = time.perf_counter()
    results = list(ex.map(dgemm, [n] * 8, [loops] * 8, [1.0 + i / 8 for i in range(8)], range(8)))
    wall = time.perf_counter() - t
    return sum(r["flops"] for r in results) / wall / 1e9


def startup(make: type, **kw) -> float:
    t = time.perf_counter()
    with make(**kw) as ex:
        ex.submit(tiny, 1).result()
        return time.perf_counter() - t


def row(name: str, ours: float, theirs: float, unit: str, higher_is_better: bool = True) -> None:
    ratio = ours / theirs if theirs else float("nan")
    better = ratio >= 1 if higher_is_better else ratio <= 1
    print(f"{name:<34} lambdaexec {ours:10.2f} {unit:<8} PPE {theirs:10.2f} {unit:<8} "
          f"ratio {ratio:5.2f} ({'better or equal' if better else 'worse'})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--storage-path", default=None, help="local storage directory (default: temp dir)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per workload (default 3)")
    args = p.parse_args()
    kw = {"storage_path": args.storage_path} if args.storage_path else {}
    ppe_kw = {"max_workers": 2, "mp_context": multiprocessing.get_context("forkserver")}
    print(f"cores: {os.cpu_count()}; both executors use 2 workers\n")

    def best(measure, ours, theirs, lower_is_better=False):
        pick = min if lower_is_better else max
        rounds = [(measure(ours), measure(theirs)) for _ in range(args.rounds)]
        return pick(r[0] for r in rounds), pick(r[1] for r in rounds)

    starts = [(startup(LambdaExecutor, max_workers=2, **kw), startup(cf.ProcessPoolExecutor, **ppe_kw))
              for _ in range(args.rounds)]
    s_ours, s_ppe = min(s[0] for s in starts), min(s[1] for s in starts)
    row("S  start-up to first result", s_ours, s_ppe, "s", higher_is_better=False)

    with LambdaExecutor(max_workers=2, **kw) as ours, cf.ProcessPoolExecutor(**ppe_kw) as theirs:
        m1, m2 = best(lambda ex: w1(ex)[0], ours, theirs)
        row("W1 1,000 tiny tasks via map", m1, m2, "tasks/s")
        s1, s2 = best(lambda ex: w1(ex)[1], ours, theirs)
        row("W1 1,000 tiny tasks via submit", s1, s2, "tasks/s")
        t1, t2 = best(w2, ours, theirs, lower_is_better=True)
        row("W2 warm round trip (median)", t1, t2, "ms", higher_is_better=False)
        g1, g2 = best(w3, ours, theirs)
        row("W3 8 single-threaded DGEMM", g1, g2, "GFLOPS")


if __name__ == "__main__":
    main()
