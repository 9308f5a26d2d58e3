"""dask on lambdaexec: ``lambda_get`` is a dask scheduler that runs graphs on lambdaexec workers.

::

    import dask
    import dask.array as da
    from lambdaexec_dask import lambda_get

    x = da.random.random((4000, 4000), chunks=(500, 500))
    print(dask.compute(x.mean(), scheduler=lambda_get))

Intermediate results stay in storage; see ``docs/dask.md``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["lambda_get"]


def __getattr__(name: str) -> Any:
    # imported on first use, so that ``lambdaexec_dask.codec`` (which the joblib adapter uses)
    # does not import dask
    if name == "lambda_get":
        from lambdaexec_dask.scheduler import lambda_get

        return lambda_get
    raise AttributeError(f"module 'lambdaexec_dask' has no attribute {name!r}")
