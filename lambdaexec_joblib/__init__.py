"""joblib on lambdaexec: importing this package registers the joblib backend ``"lambda"``.

::

    import lambdaexec_joblib  # noqa: F401
    from joblib import Parallel, delayed, parallel_backend

    with parallel_backend("lambda", max_workers=8):
        squares = Parallel(n_jobs=-1)(delayed(pow)(i, 2) for i in range(1000))

scikit-learn estimators with ``n_jobs`` run on it unchanged. See ``docs/joblib.md``.
"""

from __future__ import annotations

import joblib

from lambdaexec_joblib.backend import LambdaBackend, in_worker

__all__ = ["LambdaBackend", "in_worker", "register"]


def register(name: str = "lambda") -> None:
    """Register :class:`LambdaBackend` with joblib under ``name`` (done on import as ``"lambda"``)."""
    joblib.register_parallel_backend(name, LambdaBackend)


register()
