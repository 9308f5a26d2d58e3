"""Client-side invocation throughput of the ``lambda`` backend, against an endpoint that accepts
and discards invocations (HTTP 202), run in its own process so it does not share our GIL.

Four measurements:

1. ``invoker``: :class:`LambdaInvoker` alone sending N events (realistic ~400-byte payloads,
   signed with SigV4) -- invocations per second from one process.
2. ``map``: ``LambdaExecutor(backend="lambda").map_futures(f, range(N))`` on SeaweedFS S3 storage
   until every call has been invoked -- the time to submit a 100,000-call map.
3. ``memory``: the same map under tracemalloc -- client memory per call while all are in flight.
4. ``grouped``: a map of ``--tiny`` tiny calls run end to end on the Lambda emulator (the worker
   under AWS's runtime interface client, SeaweedFS storage, ``max_workers`` 4), with calls
   grouped into invocations (:mod:`lambdaexec.aws.grouping`) beside the same executor sending
   one call per invocation, alternating, medians of ``--rounds``: invocations, result objects,
   S3 requests per call (counted by SeaweedFS), tasks/s. Not part of the default run.

Run::

    python bench/bench_invoke.py                 # the first three, N=100000
    python bench/bench_invoke.py --only invoker --calls 20000
    python bench/bench_invoke.py --only grouped --tiny 1000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))


class _Discard(asyncio.Protocol):
    """HTTP/1.1 keep-alive: answer every request 202 with an empty body, as Lambda does for Event."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport, self.buf = transport, b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in self.buf[:end].split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length:]
            self.transport.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nx-amzn-RequestId: 0\r\n\r\n")


def serve(port: int) -> None:
    """Run the discard endpoint on 127.0.0.1:``port`` forever."""

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Discard, "127.0.0.1", port, backlog=2048)
        print("ready", flush=True)
        await server.serve_forever()

    asyncio.run(main())


def start_discard() -> tuple[subprocess.Popen, str]:
    from servers import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    return proc, f"http://127.0.0.1:{port}"


def bench_invoker(url: str, n: int) -> float:
    """Invocations/s of the invoker alone."""
    from lambdaexec.aws.invoker import LambdaInvoker
    from lambdaexec.config import load_config
    from lambdaexec.invokers.base import Dispatch

    config = load_config({"storage": "local", "lambda_endpoint_url": url, "region": "us-east-1", "max_workers": n})
    invoker = LambdaInvoker(config)
    event = {"storage": {"kind": "s3", "bucket": "my-lambdaexec-bucket", "region": "us-east-1",
                         "endpoint_url": None}, "job_prefix": "lambdaexec/0123456789ab/000000",
             "func_key": "lambdaexec/0123456789ab/funcs/" + "f" * 32, "args_key": "lambdaexec/0123456789ab/000000/args",
             "init_key": "", "attempt": 0, "versions": {"python": "3.11", "cloudpickle": "3.1.2"},
             "max_result_size": 1 << 30, "mark_start": True}

    def make_event(calls: list[int], attempt: int) -> dict:
        return {**event, "calls": [[c, c * 40, c * 40 + 40] for c in calls]}

    start = time.perf_counter()
    invoker.invoke(Dispatch("lambdaexec/0123456789ab/000000", list(range(n)), 0, make_event))
    while invoker.stats["invoked"] < n:
        time.sleep(0.01)
    rate = n / (time.perf_counter() - start)
    invoker.close()
    return rate


def bench_map(url: str, n: int, seaweed_settings: dict, trace: bool) -> tuple[float, float, float, float]:
    """Seconds until ``map_futures`` returns, until its job reaches the invoker (inputs uploaded,
    first invocation sent), until every call is invoked; bytes of client memory per call."""
    import tracemalloc

    from lambdaexec import LambdaExecutor

    ex = LambdaExecutor(backend="lambda", lambda_endpoint_url=url, max_workers=n, **seaweed_settings)
    invoker = ex._monitor.invoker
    if trace:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    futures = ex.map_futures(abs, range(n))
    returned = time.perf_counter() - start
    while invoker.stats["invoked"] == 0:
        time.sleep(0.001)
    first = time.perf_counter() - start
    while invoker.stats["invoked"] < n:
        time.sleep(0.01)
    elapsed = time.perf_counter() - start
    per_call = 0.0
    if trace:
        per_call = (tracemalloc.get_traced_memory()[0] - base) / n
        snap = tracemalloc.take_snapshot()
        tracemalloc.stop()
        print("  client memory per call while in flight, by file and by line:")
        for stat in snap.statistics("filename")[:8]:
            print(f"    {stat.size / n:7.0f} B/call  {stat.traceback[0].filename.split('/')[-1]}")
        for stat in snap.statistics("lineno")[:8]:
            print(f"    {stat.size / n:7.0f} B/call  {stat.traceback[0].filename.split('/')[-1]}:"
                  f"{stat.traceback[0].lineno}")
    del futures
    return returned, first, elapsed, per_call


def tiny(x: int) -> int:
    return x + 1


def bench_grouped(n: int, rounds: int) -> None:
    """Tiny calls on the emulator: grouped into invocations, beside one call per invocation."""
    import statistics
    import tempfile

    from lambda_helpers import EmulatorProcess
    from servers import SeaweedS3

    from lambdaexec import LambdaExecutor
    from lambdaexec.aws.package import build_package

    package = os.path.join(tempfile.mkdtemp(), "lambdaexec-worker.zip")
    build_package(package)
    seaweed = SeaweedS3()
    emu = EmulatorProcess(package, concurrency=4, timeout=60)
    settings = {"backend": "lambda", "lambda_endpoint_url": emu.url, "max_workers": 4, "speculative": False,
                "progress": False, **seaweed.settings()}
    ways = ("grouped", "one per invocation")
    figures: dict[str, dict[str, list[float]]] = {w: {} for w in ways}
    try:
        with LambdaExecutor(**settings) as grouped, LambdaExecutor(**settings) as single:
            single._monitor.invoker._work_target = 0.0  # no call is ever short enough to group
            ex = {"grouped": grouped, "one per invocation": single}
            for r in range(rounds):
                for way in ways[r % 2:] + ways[: r % 2]:
                    list(ex[way].map(tiny, range(8)))  # warm containers
                    ex[way]._monitor.sweeper.wait()
                    accepted, requests = emu.stats().get("accepted", 0), seaweed.request_counts()
                    t = time.perf_counter()
                    futures = ex[way].map_futures(tiny, range(n))
                    assert [f.result() for f in futures] == list(range(1, n + 1))
                    wall = time.perf_counter() - t
                    ex[way]._monitor.sweeper.wait()  # its clean-up, counted too
                    after = seaweed.request_counts()
                    got = figures[way]
                    for name, value in (("tasks/s", n / wall),
                                        ("invocations", emu.stats()["accepted"] - accepted),
                                        ("result objects", len({f.stats["result_key"] for f in futures})),
                                        ("S3 requests/call", (sum(after.values()) - sum(requests.values())) / n)):
                        got.setdefault(name, []).append(value)
    finally:
        emu.stop()
        seaweed.stop()
    print(f"grouped: {n:,} tiny calls via map_futures on the Lambda emulator (4 containers, SeaweedFS), "
          f"medians of {rounds} alternating rounds:")
    for name in figures["grouped"]:
        a, b = (statistics.median(figures[w][name]) for w in ways)
        print(f"  {name:<18} grouped {a:>10,.2f}   one per invocation {b:>10,.2f}   ratio {a / b:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    p.add_argument("--calls", type=int, default=100_000)
    p.add_argument("--only", choices=("invoker", "map", "memory", "grouped"))
    p.add_argument("--tiny", type=int, default=1000, help="calls of the grouped measurement")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the grouped measurement (>= 3)")
    args = p.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if args.only == "grouped":
        bench_grouped(args.tiny, max(3, args.rounds))
        sys.stdout.flush()
        os._exit(0)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    proc, url = start_discard()
    seaweed = None
    try:
        if args.only in (None, "invoker"):
            rate = bench_invoker(url, min(args.calls, 50_000))
            print(f"invoker: {rate:,.0f} invocations/s from one process (target >= 2,000)")
        if args.only in (None, "map", "memory"):
            from servers import SeaweedS3

            seaweed = SeaweedS3()
        if args.only in (None, "map"):
            returned, first, elapsed, _ = bench_map(url, args.calls, seaweed.settings(), trace=False)
            print(f"map: {args.calls:,} calls: map_futures returned in {returned:.1f} s, job uploaded and "
                  f"invoking after {first:.1f} s (target <= 10 s), all invoked after {elapsed:.1f} s "
                  f"({args.calls / (elapsed - first):,.0f} invocations/s)")
        if args.only in (None, "memory"):
            if args.only is None:  # a fresh process: tracemalloc must see the whole map
                subprocess.run([sys.executable, __file__, "--only", "memory", "--calls", str(args.calls)],
                               check=True)
            else:
                *_, per_call = bench_map(url, args.calls, seaweed.settings(), trace=True)
                print(f"memory: {per_call:,.0f} bytes of client memory per call in flight (target < 2,048)")
    finally:
        proc.terminate()
        proc.wait()
        if seaweed:
            seaweed.stop()
    sys.stdout.flush()
    os._exit(0)  # executors with calls that will never finish: do not wait for them at exit


if __name__ == "__main__":
    threading.stack_size(256 * 1024)
    main()
