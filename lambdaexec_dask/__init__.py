"""dask on lambdaexec."""
