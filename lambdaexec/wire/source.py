"""Code shipped by value keeps its file name and source, so remote tracebacks read as local ones.

A function from the user's own files (or ``__main__``, or a notebook cell) travels by value:
cloudpickle pickles its code objects. Since cloudpickle 3.1.3 those code objects arrive with
``co_filename = "<dynamic-code>"`` (for deterministic payloads), and even before, the worker had
no copy of the file, so a traceback showed a file name without its source line. This module
fixes both, whatever the cloudpickle version::

    client (pickling a code object)                    worker (unpickling it)
    cloudpickle's own code reducer  ─► (make, args) ─┐
    real co_filename, source text of that file ──────┴► code_with_source(): make(*args), its
                                                        co_filename put back, the source put
                                                        in linecache (once per file and text)

The source text is one ``str`` object per file on the client, so pickle's memo writes it once
per payload however many functions of that file travel; and a function object is uploaded once
per executor (by content hash), so the text moves once per job's function. Files over
:data:`MAX_SOURCE` bytes travel without their text (tracebacks then show names and lines only).
"""

from __future__ import annotations

import linecache
import os
import types
from typing import Callable

MAX_SOURCE = 4 << 20

_sources: dict[str, tuple[tuple[int, int] | None, str | None]] = {}  # file -> (stat, text)
_registered: dict[str, str] = {}  # worker side: file -> the text put in linecache


def source_of(filename: str) -> str | None:
    """The text of ``filename`` as the client sees it (a file, or a cell IPython registered).

    The same ``str`` object is returned while the file is unchanged, so pickle's memo
    writes it once per payload.
    """
    try:
        st = os.stat(filename)
        stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
    except OSError:
        stamp = None  # not a file: "<stdin>", a notebook cell, ...
    cached = _sources.get(filename)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    if stamp is not None and stamp[1] > MAX_SOURCE:
        text = None
    else:
        if stamp is not None:
            linecache.checkcache(filename)
        text = "".join(linecache.getlines(filename)) or None
        if text is not None and len(text) > MAX_SOURCE:
            text = None
    _sources[filename] = (stamp, text)
    return text


def reducer(code_reduce: Callable[[types.CodeType], tuple]) -> Callable[[types.CodeType], tuple]:
    """A pickle reducer for code objects that wraps ``code_reduce`` (cloudpickle's own)."""

    def reduce_code(code: types.CodeType) -> tuple:
        make, args = code_reduce(code)[:2]
        return code_with_source, (make, args, code.co_filename, source_of(code.co_filename))

    return reduce_code


def code_with_source(make: Callable[..., types.CodeType], args: tuple, filename: str,
                     source: str | None) -> types.CodeType:
    """Rebuild a code object with its real ``filename``; register ``source`` for tracebacks."""
    code = make(*args)
    if code.co_filename != filename:
        code = code.replace(co_filename=filename)
    if source is not None:
        known = _registered.get(filename)
        if filename not in linecache.cache or (known is not source and known != source):
            # mtime None: linecache.checkcache keeps the entry (as for files read by a loader)
            linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
            _registered[filename] = source
    return code
