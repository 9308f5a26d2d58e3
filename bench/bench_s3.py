"""lambdaexec with S3 storage, on a local SeaweedFS that checks every signature (started here,
stopped by its PID). Two sections:

``w1``: W1 of ``bench_core`` (1,000 tiny tasks via ``map``, one call per item) with S3 as the
storage, beside ProcessPoolExecutor(2) and multiprocessing.Pool(2) in the same run (alternating,
rotating who goes first, medians of ``--rounds``), and the S3 requests each 1,000-call map made,
by kind, counted by the server itself (its metrics: the client's and the workers' requests,
the job record's and the clean-up's included). Targets (issue 10): >= 3,000 tasks/s and <= 0.25
requests per call.

``loop``: W2's loop on S3 (``submit(...).result()`` one call at a time, a job per call, as
joblib and dask submit), and the S3 requests per call it made, by kind (the job record's
included: its writes are waited for), medians of ``--rounds``. Prints which ``lambdaexec`` it
imported, so that two checkouts can be compared with ``PYTHONPATH``.

``requests``: how fast a client reads small objects, the way the monitor collects results (and
writes them, as workers store results): our hand-signed requests against boto3's
``get_object`` / ``put_object``; for each way and object size, requests per second with
``--threads`` threads (the monitor's fetch pool) and client CPU per request.

``large``: reading one large object whole (``--large-mb``): ours (its first part, then ranged
parts in parallel into one buffer) beside boto3's transfer manager (``download_fileobj``, which
sends a HEAD, then ranged parts in parallel) and one plain GET, medians of ``--rounds``.

The server shares this machine's cores, so the rates understate what a client gets from AWS,
where the server's CPU is not ours; client CPU per request and requests per call carry over.

    python bench/bench_s3.py [--only w1,loop,requests,large] [--rounds 3] [--objects 2000] [--threads 32]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from servers import SeaweedS3  # noqa: E402

from lambdaexec.storage import open_storage  # noqa: E402


def cpu() -> float:
    """CPU seconds this process has used."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def timed_requests(fn, keys: list[str], threads: int, *args: list) -> tuple[float, float]:
    """(requests per second, client CPU ms per request) calling ``fn`` on every key once."""
    c0, t0 = cpu(), time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(fn, keys, *args):
            pass
    wall, used = time.perf_counter() - t0, cpu() - c0
    return len(keys) / wall, 1e3 * used / len(keys)


def w1_on_s3(server: SeaweedS3, rounds: int) -> None:
    """W1 with S3 storage beside ProcessPoolExecutor and Pool, with the requests it made."""
    import multiprocessing
    import statistics

    from bench_core import NAMES, PoolExecutor, row, tiny

    from lambdaexec import LambdaExecutor

    n = 1000
    kinds = ("PUT", "GET", "LIST", "DELETE")
    ppe_kw = {"max_workers": 2, "mp_context": multiprocessing.get_context("forkserver")}
    with LambdaExecutor(max_workers=2, progress=False, **server.settings()) as ours, \
            concurrent.futures.ProcessPoolExecutor(**ppe_kw) as ppe, PoolExecutor(2) as pool:
        ex = {"lambdaexec": ours, "PPE": ppe, "Pool": pool}
        rates: dict[str, list[float]] = {name: [] for name in NAMES}
        requests: list[dict[str, int]] = []
        for r in range(rounds):
            for name in NAMES[r % 3:] + NAMES[: r % 3]:
                list(ex[name].map(tiny, range(50)))  # warm
                if name == "lambdaexec":
                    ours._monitor.sweeper.wait()  # the warm-up's clean-up
                    before = server.request_counts()
                t = time.perf_counter()
                assert sum(ex[name].map(tiny, range(n))) == n * (n + 1) // 2
                rates[name].append(n / (time.perf_counter() - t))
                if name == "lambdaexec":
                    ours._monitor.sweeper.wait()  # its clean-up, counted too
                    after = server.request_counts()
                    requests.append({k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)})
    row("W1 1,000 tiny tasks via map, S3", {k: statistics.median(v) for k, v in rates.items()}, "tasks/s")
    med = {k: statistics.median(q.get(k, 0) for q in requests) for k in sorted({k for q in requests for k in q})}
    total = statistics.median(sum(q.values()) for q in requests)
    print(f"   S3 requests per {n:,}-call map (median of {rounds}): "
          + "  ".join(f"{k} {med.get(k, 0):g}" for k in (*kinds, *sorted(set(med) - set(kinds))))
          + f"  total {total:g} = {total / n:.3f} per call", flush=True)


def plus_one(x: int) -> int:
    """W2's call (``bench_core.tiny``; defined here so that this section runs on older checkouts too)."""
    return x + 1


def where_imported(_: int = 0) -> str:
    """The ``lambdaexec`` package a process imported (run in a worker: the worker's)."""
    import lambdaexec

    return os.path.dirname(lambdaexec.__file__)


def loop_on_s3(server: SeaweedS3, rounds: int, n: int = 300) -> None:
    """``n`` submit -> result round trips with S3 storage, and the S3 requests per call."""
    import statistics

    import lambdaexec

    kinds = ("PUT", "GET", "LIST", "DELETE")
    requests: list[dict[str, int]] = []
    rates: list[float] = []
    with lambdaexec.LambdaExecutor(max_workers=2, progress=False, **server.settings()) as ours:
        for _ in range(rounds):
            for i in range(20):  # warm
                ours.submit(plus_one, i).result()
            time.sleep(0.6)  # the job record's writer writes at most every 0.25 s
            ours._monitor.sweeper.wait()
            before = server.request_counts()
            t = time.perf_counter()
            for i in range(n):
                assert ours.submit(plus_one, i).result() == i + 1
            rates.append(n / (time.perf_counter() - t))
            time.sleep(0.6)
            ours._monitor.sweeper.wait()
            after = server.request_counts()
            requests.append({k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)})
        worker = ours.submit(where_imported).result()
    med = {k: statistics.median(q.get(k, 0) for q in requests) for k in sorted({k for q in requests for k in q})}
    total = statistics.median(sum(q.values()) for q in requests)
    print(f"loop of {n} submit -> result on S3 (client {where_imported()}, workers {worker}), median of {rounds}: "
          f"{statistics.median(rates):,.0f} calls/s; S3 requests per call: "
          + "  ".join(f"{k} {med.get(k, 0) / n:.3f}" for k in (*kinds, *sorted(set(med) - set(kinds))))
          + f"  total {total / n:.3f}", flush=True)


def large_object(server: SeaweedS3, rounds: int, mb: int) -> None:
    """Read one large object whole: ours, boto3's transfer manager, one plain GET."""
    import io
    import statistics

    spec = {"kind": "s3", **{k: v for k, v in server.settings().items() if k != "storage"}}
    store = open_storage(spec)
    data = os.urandom(mb << 20)
    store.put("bench/large", data)
    client, bucket = store.client, spec["bucket"]

    def ours() -> bytes:
        return store.get("bench/large")

    def transfer_manager() -> bytes:
        out = io.BytesIO()
        client.download_fileobj(bucket, "bench/large", out)
        return out.getvalue()

    def plain_get() -> bytes:
        return client.get_object(Bucket=bucket, Key="bench/large")["Body"].read()

    ways = {"ours (parts)": ours, "boto3 download_fileobj": transfer_manager, "one GET": plain_get}
    times: dict[str, list[float]] = {w: [] for w in ways}
    names = list(ways)
    for r in range(rounds):
        for name in names[r % 3:] + names[: r % 3]:
            t = time.perf_counter()
            got = ways[name]()
            times[name].append(time.perf_counter() - t)
            assert len(got) == len(data)
            del got
    med = {w: statistics.median(v) for w, v in times.items()}
    ref = med["ours (parts)"]
    print(f"read one {mb} MiB object whole, median of {rounds}: " + "   ".join(
        f"{w} {mb / t:,.0f} MiB/s ({t:.2f} s{'' if w == 'ours (parts)' else f', ours x{t / ref:.2f}'})"
        for w, t in med.items()), flush=True)
    store.delete("bench/large")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="w1,loop,requests,large", help="sections to run (default all)")
    parser.add_argument("--large-mb", type=int, default=256)
    args = parser.parse_args()
    only = set(args.only.lower().split(","))
    server = SeaweedS3()
    try:
        if "w1" in only:
            print(f"cores: {os.cpu_count()}; every system uses 2 workers; medians of {max(3, args.rounds)} "
                  "alternating rounds; ratio = ours / theirs", flush=True)
            w1_on_s3(server, max(3, args.rounds))
        if "loop" in only:
            loop_on_s3(server, max(3, args.rounds))
        if "large" in only:
            large_object(server, max(3, args.rounds), args.large_mb)
        if "requests" not in only:
            return
        spec = {"kind": "s3", **{k: v for k, v in server.settings().items() if k != "storage"}}
        signed = open_storage(spec)
        boto = open_storage(spec)
        boto._signed = None  # the same store, through boto3 only
        for size in (200, 64 << 10):
            keys = [f"bench/{size}/{i}" for i in range(args.objects)]
            blobs = [os.urandom(size)] * len(keys)
            for op in ("PUT", "GET"):
                best: dict[str, tuple[float, float]] = {}
                for _ in range(args.rounds):  # alternate, keep each way's best round
                    for name, store in (("signed", signed), ("boto3", boto)):
                        if op == "PUT":
                            result = timed_requests(store.put, keys, args.threads, blobs)
                        else:
                            result = timed_requests(store.get, keys, args.threads)
                        if name not in best or result[0] > best[name][0]:
                            best[name] = result
                (ours, our_cpu), (theirs, their_cpu) = best["signed"], best["boto3"]
                print(f"{args.objects} {op}s of {size:,} B, {args.threads} threads, best of {args.rounds}: "
                      f"signed {ours:,.0f}/s ({our_cpu:.2f} ms CPU each)   boto3 {theirs:,.0f}/s "
                      f"({their_cpu:.2f} ms CPU each)   rate x{ours / theirs:.2f}, CPU /{their_cpu / our_cpu:.1f}")
        assert signed.stats["boto3_gets"] == signed.stats["boto3_puts"] == 0, "the signed way fell back to boto3"
    finally:
        server.stop()


if __name__ == "__main__":
    main()
