"""Benchmark: a 48-fit scikit-learn GridSearchCV on joblib's ``"lambda"`` backend vs ``"loky"``.

Both run in the same process, alternating, with the same number of workers. Two comparisons:

- cold: the first search of each, workers started (and scikit-learn imported in them) during it:
  ``"lambda"`` in a fresh ``parallel_backend`` block, ``"loky"`` on its first use in the process;
- warm: workers already running: ``"lambda"`` on one executor passed as ``executor=``
  (as every ``Parallel`` call in one ``parallel_backend`` block shares one), ``"loky"`` on its
  reusable pool; best of ``--repeat``.

    python bench/bench_joblib.py [--workers 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

from joblib import parallel_backend
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.svm import SVC

import lambdaexec_joblib  # noqa: F401  (registers "lambda")
from lambdaexec import LambdaExecutor

PARAM_GRID = {"C": [0.1, 1.0, 10.0, 100.0], "gamma": [1e-4, 1e-3, 1e-2, "scale"]}  # 16 x 3 folds = 48 fits


def grid_search(backend: str, **options: object) -> tuple[float, list[float]]:
    """Fit the search under ``backend``; return (seconds, mean test scores)."""
    X, y = load_digits(return_X_y=True)
    start = time.perf_counter()
    with parallel_backend(backend, **options):
        search = GridSearchCV(SVC(), PARAM_GRID, cv=3, n_jobs=-1).fit(X, y)
    return time.perf_counter() - start, list(search.cv_results_["mean_test_score"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="worker processes for both backends")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    scores = []
    cold_ours, s = grid_search("lambda", max_workers=args.workers)
    scores.append(s)
    cold_theirs, s = grid_search("loky", n_jobs=args.workers)
    scores.append(s)
    ours, theirs = [], []
    with LambdaExecutor(max_workers=args.workers) as ex:
        grid_search("lambda", executor=ex)  # start its workers
        for _ in range(args.repeat):
            seconds, s = grid_search("lambda", executor=ex)
            ours.append(seconds)
            scores.append(s)
            seconds, s = grid_search("loky", n_jobs=args.workers)
            theirs.append(seconds)
            scores.append(s)
    same = "identical" if all(s == scores[0] for s in scores) else "DIFFERENT"
    print(f"GridSearchCV, 48 fits (SVC on digits), {args.workers} workers, results {same}")
    print(f"  cold: lambda {cold_ours:.2f} s   loky {cold_theirs:.2f} s   ratio {cold_ours / cold_theirs:.2f}")
    print(f"  warm (best of {args.repeat}): lambda {min(ours):.2f} s   loky {min(theirs):.2f} s   "
          f"ratio {min(ours) / min(theirs):.2f}")


if __name__ == "__main__":
    main()
