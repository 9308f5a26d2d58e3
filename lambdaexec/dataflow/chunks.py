"""Input data read by the workers straight from storage: :func:`chunks` cuts files into byte
ranges that the client describes and the workers read.

::

    client                                   worker (one call per chunk)
    chunks("s3://b/logs/*.txt", "64MiB")     chunk.read() / chunk.open()
      glob + sizes (fsspec, no data read) ─►   ranged read of [start, end) from the file,
      [Chunk(path, start, end), ...]           bounds moved to the next record boundary

The client only lists files and their sizes; it never reads their contents. A :class:`Chunk`
is a few hundred bytes (path, range, how records end, fsspec options) and pickles into a call's
arguments. All reading goes through `fsspec <https://filesystem-spec.readthedocs.io>`_ (and
s3fs for ``s3://``), so any fsspec URL works: plain paths, ``file://``, ``memory://``, ``s3://``.

Records are never split. With a ``delimiter`` (lines, by default), a line belongs to the chunk
whose nominal range holds the line's first byte: each bound moves forward to just past the
first delimiter at or after it, so neighbouring chunks agree on their shared bound and every
line lands in exactly one chunk (a line longer than a chunk makes the chunks it spans empty).
With ``record_size``, chunk sizes are whole multiples of the record size.
"""

from __future__ import annotations

import dataclasses
import io
import re
from typing import Any, Iterable

__all__ = ["Chunk", "chunks", "parse_size"]

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6,
          "mib": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12,
          "tib": 2**40}
_SEEK_BLOCK = 2**16


def parse_size(size: int | str) -> int:
    """Bytes in ``size``: an int, or a string such as ``"64MiB"``, ``"100 MB"``, ``"4096"``.

    >>> parse_size("64MiB"), parse_size("1.5 kB"), parse_size(10)
    (67108864, 1500, 10)
    """
    if isinstance(size, bool):
        raise TypeError(f"a size must be an int or a string like '64MiB', got {size!r}")
    if isinstance(size, int):
        n = size
    elif isinstance(size, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", size)
        if not m or m.group(2).lower() not in _UNITS:
            raise ValueError(f"cannot read {size!r} as a size: write e.g. 65536, '64KiB', '64MiB' or '1GB'")
        n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    else:
        raise TypeError(f"a size must be an int or a string like '64MiB', got {type(size).__name__}")
    if n <= 0:
        raise ValueError(f"a chunk size must be > 0 bytes, got {size!r}")
    return n


def filesystem(url: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec filesystem for ``url`` and the path within it."""
    try:
        import fsspec
    except ImportError:
        raise ImportError("reading data from storage needs fsspec: pip install 'lambdaexec[data]'") from None
    try:
        return fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError as err:
        raise ImportError(f"reading {url!r} needs an fsspec backend: {err} "
                          "(for s3:// URLs: pip install 'lambdaexec[data]')") from None


def resolve_options(url: str, storage_options: dict[str, Any] | None, config: Any = None) -> dict[str, Any] | None:
    """``storage_options`` for ``url``; an ``s3://`` URL also gets lambdaexec's S3 settings
    (those of ``config``, an executor's :class:`~lambdaexec.config.Config`, if given)."""
    if url.split("://", 1)[0] in ("s3", "s3a"):
        return {**s3_options(config), **(storage_options or {})}
    return storage_options


def s3_options(config: Any = None) -> dict[str, Any]:
    """s3fs options from lambdaexec's settings (``config``, else the environment and config
    file): the ``endpoint_url`` and ``region`` that S3 storage uses. Credentials are not
    copied: s3fs finds them where boto3 does."""
    from lambdaexec.config import load_config

    cfg = config or load_config()
    options: dict[str, Any] = {}
    if cfg.endpoint_url:
        options["endpoint_url"] = cfg.endpoint_url
    if cfg.region:
        options["client_kwargs"] = {"region_name": cfg.region}
    return options


@dataclasses.dataclass(frozen=True)
class Chunk:
    """A byte range ``[start, end)`` of one file, moved to record boundaries when read.

    Made by :func:`chunks` on the client, read by a worker::

        def count_lines(chunk):
            return sum(1 for _ in chunk.open())

        total = sum(ex.map(count_lines, lambdaexec.chunks("data/*.txt", "16MiB")))

    ``path`` is the file's full URL (with its protocol), ``start``/``end`` the nominal range.
    """

    path: str
    start: int
    end: int
    #: the file's size when listed (``None``: looked up when first read)
    size: int | None = None
    #: records end with this (``None``: fixed-size records or raw bytes)
    delimiter: bytes | None = b"\n"
    #: fixed record size in bytes, if the data is made of such records
    record_size: int | None = None
    storage_options: dict[str, Any] | None = dataclasses.field(default=None, repr=False)

    def _fs(self) -> tuple[Any, str]:
        return filesystem(self.path, self.storage_options)

    def _bound(self, f: Any, pos: int, size: int) -> int:
        """Where a record-aligned bound at nominal offset ``pos`` really falls."""
        if pos <= 0:
            return 0
        if pos >= size:
            return size
        if self.delimiter is None:
            return pos
        from fsspec.utils import seek_delimiter

        f.seek(pos - 1)  # a delimiter ending right before pos puts the bound at pos itself
        seek_delimiter(f, self.delimiter, _SEEK_BLOCK)
        return f.tell()

    def bounds(self) -> tuple[int, int]:
        """The actual ``(start, end)`` byte offsets of this chunk's records (reads a little
        around each bound to find the delimiters)."""
        fs, path = self._fs()
        size = fs.size(path) if self.size is None else self.size
        if self.delimiter is None or (self.start == 0 and self.end >= size):
            return min(self.start, size), min(self.end, size)
        with fs.open(path, "rb", block_size=_SEEK_BLOCK) as f:
            return self._bound(f, self.start, size), self._bound(f, self.end, size)

    def read(self) -> bytes:
        """The chunk's bytes: whole records only, each record in exactly one chunk."""
        start, end = self.bounds()
        if end <= start:
            return b""
        fs, path = self._fs()
        return fs.cat_file(path, start=start, end=end)

    def open(self) -> io.BufferedReader:
        """A binary file object over the chunk's records (iterate it for lines)."""
        start, end = self.bounds()
        fs, path = self._fs()
        f = fs.open(path, "rb")
        return io.BufferedReader(_RangeReader(f, start, end), buffer_size=1 << 20)

    def __len__(self) -> int:
        """The nominal size in bytes."""
        return self.end - self.start


class _RangeReader(io.RawIOBase):
    """Bytes ``[start, end)`` of an open fsspec file, as a raw stream."""

    def __init__(self, f: Any, start: int, end: int):
        self._f, self._pos, self._end = f, start, end
        f.seek(start)

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        n = min(len(buf), self._end - self._pos)
        if n <= 0:
            return 0
        data = self._f.read(n)
        buf[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        self._f.close()
        super().close()


def chunks(paths: str | Iterable[str], chunk_size: int | str = "64MiB", *, delimiter: bytes | None = b"\n",
           record_size: int | None = None, storage_options: dict[str, Any] | None = None) -> list[Chunk]:
    """Cut the files named by ``paths`` into :class:`Chunk` s of about ``chunk_size`` bytes.

    ``paths`` is one path or fsspec URL, a glob (``"s3://bucket/logs/*.txt"``), or a list of
    them; files are taken in sorted order within each glob. Only names and sizes are listed
    here; workers read the data. ``delimiter`` ends records (lines by default); with
    ``record_size`` (e.g. 100 for gensort records) chunks hold whole records and the delimiter
    is ignored. ``storage_options`` go to fsspec (for ``s3://`` they default to lambdaexec's
    ``endpoint_url`` and ``region``); they travel inside each chunk, so put no secrets there
    (s3fs finds credentials the way boto3 does).

    >>> import lambdaexec  # doctest: +SKIP
    >>> cs = lambdaexec.chunks("data/*.txt", "16MiB")
    >>> cs[0]
    Chunk(path='file:///.../data/a.txt', start=0, end=16777216, size=..., delimiter=b'\\n', record_size=None)

    Raises ``FileNotFoundError`` when a path matches no file (or its bucket does not exist),
    ``ValueError`` for a bad size or a file that is not a whole number of records.
    """
    size = parse_size(chunk_size)
    if record_size is not None:
        if isinstance(record_size, bool) or not isinstance(record_size, int) or record_size <= 0:
            raise ValueError(f"record_size must be a positive int (bytes per record), got {record_size!r}")
        delimiter = None
        size = max(record_size, size // record_size * record_size)
    elif delimiter is not None:
        if isinstance(delimiter, str):
            delimiter = delimiter.encode()
        if not isinstance(delimiter, bytes) or not delimiter:
            raise ValueError(f"delimiter must be non-empty bytes (e.g. b'\\n') or None, got {delimiter!r}")
    if isinstance(paths, str):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise ValueError("chunks() needs at least one path")
    out: list[Chunk] = []
    for url in paths:
        if not isinstance(url, str):
            raise TypeError(f"paths must be strings (paths or URLs), got {url!r}")
        options = resolve_options(url, storage_options)
        for file_url, file_size in _list_files(url, options):
            if record_size is not None and file_size % record_size:
                raise ValueError(
                    f"{file_url} holds {file_size} bytes, not a whole number of {record_size}-byte "
                    f"records ({file_size % record_size} bytes left over): check record_size")
            for start in range(0, file_size, size):
                out.append(Chunk(file_url, start, min(start + size, file_size), file_size,
                                 delimiter, record_size, options))
    return out


def _list_files(url: str, storage_options: dict[str, Any] | None) -> list[tuple[str, int]]:
    """``(full URL, size)`` of every file ``url`` names (a file, a glob or a directory)."""
    fs, path = filesystem(url, storage_options)
    try:
        if any(ch in path for ch in "*?["):
            infos = fs.glob(path, detail=True)
        else:
            infos = {path: fs.info(path)}
            if infos[path]["type"] == "directory":
                infos = fs.find(path, detail=True)
    except FileNotFoundError:
        infos = {}
    except PermissionError as err:
        raise PermissionError(f"cannot list {url!r}: {err}; check the credentials and their rights") from None
    files = sorted((p, info["size"]) for p, info in infos.items() if info.get("type") != "directory")
    if not files:
        _explain_missing(fs, path, url)
    return [(fs.unstrip_protocol(p), int(size)) for p, size in files]


def _explain_missing(fs: Any, path: str, url: str) -> None:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    if "s3" in protocols:
        bucket = path.split("/", 1)[0]
        try:
            missing = not fs.exists(bucket)
        except Exception:
            missing = False
        if missing:
            raise FileNotFoundError(
                f"{url!r}: the S3 bucket {bucket!r} does not exist (or this endpoint cannot see it): "
                "check the bucket name, endpoint_url (LAMBDAEXEC_ENDPOINT_URL) and credentials")
    raise FileNotFoundError(f"{url!r} matches no file: check the path or glob pattern (files are "
                            "listed relative to the client's working directory)")

