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

from lambdaexec_dask.scheduler import lambda_get

__all__ = ["lambda_get"]
