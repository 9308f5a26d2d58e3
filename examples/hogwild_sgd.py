"""Logistic regression on scikit-learn's digits, trained two ways on lambdaexec workers.

HOGWILD! (asynchronous): ``workers`` calls run at once; each loops over its share of the
training rows, pulling the weights from a :class:`lambdaexec.ParameterServer` and pushing its
gradient step, with no locks and no rounds. The server adds every push, so none is lost.

BSP (bulk synchronous): one ``map`` per round through :meth:`LambdaExecutor.iterate`; the
weights go to the calls as a broadcast handle, each call returns the gradient on its share of
the rows, and the client averages them. The training data itself is broadcast once and read
once per worker process, however many rounds run.

    python examples/hogwild_sgd.py --redis-url redis://127.0.0.1:6379/0

Both reach the test accuracy of scikit-learn's ``SGDClassifier(loss="log_loss")`` on the same
split (about 0.95), which the script prints alongside.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import lambdaexec


def load_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits (1,797 8x8 images), split 75/25 stratified, standardized on the training rows."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=seed, stratify=y)
    scaler = StandardScaler().fit(Xtr)
    return scaler.transform(Xtr), scaler.transform(Xte), ytr, yte


def _with_bias(X: np.ndarray) -> np.ndarray:
    return np.hstack([X, np.ones((len(X), 1))])


def gradient(W: np.ndarray, X: np.ndarray, y: np.ndarray, l2: float = 1e-4) -> np.ndarray:
    """Mean gradient of the softmax cross-entropy (plus an L2 term) at weights ``W``."""
    Xb = _with_bias(X)
    z = Xb @ W
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    return Xb.T @ p / len(y) + l2 * W


def accuracy(W: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
    """Share of rows whose highest-scoring class is the true one."""
    return float(np.mean((_with_bias(X) @ W).argmax(axis=1) == y))


def baseline(Xtr: np.ndarray, Xte: np.ndarray, ytr: np.ndarray, yte: np.ndarray) -> float:
    """Test accuracy of scikit-learn's ``SGDClassifier`` (logistic loss) on the same split."""
    from sklearn.linear_model import SGDClassifier

    return float(SGDClassifier(loss="log_loss", random_state=0).fit(Xtr, ytr).score(Xte, yte))


# --- HOGWILD! ---------------------------------------------------------------------------------
def hogwild_worker(ps: lambdaexec.ParameterServer, data: lambdaexec.Broadcast, worker: int,
                   workers: int, epochs: int, lr: float, batch: int, start_timeout: float = 120.0) -> int:
    """One asynchronous worker: wait until all ``workers`` have started, then run SGD on its rows
    through the parameter server. Returns the number of steps it pushed."""
    ps.push("started", 1)  # a barrier, so that the workers really do run at the same time
    deadline = time.monotonic() + start_timeout
    while ps.pull("started") < workers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {ps.pull('started')} of {workers} workers started within "
                               f"{start_timeout} s: give the executor max_workers >= {workers}")
        time.sleep(0.01)
    X, y = data.value
    rows = np.arange(worker, len(y), workers)
    rng = np.random.default_rng(worker)
    steps = 0
    for _ in range(epochs):
        order = rng.permutation(rows)
        for b in range(0, len(order), batch):
            idx = order[b : b + batch]
            W = ps.pull("W")
            ps.push("W", -lr * gradient(W, X[idx], y[idx]))
            steps += 1
    return steps


def train_hogwild(ex: lambdaexec.LambdaExecutor, ps: lambdaexec.ParameterServer, data: lambdaexec.Broadcast,
                  n_features: int, n_classes: int, workers: int = 8, epochs: int = 5, lr: float = 0.1,
                  batch: int = 16) -> tuple[np.ndarray, list[int]]:
    """Train with ``workers`` concurrent calls; return the weights and each call's step count."""
    ps.init("W", np.zeros((n_features + 1, n_classes)))
    ps.init("started", np.zeros((), dtype=np.int64))
    futures = [ex.submit(hogwild_worker, ps, data, w, workers, epochs, lr, batch) for w in range(workers)]
    steps = [f.result() for f in futures]
    return ps.pull("W"), steps


# --- BSP --------------------------------------------------------------------------------------
def bsp_gradient(W: lambdaexec.Broadcast, data: lambdaexec.Broadcast, worker: int, workers: int) -> tuple:
    """The gradient on one worker's share of the rows, and how many rows that is."""
    X, y = data.value
    rows = np.arange(worker, len(y), workers)
    return gradient(W.value, X[rows], y[rows]), len(rows)


def train_bsp(ex: lambdaexec.LambdaExecutor, data: lambdaexec.Broadcast, n_features: int, n_classes: int,
              workers: int = 8, rounds: int = 30, lr: float = 1.0, resume: str | None = None) -> np.ndarray:
    """Full-batch gradient descent, one ``map`` of ``workers`` calls per round."""

    def step(W: np.ndarray, r: int) -> np.ndarray:
        handle = ex.broadcast(W)
        parts = list(ex.map(bsp_gradient, [handle] * workers, [data] * workers, range(workers),
                            [workers] * workers))
        handle.unpersist()
        total = sum(n for _, n in parts)
        return W - lr * sum(g * n for g, n in parts) / total

    return ex.iterate(step, np.zeros((n_features + 1, n_classes)), rounds, resume=resume)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default=None, help="the parameter server's Redis (default: redis_url)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    Xtr, Xte, ytr, yte = load_data()
    print(f"SGDClassifier (scikit-learn):   test accuracy {baseline(Xtr, Xte, ytr, yte):.4f}")
    with lambdaexec.LambdaExecutor(max_workers=args.workers) as ex:
        data = ex.broadcast((Xtr, ytr))
        ps = lambdaexec.ParameterServer(args.redis_url, name="hogwild-example")
        t = time.perf_counter()
        W, steps = train_hogwild(ex, ps, data, Xtr.shape[1], 10, workers=args.workers, epochs=args.epochs)
        print(f"HOGWILD! ({args.workers} calls, {sum(steps)} pushes): test accuracy {accuracy(W, Xte, yte):.4f} "
              f"in {time.perf_counter() - t:.1f} s")
        ps.clear()
        t = time.perf_counter()
        W = train_bsp(ex, data, Xtr.shape[1], 10, workers=args.workers, rounds=args.rounds)
        print(f"BSP ({args.rounds} rounds of {args.workers} calls): test accuracy {accuracy(W, Xte, yte):.4f} "
              f"in {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
