"""What watching costs: W1 (1,000 tiny tasks) with a progress bar and the job record on, beside
the same executor settings with both off, in the same run. Prints figures only.

    python bench/bench_observe.py [--rounds N] [--storage-path DIR]

Target: on <= 5% slower than off. Also printed: the client's CPU time (all its threads) per
W1, which the load of other processes disturbs less than wall time, and the watchers' own CPU
per call measured alone (the bar's and the recorder's hooks on 1,000 finished futures, and the
recorder encoding and writing their record), which load disturbs least. Each round makes a
fresh pair of executors and runs W1 (by map, then by per-item submit) on both, alternating
which goes first; the medians of the rounds are compared. After each W1 the client idles 0.5 s
inside its CPU window, so the record writes that follow a job (on the recorder's thread, every
0.25 s) are counted to the side that made them and never run in the other side's W1. The bar
draws to /dev/null (tqdm formats and writes it exactly as it would to a terminal).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import statistics
import sys
import time
import types
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_core import tiny, w1  # noqa: E402  (the same W1 as bench_core's: by map and by submit)

from lambdaexec import LambdaExecutor  # noqa: E402
from lambdaexec.observe.progress import ProgressBar  # noqa: E402
from lambdaexec.observe.record import JobRecorder  # noqa: E402


def hooks_per_call(ex: LambdaExecutor, n: int = 1000, repeat: int = 15) -> tuple[float, float, float]:
    """Best-of-``repeat`` CPU seconds per call of: the bar's ``finished``, the recorder's
    ``finished``, and the recorder writing the job's calls record (encode, JSON, storage put),
    for ``n`` real finished futures of ``ex``."""
    futures = ex.map_futures(tiny, range(n))
    [f.result() for f in futures]
    job = types.SimpleNamespace(prefix="bench/job-0", futures=[None] * n, func_key="bench/fn/0", args_keys=[""],
                                name="tiny")
    config = dataclasses.replace(ex.config, prefix=f"bench-observe-{uuid.uuid4().hex[:8]}")  # its own records
    bar_t = rec_t = write_t = float("inf")
    with open(os.devnull, "w") as sink:
        for _ in range(repeat):
            bar = ProgressBar(file=sink)
            bar.added(job)
            t = time.thread_time()
            for i, f in enumerate(futures):
                bar.finished(job, i, f, None)
            bar_t = min(bar_t, time.thread_time() - t)
            rec = JobRecorder(ex.storage, config, "bench")
            queued: list = []
            rec._write = lambda fn, *a, q=queued: q.append((fn, a))  # type: ignore[method-assign]  # held, not written
            rec.added(job)
            t = time.thread_time()
            for i, f in enumerate(futures):
                rec.finished(job, i, f, None)
            rec_t = min(rec_t, time.thread_time() - t)
            t = time.thread_time()
            for fn, a in queued:
                fn(*a)
            write_t = min(write_t, time.thread_time() - t)
    ex.storage.delete(config.prefix + "/")
    return bar_t / n, rec_t / n, write_t / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--storage-path", default=None)
    args = parser.parse_args()
    common = {"max_workers": 2, **({"storage_path": args.storage_path} if args.storage_path else {})}
    results: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
    cpu: dict[str, list[float]] = {"on": [], "off": []}  # client CPU seconds per W1 (all its threads)
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
        for r in range(args.rounds):
            # fresh executors each round: one executor's worker processes may run faster than
            # another's for reasons of their own (placement, caches), which alternation alone keeps
            on = LambdaExecutor(progress=True, job_record=True, **common)
            off = LambdaExecutor(progress=False, job_record=False, **common)
            with on, off:
                for ex in (on, off):
                    list(ex.map(tiny, range(200)))  # warm workers
                order = [("on", on), ("off", off)] if r % 2 == 0 else [("off", off), ("on", on)]
                for name, ex in order:
                    t = time.process_time()
                    results[name].append(w1(ex))
                    time.sleep(0.5)  # the recorder writes this side's records now, in this side's window
                    cpu[name].append(time.process_time() - t)
                if r == 0:
                    hooks = hooks_per_call(off)
    print(f"W1, 1,000 tiny tasks, 2 local workers, median of {args.rounds} alternating rounds")
    print(f"{'':<28} {'progress+record on':>20} {'off':>12} {'on/off':>8}")
    for i, what in enumerate(("via map", "via per-item submit")):
        a = statistics.median(x[i] for x in results["on"])
        b = statistics.median(x[i] for x in results["off"])
        print(f"{what:<28} {a:>14,.0f} tasks/s {b:>6,.0f} tasks/s {a / b:>8.3f}   ({(1 - a / b) * 100:+.1f}% slower)")
    a, b = statistics.median(cpu["on"]), statistics.median(cpu["off"])
    print(f"{'client CPU per W1 (2,000)':<28} {a * 1000:>17,.0f} ms {b * 1000:>9,.0f} ms {a / b:>8.3f}   "
          f"(+{(a - b) / 2000 * 1e6:.1f} us per task)")
    bar_t, rec_t, write_t = hooks
    print(f"watchers alone, CPU per call: bar {bar_t * 1e6:.2f} us, record {rec_t * 1e6:.2f} us on the monitor's "
          f"threads + {write_t * 1e6:.2f} us on the recorder's (encode, JSON, put) = "
          f"{(bar_t + rec_t + write_t) * 1e6:.2f} us, of {b / 2000 * 1e6:.0f} us per task off")


if __name__ == "__main__":
    main()
