"""Iterative-job benchmarks, each beside the peer a user would otherwise pick, in the same run.

PS   ParameterServer pull + push round trips per second, per worker and in aggregate, with 2 and
     8 concurrent calls, for a 1 MB and a 100 MB model; peer: plain redis-py GET + SET of the
     same bytes on the same Redis (the limit: no summing, no atomicity)
BC   a 200 MB array used by 1,000 calls: ``ex.broadcast`` vs capturing it in the function's
     closure, for one map and for 3 rounds whose function changes each round (new weights);
     bytes moved through storage (as counted by the Redis server) and seconds

    python bench/bench_iterative.py [--rounds 3] [--seconds 3] [--sizes-mb 1,100]
                                    [--workers 2,8] [--bcast-mb 200] [--calls 1000]

Each measurement runs ``--rounds`` times, alternating the two systems, and the median is
printed for both beside their ratio. A redis-server is started for the run (tests/servers.py).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import redis  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from servers import RedisServer  # noqa: E402

from lambdaexec import LambdaExecutor, ParameterServer  # noqa: E402


def _wait_until(start_at: float) -> None:
    time.sleep(max(0.0, start_at - time.time()))


def ps_worker(ps: ParameterServer, n: int, start_at: float, seconds: float) -> tuple[int, float]:
    """Pull the model and push a step, as fast as possible, for ``seconds`` (and at least twice)."""
    delta = np.full(n, 1e-9)
    _wait_until(start_at)
    done, t0 = 0, time.perf_counter()
    while done < 2 or time.perf_counter() - t0 < seconds:  # at least 2, for large models
        ps.pull("w")
        ps.push("w", delta)
        done += 1
    return done, time.perf_counter() - t0


def redis_worker(url: str, key: str, n: int, start_at: float, seconds: float) -> tuple[int, float]:
    """GET the model's bytes and SET a step's bytes, as fast as possible, for ``seconds`` (and at least twice)."""
    r = redis.Redis.from_url(url)
    delta = np.full(n, 1e-9).tobytes()
    _wait_until(start_at)
    done, t0 = 0, time.perf_counter()
    while done < 2 or time.perf_counter() - t0 < seconds:  # at least 2, for large models
        np.frombuffer(r.get(key), dtype=np.float64)
        r.set(key, delta)
        done += 1
    return done, time.perf_counter() - t0


def rates(results: list[tuple[int, float]]) -> tuple[float, float]:
    """(median per-worker round trips/s, aggregate round trips/s)."""
    per = [n / s for n, s in results]
    return statistics.median(per), sum(n for n, _ in results) / max(s for _, s in results)


def bench_ps(url: str, workers: int, mb: float, rounds: int, seconds: float) -> None:
    n = int(mb * 2**20) // 8
    ps = ParameterServer(url, name="bench", timeout=300)  # 8 workers moving 100 MB each on 2 cores
    raw = redis.Redis.from_url(url)
    ours, theirs = [], []
    with LambdaExecutor(max_workers=workers) as ex:
        list(ex.map(abs, range(workers * 2)))  # start every worker
        for _ in range(rounds):
            ps.init("w", np.zeros(n))
            start_at = time.time() + 1.0
            ours.append(rates(list(ex.map(ps_worker, [ps] * workers, [n] * workers, [start_at] * workers,
                                          [seconds] * workers))))
            ps.clear()
            raw.set("bench/raw", np.zeros(n).tobytes())
            start_at = time.time() + 1.0
            theirs.append(rates(list(ex.map(redis_worker, [url] * workers, ["bench/raw"] * workers,
                                            [n] * workers, [start_at] * workers, [seconds] * workers))))
            raw.delete("bench/raw")
    for i, what in enumerate(("per worker", "aggregate")):
        a, b = statistics.median(r[i] for r in ours), statistics.median(r[i] for r in theirs)
        print(f"PS {mb:g} MB, {workers} workers, {what:<10}  ParameterServer {a:9.1f} rt/s   "
              f"redis-py GET+SET {b:9.1f} rt/s   ratio {a / b:5.2f}")


def from_broadcast(h, i: int) -> float:
    return float(h.value[i % len(h.value)].sum())


def make_closure(X: np.ndarray, w: float):
    def from_closure(i: int) -> float:
        return float(X[i % len(X)].sum()) * w
    return from_closure


def from_broadcast_weighted(h, w: float, i: int) -> float:
    return from_broadcast(h, i) * w


def moved(url: str) -> int:
    info = redis.Redis.from_url(url).info("stats")
    return info["total_net_input_bytes"] + info["total_net_output_bytes"]


def bench_broadcast(url: str, mb: float, calls: int, workers: int, rounds: int, iters: int) -> None:
    X = np.random.default_rng(0).random((int(mb * 2**20) // 8 // 1000, 1000))
    expected = [float(X[i % len(X)].sum()) for i in range(calls)]
    results: dict[str, list[tuple[float, float]]] = {"broadcast": [], "closure": []}
    for _ in range(rounds):
        for system in ("broadcast", "closure"):
            with LambdaExecutor(max_workers=workers, storage="redis", redis_url=url) as ex:
                list(ex.map(abs, range(workers * 2)))
                before, t = moved(url), time.perf_counter()
                if system == "broadcast":
                    h = ex.broadcast(X)
                    for r in range(iters):
                        out = list(ex.map(from_broadcast_weighted, [h] * calls, [1.0 + r] * calls, range(calls)))
                else:
                    for r in range(iters):
                        out = list(ex.map(make_closure(X, 1.0 + r), range(calls)))
                results[system].append((time.perf_counter() - t, moved(url) - before))
                assert out == [e * iters for e in expected]
    b = [statistics.median(v[i] for v in results["broadcast"]) for i in range(2)]
    c = [statistics.median(v[i] for v in results["closure"]) for i in range(2)]
    label = f"BC {mb:g} MB to {calls} calls, {iters} round{'s' if iters > 1 else ''}"
    print(f"{label:<36} broadcast {b[0]:7.2f} s {b[1] / 1e6:9.0f} MB moved   "
          f"closure {c[0]:7.2f} s {c[1] / 1e6:9.0f} MB moved   ratio {b[0] / c[0]:5.2f} s, {b[1] / c[1]:5.2f} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--sizes-mb", default="1,100")
    parser.add_argument("--workers", default="2,8")
    parser.add_argument("--bcast-mb", type=float, default=200)
    parser.add_argument("--bcast-workers", type=int, default=2)
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    server = RedisServer()
    try:
        print(f"redis-server at {server.url}; {os.cpu_count()} cores; medians of {args.rounds} alternating rounds")
        for mb in (float(s) for s in args.sizes_mb.split(",")):
            for workers in (int(w) for w in args.workers.split(",")):
                bench_ps(server.url, workers, mb, args.rounds, args.seconds)
        for iters in ((1, 3) if args.bcast_mb > 0 else ()):
            bench_broadcast(server.url, args.bcast_mb, args.calls, args.bcast_workers, args.rounds, iters)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
