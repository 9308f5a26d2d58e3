"""The joblib backend "lambda": real joblib and scikit-learn, local and S3 storage."""

from __future__ import annotations

import gc
import os
import time

import joblib
import numpy as np
import pytest
from joblib import Parallel, delayed, parallel_backend

import lambdaexec_joblib  # noqa: F401  (registers "lambda")
from lambdaexec import LambdaExecutor
from lambdaexec.errors import RemoteTraceback
from lambdaexec.runtime import engine


@pytest.fixture(autouse=True)
def no_executor_left_running():
    """Every executor a test's backend created is closed (workers stopped) soon after the test."""
    before = set(engine._live)
    yield
    gc.collect()  # a caught exception's traceback may hold the last Parallel call in a cycle
    deadline = time.monotonic() + 30
    while set(engine._live) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not set(engine._live) - before, "the backend left an executor running"


def square(x):
    return x * x


def fail_on_seven(x):
    if x == 7:
        raise ValueError(f"no sevens please (got {x})")
    return x


def inner_pids(explicit_backend):
    """Run a nested Parallel inside a worker; report this worker's pid and the inner tasks' pids."""
    if explicit_backend:
        with parallel_backend("lambda"):
            pids = Parallel(n_jobs=-1)(delayed(os.getpid)() for _ in range(6))
    else:
        pids = Parallel(n_jobs=-1)(delayed(os.getpid)() for _ in range(6))
    return os.getpid(), pids


def active_backend_here(_=None):
    """The backend a Parallel call made here would use, its nesting level, and this pid."""
    backend, _ = joblib.parallel.get_active_backend()
    return type(backend).__name__, backend.nesting_level, os.getpid()


def nested_backends():
    """In a task: the backend it runs under, and those of the tasks of a Parallel made in it."""
    return active_backend_here(), Parallel(n_jobs=2)(delayed(active_backend_here)(i) for i in range(4))


def note_pid_then_sleep(folder, i):
    """Write this worker's pid to a file in ``folder``, then sleep (task 0 raises instead, once
    task 1 runs beside it: on a loaded machine the second worker may start late)."""
    with open(os.path.join(folder, f"{i}.pid"), "w") as f:
        f.write(str(os.getpid()))
    if i == 0:
        deadline = time.monotonic() + 60
        while not os.path.exists(os.path.join(folder, "1.pid")) and time.monotonic() < deadline:
            time.sleep(0.01)
        raise ValueError("task 0 fails")
    time.sleep(60)
    return i


def process_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def mark_initialized(folder):
    open(os.path.join(folder, str(os.getpid())), "w").close()


def initialized_pid(folder):
    assert os.path.exists(os.path.join(folder, str(os.getpid()))), "task ran before the initializer"
    return os.getpid()


class CountingExecutor(LambdaExecutor):
    """A real executor that counts the calls submitted to it."""

    def __init__(self, **settings):
        super().__init__(**settings)
        self.calls = 0

    def submit(self, fn, /, *args, **kwargs):
        self.calls += 1
        return super().submit(fn, *args, **kwargs)


def test_results_match_sequential(storage_settings):
    expected = [square(i) for i in range(40)]
    with parallel_backend("lambda", max_workers=2, **storage_settings):
        backend, _ = joblib.parallel.get_active_backend()
        assert Parallel(n_jobs=-1)(delayed(square)(i) for i in range(40)) == expected
        assert backend.executor.storage.spec["kind"] == storage_settings["storage"]


def test_n_jobs_follows_executor_concurrency():
    with parallel_backend("lambda", max_workers=3):
        assert joblib.effective_n_jobs(-1) == 3
        assert joblib.effective_n_jobs(-2) == 2
        assert joblib.effective_n_jobs(5) == 5
        assert joblib.effective_n_jobs() == 3


def test_auto_batching_makes_few_calls(tmp_path):
    ex = CountingExecutor(max_workers=2, storage_path=str(tmp_path))
    try:
        with parallel_backend("lambda", executor=ex):
            out = Parallel(n_jobs=-1)(delayed(square)(i) for i in range(5000))
        assert out == [i * i for i in range(5000)]
        assert 0 < ex.calls < 500
    finally:
        ex.shutdown()


def test_generators(storage_settings):
    with parallel_backend("lambda", max_workers=2, **storage_settings):
        gen = Parallel(n_jobs=-1, return_as="generator")(delayed(square)(i) for i in range(30))
        assert not isinstance(gen, list)
        assert list(gen) == [i * i for i in range(30)]
        unordered = Parallel(n_jobs=-1, return_as="generator_unordered")(delayed(square)(i) for i in range(30))
        assert sorted(unordered) == [i * i for i in range(30)]


def test_exception_carries_remote_traceback():
    with parallel_backend("lambda", max_workers=2):
        with pytest.raises(ValueError, match="no sevens") as info:
            Parallel(n_jobs=-1)(delayed(fail_on_seven)(i) for i in range(20))
        # the backend is still usable after a failure
        assert Parallel(n_jobs=-1)(delayed(square)(i) for i in range(5)) == [0, 1, 4, 9, 16]
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "fail_on_seven" in cause.tb and "ValueError" in cause.tb


@pytest.mark.parametrize("explicit_backend", [False, True])
def test_nested_parallel_runs_sequentially_in_the_worker(explicit_backend):
    with parallel_backend("lambda", max_workers=2):
        results = Parallel(n_jobs=-1)(delayed(inner_pids)(explicit_backend) for _ in range(4))
    for outer, inner in results:
        assert outer != os.getpid()
        assert inner == [outer] * 6


def test_nested_parallel_uses_threads_then_sequential_in_the_worker():
    # joblib's documented default for nested calls: threads at the first level, sequential deeper
    with parallel_backend("lambda", max_workers=2):
        [(task, inner)] = Parallel(n_jobs=-1)(delayed(nested_backends)() for _ in range(1))
    name, level, worker = task
    assert (name, level) == ("ThreadingBackend", 1) and worker != os.getpid()
    assert inner == [("SequentialBackend", 2, worker)] * 4


@pytest.mark.parametrize("how", ["error", "timeout"])
def test_aborted_call_stops_its_running_tasks(tmp_path, how):
    # joblib's abort_everything: after a task raised or the timeout passed, the tasks still
    # running are stopped (their workers too, as loky does), and the block's next call runs
    first = 0 if how == "error" else 1
    with parallel_backend("lambda", max_workers=2):
        with pytest.raises(ValueError if how == "error" else joblib.parallel.TimeoutError):
            Parallel(n_jobs=2, batch_size=1, timeout=None if how == "error" else 2)(
                delayed(note_pid_then_sleep)(str(tmp_path), i) for i in range(first, 3))
        running = [int((tmp_path / f"{i}.pid").read_text()) for i in range(first, 3)
                   if (tmp_path / f"{i}.pid").exists() and i != 0]
        assert running
        deadline = time.monotonic() + 20
        while any(map(process_alive, running)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(map(process_alive, running)), "a task of the aborted call kept running"
        assert Parallel(n_jobs=2)(delayed(square)(i) for i in range(4)) == [0, 1, 4, 9]


@pytest.mark.parametrize("where", ["parallel_config", "parallel_backend", "Parallel"])
def test_initializer_runs_in_every_worker_before_its_tasks(tmp_path, where):
    # joblib's initializer/initargs, given to the context or to Parallel as loky takes them
    init = {"initializer": mark_initialized, "initargs": (str(tmp_path),)}
    tasks = (delayed(initialized_pid)(str(tmp_path)) for _ in range(40))
    if where == "Parallel":
        pids = Parallel(backend="lambda", n_jobs=2, **init)(tasks)
    else:
        with getattr(joblib, where)("lambda", n_jobs=2, max_workers=2, **init):
            pids = Parallel()(tasks)
    assert os.getpid() not in pids and set(pids) <= {int(p.name) for p in tmp_path.iterdir()}


def test_n_jobs_1_runs_in_the_client():
    with parallel_backend("lambda", max_workers=2):
        assert Parallel(n_jobs=1)(delayed(os.getpid)() for _ in range(3)) == [os.getpid()] * 3


def test_executor_is_reused_then_shut_down():
    with parallel_backend("lambda", max_workers=2):
        backend, _ = joblib.parallel.get_active_backend()
        first = set(Parallel(n_jobs=-1)(delayed(os.getpid)() for _ in range(20)))
        second = set(Parallel(n_jobs=-1)(delayed(os.getpid)() for _ in range(20)))
        executor = backend.executor
    del backend
    assert len(first | second) <= 2 and os.getpid() not in first
    with pytest.raises(RuntimeError, match="shutdown"):
        executor.submit(square, 2)


def test_given_executor_is_left_running(tmp_path):
    ex = LambdaExecutor(max_workers=2, storage_path=str(tmp_path))
    try:
        with parallel_backend("lambda", executor=ex):
            assert Parallel(n_jobs=-1)(delayed(square)(i) for i in range(5)) == [0, 1, 4, 9, 16]
        assert ex.submit(square, 3).result() == 9
    finally:
        ex.shutdown()


def test_scikit_learn_matches_n_jobs_1(storage_settings):
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.svm import SVC

    X, y = load_iris(return_X_y=True)
    grid = {"C": [0.1, 1.0, 10.0], "gamma": [0.01, 0.1, "scale"]}

    def run(n_jobs):
        search = GridSearchCV(SVC(), grid, cv=3, n_jobs=n_jobs).fit(X, y)
        scores = cross_val_score(SVC(C=3.0), X, y, cv=5, n_jobs=n_jobs)
        forest = RandomForestClassifier(n_estimators=30, random_state=0, n_jobs=n_jobs).fit(X, y)
        return search, scores, forest

    seq_search, seq_scores, seq_forest = run(1)
    with parallel_backend("lambda", max_workers=2, **storage_settings):
        search, scores, forest = run(-1)
    assert search.best_params_ == seq_search.best_params_
    assert search.cv_results_["params"] == seq_search.cv_results_["params"]
    np.testing.assert_array_equal(search.cv_results_["mean_test_score"], seq_search.cv_results_["mean_test_score"])
    np.testing.assert_array_equal(scores, seq_scores)
    np.testing.assert_array_equal(forest.feature_importances_, seq_forest.feature_importances_)
    np.testing.assert_array_equal(forest.predict_proba(X), seq_forest.predict_proba(X))


def test_numpy_reductions_match_sequential():
    # arrays must arrive aligned in the worker, or NumPy sums them in another order
    rng = np.random.default_rng(0)
    arrays = [rng.random(10_000 + i) for i in range(40)]
    with parallel_backend("lambda", max_workers=2):
        sums = Parallel(n_jobs=-1)(delayed(np.sum)(a) for a in arrays)
    assert sums == [a.sum() for a in arrays]
