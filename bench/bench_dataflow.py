"""Benchmark W4: word count over a generated text corpus (default 200 MB in 16 files), with
``LambdaExecutor.map_reduce`` (workers read byte ranges of the files; the counts shuffle through
storage), beside ``multiprocessing.Pool`` and, when pyspark and Java are installed, a PySpark
DataFrame word count on ``local[N]``, in the same run.

Every system gets the same number of worker processes and the same files; each round runs the
systems one after the other (alternating, so drift in machine load hits all of them), and the
printed figure is the median of ``--rounds`` rounds. Executors, pools and the Spark session are
started before timing (warm). All results are checked equal to each other. A reference row,
timed in the same rounds, gives the floor: the user's function alone (read, split, Counter) over
every file on the same number of processes, its results discarded. Then the shuffle's
storage objects and requests are printed beside mappers x reducers, the count a shuffle with one
object per (mapper, reducer) pair would make.

Then (``--sort-mb``, default 100; the issue's figure is 1000) a sort of gensort-format records
with ``LambdaExecutor.sort`` beside PySpark ``sortByKey``, each writing one file per partition.

    python bench/bench_dataflow.py [--mb 200] [--files 16] [--workers 2] [--reducers 2] [--rounds 3]
                                   [--sort-mb 100] [--storage local|redis] [--no-spark]
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import operator
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

import lambdaexec


def make_corpus(directory: Path, mb: int, files: int, seed: int = 4) -> list[Path]:
    """``files`` text files of ``mb`` MB in all: 12-word lines of Zipf-distributed words."""
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i:x}".encode() for i in range(100_000)], dtype=object)
    weights = 1.0 / np.arange(1, len(vocab) + 1) ** 1.05
    weights /= weights.sum()
    directory.mkdir(parents=True, exist_ok=True)
    per_file = mb * 10**6 // files
    paths = []
    for i in range(files):
        path = directory / f"part-{i:02d}.txt"
        paths.append(path)
        if path.exists() and per_file <= path.stat().st_size < per_file + 200:
            continue
        out, size = [], 0
        while size < per_file:
            words = vocab[rng.choice(len(vocab), size=12_000, p=weights)].tolist()
            block = b"\n".join(b" ".join(words[j : j + 12]) for j in range(0, len(words), 12)) + b"\n"
            out.append(block)
            size += len(block)
        data = b"".join(out)
        path.write_bytes(data[: data.index(b"\n", per_file) + 1] if len(data) > per_file else data)
    return paths


# --- the three systems ----------------------------------------------------------------------
def count_chunk(chunk: lambdaexec.Chunk) -> collections.Counter:
    """lambdaexec mapper: read the chunk's byte range on the worker, count its words."""
    return collections.Counter(chunk.read().split())


def total(word: bytes, counts: list[int]) -> int:
    return sum(counts)


def count_file(path: str) -> collections.Counter:
    """Pool worker: read one file, count its words."""
    with open(path, "rb") as f:
        return collections.Counter(f.read().split())


def count_file_alone(path: str) -> int:
    """The floor: the user's function alone on one file (the same read, split and Counter),
    returning only how many distinct words it found, so nothing is shipped back or merged."""
    return len(count_file(path))


def floor_run(pool: Any, paths: list[Path]) -> int:
    """Every file through the user's function on the pool's processes, results discarded: the
    floor for any system that runs that Python function on that many processes (no shuffle, no
    merge)."""
    return sum(pool.imap_unordered(count_file_alone, [str(p) for p in paths]))


def pool_wordcount(pool: Any, paths: list[Path]) -> dict:
    counts: collections.Counter = collections.Counter()
    for part in pool.imap_unordered(count_file, [str(p) for p in paths]):
        counts.update(part)
    return dict(counts)


def spark_session(workers: int) -> Any:
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master(f"local[{workers}]").appName("bench_dataflow")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
             .config("spark.driver.memory", "2g").config("spark.sql.shuffle.partitions", str(workers))
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def spark_wordcount(spark: Any, paths: list[Path]) -> dict:
    from pyspark.sql import functions as F

    lines = spark.read.text([str(p) for p in paths])
    words = lines.select(F.explode(F.split(F.col("value"), " ")).alias("w")).where(F.col("w") != "")
    return {r["w"].encode(): r["count"] for r in words.groupBy("w").count().collect()}


def spark_available() -> str:
    """Empty if PySpark can run here, else why not."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install pyspark)"
    if not shutil.which("java"):
        return "java is not on PATH (PySpark needs Java 17+)"
    try:
        subprocess.run(["java", "-version"], capture_output=True, check=True, timeout=30)
    except Exception as err:
        return f"java does not run: {err}"
    return ""


# --- sort: gensort-format records ------------------------------------------------------------
def make_records(directory: Path, mb: int, files: int, seed: int = 5) -> list[Path]:
    """gensort-format files: 100-byte records, a random 10-byte key then 90 bytes of filler."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    per_file = mb * 10**6 // files // 100
    paths = []
    for i in range(files):
        path = directory / f"gensort-{i:02d}"
        paths.append(path)
        if path.exists() and path.stat().st_size == per_file * 100:
            continue
        records = np.zeros((per_file, 100), dtype=np.uint8)
        records[:, :10] = rng.integers(0, 256, size=(per_file, 10), dtype=np.uint8)
        records[:, 10:] = ord("x")
        records[:, 99] = ord("\n")
        path.write_bytes(records.tobytes())
    return paths


def spark_sort(spark: Any, paths: list[Path], output: Path, partitions: int) -> None:
    """PySpark sortByKey over the same records, each partition written as one file."""
    out = str(output)

    def write(index: int, records: Any) -> Any:
        with open(f"{out}/part-{index:05d}", "wb") as f:
            for record in records:
                f.write(record)
        yield index

    sc = spark.sparkContext
    rdd = sc.union([sc.binaryRecords(str(p), 100) for p in paths])
    rdd.map(lambda r: (bytes(r[:10]), bytes(r))).sortByKey(numPartitions=partitions).values() \
        .mapPartitionsWithIndex(write).count()


def check_sorted(files: list[Path], records: int) -> None:
    data = b"".join(p.read_bytes() for p in files)
    keys = np.frombuffer(data, dtype=np.dtype([("k", "S10"), ("r", "V90")]))["k"]
    if len(keys) != records or not (keys[:-1] <= keys[1:]).all():
        raise SystemExit("a sort's output is not sorted or lost records: the benchmark is void")


def bench_sort(ex: Any, spark: Any, args: Any) -> None:
    directory = Path(args.dir) / f"gensort-{args.sort_mb}mb-{args.files}"
    paths = make_records(directory, args.sort_mb, args.files)
    size = sum(p.stat().st_size for p in paths)
    records = size // 100
    chunks = lambdaexec.chunks([str(p) for p in paths], max(p.stat().st_size for p in paths), record_size=100)
    partitions = args.files
    outputs = Path(tempfile.mkdtemp(prefix="lambdaexec-bench-sorted-"))
    runs = iter(range(10**6))

    def ours() -> list[Path]:
        out = outputs / f"ours-{next(runs)}"
        return [Path(u) for u in ex.sort(chunks, str(out), record_size=100, partitions=partitions)]

    def theirs() -> list[Path]:
        out = outputs / f"spark-{next(runs)}"
        out.mkdir()
        spark_sort(spark, paths, out, partitions)
        return sorted(out.iterdir())

    systems: dict[str, Callable[[], list[Path]]] = {"lambdaexec sort": ours}
    if spark is not None:
        systems[f"PySpark sortByKey local[{args.workers}]"] = theirs
    times: dict[str, list[float]] = {name: [] for name in systems}
    try:
        for fn in systems.values():  # warm-up, and the outputs are checked
            check_sorted(fn(), records)
        for r in range(args.rounds):
            for name in (list(systems) if r % 2 == 0 else list(reversed(systems))):
                seconds, _ = timed(systems[name])
                times[name].append(seconds)
    finally:
        shutil.rmtree(outputs, ignore_errors=True)
    base = statistics.median(times["lambdaexec sort"])
    print(f"\nsort, {size / 1e6:.0f} MB = {records:,} gensort records in {len(paths)} files, {partitions} "
          f"partitions, {args.workers} workers; median of {args.rounds} rounds")
    print(f"{'system':<36} {'median s':>9} {'records/s':>11} {'/ lambdaexec':>14}   rounds")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<36} {med:>9.2f} {records / med:>11,.0f} {med / base:>13.2f}x   "
              + " ".join(f"{t:.2f}" for t in ts))


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and every live descendant (worker processes,
    pool processes, Spark's JVM), from /proc; 0 where there is no /proc. On a machine shared
    with other work, a system's CPU seconds vary far less than its wall time."""
    if not os.path.isdir("/proc/self"):
        return 0.0
    tick, children = os.sysconf("SC_CLK_TCK"), {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append((int(pid), (int(fields[11]) + int(fields[12])) / tick))
    total, todo = time.process_time(), [os.getpid()]
    while todo:
        for pid, cpu in children.get(todo.pop(), []):
            total += cpu
            todo.append(pid)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="corpus size in MB (default 200)")
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="worker processes for every system")
    parser.add_argument("--reducers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--storage", choices=("local", "redis"), default="local",
                        help="shuffle storage for lambdaexec (redis: starts a redis-server)")
    parser.add_argument("--sort-mb", type=int, default=100,
                        help="also sort this many MB of gensort records (0: skip; the issue's figure is 1000)")
    parser.add_argument("--no-spark", action="store_true")
    parser.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "lambdaexec-bench-w4"))
    args = parser.parse_args()

    directory = Path(args.dir) / f"{args.mb}mb-{args.files}"
    t, paths = timed(lambda: make_corpus(directory, args.mb, args.files))
    size = sum(p.stat().st_size for p in paths)
    print(f"corpus: {len(paths)} files, {size / 1e6:.0f} MB in {directory} ({t:.1f} s to make or find)")

    settings: dict[str, Any] = {"max_workers": args.workers}
    redis_server = None
    if args.storage == "redis":
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from servers import RedisServer

        redis_server = RedisServer()
        settings.update(shuffle_storage="redis", redis_url=redis_server.url)

    why_not_spark = "skipped (--no-spark)" if args.no_spark else spark_available()
    ex = lambdaexec.LambdaExecutor(**settings)
    pool = multiprocessing.get_context("spawn").Pool(args.workers)
    spark = None if why_not_spark else spark_session(args.workers)
    chunk_size = max(p.stat().st_size for p in paths)  # one chunk per file, as the Pool gets one file per task
    last_stats: dict = {}

    def ours() -> dict:
        future = ex.map_reduce(count_chunk, lambdaexec.chunks(str(directory / "*.txt"), chunk_size),
                               total, reducers=args.reducers, combine=operator.add)
        result = future.result()
        last_stats.update(future.shuffle_stats)
        return result

    systems: dict[str, Callable[[], dict]] = {
        "lambdaexec map_reduce": ours,
        f"multiprocessing.Pool({args.workers})": lambda: pool_wordcount(pool, paths),
    }
    if spark is not None:
        systems[f"PySpark DataFrame local[{args.workers}]"] = lambda: spark_wordcount(spark, paths)
    try:
        # warm-up round (worker start, JIT of Spark's plan), not timed
        reference = None
        for name, fn in systems.items():
            value = fn()
            if reference is None:
                reference = value
            elif value != reference:
                raise SystemExit(f"{name} counted differently from lambdaexec: the benchmark is void")
        timed_systems = {**systems, FLOOR: lambda: floor_run(pool, paths)}
        times: dict[str, list[float]] = {name: [] for name in timed_systems}
        cpus: dict[str, list[float]] = {name: [] for name in timed_systems}
        for r in range(args.rounds):
            order = list(timed_systems) if r % 2 == 0 else list(reversed(timed_systems))  # alternate the order
            for name in order:
                cpu = cpu_seconds()
                seconds, _ = timed(timed_systems[name])
                cpus[name].append(cpu_seconds() - cpu)
                times[name].append(seconds)
        report_wordcount(args, size, paths, systems, times, cpus, why_not_spark, last_stats)
        if args.sort_mb > 0:
            bench_sort(ex, spark, args)
    finally:
        ex.shutdown()
        pool.close()
        pool.join()
        if spark is not None:
            spark.stop()
        if redis_server is not None:
            redis_server.stop()


FLOOR = "floor: map_fn alone, no merge"


def report_wordcount(args: Any, size: int, paths: list[Path], systems: dict, times: dict, cpus: dict,
                     why_not_spark: str, last_stats: dict) -> None:
    ours_median = statistics.median(times["lambdaexec map_reduce"])
    ours_cpu = statistics.median(cpus["lambdaexec map_reduce"]) or 1.0
    print(f"\nW4 word count, {size / 1e6:.0f} MB, {len(paths)} files, {args.workers} workers, "
          f"shuffle storage: {args.storage}; median of {args.rounds} rounds (each: {', '.join(times)})")
    print(f"{'system':<36} {'median s':>9} {'MB/s':>8} {'/ lambdaexec':>14} {'CPU s':>7} {'/ lambdaexec':>13}"
          "   rounds (wall s)")
    for name, ts in times.items():
        med, cpu = statistics.median(ts), statistics.median(cpus[name])
        print(f"{name:<36} {med:>9.2f} {size / 1e6 / med:>8.1f} {med / ours_median:>13.2f}x {cpu:>7.1f} "
              f"{cpu / ours_cpu:>12.2f}x   " + " ".join(f"{t:.2f}" for t in ts))
    print("(CPU s: all processes of the system, workers included; median of the rounds)")
    print(f"({FLOOR}: read + split + Counter of each file on Pool({args.workers}), results discarded; the floor\n"
          " for any system that runs this Python map_fn. Spark runs its own word count, in the JVM)")
    if why_not_spark:
        print(f"PySpark: {why_not_spark}")
    m, n = last_stats["mappers"], last_stats["reducers"]
    print(f"\nshuffle: {m} mappers x {n} reducers = {m * n} (mapper, reducer) pairs")
    print(f"  storage objects written: {last_stats['objects']} (one per mapper) vs {m * n} for one object per pair")
    print(f"  storage requests: {last_stats['requests']} (1 put per mapper; per reducer, per mapper: an index "
          f"read + a partition read; plus the reducers' list polls)")


if __name__ == "__main__":
    main()
