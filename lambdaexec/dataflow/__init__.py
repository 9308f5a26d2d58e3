"""Jobs beyond one map, each a thin layer of ordinary calls on an executor, one module each:

- :mod:`~lambdaexec.dataflow.chunks`: ``chunks(...)``, inputs read from storage in byte ranges;

- :mod:`~lambdaexec.dataflow.reduce`: ``reduce(ex, fn, futures)``, one call over many results,
  read by its worker from storage;
- :mod:`~lambdaexec.dataflow.shuffle`: the shuffle through storage (one object per mapper with an
  offset index; reducers range-read) and the process-stable :func:`hash_partition`;
- :mod:`~lambdaexec.dataflow.map_reduce`: ``map_reduce(ex, map_fn, items, reduce_fn, ...)``, with
  :mod:`~lambdaexec.dataflow.keyed` for its mapper and reducer sides (merge, route, encode; group);
- :mod:`~lambdaexec.dataflow.sort`: ``sort(ex, chunks, output, ...)``, Terasort's shape.

Each is also a method of :class:`~lambdaexec.LambdaExecutor` (``ex.reduce``, ``ex.map_reduce``,
``ex.sort``). Inputs come from :func:`lambdaexec.chunks` (:mod:`~lambdaexec.dataflow.chunks`).
"""

from lambdaexec.dataflow.map_reduce import map_reduce
from lambdaexec.dataflow.reduce import reduce
from lambdaexec.dataflow.shuffle import ShuffleAbortedError, hash_partition, stable_hash
from lambdaexec.dataflow.sort import sort

__all__ = ["ShuffleAbortedError", "hash_partition", "map_reduce", "reduce", "sort", "stable_hash"]
