"""dask.local's scheduler state for one graph, kept as ``lambda_get`` runs it, for dask's callbacks.

The state starts as ``dask.local.start_state_from_dask`` makes it (the same dict, with its keys
``cache``, ``dependencies``, ``dependents``, ``waiting``, ``waiting_data``, ``ready``,
``running``, ``finished`` and ``released``; a malformed graph raises its ``ValueError("Missing
dependency ...")``), and changes as ``dask.local.finish_task`` changes it, by graph key. Two
differences follow from where the data lives: a call that runs a fused chain moves all of the
chain's keys at once, and ``cache`` holds the literals and the requested keys' values, never an
intermediate (those stay in storage). Released keys leave ``cache`` as they do in dask.local.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any

from dask.local import start_state_from_dask


class LocalState:
    """The ``state`` dict dask's callbacks receive, and the transitions ``lambda_get`` makes."""

    def __init__(self, dsk: Mapping, cache: dict, wanted: set[Hashable], sortkey: Callable[[Hashable], Any]):
        #: the dict itself, as ``dask.local.get_async`` builds it
        self.state: dict[str, Any]
        if "keys" in inspect.signature(start_state_from_dask).parameters:
            self.state = start_state_from_dask(dsk, cache=cache, keys=wanted, sortkey=sortkey)
        else:  # older dask: the whole graph, unchecked
            self.state = start_state_from_dask(_needed(dsk, wanted, cache), cache=cache, sortkey=sortkey)
        self.wanted, self.sortkey = wanted, sortkey

    def submitted(self, keys: Iterable[Hashable]) -> None:
        """The graph keys of one call (a task or a fused chain) are now running."""
        s = self.state
        keys = [k for k in keys if k not in s["running"]]
        s["running"].update(keys)
        for key in keys:
            s["waiting"].pop(key, None)
        gone = set(keys)
        if gone & set(s["ready"]):
            s["ready"][:] = [k for k in s["ready"] if k not in gone]

    def finished(self, keys: Iterable[Hashable], values: Mapping[Hashable, Any]) -> None:
        """The graph keys of one call (and the aliases of its output) are computed; ``values``
        holds those of them whose value came back to the client."""
        s = self.state
        keys = list(keys)
        for key in keys:
            if key in values:
                s["cache"][key] = values[key]
            s["waiting"].pop(key, None)
            s["running"].discard(key)
            s["finished"].add(key)
        if set(keys) & set(s["ready"]):
            s["ready"][:] = [k for k in s["ready"] if k not in s["finished"]]
        for key in keys:
            for dep in sorted(s["dependents"].get(key, ()), key=self.sortkey, reverse=True):
                waiting = s["waiting"].get(dep)
                if waiting is None:
                    continue
                waiting.discard(key)
                if not waiting:
                    del s["waiting"][dep]
                    if dep not in s["running"] and dep not in s["finished"]:
                        s["ready"].append(dep)
            for dep in s["dependencies"].get(key, ()):
                readers = s["waiting_data"].get(dep)
                if readers is not None:
                    readers.discard(key)
                    if not readers and dep not in self.wanted:
                        self._release(dep)
                elif dep not in self.wanted and dep not in s["released"]:
                    self._release(dep)

    def _release(self, key: Hashable) -> None:
        s = self.state
        s["waiting_data"].pop(key, None)
        s["released"].add(key)
        s["cache"].pop(key, None)


def _needed(dsk: Mapping, wanted: set[Hashable], cache: Mapping) -> dict:
    """What ``wanted`` needs of ``dsk``, with newer dask's check for a key read but nowhere defined
    (older ``start_state_from_dask`` takes the whole graph and has no such check)."""
    needed, stack, dependents = {}, list(wanted), {}
    while stack:
        key = stack.pop()
        if key in needed:
            continue
        node = dsk.get(key)
        if node is None:
            if dependents.get(key) and not cache.get(key):
                raise ValueError(f"Missing dependency {key} for dependents {dependents[key]}")
            continue
        needed[key] = node
        for dep in node.dependencies:
            dependents.setdefault(dep, set()).add(key)
            stack.append(dep)
    return needed
