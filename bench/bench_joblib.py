"""Benchmark: a 48-fit scikit-learn GridSearchCV on joblib's ``"lambda"`` backend vs ``"loky"``.

Both run in the same process, one after the other, each timed from entering its
``parallel_backend`` block (workers start inside it) to the fitted search. Each is run
``--repeat`` times; the best and the first (cold) times are printed with their ratio.

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

PARAM_GRID = {"C": [0.1, 1.0, 10.0, 100.0], "gamma": [1e-4, 1e-3, 1e-2, "scale"]}  # 16 x 3 folds = 48 fits


def grid_search(backend: str, **options: object) -> tuple[float, GridSearchCV]:
    """Fit the search under ``backend``; return (seconds, search)."""
    X, y = load_digits(return_X_y=True)
    start = time.perf_counter()
    with parallel_backend(backend, **options):
        search = GridSearchCV(SVC(), PARAM_GRID, cv=3, n_jobs=-1).fit(X, y)
    return time.perf_counter() - start, search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="worker processes for both backends")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"lambda": [], "loky": []}
    scores = {}
    for _ in range(args.repeat):
        for name, options in (("lambda", {"max_workers": args.workers}), ("loky", {"n_jobs": args.workers})):
            seconds, search = grid_search(name, **options)
            times[name].append(seconds)
            scores[name] = list(search.cv_results_["mean_test_score"])
    ours, theirs = times["lambda"], times["loky"]
    same = "identical" if scores["lambda"] == scores["loky"] else "DIFFERENT"
    print(f"GridSearchCV, 48 fits (SVC on digits), {args.workers} workers, {args.repeat} runs, results {same}")
    print(f"  first run: lambda {ours[0]:.2f} s   loky {theirs[0]:.2f} s   ratio {ours[0] / theirs[0]:.2f}")
    print(f"  best run:  lambda {min(ours):.2f} s   loky {min(theirs):.2f} s   ratio {min(ours) / min(theirs):.2f}")


if __name__ == "__main__":
    main()
