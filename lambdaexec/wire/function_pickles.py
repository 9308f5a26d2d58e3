"""A function's pickle, reused while it provably cannot differ from a new one.

A ``submit`` -> ``result`` loop submits the same function again and again; cloudpickle takes
~50-70 us to pickle a function of the user's own files by value, a tenth of a warm round trip.
:class:`FunctionPickles` keeps the last function's pickle and hands it back only while
everything that pickle was made of is still the very same object, and only for functions whose
pickle is made of objects that cannot change in place (see the class). Nothing here is a
library's job: cloudpickle has no notion of a pickle staying valid.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from lambdaexec.wire.serialize import PLAIN_ATOMS, goes_by_value

_ABSENT = object()


class FunctionPickles:
    """The pickle of the last function given, kept while it provably cannot differ from a new
    pickle of that function: a ``submit`` -> ``result`` loop then pickles its function once,
    not per call (cloudpickle takes ~50-70 us for a function of the user's own files).

    It is kept only for a plain function without closure, ``__dict__`` or keyword defaults,
    whose defaults are constants and whose annotations and global names (its code's and nested
    code's) are bound to constants, to modules, or to functions and classes that pickle by reference
    (installed, importable by name), so that its pickle is a function of objects that cannot
    change in place; and it is reused only while each of those objects, and its code,
    defaults, names and annotations, is still the very same object. A function that reads a
    dict, a list or another function of the user's files is pickled at every submit.
    """

    def __init__(self) -> None:
        self._last: tuple[Any, tuple, list[Any], bytes] | None = None  # fn, global names, state, pickle

    def get(self, fn: Any) -> bytes | None:
        """The kept pickle of ``fn``, if it is kept and nothing it depends on changed."""
        last = self._last
        if last is None or last[0] is not fn:
            return None
        state = _state_of(fn, last[1])
        if len(state) != len(last[2]) or any(a is not b for a, b in zip(state, last[2])):
            return None
        return last[3]

    def put(self, fn: Any, blob: bytes) -> None:
        """Keep ``blob``, the pickle of ``fn`` just made, if ``fn`` qualifies (see the class)."""
        names = _global_names(fn)
        if names is None:
            self._last = None
            return
        state = _state_of(fn, names)
        # the objects its annotations and global names are bound to
        bound = state[len(state) - len(fn.__annotations__) - len(names):]
        stable = all(_constant(v) or _by_reference(v) for v in bound)
        self._last = (fn, names, state, blob) if stable else None


def _global_names(fn: Any) -> tuple[str, ...] | None:
    """The global names ``fn``'s code (and the code nested in it) reads; None if ``fn`` is
    not a function whose pickle depends only on them and its own attributes."""
    if (type(fn) is not types.FunctionType or fn.__closure__ is not None or fn.__dict__
            or fn.__kwdefaults__ is not None or not _constant(fn.__defaults__)):
        return None
    names: list[str] = []
    codes = [fn.__code__]
    while codes:
        code = codes.pop()
        names.extend(code.co_names)
        codes.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return tuple(dict.fromkeys(names))


def _state_of(fn: Any, names: tuple[str, ...]) -> list[Any]:
    """What ``fn``'s pickle is made of, as objects to compare by identity."""
    g, annotations = fn.__globals__, fn.__annotations__
    return [fn.__code__, fn.__defaults__, fn.__name__, fn.__qualname__, fn.__module__, fn.__doc__,
            *annotations, *annotations.values(), *(g.get(n, _ABSENT) for n in names)]


def _constant(value: Any) -> bool:
    """Whether ``value`` cannot change in place: a constant, or a tuple of them."""
    if type(value) is tuple:
        return all(_constant(v) for v in value)
    return value is _ABSENT or type(value) in PLAIN_ATOMS


def _by_reference(value: Any) -> bool:
    """Whether ``value`` pickles as its importable name: a module, function or class of an
    installed package (not of ``__main__`` or the user's files, which go by value)."""
    if isinstance(value, types.ModuleType):
        return value.__name__ != "__main__" and not goes_by_value(value.__name__)
    if not isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType)):
        return False
    module = getattr(value, "__module__", None) or ""
    if module == "builtins":
        return True
    return (module != "__main__" and not goes_by_value(module)
            and "<locals>" not in getattr(value, "__qualname__", "<locals>")
            and getattr(sys.modules.get(module), "__file__", None) is not None)
