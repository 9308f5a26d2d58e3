"""Cost, budget and estimate: ``lambdaexec.cost`` against hand arithmetic from the price
table, ``max_cost`` stopping a job with BudgetExceededError, ``lambdaexec.estimate``."""

from __future__ import annotations

import concurrent.futures as cf
import json
import math
import os
import time

import pytest

import lambdaexec
from lambdaexec import BudgetExceededError, ConfigError, LambdaExecutor
from lambdaexec.observe.cost import load_prices


def nap(seconds, mark_dir=None, i=0):
    if mark_dir:
        open(os.path.join(mark_dir, str(i)), "w").close()
    time.sleep(seconds)
    return i


def test_cost_of_a_known_job_is_the_price_table_arithmetic(tmp_path):
    with LambdaExecutor(max_workers=2, storage_path=str(tmp_path / "s"), memory=1536,
                        architecture="arm64", progress=False) as ex:
        futures = ex.map_futures(nap, [0.05] * 6)
        cf.wait(futures)
    report = lambdaexec.cost(futures, memory=1536, architecture="arm64")
    p = load_prices()
    billed = [math.ceil((f.stats["result_written"] - f.stats["func_start"]) * 1000 - 1e-6) / 1000
              for f in futures]
    assert all(b >= 0.05 for b in billed)
    workers = len({f.stats["worker"] for f in futures})
    by_hand = (sum(billed) * 1.5 * p["lambda"]["arm64"]["gb_second"] + 6 * p["lambda"]["request"]
               + (6 + 6 + 2) * p["s3"]["PUT"] + (2 * 6 + workers) * p["s3"]["GET"])
    assert report.total == pytest.approx(by_hand, rel=1e-9)
    assert report.requests == {"PUT": 14, "GET": 12 + workers}  # results, started markers, 2 per job
    assert report.gb_seconds == pytest.approx(sum(billed) * 1.5)
    table = str(report)
    assert "would cost on AWS Lambda" in table and "local backend" in table
    assert f"{report.total:.6f}" in table.splitlines()[-1]


def test_price_table_override(tmp_path):
    prices = {"lambda": {"x86_64": {"gb_second": 1.0}, "arm64": {"gb_second": 2.0}, "request": 0.0},
              "s3": {"PUT": 0.0, "GET": 0.0, "LIST": 0.0}}
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(prices))
    with LambdaExecutor(max_workers=1, storage_path=str(tmp_path / "s"), progress=False) as ex:
        futures = ex.map_futures(nap, [0.02, 0.03])
        cf.wait(futures)
    report = lambdaexec.cost(futures, memory=2048, architecture="x86_64", prices=str(path))
    assert report.total == pytest.approx(report.billed_seconds * 2.0)  # 2 GB at $1 per GB-second
    path.write_text('{"lambda": {}}')
    with pytest.raises(ConfigError, match="lambda.<x86_64|arm64>.gb_second"):
        lambdaexec.cost(futures, prices=str(path))
    with pytest.raises(ConfigError, match="price table .* lacks or mangles"):
        LambdaExecutor(price_table=str(path), max_cost=1.0)
    with pytest.raises(ConfigError, match="max_cost must be >= 0"):
        lambdaexec.load_config({"max_cost": -1})


def test_max_cost_stops_the_job_with_no_further_invocations(tmp_path):
    marks = tmp_path / "ran"
    marks.mkdir()
    n = 100
    # each call is ~0.1 s at 10 GB: ~$1.7e-5; 100 calls ~$1.7e-3, far over a $2e-4 budget
    with LambdaExecutor(max_workers=1, storage_path=str(tmp_path / "s"), memory=10240, max_cost=2e-4,
                        progress=False) as ex:
        futures = ex.map_futures(nap, [0.1] * n, [str(marks)] * n, range(n))
        cf.wait(futures, timeout=120)
    refused = [f for f in futures if isinstance(f.exception(), BudgetExceededError)]
    ran = sorted(int(name) for name in os.listdir(marks))
    assert refused and ran, "the budget should stop the job part way"
    assert len(ran) + len(refused) == n
    assert {int(f.call_id.split("/")[1]) for f in refused}.isdisjoint(ran)  # refused calls never ran
    assert all(f.result() == i for i, f in enumerate(futures) if i in ran)
    err = refused[0].exception()
    assert "max_cost is $0.0002" in str(err) and "Raise max_cost" in str(err)
    assert err.projected > 2e-4
    time.sleep(0.5)
    assert len(os.listdir(marks)) == len(ran)  # nothing started after the futures failed


def test_estimate_extrapolates_from_a_few_calls(tmp_path):
    marks = tmp_path / "ran"
    marks.mkdir()
    with LambdaExecutor(max_workers=2, storage_path=str(tmp_path / "s"), progress=False) as ex:
        est = lambdaexec.estimate(lambda i: nap(0.05, str(marks), i), range(400), executor=ex, samples=4, seed=1)
    assert len(os.listdir(marks)) == 4  # only the samples ran
    assert est.calls == 400 and est.samples == 4 and est.seconds_per_call >= 0.05
    low, mid, high = est.compute_seconds[1], est.compute_seconds[0], est.compute_seconds[2]
    assert low <= mid <= high and mid == pytest.approx(est.seconds_per_call * 400)
    assert est.wall_seconds[0] == pytest.approx(est.seconds_per_call * 200)  # 400 calls on 2 workers
    assert est.dollars[1] <= est.dollars[0] <= est.dollars[2] and est.dollars[0] > 0
    assert "estimate for 400 calls from 4 samples" in str(est)


def test_estimate_prices_short_calls_as_grouped_invocations(tmp_path):
    p = load_prices()
    n = 100_000
    # an invocation carries calls of up to a quarter of its 0.5 s of work (aws/grouping.py):
    # 0.3 s calls go alone, 1 ms calls share invocations, as the Lambda backend would send them
    with LambdaExecutor(max_workers=2, storage_path=str(tmp_path / "s"), progress=False) as ex:
        long = lambdaexec.estimate(nap, [0.3] * n, executor=ex, samples=2)
        short = lambdaexec.estimate(nap, [0.001] * n, executor=ex, samples=2)
        cfg = ex.config
    def compute(est):
        return est.compute_seconds[0] * cfg.memory / 1024 * p["lambda"][cfg.architecture]["gb_second"]

    # alone: per call an invocation request, its inputs' read, a start marker, a result object
    assert long.dollars[0] - compute(long) > n * (p["lambda"]["request"] + p["s3"]["PUT"])
    assert short.dollars[0] - compute(short) < (long.dollars[0] - compute(long)) / 3, \
        "short calls should be priced as grouped invocations"


def test_cost_counts_invocations_and_result_objects_not_calls(tmp_path):
    from lambdaexec.observe import jobs

    n = 3000
    # tiny calls: the local backend sends them several to an event and writes their results in
    # batch objects, as the lambda backend does once it has measured a job's calls short
    with LambdaExecutor(max_workers=2, storage_path=str(tmp_path / "s"), prefix="batched", keep_data=True,
                        progress=False) as ex:
        futures = ex.map_futures(abs, range(-n, 0))
        cf.wait(futures)
        store = ex.storage
    assert [f.result() for f in futures] == list(range(n, 0, -1))
    job_prefix = futures[0]._home.job_prefix
    written = store.list(job_prefix + "/calls/")  # kept: the result objects the workers wrote
    events = {(f.stats["worker"], f.stats["received"]) for f in futures}
    workers = len({f.stats["worker"] for f in futures})
    assert len(written) < n / 4 and len(events) < n / 4, "tiny calls should have shared events and objects"
    report = lambdaexec.cost(futures)
    assert report.calls == n and report.invocations == len(events)
    assert report.requests == {"PUT": len(written) + len(events) + 2,  # result objects, a marker per event, job
                               "GET": len(events) + len(written) + workers}
    p = load_prices()
    assert report.dollars["invocations"] == pytest.approx(len(events) * p["lambda"]["request"])
    # the job record says the same, read back by another process (here: the record's reader)
    (job_id,) = jobs.job_ids(store, "batched")
    recorded = jobs.read_job(store, "batched", job_id).cost()
    assert recorded.invocations == report.invocations and recorded.requests == report.requests
    assert recorded.total == pytest.approx(report.total)
