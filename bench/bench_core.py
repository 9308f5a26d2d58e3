"""Core benchmarks, each beside ProcessPoolExecutor(2) and multiprocessing.Pool(2) in the same run.

W1  1,000 tiny tasks, via map and via per-item submit          (target: >= 20,000/s, >= 0.45x Pool;
                                                                 submit >= 1.2x PPE)
W2  one warm round trip (submit -> result), median of 200      (target: <= 0.30 ms)
W3  eight single-threaded DGEMM tasks, aggregate GFLOPS        (target: >= 0.97 x PPE)
S   start-up: executor construction to first result            (target: <= 0.05 s)

    python bench/bench_core.py [--rounds N] [--storage-path DIR] [--only S,W1,W2,W3]
    python bench/bench_core.py --signing      # W1, W2: signed objects vs a null signer (budget <= 3%)

Each workload runs ``--rounds`` times (at least 3) on each system, alternating systems within a
round and rotating which goes first, and the median of each system's rounds is printed with the
ratio ours/theirs. This VM's speed drifts over minutes; alternating keeps drift out of the ratio.

The peers are used as their users would: ``ProcessPoolExecutor(2)`` (forkserver, the default
from Python 3.14) with ``map``'s default ``chunksize=1``; ``multiprocessing.Pool(2)`` (the
platform's default start method) with ``map``'s default chunking (about ``len / 8`` items per
chunk: Pool batches tiny tasks, lambdaexec and ProcessPoolExecutor send one call per item),
``apply_async`` for submit.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # single-threaded DGEMM on both sides, set before numpy loads

import argparse  # noqa: E402
import concurrent.futures as cf  # noqa: E402
import multiprocessing  # noqa: E402
import multiprocessing.pool  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable  # noqa: E402

from lambdaexec import LambdaExecutor  # noqa: E402
from lambdaexec.cli.dgemm import dgemm  # noqa: E402


def tiny(x: int) -> int:
    return x + 1


class PoolExecutor:
    """``multiprocessing.Pool`` behind the few ``Executor`` methods the workloads use."""

    def __init__(self, max_workers: int = 2):
        self.pool = multiprocessing.Pool(max_workers)

    def submit(self, fn: Callable, *args: Any) -> Any:
        res = self.pool.apply_async(fn, args)
        res.result = res.get  # the Future method the workloads call
        return res

    def map(self, fn: Callable, *iterables: Any) -> Any:
        if len(iterables) == 1:
            return self.pool.map(fn, iterables[0])
        return self.pool.starmap(fn, zip(*iterables))

    def __enter__(self) -> PoolExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.pool.terminate()
        self.pool.join()


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


def startup(make: Callable[[], Any]) -> float:
    t = time.perf_counter()
    with make() as ex:
        ex.submit(tiny, 1).result()
        return time.perf_counter() - t


NAMES = ("lambdaexec", "PPE", "Pool")

# --- --signing: what HMAC signing (lambdaexec/storage/signed.py) costs on W1 and W2 ------------
# The "unsigned" executor keeps the objects' layout (a 32-byte trailer, a tag per call in the
# event) but computes no HMAC: on the client its store is NullSigned; its workers start from a
# template whose sitecustomize makes the worker's HMAC a constant. Bench code only: lambdaexec
# itself has no way to turn signing off.
_NULL_SITE = """
import lambdaexec.storage.signed as signed
signed.SignedStorage._mac = lambda self, key, chunks, scope=b"": bytes(32)
"""


def _null_signed_class() -> type:
    from lambdaexec.storage.base import as_chunks
    from lambdaexec.storage.signed import TAG_SIZE, SignedStorage

    class NullSigned(SignedStorage):
        def put(self, key: str, data: Any) -> int:
            chunks = as_chunks(data)
            self.inner.put(key, [*chunks, memoryview(bytes(TAG_SIZE))])
            return sum(len(c) for c in chunks)

        def get(self, key: str, start: int | None = None, end: int | None = None) -> bytearray:
            buf = self.inner.get(key, start, end)
            if start is None and end is None:
                del buf[len(buf) - TAG_SIZE:]
            return buf

        def range_tag(self, key: str, start: int, end: int, data: Any) -> bytes:
            return bytes(TAG_SIZE)

        def check_range(self, *args: Any) -> None:
            pass

        def check_digest(self, *args: Any) -> None:
            pass

        put.__wrapped_by_retry__ = get.__wrapped_by_retry__ = True  # type: ignore[attr-defined]  (as the real one)

    return NullSigned


def site_executor(null: bool, **kw: Any) -> LambdaExecutor:
    """A LambdaExecutor whose workers start from a template of their own (a ``sitecustomize``
    on their path), computing no HMAC on either side if ``null`` (see above). Both systems of
    the comparison are made this way, so that they differ in the HMAC only: executors whose
    workers came from different templates differed by up to 15% on W2 here for no other reason."""
    import tempfile

    site = tempfile.mkdtemp(prefix="lambdaexec-bench-nullsign-" if null else "lambdaexec-bench-sign-")
    with open(os.path.join(site, "sitecustomize.py"), "w") as f:
        f.write(_NULL_SITE if null else "")
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = site + (os.pathsep + before if before else "")  # a template of its own
    try:
        ex = LambdaExecutor(max_workers=2, **kw)  # its pool keeps this environment for its workers
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before
    if null:
        ex.storage.__class__ = _null_signed_class()
    assert ex.submit(tiny, 0).result() == 1  # the workers' HMAC is the null one too, if null
    return ex


def _per_call_us(side: str, n: int = 20000) -> float:
    """Microseconds of signing work one W1 call costs on ``side`` (median of 5 timings)."""
    import timeit

    from lambdaexec.storage import signed
    from lambdaexec.storage.signed import SignedStorage, new_secret
    from lambdaexec.wire import protocol, serialize

    class Memory:  # the store's own cost is not signing's
        spec, concurrency = {"kind": "memory"}, 1
        objects: dict[str, Any] = {}

        def put(self, key: str, data: Any) -> int:
            self.objects[key] = bytearray(b"".join(data))
            return 0

        def get(self, key: str, start: Any = None, end: Any = None) -> bytearray:
            return bytearray(self.objects[key])

    store = SignedStorage(Memory(), new_secret())  # type: ignore[arg-type]
    args = serialize.dumps_call((7,), {})
    status = {"ok": True, "worker": "local-12345", "received": 1.7e9, "attempt": 0, "bytes_in": 120,
              "func_start": 1.7e9, "func_end": 1.7e9, "stdout": "", "stderr": "", "bytes_out": 16,
              "result_written": 1.7e9}
    result = protocol.pack_result(status, serialize.dumps(8))
    key, args_key = "lambdaexec/0123456789ab/000001/calls/7", "lambdaexec/0123456789ab/000001/args"
    digest = signed.digest(args)
    store.put(key, result)
    if side == "client":
        def work() -> None:
            signed.digest(args)
            store.get(key)
        base = lambda: store.inner.get(key)  # noqa: E731
    else:
        def work() -> None:
            store.check_digest(args_key, 0, 64, args[0], digest)
            store.put(key, result)
        base = lambda: store.inner.put(key, [*result, memoryview(bytes(32))])  # noqa: E731
    spent = statistics.median(timeit.repeat(work, number=n, repeat=5))
    plain = statistics.median(timeit.repeat(base, number=n, repeat=5))
    return (spent - plain) / n * 1e6


def signing_cost(rounds: int, kw: dict[str, Any]) -> None:
    """W1 and W2 on signed and unsigned executors, medians of ``rounds``. Each round makes a
    fresh pair, alternating which is made first and which runs first: of two identical
    executors in one process, the one made second measured up to 30% faster on W1 here."""
    make = {"signed": lambda: site_executor(False, **kw), "unsigned": lambda: site_executor(True, **kw)}
    got: dict[str, dict[str, list[float]]] = {n: {"map": [], "submit": [], "W2": []} for n in make}
    for r in range(rounds):
        order = ("signed", "unsigned") if r % 2 == 0 else ("unsigned", "signed")
        ex = {name: make[name]() for name in order}
        try:
            for name in order:
                w1(ex[name])  # warm
            for name in order[::-1] if r % 4 >= 2 else order:
                by_map, by_submit = w1(ex[name])
                got[name]["map"].append(by_map)
                got[name]["submit"].append(by_submit)
                got[name]["W2"].append(w2(ex[name]))
        finally:
            for e in ex.values():
                e.shutdown()
    print(f"signing work per tiny call: client {_per_call_us('client'):.1f} us (its args' SHA-256, checking its "
          f"result's HMAC), worker {_per_call_us('worker'):.1f} us (checking its args, sealing its result)")
    for what, label, unit, higher in (("map", "W1 1,000 tiny tasks via map", "tasks/s", True),
                                       ("submit", "W1 1,000 tiny tasks via submit", "tasks/s", True),
                                       ("W2", "W2 warm round trip (median)", "ms", False)):
        s, u = (statistics.median(got[n][what]) for n in ("signed", "unsigned"))
        cost = (u / s - 1) if higher else (s / u - 1)
        print(f"{label:<32} signed {s:9.3f} {unit:<7}  unsigned {u:9.3f} {unit:<7}  "
              f"ratio x{s / u:5.3f}  (signing costs {cost * 100:+.1f}%)", flush=True)


def row(name: str, figures: dict[str, float], unit: str, higher_is_better: bool = True) -> None:
    ours = figures["lambdaexec"]
    cells = [f"{name:<32} ours {ours:9.3f} {unit:<7}"]
    for peer in NAMES[1:]:
        theirs = figures[peer]
        ratio = ours / theirs if theirs else float("nan")
        better = ratio >= 1 if higher_is_better else ratio <= 1
        cells.append(f"{peer} {theirs:9.3f} (x{ratio:5.2f}{'' if better else ' worse'})")
    print("  ".join(cells), flush=True)


def medians(rounds: int, measure: Callable[[str], float]) -> dict[str, float]:
    """Median per system of ``rounds`` rounds; each round runs every system, rotating the order."""
    got: dict[str, list[float]] = {n: [] for n in NAMES}
    for r in range(rounds):
        for name in NAMES[r % 3:] + NAMES[: r % 3]:
            got[name].append(measure(name))
    return {n: statistics.median(v) for n, v in got.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--storage-path", default=None, help="local storage directory (default: temp dir)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per workload (default 3)")
    p.add_argument("--only", default="S,W1,W2,W3", help="workloads to run (default S,W1,W2,W3)")
    p.add_argument("--signing", action="store_true",
                   help="instead: W1 and W2 with signed objects vs a null signer (what signing costs)")
    args = p.parse_args()
    rounds, only = max(3, args.rounds), set(args.only.upper().split(","))
    kw = {"storage_path": args.storage_path} if args.storage_path else {}
    if args.signing:
        print(f"cores: {os.cpu_count()}; 2 workers each; medians of {rounds} alternating rounds\n")
        signing_cost(rounds, kw)
        return
    ppe_kw = {"max_workers": 2, "mp_context": multiprocessing.get_context("forkserver")}
    makers: dict[str, Callable[[], Any]] = {
        "lambdaexec": lambda: LambdaExecutor(max_workers=2, **kw),
        "PPE": lambda: cf.ProcessPoolExecutor(**ppe_kw),
        "Pool": lambda: PoolExecutor(2),
    }
    print(f"cores: {os.cpu_count()}; every system uses 2 workers; medians of {rounds} alternating rounds; "
          "ratio = ours / theirs\n")
    if "S" in only:
        row("S  start-up to first result", medians(rounds, lambda n: startup(makers[n])), "s",
            higher_is_better=False)
    if not only & {"W1", "W2", "W3"}:
        return
    with makers["lambdaexec"]() as ours, makers["PPE"]() as ppe, makers["Pool"]() as pool:
        ex = {"lambdaexec": ours, "PPE": ppe, "Pool": pool}
        if "W1" in only:
            w1s: dict[str, list[tuple[float, float]]] = {n: [] for n in NAMES}

            def one(name: str) -> float:
                w1s[name].append(w1(ex[name]))
                return 0.0

            medians(rounds, one)
            for i, what in enumerate(("map", "submit")):
                row(f"W1 1,000 tiny tasks via {what}", {n: statistics.median(x[i] for x in w1s[n]) for n in NAMES},
                    "tasks/s")
        if "W2" in only:
            row("W2 warm round trip (median)", medians(rounds, lambda n: w2(ex[n])), "ms", higher_is_better=False)
        if "W3" in only:
            row("W3 8 single-threaded DGEMM", medians(rounds, lambda n: w3(ex[n])), "GFLOPS")


if __name__ == "__main__":
    main()
