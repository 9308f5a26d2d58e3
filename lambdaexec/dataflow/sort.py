"""``sort(ex, chunks, output, ...)``: a distributed sort in Terasort's shape, through storage.

Sorting three chunks of gensort records into two partitions, walked through::

    1 sample    each chunk's worker reads a few keys    [b"CC..", b"AA.."], [b"QQ.."], [b"KK..", b"ZZ.."]
    2 ranges    the client sorts the sample and picks    boundaries = [b"KK.."]: p0 < KK <= p1
                partitions - 1 boundaries (quantiles)
    3 shuffle   each mapper reads its chunk, routes      shuffle/<id>/map/000000 [idx][p0 records][p1 records]
                every record by bisecting the            (one object per mapper; raw records, not pickles)
                boundaries, writes one object
    4 merge     reducer r range-reads partition r of     <output>/part-00000  (keys < KK, sorted)
                every mapper's object, sorts it, and     <output>/part-00001  (keys >= KK, sorted)
                writes it as one object under output

The result is the output URLs in key order: concatenated, they are the input records sorted.
Records are fixed-size (``record_size``, key = the first 10 bytes, as gensort writes them, or
``key(record)``) or lines (key = the whole line without its newline, or ``key(line)``). A last
line without a newline gets one, so that it stays a line wherever it lands.
"""

from __future__ import annotations

import functools
import random
import time
import uuid
from concurrent.futures import Executor  # a LambdaExecutor: this layer sits below it
from typing import Any, Callable, Sequence

from lambdaexec.dataflow import shuffle
from lambdaexec.dataflow.chunks import Chunk, filesystem, resolve_options
from lambdaexec.dataflow.follow_up import follow_up, hold
from lambdaexec.dataflow.map_reduce import Job, shuffle_store
from lambdaexec.future import LambdaFuture

KEY_SIZE = 10  # gensort's key length
_SAMPLES_PER_PARTITION = 100
_WINDOW = 1 << 16  # bytes read per sampling window (lines)


def sort(ex: Executor, chunks: Sequence[Chunk], output: str, *, key: Callable[[bytes], Any] | None = None,
         record_size: int | None = None, partitions: int | None = None) -> list[str]:
    """Sort the records of ``chunks`` into ``partitions`` objects under ``output``; return their
    URLs in key order.

    ``chunks`` come from :func:`lambdaexec.chunks` (with ``record_size=`` for fixed-size
    records, else lines). ``output`` is a URL (a directory or an S3 prefix) that holds no
    objects yet. ``partitions`` defaults to the number of chunks::

        urls = ex.sort(lambdaexec.chunks("s3://b/gensort/*", "64MiB", record_size=100),
                       "s3://b/sorted/", record_size=100)
        # ['s3://b/sorted/part-00000', 's3://b/sorted/part-00001', ...]

    Raises ``FileExistsError`` if ``output`` already holds objects, ``ValueError`` if the
    chunks do not match ``record_size``.
    """
    chunks = list(chunks)
    if not chunks:
        raise ValueError("sort needs at least one chunk: lambdaexec.chunks(paths, ...) found none")
    for c in chunks:
        if not isinstance(c, Chunk):
            raise TypeError(f"sort takes chunks from lambdaexec.chunks(...), got {type(c).__name__}: {c!r}")
    sizes = {c.record_size for c in chunks}
    if len(sizes) > 1:
        raise ValueError(f"the chunks mix record sizes {sorted(sizes, key=str)}: sort one kind of record at a time")
    listed = sizes.pop()
    if record_size is None:
        record_size = listed
    elif listed != record_size:
        raise ValueError(f"sort(record_size={record_size}) but the chunks were made with record_size={listed}: "
                         f"make them with lambdaexec.chunks(..., record_size={record_size})")
    delimiters = {c.delimiter for c in chunks}
    if record_size is None and len(delimiters) > 1:
        raise ValueError(f"the chunks mix delimiters {sorted(delimiters, key=repr)}: sort one kind of line at a time")
    if record_size is None and any(c.delimiter is None for c in chunks):
        raise ValueError("these chunks have neither a delimiter nor a record_size: make them with "
                         "lambdaexec.chunks(..., record_size=N) for fixed-size records, or with a delimiter")
    if key is not None and not callable(key):
        raise TypeError(f"key must be callable or None, got {key!r}")
    partitions = len(chunks) if partitions is None else partitions
    if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
        raise ValueError(f"partitions must be an int >= 1, got {partitions!r}")
    if ex._shutdown:
        raise RuntimeError("cannot schedule new futures after shutdown")
    out_url = output.rstrip("/")
    options = resolve_options(out_url, None, ex.config)  # s3:// with the executor's endpoint
    _check_output(out_url, options)

    # 1-2: sample keys, pick boundaries
    per_chunk = max(10, -(-_SAMPLES_PER_PARTITION * partitions // len(chunks)))
    sampler = functools.partial(_sample, key=key, record_size=record_size, count=min(per_chunk, 10_000))
    sample = sorted(k for f in ex.map_futures(sampler, chunks) for k in f.result())  # any executor's map
    boundaries = [sample[len(sample) * i // partitions] for i in range(1, partitions)] if sample else []

    # 3-4: shuffle by range, sort each partition, write it
    store, own_store = shuffle_store(ex)
    prefix = f"{ex.prefix}/shuffle/{uuid.uuid4().hex[:12]}"
    mapper = functools.partial(_sort_map, store.spec, prefix, boundaries, key, record_size, partitions)
    reducer = functools.partial(_sort_reduce, store.spec, prefix, len(chunks), out_url, options, key, record_size,
                                chunks[0].delimiter)
    map_futures = ex.map_futures(mapper, range(len(chunks)), chunks)
    out = LambdaFuture(time.time())
    out.shuffle_stats = {"mappers": len(chunks), "reducers": partitions, "objects": 0, "requests": 0}
    hold(ex, out)
    Job(ex, store, own_store, prefix, map_futures, lambda: follow_up(ex, reducer, range(partitions)), partitions,
        out, list).watch()
    return out.result()


def _check_output(url: str, options: dict | None) -> None:
    fs, path = filesystem(url, options)
    try:
        found = fs.find(path)
    except FileNotFoundError:
        found = []
    if found:
        raise FileExistsError(f"the sort's output {url!r} already holds {len(found)} object(s) "
                              f"(e.g. {found[0]!r}): choose an empty location or delete them first")
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    if "s3" in protocols:
        bucket = path.split("/", 1)[0]
        if not fs.exists(bucket):
            raise FileNotFoundError(f"the sort's output bucket {bucket!r} does not exist: create it or "
                                    "check the URL, endpoint_url (LAMBDAEXEC_ENDPOINT_URL) and credentials")
    elif "file" in protocols:
        fs.makedirs(path, exist_ok=True)


def _record_key(record_size: int, key: Callable | None) -> Callable[[bytes], Any]:
    return key if key is not None else (lambda rec: rec[:KEY_SIZE])


def _lines(data: bytes, delimiter: bytes) -> list[bytes]:
    """The lines of ``data`` without their delimiter (a last line without one counts too)."""
    lines = data.split(delimiter)
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def _sample(chunk: Chunk, key: Callable | None, record_size: int | None, count: int) -> list:
    """On a worker: about ``count`` keys from ``chunk``, read in small ranges."""
    rng = random.Random(f"{chunk.path}:{chunk.start}")
    fs, path = filesystem(chunk.path, chunk.storage_options)
    if record_size is not None:
        n = (chunk.end - chunk.start) // record_size
        picks = sorted(rng.sample(range(n), min(count, n)))
        width = record_size if key is not None else min(KEY_SIZE, record_size)
        starts = [chunk.start + i * record_size for i in picks]
        blobs = fs.cat_ranges([path] * len(starts), starts, [s + width for s in starts])
        return [key(b) if key is not None else bytes(b) for b in blobs]
    start, end = chunk.bounds()
    if end <= start:
        return []
    windows = sorted({start} | {rng.randrange(start, end) for _ in range(min(8, max(1, (end - start) // _WINDOW)))})
    blobs = fs.cat_ranges([path] * len(windows), windows, [min(w + _WINDOW, end) for w in windows])
    found = []
    for w, blob in zip(windows, blobs):
        lines = blob.split(chunk.delimiter)
        if w != start:
            lines = lines[1:]  # the first piece may be a line's tail
        if w + len(blob) < end or lines[-1:] == [b""]:
            lines = lines[:-1]  # and the last a line's head (or the nothing after the last newline)
        found.extend(lines)
    keys = [key(line) if key is not None else line for line in found]
    return rng.sample(keys, min(count, len(keys)))


def _sort_map(spec: dict, prefix: str, boundaries: list, key: Callable | None, record_size: int | None,
              partitions: int, index: int, chunk: Chunk) -> int:
    """On a worker: route the chunk's records to range partitions; write one object."""
    import bisect

    from lambdaexec.storage import shared_storage

    data = chunk.read()
    if record_size is not None and key is None and record_size >= KEY_SIZE:
        import numpy as np

        records = np.frombuffer(data, dtype=np.dtype([("key", f"S{KEY_SIZE}"), ("rest", f"V{record_size - KEY_SIZE}")]))
        parts = np.searchsorted(np.array(boundaries, dtype=f"S{KEY_SIZE}"), records["key"], side="right") \
            if boundaries else np.zeros(len(records), dtype=np.int64)
        order = np.argsort(parts, kind="stable")
        counts = np.bincount(parts, minlength=partitions)
        routed = records[order].tobytes()
        blobs, pos = [], 0
        for n in counts:
            blobs.append(routed[pos : pos + int(n) * record_size])
            pos += int(n) * record_size
    else:
        if record_size is not None:
            recs = [data[i : i + record_size] for i in range(0, len(data), record_size)]
            kf = _record_key(record_size, key)
            sep = b""
        else:
            recs = _lines(data, chunk.delimiter)
            kf = key if key is not None else (lambda line: line)
            sep = chunk.delimiter
        routed_lists: list[list[bytes]] = [[] for _ in range(partitions)]
        for rec in recs:
            routed_lists[bisect.bisect_right(boundaries, kf(rec))].append(rec)
        blobs = [sep.join(rs) + sep if rs and sep else b"".join(rs) for rs in routed_lists]
    store, out = shared_storage(spec), f"{prefix}/map/{index:06d}"
    shuffle.write(store, out, blobs)
    return len(data)


def _sort_reduce(spec: dict, prefix: str, mappers: int, output: str, options: dict | None, key: Callable | None,
                 record_size: int | None, delimiter: bytes | None, r: int) -> tuple[str, int]:
    """On a worker: gather partition ``r``, sort it, write it to ``<output>/part-<r>``."""
    from lambdaexec.storage import shared_storage

    store = shared_storage(spec)
    pieces: list[bytes] = []
    reads = 0

    def take(k: str) -> None:
        nonlocal reads
        blob, n = shuffle.read_partition(store, k, r)
        reads += n
        pieces.append(bytes(blob))

    lists = shuffle.wait_for_maps(store, prefix, mappers, take)
    data = b"".join(pieces)
    pieces.clear()
    if record_size is not None and key is None and record_size >= KEY_SIZE:
        import numpy as np

        records = np.frombuffer(data, dtype=np.dtype([("key", f"S{KEY_SIZE}"), ("rest", f"V{record_size - KEY_SIZE}")]))
        body = records[np.argsort(records["key"], kind="stable")].tobytes()
    elif record_size is not None:
        recs = [data[i : i + record_size] for i in range(0, len(data), record_size)]
        recs.sort(key=_record_key(record_size, key))
        body = b"".join(recs)
    else:
        assert delimiter is not None
        lines = _lines(data, delimiter)
        lines.sort(key=key)
        body = delimiter.join(lines) + delimiter if lines else b""
    url = f"{output}/part-{r:05d}"
    fs, path = filesystem(url, options)
    fs.pipe_file(path, body)
    return url, reads + lists + 1
