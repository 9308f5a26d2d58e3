"""The keyed half of ``map_reduce``'s shuffle: what a mapper makes of ``map_fn``'s outputs, and
what a reducer makes of the partitions it reads.

One mapper call, ``R`` reducers::

    map_fn(item) ─► a Mapping, or (key, value) pairs
        │  merge:   one Mapping is taken as it is; pairs (or several outputs) go into one dict,
        │           {key: combine(old, new)} with ``combine``, else {key: [values in order]}
        ▼
    keys [k0, k1, ...], values [v0, v1, ...]          one entry per DISTINCT key
        │  route:   partition(key, R) once per distinct key; the default hash_partition runs
        │           as C-level passes (zlib.crc32 over the keys) when the keys are all str,
        │           all bytes or all int
        ▼
    R blobs, each (grouped, keys_r, values_r)         marshal when every key and value is a plain
                                                      builtin (faster), else pickle, else cloudpickle
    reducer r:  blobs of partition r, in mapper order
        │  group:   with ``combine``, {key: combine(earlier, later)} as blobs arrive; without,
        │           {key: [values]} by C-level appends
        ▼
    {key: reduce_fn(key, values)}

Why this shape: beyond the user's own code, a word count costs one dictionary operation per
(distinct key, item) pair, and on 2 cores that is what decides the race with a
``multiprocessing.Pool`` program. Routing, encoding and grouping work on whole lists of keys
with C-level passes (measured faster); merging two dicts stays a plain loop, which measured
faster than any combination of C-level passes over keys scattered in memory (see the
benchmark section of docs/dataflow.md).
"""

from __future__ import annotations

import marshal
import pickle
import zlib
from collections import defaultdict, deque
from collections.abc import Mapping
from itertools import compress, repeat
from typing import Any, Callable, Iterable

from lambdaexec.dataflow import shuffle
from lambdaexec.errors import UnpicklableError

_MARSHAL, _PICKLE = b"M", b"P"  # first byte of a partition blob: how the rest is encoded
_SEEDS = {bytes: zlib.crc32(b"b"), int: zlib.crc32(b"i")}  # stable_hash's prefixes, as crc32 seeds


def map_side(outputs: Iterable[Any], partitions: int, partition: Callable[[Any, int], int] | None,
             combine: Callable[[Any, Any], Any] | None) -> list[bytes]:
    """One mapper's partitions, encoded: merge ``outputs`` (each what ``map_fn`` returned for
    one item), route each distinct key by ``partition`` (``None``: :func:`~lambdaexec.dataflow.hash_partition`)
    and encode each partition's keys and values."""
    data, grouped = merge(outputs, combine)
    keys = list(data)
    values = list(data.values())
    if partitions == 1:
        return [_encode(grouped, keys, values)]
    ps = route(keys, partitions, partition)
    return [_encode(grouped, ks, vs) for ks, vs in _split(keys, values, ps, partitions)]


def _split(keys: list, values: list, ps: list[int], partitions: int) -> Iterable[tuple[list, list]]:
    """Each partition's keys and values, in their order in ``keys``."""
    if partitions <= 8:  # a C-level pass per partition
        for r in range(partitions):
            chosen = list(map(r.__eq__, ps))
            yield list(compress(keys, chosen)), list(compress(values, chosen))
        return
    import numpy as np  # many partitions: one stable sort by partition instead

    order = np.argsort(np.asarray(ps, dtype=np.intp), kind="stable").tolist()
    ks, vs = [keys[i] for i in order], [values[i] for i in order]
    start = 0
    for end in np.cumsum(np.bincount(np.asarray(ps, dtype=np.intp), minlength=partitions)).tolist():
        yield ks[start:end], vs[start:end]
        start = end


def merge(outputs: Iterable[Any], combine: Callable[[Any, Any], Any] | None) -> tuple[Mapping, bool]:
    """The map outputs as one Mapping, and whether its values are lists of values (``grouped``).

    A single Mapping output is returned as it is (never modified). Otherwise values of one key
    are merged with ``combine``, or kept in order in a list when there is no ``combine``.
    """
    first: Mapping | None = None
    acc: dict | None = None
    for output in outputs:
        if acc is None:
            if first is None and isinstance(output, Mapping):
                first = output
                continue
            acc = {}
            if first is not None:
                _merge_mapping(acc, first, combine)
        if isinstance(output, Mapping):
            _merge_mapping(acc, output, combine)
        else:
            _merge_pairs(acc, pairs_of(output), combine)
    if acc is None:
        return ({} if first is None else first), False
    return acc, combine is None


def _merge_mapping(acc: dict, output: Mapping, combine: Callable | None) -> None:
    get, missing = acc.get, _MISSING
    if combine is None:
        for k, v in output.items():
            vs = get(k, missing)
            if vs is missing:
                acc[k] = [v]
            else:
                vs.append(v)
    elif not acc:
        acc.update(output)
    else:
        for k, v in output.items():
            old = get(k, missing)
            acc[k] = v if old is missing else combine(old, v)


def _merge_pairs(acc: dict, pairs: Iterable, combine: Callable | None) -> None:
    get, missing = acc.get, _MISSING
    for pair in pairs:
        try:
            if isinstance(pair, (str, bytes, bytearray)):
                raise TypeError
            k, v = pair
        except (TypeError, ValueError):
            raise TypeError(f"map_fn yielded {_short(pair)} where a (key, value) pair was expected; "
                            "return a Mapping or an iterable of 2-tuples") from None
        try:
            old = get(k, missing)
        except TypeError as err:
            if "unhashable" in str(err):
                raise TypeError(f"map_fn yielded the unhashable key {_short(k)}: keys must be "
                                "hashable (use a tuple instead of a list)") from None
            raise
        if combine is None:
            if old is missing:
                acc[k] = [v]
            else:
                old.append(v)
        else:
            acc[k] = v if old is missing else combine(old, v)


_MISSING = object()


def pairs_of(output: Any) -> Any:
    """The ``(key, value)`` pairs of what a map function returned (a Mapping or pairs)."""
    if isinstance(output, Mapping):
        return output.items()
    if isinstance(output, (str, bytes, bytearray)) or not hasattr(output, "__iter__"):
        raise TypeError(
            f"map_fn returned {type(output).__name__} {_short(output)}; it must return a Mapping "
            "(e.g. a dict or Counter) or an iterable of (key, value) pairs")
    return output


def _short(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) <= 80 else text[:77] + "..."


def route(keys: list, partitions: int, partition: Callable[[Any, int], int] | None) -> list[int]:
    """``partition(key, partitions)`` of every key, checked to be in ``range(partitions)``.

    The default (``None`` or :func:`~lambdaexec.dataflow.hash_partition`) gives the same numbers
    as ``hash_partition`` key by key, computed over the whole list in C when the keys are all
    ``str``, all ``bytes`` or all ``int``.
    """
    if partition is None or partition is shuffle.hash_partition:
        return list(map(partitions.__rmod__, hashes(keys)))
    ps = list(map(partition, keys, repeat(partitions)))
    if ps and not (set(map(type, ps)) <= {int} and min(ps) >= 0 and max(ps) < partitions):
        for k, p in zip(keys, ps):
            if not isinstance(p, int) or not 0 <= p < partitions:
                raise ValueError(f"partition({_short(k)}, {partitions}) returned {p!r}; it must return "
                                 f"an int in range(0, {partitions})")
    return ps


def hashes(keys: list) -> Iterable[int]:
    """:func:`~lambdaexec.dataflow.stable_hash` of every key (lazily)."""
    types = set(map(type, keys))
    if types == {str}:
        return map(zlib.crc32, map(str.encode, keys, repeat("utf-8"), repeat("surrogatepass")))
    if types == {bytes}:
        return map(zlib.crc32, keys, repeat(_SEEDS[bytes]))
    if types == {int}:
        return map(zlib.crc32, map(str.encode, map(int.__repr__, keys)), repeat(_SEEDS[int]))
    return map(shuffle.stable_hash, keys)


def _encode(grouped: bool, keys: list, values: list) -> bytes:
    payload = (grouped, keys, values)
    try:
        return _MARSHAL + marshal.dumps(payload, 2)  # version 2: no back-references, ~40% faster
    except ValueError:  # something marshal does not take (a class instance, a subclass): pickle
        pass
    try:
        return _PICKLE + pickle.dumps(payload, protocol=5)
    except Exception:
        pass
    import cloudpickle

    try:
        return _PICKLE + cloudpickle.dumps(payload, protocol=5)
    except Exception:
        for what, objs in (("key", keys), ("value", values)):
            for obj in objs:
                try:
                    cloudpickle.dumps(obj)
                except Exception as err:
                    raise UnpicklableError(
                        f"map_fn produced a {what} that cannot be pickled, so it cannot be shuffled: "
                        f"{_short(obj)} ({type(err).__name__}: {err})") from None
        raise


def decode(blob: bytes | bytearray | memoryview) -> tuple[bool, list, list]:
    """A partition blob back into ``(grouped, keys, values)``."""
    if not blob:
        return False, [], []
    view = memoryview(blob)
    kind, body = bytes(view[:1]), view[1:]
    return marshal.loads(body) if kind == _MARSHAL else pickle.loads(body)


class Groups:
    """A reducer's values of each key, fed one mapper's partition at a time, in mapper order.

    Without ``combine`` every value is kept, in order; with it, values are merged as they come
    (``combine(earlier, later)``), so ``reduce_fn`` gets one value per key, as Hadoop's reducers
    may get pre-combined values.

    >>> g = Groups(None)
    >>> g.add(decode(_encode(False, ["a", "b"], [1, 2]))); g.add(decode(_encode(True, ["a"], [[3, 4]])))
    >>> g.reduce(lambda k, vs: vs)
    {'a': [1, 3, 4], 'b': [2]}
    """

    def __init__(self, combine: Callable[[Any, Any], Any] | None) -> None:
        self.combine = combine
        self.data: dict = {} if combine else defaultdict(list)

    def add(self, part: tuple[bool, list, list]) -> None:
        """Merge one mapper's partition (after every earlier mapper's)."""
        grouped, keys, values = part
        data, combine = self.data, self.combine
        try:
            if combine is None:
                deque(map(list.extend if grouped else list.append, map(data.__getitem__, keys), values), 0)
            elif not data:
                data.update(zip(keys, values))
            else:
                get, missing = data.get, _MISSING
                for k, v in zip(keys, values):
                    old = get(k, missing)
                    data[k] = v if old is missing else combine(old, v)
        except TypeError as err:
            if "unhashable" in str(err):
                raise TypeError(f"map_fn produced an unhashable key ({err}): keys must be hashable "
                                "(use a tuple instead of a list)") from None
            raise

    def reduce(self, reduce_fn: Callable[[Any, list], Any]) -> dict:
        """``{key: reduce_fn(key, values)}``."""
        if self.combine is None:
            return {k: reduce_fn(k, vs) for k, vs in self.data.items()}
        return {k: reduce_fn(k, [v]) for k, v in self.data.items()}


__all__ = ["Groups", "decode", "hashes", "map_side", "merge", "pairs_of", "route"]
