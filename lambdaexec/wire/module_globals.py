"""One globals namespace per shipped module in a process, as if the module had been imported.

cloudpickle gives every pickle its own copy of a by-value function's module globals, so in a
worker the ``initializer`` (one pickle) and the calls (others) each see a different namespace:
the standard ``global model; model = load()`` in the initializer was invisible to the calls.
Here every function unpickled by value from a module that this process cannot import (the user's
own files, and ``__main__``) gets that module's one shared namespace instead::

    initializer pickle --\\                                   /-- initializer.__globals__
    call pickle ---------+-> loads -> _namespaces["mylab"] -+--- fn.__globals__
    another job's pickle /                                   \\-- other_fn.__globals__

A value the pickle carries replaces the namespace's value (so the client's latest globals
arrive), except where code in this process rebound the name since it was last unpickled (an
initializer's or a call's assignment is kept, as a warm interpreter would keep it).
"""

from __future__ import annotations

import io
import pickle
import re
import sys
from typing import Any

from cloudpickle import cloudpickle as _cp

_MAKE_FUNCTION = re.compile(rb"_make_function")
_namespaces: dict[str, dict[str, Any]] = {}  # module name -> its one globals dict here
_unpickled: dict[str, dict[str, Any]] = {}  # module name -> the values last set by unpickling
_ABSENT = object()


def _shared(name: Any) -> bool:
    return isinstance(name, str) and (name == "__main__" or name not in sys.modules)


def _make_function(code: Any, globals_: dict, name: str, argdefs: Any, closure: Any) -> Any:
    module = globals_.get("__name__")
    if _shared(module):
        namespace = _namespaces.setdefault(module, globals_)
        for key, value in globals_.items():
            namespace.setdefault(key, value)
        globals_ = namespace
    return _cp._make_function(code, globals_, name, argdefs, closure)


def _function_setstate(obj: Any, state: Any) -> None:
    module = obj.__globals__.get("__name__")
    if _namespaces.get(module) is not obj.__globals__:
        return _cp._function_setstate(obj, state)
    state, slotstate = state
    slotstate = dict(slotstate)
    carried = slotstate.pop("__globals__")
    namespace, last = obj.__globals__, _unpickled.setdefault(module, {})
    for key, value in carried.items():
        here = namespace.get(key, _ABSENT)
        if here is _ABSENT or here is last.get(key, _ABSENT):  # not rebound by code here
            namespace[key] = last[key] = value
    slotstate["__globals__"] = {}
    return _cp._function_setstate(obj, (state, slotstate))


_OURS = {"_make_function": _make_function, "_function_setstate": _function_setstate}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "cloudpickle.cloudpickle" and name in _OURS:
            return _OURS[name]
        return super().find_class(module, name)


def loads(data: memoryview, buffers: list) -> Any:
    """``pickle.loads(data, buffers=buffers)``, giving by-value functions their module's one
    namespace in this process (see the module docstring)."""
    if not _MAKE_FUNCTION.search(data):  # no function travels by value: the plain fast path
        return pickle.loads(data, buffers=buffers)
    return _Unpickler(io.BytesIO(data), buffers=buffers).load()
