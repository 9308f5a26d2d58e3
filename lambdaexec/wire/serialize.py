"""Turning functions, arguments and results into bytes and back.

Functions go through cloudpickle; values that plain pickle writes the same way (builtin scalars,
tuples, lists and dicts of them, NumPy arrays of numbers) go through plain pickle, which is much
faster for small values; one :func:`loads` reads either. Functions and classes defined in the user's own files (modules
that are neither in the standard library nor installed in site-packages) travel by value, since
a Lambda worker does not have those files: in our pickles only, through a hook on cloudpickle's
by-value check (``_by_value``), not its process-wide registry, which other libraries share.
Values use pickle protocol 5 with out-of-band buffers,
so a large NumPy array is written straight from its memory and read back without another copy.

Wire format of one value: ``u32 n`` | ``n x u64 buffer sizes`` | ``u64 pickle size`` | pickle |
then each buffer, zero-padded to start at a multiple of :data:`ALIGN` from the value's start.
:func:`dumps` returns it as a list of chunks that storage writes without joining. Readers keep
values at 64-byte boundaries of their (malloc-aligned) buffers, so arrays arrive aligned: NumPy
then takes the same SIMD paths, and sums in the same order, as on the client.
"""

from __future__ import annotations

import collections
import functools
import io
import os
import pickle
import struct
import sys
import sysconfig
import threading
import types
from typing import Any, Iterator

import cloudpickle

from lambdaexec.errors import UnpicklableError
from lambdaexec.wire import module_globals, source

PYTHON_VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"
CLOUDPICKLE_VERSION = cloudpickle.__version__

# packages that every worker runtime has installed: always by reference
_RUNTIME_PACKAGES = {"lambdaexec", "worker", "lambdaexec_joblib", "lambdaexec_dask", "cloudpickle"}


class Pickler(cloudpickle.Pickler):
    """cloudpickle's pickler, but code shipped by value keeps its file name and source text.

    See :mod:`lambdaexec.wire.source`: remote tracebacks then name the user's file and show the line.
    """

    dispatch_table = collections.ChainMap(
        {types.CodeType: source.reducer(cloudpickle.Pickler.dispatch_table[types.CodeType])},
        cloudpickle.Pickler.dispatch_table,
    )


#: the builtin scalar types: plain pickle writes them as cloudpickle would, and they cannot change
PLAIN_ATOMS = frozenset({int, float, complex, bool, str, bytes, type(None)})
_PLAIN_NODES = 256  # values larger than this are not examined: cloudpickle's own cost is then small


def _plain(obj: Any) -> bool:
    """Whether plain pickle writes ``obj`` exactly as cloudpickle would: builtin scalars, and
    tuples, lists and dicts of them, and NumPy arrays without Python objects inside. Anything
    else may hold a function or class of ``__main__`` or the user's files, which plain pickle
    would write by reference (a name the worker cannot import), so it goes to cloudpickle."""
    stack, nodes = [obj], 0
    while stack:
        o = stack.pop()
        t = type(o)
        nodes += 1
        if nodes > _PLAIN_NODES:
            return False
        if t in PLAIN_ATOMS:
            continue
        if t is tuple or t is list:
            if len(o) > _PLAIN_NODES:
                return False
            stack.extend(o)
        elif t is dict:
            if len(o) > _PLAIN_NODES:
                return False
            stack.extend(o.keys())
            stack.extend(o.values())
        elif not (t.__name__ == "ndarray" and t.__module__ == "numpy" and not o.dtype.hasobject):
            return False
    return True


def _pickle(obj: Any, buffer_callback: Any) -> bytes:
    if _plain(obj):  # plain pickle: 0.3 us for a small value where cloudpickle's pickler takes 5 us
        return pickle.dumps(obj, protocol=5, buffer_callback=buffer_callback)
    outer, _pickling.on = getattr(_pickling, "on", False), True
    try:
        with io.BytesIO() as out:
            Pickler(out, protocol=5, buffer_callback=buffer_callback).dump(obj)
            return out.getvalue()
    finally:
        _pickling.on = outer


# The user's modules go by value in OUR pickles only. cloudpickle's own registry
# (register_pickle_by_value) is global: registering them there would also make every other
# cloudpickle user in the process (loky, joblib's default backend; dask) ship them by value, so
# loky's workers would stop importing them. cloudpickle asks _is_registered_pickle_by_value
# whether a module goes by value; it answers as before, and also yes for the modules in
# _by_value while this thread runs one of our pickles.
_by_value: set[str] = set()
_pickling = threading.local()
#: cloudpickle's own answer (a private function: a release without it gets the global registry)
_registered_by_cloudpickle = getattr(cloudpickle.cloudpickle, "_is_registered_pickle_by_value", None)


def goes_by_value(name: str) -> bool:
    """Whether module ``name`` (or a package it is in) is one of the user's, shipped by value."""
    while name:
        if name in _by_value:
            return True
        name = name.rpartition(".")[0]
    return False


def _registered_by_value(module: types.ModuleType) -> bool:
    if getattr(_pickling, "on", False) and goes_by_value(module.__name__):
        return True
    return _registered_by_cloudpickle(module)  # type: ignore[misc]


if _registered_by_cloudpickle is not None:
    cloudpickle.cloudpickle._is_registered_pickle_by_value = _registered_by_value


def _ship_by_value(name: str) -> None:
    """Ship module ``name`` (one of the user's) by value in our pickles."""
    _by_value.add(name)
    if _registered_by_cloudpickle is None:  # no hook in this cloudpickle: its global registry
        cloudpickle.register_pickle_by_value(sys.modules[name])


_JOIN_BELOW = 1 << 16
_NO_BUFFERS = struct.Struct("<IQ")  # the header of a value without out-of-band buffers
ALIGN = 64


def padding(size: int) -> int:
    """Zero bytes that bring ``size`` up to a multiple of :data:`ALIGN`."""
    return -size % ALIGN


def pad(chunks: list[memoryview], size: int) -> int:
    """Append the zero bytes that align ``size`` (the chunks' length so far); return the new size."""
    n = padding(size)
    if n:
        chunks.append(memoryview(bytes(n)))
    return size + n


@functools.cache
def _installed_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots.update(p for p in sys.path if p.endswith(("site-packages", "dist-packages")))
    return tuple(os.path.realpath(r) + os.sep for r in roots)


_by_value_checked: dict[str, bool] = {}


def _is_user_module(name: str, module: types.ModuleType) -> bool:
    cached = _by_value_checked.get(name)
    if cached is not None:
        return cached
    file = getattr(module, "__file__", None)
    top = name.partition(".")[0]
    user = bool(
        file
        and name != "__main__"
        and top not in _RUNTIME_PACKAGES
        and top in sys.modules
        and not os.path.realpath(file).startswith(_installed_roots())
    )
    _by_value_checked[name] = user
    return user


_modules_seen = 0
_register_lock = threading.Lock()


def register_user_modules() -> None:
    """Mark every imported module from the user's own files to be pickled by value (in our
    pickles only: see ``_by_value``).

    Thread-safe: a thread that finds another one registering waits for it, rather than
    pickling a function by reference while its module is not yet marked.
    """
    global _modules_seen
    if len(sys.modules) == _modules_seen:
        return
    with _register_lock:
        seen = len(sys.modules)
        if seen == _modules_seen:
            return
        for name, module in list(sys.modules.items()):
            if module is not None and name not in _by_value_checked and _is_user_module(name, module):
                if "." not in name or sys.modules.get(name.partition(".")[0]) is None:
                    _ship_by_value(name)
                else:
                    top = sys.modules[name.partition(".")[0]]
                    if _is_user_module(top.__name__, top):
                        _ship_by_value(top.__name__)
        _modules_seen = seen  # only now: until here, other threads must wait for the lock


def dumps(obj: Any) -> list[memoryview]:
    """Serialize ``obj`` to chunks (header, pickle, out-of-band buffers). See module docs."""
    buffers: list[pickle.PickleBuffer] = []
    try:
        data = _pickle(obj, buffers.append)
    except Exception as err:
        raise UnpicklableError(describe_unpicklable(obj, "value", err)) from err
    if not buffers and len(data) < _JOIN_BELOW:  # one small object: cheaper to hold than three
        return [memoryview(_NO_BUFFERS.pack(0, len(data)) + data)]
    raws = [b.raw() for b in buffers]
    head = struct.pack(f"<I{len(raws)}QQ", len(raws), *(len(r) for r in raws), len(data))
    out, pos = [memoryview(head), memoryview(data)], len(head) + len(data)
    for raw in raws:
        pos = pad(out, pos)
        out.append(raw)
        pos += raw.nbytes
    return out


#: a buffer size with this bit set: the buffer is stored apart, by content; its place holds its
#: SHA-256 (32 bytes), which ``loads(external=)`` turns back into the buffer (wire/shared.py)
EXTERNAL = 1 << 63


def loads(buf: bytearray | memoryview | bytes, external: Any = None) -> Any:
    """Inverse of :func:`dumps` over the joined chunks; buffers are views into ``buf``, those
    stored apart (:data:`EXTERNAL`) are ``external(sha256, size)``."""
    view = memoryview(buf)
    (n,) = struct.unpack_from("<I", view, 0)
    sizes = struct.unpack_from(f"<{n}QQ", view, 4)
    pos = 4 + 8 * (n + 1)
    data = view[pos : pos + sizes[-1]]
    pos += sizes[-1]
    out_of_band = []
    for size in sizes[:-1]:
        pos += padding(pos)
        if size & EXTERNAL:
            if external is None:
                raise UnpicklableError("this value holds a buffer stored apart by content (a large argument), "
                                       "and nothing here can read it")
            out_of_band.append(external(bytes(view[pos : pos + 32]), size & ~EXTERNAL))
            pos += 32
            continue
        out_of_band.append(view[pos : pos + size])
        pos += size
    return module_globals.loads(data, out_of_band)


def size_of(chunks: list[memoryview]) -> int:
    """Total number of bytes in ``chunks``."""
    return sum(c.nbytes for c in chunks)


# --- finding what cannot be pickled -----------------------------------------------------------

def _picklable(obj: Any) -> bool:
    try:
        _pickle(obj, lambda b: None)
        return True
    except Exception:
        return False


def _children(obj: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield f"[{k!r}]", v
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for i, v in enumerate(obj):
            yield f"[{i}]", v
    elif isinstance(obj, functools.partial):
        yield ".func", obj.func
        for i, v in enumerate(obj.args):
            yield f" argument {i}", v
        for k, v in obj.keywords.items():
            yield f" argument {k}=", v
    elif isinstance(obj, types.FunctionType):
        code = obj.__code__
        for name, cell in zip(code.co_freevars, obj.__closure__ or ()):
            try:
                yield f" closure variable {name!r}", cell.cell_contents
            except ValueError:
                pass
        for name in code.co_names:
            if name in obj.__globals__:
                yield f" global {name!r}", obj.__globals__[name]
    elif isinstance(obj, types.MethodType):
        yield ".__self__", obj.__self__
    else:
        state = getattr(obj, "__dict__", None)
        if isinstance(state, dict):
            for k, v in state.items():
                yield f" attribute .{k}", v


def find_unpicklable(obj: Any, path: str, depth: int = 0) -> str:
    """The path to the innermost part of ``obj`` that cannot be pickled."""
    if depth < 12:
        for label, child in _children(obj):
            if not _picklable(child):
                return find_unpicklable(child, f"{path} ->{label}", depth + 1)
    return f"{path} -> {type(obj).__module__}.{type(obj).__qualname__}"


def describe_unpicklable(obj: Any, what: str, err: Exception) -> str:
    """A message naming the offending object's path, the pickling error and the fix."""
    where = find_unpicklable(obj, what).replace("->[", "[").replace("-> ", "-> ")
    return (
        f"cannot serialize {where}: {type(err).__name__}: {err}. Objects such as sockets, "
        "open files, locks and database connections cannot travel to a worker: create them "
        "inside the function instead of passing them in"
    )


def dumps_call(args: tuple, kwargs: dict) -> list[memoryview]:
    """Serialize one call's inputs, naming the argument that fails (``argument 0 -> ...``)."""
    try:
        return dumps((args, kwargs))
    except UnpicklableError as err:
        for i, a in enumerate(args):
            if not _picklable(a):
                raise UnpicklableError(
                    describe_unpicklable(a, f"argument {i}", err.__cause__ or err)
                ) from err.__cause__
        for k, v in kwargs.items():
            if not _picklable(v):
                raise UnpicklableError(
                    describe_unpicklable(v, f"argument {k}=", err.__cause__ or err)
                ) from err.__cause__
        raise


def dumps_function(fn: Any) -> bytes:
    """Serialize the function of a job (user modules by value), naming what fails."""
    register_user_modules()
    try:
        return b"".join(dumps(fn))
    except UnpicklableError as err:
        raise UnpicklableError(
            describe_unpicklable(fn, f"function {getattr(fn, '__qualname__', fn)!r}", err.__cause__ or err)
        ) from err.__cause__

