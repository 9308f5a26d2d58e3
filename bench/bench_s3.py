"""How fast a client reads small objects from S3, the way the monitor collects results (and
writes them, as workers store results): our hand-signed requests against boto3's
``get_object`` / ``put_object``, in the same run, on a local SeaweedFS that checks every
signature (started here, stopped by its PID).

Prints, for each way and object size, requests per second with ``--threads`` threads (the
monitor's fetch pool) and client CPU per request. The server shares this machine's cores, so the
rates understate what a client gets from AWS, where the server's CPU is not ours; client CPU
per GET is the figure that carries over.

    python bench/bench_s3.py [--objects 2000] [--threads 32]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server = SeaweedS3()
    try:
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
