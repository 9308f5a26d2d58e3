"""The result cache (``cache=True``): a 1,000-call ``map`` run first (every call runs and its result
is stored in the cache), then again with every result cached (nothing runs), each in a new
executor as a rerun in a new process would be. Both systems of the comparison are lambdaexec:
the first run against the fully cached rerun, alternating, medians of ``--rounds`` (each round
uses a fresh cache, so every first run is a real first run). Target (issue 24): the rerun >= 20x
faster on local storage.

``--s3`` also runs the rerun on S3 storage (a local SeaweedFS started here, stopped by its PID)
and prints the S3 requests a fully cached rerun costs, by kind, counted by the server (the job
record's included), beside those of the first run.

The call does 5 ms of work (``time.sleep``), a small stand-in for a real one: the cached rerun's
time does not depend on it, the first run's grows with it.

    python bench/bench_cache.py [--rounds 3] [--calls 1000] [--work-ms 5] [--s3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from lambdaexec import LambdaExecutor  # noqa: E402


def work(x: int, ms: float) -> int:
    """The benchmark's call: ``ms`` of waiting, then a small result."""
    time.sleep(ms / 1000)
    return x * x


def one_map(settings: dict, calls: int, ms: float) -> tuple[float, int]:
    """Seconds for a new executor's ``map`` of ``calls`` calls (start-up and shutdown included),
    and how many of them came from the cache."""
    t = time.perf_counter()
    with LambdaExecutor(max_workers=2, cache=True, progress=False, **settings) as ex:
        futures = ex.map_futures(work, range(calls), [ms] * calls)
        assert [f.result() for f in futures] == [x * x for x in range(calls)]
        cached = sum(bool(f.stats.get("cached")) for f in futures)
    return time.perf_counter() - t, cached


def local(rounds: int, calls: int, ms: float) -> None:
    first, rerun = [], []
    for r in range(rounds):
        root = tempfile.mkdtemp(prefix="bench-cache-")
        settings = {"storage": "local", "storage_path": root, "prefix": f"bench{uuid.uuid4().hex[:6]}"}
        try:
            t1, c1 = one_map(settings, calls, ms)
            t2, c2 = one_map(settings, calls, ms)
            assert c1 == 0 and c2 == calls, (c1, c2)
            first.append(t1)
            rerun.append(t2)
            print(f"  round {r + 1}: first run {t1:.3f} s, fully cached rerun {t2:.3f} s", flush=True)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    a, b = statistics.median(first), statistics.median(rerun)
    print(f"local storage, {calls:,} calls of {ms:g} ms, 2 workers (medians of {rounds}): first run {a:.3f} s "
          f"({calls / a:,.0f} calls/s), fully cached rerun {b:.3f} s ({calls / b:,.0f} calls/s): "
          f"rerun {a / b:.1f}x faster")


def on_s3(rounds: int, calls: int, ms: float) -> None:
    from servers import SeaweedS3

    server = SeaweedS3()
    try:
        first_req, rerun_req, first, rerun = [], [], [], []
        for _ in range(rounds):
            settings = {**server.settings(), "prefix": f"bench{uuid.uuid4().hex[:6]}"}
            before = server.request_counts()
            t1, _ = one_map(settings, calls, ms)
            middle = server.request_counts()
            t2, c2 = one_map(settings, calls, ms)
            after = server.request_counts()
            assert c2 == calls
            first.append(t1)
            rerun.append(t2)
            first_req.append({k: middle.get(k, 0) - before.get(k, 0) for k in set(middle) | set(before)})
            rerun_req.append({k: after.get(k, 0) - middle.get(k, 0) for k in set(after) | set(middle)})
        for name, times, reqs in (("first run", first, first_req), ("fully cached rerun", rerun, rerun_req)):
            kinds = sorted({k for q in reqs for k in q})
            med = {k: statistics.median(q.get(k, 0) for q in reqs) for k in kinds}
            total = statistics.median(sum(q.values()) for q in reqs)
            print(f"S3 (SeaweedFS), {name}: {statistics.median(times):.3f} s; S3 requests "
                  + "  ".join(f"{k} {v:g}" for k, v in med.items() if v)
                  + f"  total {total:g} = {total / calls:.3f} per call")
        a, b = statistics.median(first), statistics.median(rerun)
        print(f"S3: rerun {a / b:.1f}x faster (medians of {rounds})")
    finally:
        server.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calls", type=int, default=1000)
    p.add_argument("--work-ms", type=float, default=5.0)
    p.add_argument("--s3", action="store_true", help="also on S3 (SeaweedFS), with the requests counted")
    args = p.parse_args()
    local(args.rounds, args.calls, args.work_ms)
    if args.s3:
        on_s3(args.rounds, args.calls, args.work_ms)


if __name__ == "__main__":
    main()
