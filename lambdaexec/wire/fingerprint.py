"""A function's fingerprint: a hash of the code it would run, for the result cache's keys.

The pickle of a function is not a good key: a function of an installed module (or of
lambdaexec) is pickled by reference, as its name, so an edited function would keep its key;
and a function shipped by value carries its file's text and line numbers, so adding a comment
(or ten more inputs to the script) would change the key of every function in that file.

:func:`fingerprint` hashes instead what decides what the function computes:

- its code: bytecode, constants (nested code objects recursively), names, argument layout,
  exception table; not its file name, line numbers or docstring position;
- its defaults, keyword defaults and closure (the values it closes over, by their pickle);
- the globals its code (and nested code) names: functions and classes of the user's own files,
  hashed the same way, recursively (a helper function edited changes the key of its callers);
  attributes named in the code of the user's modules it uses (``helpers.step``); other values
  by their pickle; installed modules, functions and classes by name and package version;
- ``functools.partial`` (function, arguments), bound methods (function, instance) and
  callable instances (class, pickle).

Not covered (docs/cache.md): what the function reads at run time (files, the environment,
clocks, random numbers, a database), globals reached only through other objects (an attribute
of an object rather than a module), and the code of installed packages beyond their version.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import sys
import types
from typing import Any

import cloudpickle

from lambdaexec.wire import serialize

_ATTRS = ("co_argcount", "co_posonlyargcount", "co_kwonlyargcount", "co_flags", "co_name")
_SKIP_CLASS_ATTRS = frozenset({"__dict__", "__weakref__", "__module__", "__doc__", "__qualname__", "_abc_impl",
                               "__abstractmethods__", "__parameters__", "__orig_bases__"})


class Unfingerprintable(Exception):
    """Part of the function cannot be hashed (its call then is not cached)."""


def fingerprint(fn: Any) -> str:
    """The hex SHA-256 of what ``fn`` computes (see the module docstring); raises
    :class:`Unfingerprintable` when part of it cannot be hashed."""
    serialize.register_user_modules()  # which modules are the user's (by value): hashed deeply
    h = _Hasher()
    h.feed(fn)
    return h.sha.hexdigest()


def _user_module(name: str | None) -> bool:
    if not name:
        return False
    if name == "__main__" or name.startswith("__mp_main__"):
        return True
    module = sys.modules.get(name)
    if serialize.goes_by_value(name):
        return True
    file = getattr(module, "__file__", None)
    if module is None or not file:
        return False
    top = name.partition(".")[0]
    return top not in serialize._RUNTIME_PACKAGES and \
        not os.path.realpath(file).startswith(serialize._installed_roots())


@functools.lru_cache(maxsize=512)
def _version(module: str | None) -> str:
    top = sys.modules.get((module or "").partition(".")[0])
    return str(getattr(top, "__version__", "")) if top is not None else ""


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


class _Hasher:
    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.seen: dict[int, int] = {}
        self.keep: list[Any] = []  # objects hashed: their ids stay theirs while we run

    def put(self, *parts: Any) -> None:
        for part in parts:
            data = part if isinstance(part, bytes) else repr(part).encode()
            self.sha.update(len(data).to_bytes(8, "little"))
            self.sha.update(data)

    def feed(self, obj: Any, names: set[str] | None = None) -> None:
        if id(obj) in self.seen:  # a cycle (a recursive function) or a value met again
            self.put("again", self.seen[id(obj)])
            return
        self.seen[id(obj)] = len(self.seen)
        self.keep.append(obj)
        if isinstance(obj, functools.partial):
            self.put("partial")
            self.feed(obj.func)
            self.value(obj.args)
            self.value(obj.keywords)
        elif isinstance(obj, types.FunctionType):
            self.function(obj)
        elif isinstance(obj, types.MethodType):
            self.put("method")
            self.feed(obj.__func__)
            self.value(obj.__self__)
        elif isinstance(obj, types.ModuleType):
            self.module(obj, names or set())
        elif isinstance(obj, type):
            self.cls(obj)
        elif isinstance(obj, (types.BuiltinFunctionType, types.BuiltinMethodType, types.MethodDescriptorType,
                              types.WrapperDescriptorType, types.MethodWrapperType)):
            module = getattr(obj, "__module__", None)
            self.put("builtin", module, getattr(obj, "__qualname__", repr(obj)), _version(module))
            if isinstance(obj, types.BuiltinMethodType) and not isinstance(getattr(obj, "__self__", None),
                                                                           types.ModuleType):
                self.value(obj.__self__)
        elif isinstance(obj, (staticmethod, classmethod)):
            self.put(type(obj).__name__)
            self.feed(obj.__func__)
        elif isinstance(obj, property):
            self.put("property")
            for part in (obj.fget, obj.fset, obj.fdel):
                self.feed(part)
        else:
            self.value(obj)

    def value(self, obj: Any) -> None:
        """A plain value: its pickle, and the code of its class if that is the user's."""
        cls = type(obj)
        if cls.__module__ != "builtins" and _user_module(cls.__module__):
            self.feed(cls)
        try:  # by reference where importable (cloudpickle's default): deterministic across processes
            data = pickle.dumps(obj, protocol=5) if type(obj) in serialize.PLAIN_ATOMS else cloudpickle.dumps(obj, 5)
        except Exception as err:
            raise Unfingerprintable(f"{cls.__qualname__}: {err}") from None
        self.put("value", hashlib.sha256(data).digest())

    def code(self, code: types.CodeType) -> None:
        self.put("code", code.co_code, code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars,
                 getattr(code, "co_qualname", ""), getattr(code, "co_exceptiontable", b""),
                 *(getattr(code, a) for a in _ATTRS))
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                self.code(const)
            elif isinstance(const, frozenset):
                self.put("frozenset", sorted(map(repr, const)))
            else:
                self.put(type(const).__name__, const)

    def function(self, fn: types.FunctionType) -> None:
        module = fn.__module__
        self.put("function", module, fn.__qualname__)
        self.code(fn.__code__)
        self.value(fn.__defaults__)
        self.value(fn.__kwdefaults__)
        for cell in fn.__closure__ or ():
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell
                self.put("empty cell")
                continue
            self.feed(contents)
        if not _user_module(module):  # installed code: its own code and version, not its globals
            self.put("installed", _version(module))
            return
        names = _code_names(fn.__code__)
        g = fn.__globals__
        for name in sorted(names):
            if name in g:
                self.put("global", name)
                self.feed(g[name], names)

    def module(self, module: types.ModuleType, names: set[str]) -> None:
        self.put("module", module.__name__)
        if not _user_module(module.__name__):
            self.put(_version(module.__name__))
            return
        for name in sorted(names):  # ``helpers.step``: the user's module's attributes the code names
            value = getattr(module, name, None)
            if isinstance(value, (types.FunctionType, type, types.ModuleType)) or \
                    (value is not None and name in module.__dict__):
                self.put("attribute", name)
                self.feed(value, names)

    def cls(self, cls: type) -> None:
        self.put("class", cls.__module__, cls.__qualname__)
        if not _user_module(cls.__module__):
            self.put(_version(cls.__module__))
            return
        for base in cls.__bases__:
            self.feed(base)
        for name in sorted(cls.__dict__):
            if name not in _SKIP_CLASS_ATTRS:
                self.put("attribute", name)
                self.feed(cls.__dict__[name])
