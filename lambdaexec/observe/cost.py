"""What a job costs on AWS Lambda: :func:`cost`, the ``max_cost`` budget, :func:`estimate`.

Prices come from one small data file (``prices.json`` in this package; the ``price_table``
setting or the ``prices=`` argument overrides it). The model, from the calls' futures' stats:

    compute   = per call, ceil_ms(result_written - func_start) x memory_GB x price per GB-second
    requests  = invocations x price per invocation request, where an invocation is one event
                (calls that share one name the same worker and ``received`` time), and each
                earlier attempt of a call counts one more
    storage   = PUT: 1 per result object (calls whose results share a batch object count it once,
                from the ``result_key`` in their stats) + the start markers the Lambda backend
                asks for: 1 per invocation (its first call's), and 1 per later call of an
                invocation that ran over ``protocol.MARK_SECONDS``;
                GET: 1 per invocation (its calls' inputs, one ranged read) + 1 per result object
                (the monitor reads each once), all x S3 request prices
    per job   = 2 PUT (function, inputs); per job and worker 1 GET (the function)

On the local backend the same figures say what the job would cost on Lambda with the
configured ``memory`` and ``architecture``, with its calls grouped into events as the local
backend grouped them. Not counted: the monitor's LIST polls, data transfer (free within a
region) and storage by the GB-month (job data lives minutes).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import random
import statistics
import threading
from importlib import resources
from typing import Any, Callable, Iterable, Mapping

from lambdaexec.errors import BudgetExceededError, ConfigError
from lambdaexec.runtime.watcher import Watcher
from lambdaexec.wire import protocol


def load_prices(source: str | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The price table: the packaged one, or ``source`` (a JSON file path or a dict like it).

    >>> load_prices()["lambda"]["request"]
    2e-07
    """
    if isinstance(source, Mapping):
        table, where = dict(source), "the prices argument"
    elif source:
        where = f"price table {source}"
        try:
            with open(source) as f:
                table = json.load(f)
        except (OSError, ValueError) as err:
            raise ConfigError(f"{where} cannot be read as JSON: {err}") from None
    else:
        where = "the packaged price table"
        table = json.loads(resources.files("lambdaexec.observe").joinpath("prices.json").read_text())
    try:
        for arch in ("x86_64", "arm64"):
            float(table["lambda"][arch]["gb_second"])
        float(table["lambda"]["request"])
        for kind in ("PUT", "GET", "LIST"):
            float(table["s3"][kind])
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(
            f"{where} lacks or mangles {err}: it needs lambda.<x86_64|arm64>.gb_second, "
            "lambda.request and s3.PUT/GET/LIST in dollars (see lambdaexec/observe/prices.json)") from None
    return table


def billed_seconds(stats: Mapping[str, Any]) -> float:
    """The Lambda time billed for one call: start of the function to result written, rounded
    up to the millisecond (0 for a call that never ran)."""
    start, end = stats.get("func_start"), stats.get("result_written") or stats.get("func_end")
    if start is None or end is None:
        return 0.0
    return math.ceil(max(0.0, end - start) * 1000 - 1e-6) / 1000


@dataclasses.dataclass
class CostReport:
    """What a set of calls costs (or would cost) on Lambda; ``print()`` it for a table.

    ``requests`` counts storage requests by kind (``PUT``, ``GET``); ``dollars`` splits the
    total into ``compute``, ``invocations`` and ``storage``.
    """

    calls: int
    invocations: int
    billed_seconds: float
    gb_seconds: float
    memory_mb: int
    architecture: str
    requests: dict[str, int]
    dollars: dict[str, float]
    backend: str = "lambda"
    #: bytes: the highest peak resident memory of one call (``stats["peak_memory"]``; 0: unknown)
    peak_memory: int = 0
    #: every memory size (MB) the calls ran with (``memory_mb`` is the most common)
    memory_sizes: list[int] = dataclasses.field(default_factory=list)

    @property
    def memory_advice(self) -> str:
        """A line saying whether the calls hit their memory size or could run with less ("" if neither)."""
        return memory_advice(self.peak_memory, self.memory_mb)

    @property
    def total(self) -> float:
        """Dollars in all."""
        return sum(self.dollars.values())

    def __str__(self) -> str:
        head = "cost on AWS Lambda" if self.backend == "lambda" else \
            f"what these calls would cost on AWS Lambda (they ran on the {self.backend} backend)"
        rows = [
            ("compute", f"{self.gb_seconds:,.3f} GB-s ({self.billed_seconds:,.3f} s x "
                        f"{self.memory_mb} MB, {self.architecture})", self.dollars["compute"]),
            ("invocations", f"{self.invocations:,} requests", self.dollars["invocations"]),
            ("storage", ", ".join(f"{n:,} {k}" for k, n in self.requests.items()), self.dollars["storage"]),
        ]
        lines = [f"{head}: {self.calls:,} calls", f"  {'item':<12} {'quantity':<52} {'dollars':>12}"]
        lines += [f"  {name:<12} {qty:<52} {usd:>12.6f}" for name, qty, usd in rows]
        if self.peak_memory:  # above the total, which stays the last line
            lines.append(f"  peak memory of a call: {self.peak_memory / 2**20:,.0f} MB of {self.memory_mb} MB")
        if self.memory_advice:
            lines.append(f"  {self.memory_advice}")
        lines.append(f"  {'total':<12} {'':<52} {self.total:>12.6f}")
        return "\n".join(lines)


#: a job whose calls' peak stays under this share of ``memory`` could run with less
LOWER_BELOW = 0.5
#: a peak at or above this share of ``memory`` counts as hitting it
HIT_AT = 0.9


def memory_advice(peak: int, memory_mb: int) -> str:
    """Whether calls whose highest peak was ``peak`` bytes hit ``memory_mb`` or could use less."""
    if not peak or not memory_mb:
        return ""
    peak_mb = peak / 2**20
    if peak_mb >= HIT_AT * memory_mb:
        return (f"the calls reached their memory size ({peak_mb:,.0f} of {memory_mb} MB): raise memory= "
                "if any failed with OutOfMemoryError or ran slowly")
    suggested = max(128, math.ceil(peak_mb * 1.5 / 64) * 64)
    if peak_mb < LOWER_BELOW * memory_mb and suggested < memory_mb:
        return (f"memory could be lowered: the highest peak was {peak_mb:,.0f} MB of {memory_mb} MB; "
                f"memory={suggested} would fit it (on Lambda, CPU share shrinks with memory)")
    return ""


class _Seen:
    """Things seen, to count each once; with ``size``, only the last ``size`` of them (a
    budget's memory stays bounded however many calls run, and the calls of one invocation or
    result object finish close together)."""

    def __init__(self, size: int | None = None):
        self.size = size
        self._seen: dict[Any, None] = {}

    def add(self, item: Any) -> bool:
        """Remember ``item``; whether it is new."""
        if item in self._seen:
            return False
        self._seen[item] = None
        if self.size is not None and len(self._seen) > self.size:
            del self._seen[next(iter(self._seen))]
        return True


class _Tally:
    """The model of the module docstring, fed one finished future at a time: what
    :func:`cost` reports for a set of futures, and what a :class:`Budget` has spent so far.
    ``remember`` bounds how many invocations, result objects, jobs and workers it keeps in
    mind to count each once (None: all)."""

    def __init__(self, memory_mb: int, architecture: str, prices: Mapping[str, Any],
                 remember: int | None = None, fixed: bool = False):
        #: the memory size (MB) a call is priced at when its stats do not say (or always, if ``fixed``)
        self.memory_mb, self.fixed = memory_mb, fixed
        self._per_gb_s = float(prices["lambda"][architecture]["gb_second"])
        self.gb_seconds = 0.0
        self.peak_memory = 0  # bytes: the highest peak of a call counted
        self.memories: dict[int, int] = {}  # memory size (MB) -> calls that ran with it
        self._per_request = float(prices["lambda"]["request"])
        self._per_op = {k: float(prices["s3"][k]) for k in ("PUT", "GET")}
        self.calls = self.invocations = 0
        self.seconds = 0.0
        self.requests = {"PUT": 0, "GET": 0}
        self._events, self._objects, self._jobs, self._job_workers = (_Seen(remember) for _ in range(4))

    def add(self, future: Any) -> None:
        """Count ``future``'s call: its compute, invocations and storage requests."""
        stats = getattr(future, "stats", {})
        if stats.get("cached"):  # completed from the result cache: one GET, nothing ran
            self.calls += 1
            self.requests["GET"] += 1
            return
        tries = getattr(future, "attempts", 0) or (1 if "func_start" in stats else 0)
        job = getattr(future, "call_id", "").partition("/")[0]
        event, key = _event_of(job, stats), stats.get("result_key")
        seconds = billed_seconds(stats)
        memory = self.memory_mb if self.fixed else int(stats.get("memory") or self.memory_mb)
        self.memories[memory] = self.memories.get(memory, 0) + 1
        self.peak_memory = max(self.peak_memory, int(stats.get("peak_memory") or 0))
        # every earlier attempt was an invocation of its own; the last one shares its event's
        first = event is None or self._events.add(event)
        invocations = tries - 1 + first if tries else 0
        late_marker = bool(tries) and not first and seconds > protocol.MARK_SECONDS
        objects = not key or self._objects.add((job, key.rpartition("/")[2]))
        job_new = self._jobs.add(job)
        worker_new = "worker" in stats and self._job_workers.add((job, stats["worker"]))
        self.count(calls=1, seconds=seconds, markers=invocations + late_marker, invocations=invocations,
                   objects=objects, jobs=job_new, job_workers=worker_new, memory_mb=memory)

    def count(self, *, calls: int, seconds: float, markers: int, invocations: int, objects: int,
              jobs: int, job_workers: int, memory_mb: int | None = None) -> None:
        """Count ``calls`` calls that ran ``seconds`` in all with ``memory_mb`` (default: the
        tally's), wrote ``markers`` start markers in ``invocations`` invocations and ``objects``
        result objects, in ``jobs`` jobs, whose functions ``job_workers`` workers read."""
        self.calls += calls
        self.seconds += seconds
        self.gb_seconds += seconds * (memory_mb or self.memory_mb) / 1024
        self.invocations += invocations
        # PUT: result object, start markers, the job's function and inputs;
        # GET: result object, each invocation's inputs, the function once per job and worker
        self.requests["PUT"] += objects + markers + 2 * jobs
        self.requests["GET"] += objects + invocations + job_workers

    @property
    def dollars(self) -> dict[str, float]:
        """Dollars so far, by ``compute``, ``invocations`` and ``storage``."""
        return {"compute": self.gb_seconds * self._per_gb_s,
                "invocations": self.invocations * self._per_request,
                "storage": sum(n * self._per_op[k] for k, n in self.requests.items())}


def cost(futures: Iterable[concurrent.futures.Future], *, memory: int | None = None,
         architecture: str | None = None, prices: str | Mapping[str, Any] | None = None,
         backend: str | None = None, default_memory: int | None = None) -> CostReport:
    """What the (finished) ``futures`` cost on Lambda, from their stats and the price table.

    Each call is priced at the memory size it ran with (its ``stats["memory"]``); ``memory``
    (MB) prices every call at that size instead (what would they cost with 512 MB?). It and
    ``architecture``, ``prices`` and ``backend`` default to the configuration; a call whose
    stats do not say its memory is priced at ``default_memory`` (default: the configuration's).

    >>> print(lambdaexec.cost(ex.map_futures(work, items)))  # doctest: +SKIP
    """
    from lambdaexec.config import load_config

    cfg = load_config({"memory": memory, "architecture": architecture})
    tally = _Tally(memory or default_memory or cfg.memory, cfg.architecture,
                   load_prices(prices if prices is not None else cfg.price_table), fixed=memory is not None)
    for f in futures:
        tally.add(f)
    ran_with = max(tally.memories, key=tally.memories.__getitem__) if tally.memories else tally.memory_mb
    return CostReport(tally.calls, tally.invocations, tally.seconds, tally.gb_seconds,
                      ran_with, cfg.architecture, dict(tally.requests), tally.dollars, backend or cfg.backend,
                      tally.peak_memory, sorted(tally.memories))


def _event_of(job: str, stats: Mapping[str, Any]) -> tuple | None:
    """Which invocation (event) ran a call: its job, worker and the time the event was received
    (one per event, shared by the event's calls); None if the stats do not say."""
    if "worker" not in stats or stats.get("received") is None:
        return None
    return job, stats["worker"], stats["received"]


class Budget(Watcher):
    """The ``max_cost`` setting: once the calls finished so far project the executor's calls
    past ``limit`` dollars (spent + mean cost of a finished call x calls not yet finished), no
    further call is invoked and every remaining future fails with BudgetExceededError. What
    is spent is counted as :func:`cost` counts it."""

    def __init__(self, limit: float, memory_mb: int, architecture: str, prices: Mapping[str, Any]):
        self.limit = limit
        self._tally = _Tally(memory_mb, architecture, prices, remember=10_000)
        self._lock = threading.Lock()
        self.spent = 0.0
        self._submitted = self._finished = 0
        self.error: BudgetExceededError | None = None

    def added(self, job: Any) -> None:
        with self._lock:
            self._submitted += len(job.futures)

    def invoking(self, job: Any, calls: list[int], attempt: int) -> BaseException | None:
        with self._lock:
            measured = self._tally.calls
            if self.error is None and measured:
                left = self._submitted - self._finished
                projected = self.spent + self.spent / measured * left
                if projected > self.limit:
                    self.error = BudgetExceededError(
                        f"max_cost is ${self.limit:.6g}, and the {measured} calls finished so far "
                        f"(${self.spent:.6g}) project ${projected:.6g} for the {self._submitted} "
                        "submitted: no further calls were started. Raise max_cost (or set it to 0 "
                        "for no limit) to run them", spent=self.spent, projected=projected)
            return self.error

    def finished(self, job: Any, call: int, future: Any, exc: BaseException | None) -> None:
        with self._lock:
            self._finished += 1
            if "func_start" in future.stats:  # a call that ran (one refused or cancelled cost nothing)
                self._tally.add(future)
                self.spent = sum(self._tally.dollars.values())


@dataclasses.dataclass
class Estimate:
    """An extrapolation from sample calls to a whole map: totals with a 95% interval."""

    calls: int
    samples: int
    seconds_per_call: float
    #: total billed compute, seconds: (estimate, low, high)
    compute_seconds: tuple[float, float, float]
    #: wall-clock time with the executor's concurrency, seconds: (estimate, low, high)
    wall_seconds: tuple[float, float, float]
    #: dollars on Lambda: (estimate, low, high)
    dollars: tuple[float, float, float]

    def __str__(self) -> str:
        def rng(v: tuple[float, float, float], fmt: str) -> str:
            return f"{v[0]:{fmt}} ({v[1]:{fmt}} to {v[2]:{fmt}})"
        return (f"estimate for {self.calls:,} calls from {self.samples} samples "
                f"({self.seconds_per_call:.3f} s each):\n"
                f"  compute  {rng(self.compute_seconds, ',.1f')} s\n"
                f"  wall     {rng(self.wall_seconds, ',.1f')} s\n"
                f"  cost     ${rng(self.dollars, ',.6f')}")


def estimate(executor: Any, fn: Callable, items: Iterable, samples: int = 5, seed: int | None = None) -> Estimate:
    """Run ``samples`` calls of ``fn`` on ``executor``, on items drawn at random from ``items``, and
    extrapolate the time and cost of ``executor.map(fn, items)``, with a 95% interval (Student-t on the
    per-call times; one sample gives no interval). The cost counts invocations and result
    objects as the Lambda backend would group such calls (short ones share invocations:
    :func:`lambdaexec.aws.grouping.plan`).

    >>> print(lambdaexec.estimate(work, range(10_000), executor=ex))  # doctest: +SKIP
    """
    items = list(items)
    if not items:
        raise ValueError("estimate needs at least one item")
    if samples < 1:
        raise ValueError("samples must be >= 1")
    ex = executor
    picked = random.Random(seed).sample(items, min(samples, len(items)))
    futures = ex.map_futures(fn, picked)
    concurrent.futures.wait(futures)
    for f in futures:
        f.result()  # a failing sample is the user's error: raise it
    times = [billed_seconds(f.stats) for f in futures]
    k = len(times)
    mean = statistics.fmean(times)
    half = _t95(k - 1) * statistics.stdev(times) / math.sqrt(k) if k > 1 else 0.0
    low, high = max(0.0, mean - half), mean + half
    n = len(items)
    cfg = ex.config
    workers = cfg.max_workers or (1000 if cfg.backend == "lambda" else cfg.resolved_workers())
    waves = math.ceil(n / workers)
    table = load_prices(cfg.price_table or None)
    return Estimate(
        calls=n, samples=k, seconds_per_call=mean,
        compute_seconds=(mean * n, low * n, high * n),
        wall_seconds=(mean * waves, low * waves, high * waves),
        dollars=tuple(_projected(n, s, workers, cfg, table) for s in (mean, low, high)),
    )


def _projected(calls: int, per_call: float, workers: int, cfg: Any, prices: Mapping[str, Any]) -> float:
    """Dollars for one job of ``calls`` calls of ``per_call`` seconds on Lambda, grouped into
    invocations as the Lambda backend groups them (:func:`lambdaexec.aws.grouping.plan`)."""
    from lambdaexec.aws import grouping

    invocations, objects = grouping.plan(calls, per_call, workers, grouping.target(cfg.timeout))
    tally = _Tally(cfg.memory, cfg.architecture, prices)
    tally.count(calls=calls, seconds=per_call * calls, markers=invocations, invocations=invocations,
                objects=objects, jobs=1, job_workers=min(workers, invocations))
    return sum(tally.dollars.values())


def _t95(dof: int) -> float:
    """Two-sided 95% Student-t quantile (exact values to 30 degrees of freedom, then normal)."""
    table = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
             2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
             2.060, 2.056, 2.052, 2.048, 2.045, 2.042]
    return table[dof - 1] if 1 <= dof <= 30 else 1.96

