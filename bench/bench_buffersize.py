"""``map(..., buffersize=1000)`` over a generator: the client's peak memory and the throughput,
beside the eager ``map`` (and beside ``ProcessPoolExecutor.map(buffersize=1000)`` when this Python
has it: 3.14 and later).

M  peak RSS of the client (ru_maxrss) after mapping a generator of 10k, 100k and 1M tiny items
   (target: growth from 10k to 1M under 50 MB with buffersize; the eager map holds every call)
T  items/s over 100k tiny items, buffersize=1000 vs eager (target: within 20% of eager)

    python bench/bench_buffersize.py [--rounds N] [--sizes 10000,100000,1000000] [--only M,T]

Each measurement runs in a fresh interpreter (peak RSS is per process), ``--rounds`` times (at
least 3), alternating the systems within a round and rotating which goes first; the medians
and the ratio ours/theirs are printed. Local workers (2), local storage.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import statistics
import subprocess
import sys
import time

_CHILD = r"""
import json, resource, sys, time
system, n, buffersize = sys.argv[1], int(sys.argv[2]), sys.argv[3]
buffersize = None if buffersize == "none" else int(buffersize)

def tiny(x):
    return x + 1

def items(n):
    for i in range(n):
        yield i

if __name__ == "__main__":
    if system == "lambdaexec":
        from lambdaexec import LambdaExecutor
        ex = LambdaExecutor(max_workers=2)
    else:
        import concurrent.futures as cf
        ex = cf.ProcessPoolExecutor(2)
    with ex:
        ex.submit(tiny, 0).result()  # workers up
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        kw = {} if buffersize is None else {"buffersize": buffersize}
        total = 0
        for r in ex.map(tiny, items(n), **kw):
            total += r
        seconds = time.perf_counter() - start
        assert total == n * (n + 1) // 2
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_mb": peak / 1024, "base_mb": base / 1024}))
"""


def run(system: str, n: int, buffersize: int | None) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, system, str(n), str(buffersize or "none")],
                         capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def medians(systems: dict, n: int, rounds: int, key: str) -> dict[str, float]:
    """Run each system ``rounds`` times, alternating and rotating the order; medians of ``key``."""
    names = list(systems)
    values: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            system, buffersize = systems[name]
            values[name].append(run(system, n, buffersize)[key])
    return {name: statistics.median(v) for name, v in values.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--throughput-items", type=int, default=100_000)
    parser.add_argument("--only", default="M,T")
    args = parser.parse_args()
    rounds = max(3, args.rounds)
    sizes = [int(s) for s in args.sizes.split(",")]
    has_314 = "buffersize" in cf.Executor.map.__code__.co_varnames
    systems = {"buffersize=1000": ("lambdaexec", 1000), "eager map": ("lambdaexec", None)}
    if has_314:
        systems["ProcessPoolExecutor buffersize=1000"] = ("ppe", 1000)
    print(f"Python {sys.version.split()[0]}; peer: "
          + ("ProcessPoolExecutor.map(buffersize=1000)" if has_314 else "the eager map (no Python 3.14 here)"))
    if "M" in args.only:
        print(f"\nM  peak RSS of the client, MB (median of {rounds})")
        print(f"{'items':>10} " + " ".join(f"{name:>36}" for name in systems))
        peaks = {}
        for n in sizes:
            m = medians(systems, n, rounds, "peak_mb")
            peaks[n] = m
            print(f"{n:>10} " + " ".join(f"{m[name]:>36.1f}" for name in systems))
        lo, hi = min(sizes), max(sizes)
        for name in systems:
            print(f"   growth {lo:,} -> {hi:,} items, {name}: {peaks[hi][name] - peaks[lo][name]:+.1f} MB")
    if "T" in args.only:
        n = args.throughput_items
        start = time.perf_counter()
        s = medians(systems, n, rounds, "seconds")
        print(f"\nT  {n:,} tiny items, items/s (median of {rounds}; {time.perf_counter() - start:.0f} s)")
        for name in systems:
            print(f"   {name:>36}: {n / s[name]:>10,.0f}")
        print(f"   ratio buffersize=1000 / eager: {s['eager map'] / s['buffersize=1000']:.2f}")
        if has_314:
            print(f"   ratio buffersize=1000 / ProcessPoolExecutor: "
                  f"{s['ProcessPoolExecutor buffersize=1000'] / s['buffersize=1000']:.2f}")


if __name__ == "__main__":
    main()
