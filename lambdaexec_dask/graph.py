"""Turning a dask graph into a plan: which remote calls to make and what each one reads.

The graph is converted to ``dask._task_spec`` nodes, culled to what the requested keys need and
its linear chains fused (``fuse_linear_task_spec``), so a chain of small tasks is one call.
Aliases are resolved here, on the client, and so cost no call; literal data (``DataNode``)
travels inside the calls that read it, or is stored once when it is large.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Mapping
from typing import Any

from dask._task_spec import Alias, DataNode, GraphNode, convert_legacy_graph, cull, fuse_linear_task_spec
from dask.core import flatten
from dask.order import order


@dataclasses.dataclass
class Plan:
    """What :func:`lambda_get` runs: one entry per remote call (a task or a fused chain)."""

    #: the node each call runs, by its key
    tasks: dict[Hashable, GraphNode]
    #: for each call, its input keys (as the node names them) and where each comes from:
    #: ``("task", key)`` for another call's output, ``("data", key)`` for a literal
    inputs: dict[Hashable, dict[Hashable, tuple[str, Hashable]]]
    #: calls that read each call's output
    dependents: dict[Hashable, set[Hashable]]
    #: literal values, by key
    data: dict[Hashable, Any]
    #: for each requested key, where its value comes from
    sources: dict[Hashable, tuple[str, Hashable]]
    #: lower runs first (dask's static ordering)
    priority: dict[Hashable, int]


def _resolver(dsk: Mapping[Hashable, GraphNode]):
    memo: dict[Hashable, tuple[str, Hashable]] = {}

    def resolve(key: Hashable) -> tuple[str, Hashable]:
        chain = []
        while key not in memo:
            node = dsk.get(key)
            if node is None:
                raise KeyError(f"the dask graph has no task {key!r}")
            if isinstance(node, Alias):
                chain.append(key)
                key = node.target
                if key in chain:
                    raise ValueError(f"the dask graph has a cycle of aliases through {key!r}")
                continue
            memo[key] = ("data", key) if isinstance(node, DataNode) else ("task", key)
        for k in chain:
            memo[k] = memo[key]
        return memo[key]

    return resolve


def plan(dsk: Any, keys: Any) -> Plan:
    """Prepare graph ``dsk`` (a mapping, or anything with ``__dask_graph__``) for ``keys``."""
    if not isinstance(dsk, Mapping):
        dsk = dsk.__dask_graph__()
    wanted = set(flatten(keys)) if isinstance(keys, list) else {keys}
    dsk = convert_legacy_graph(dict(dsk))
    dsk = cull(dsk, list(wanted))
    dsk = fuse_linear_task_spec(dsk, wanted)
    resolve = _resolver(dsk)

    tasks: dict[Hashable, GraphNode] = {}
    inputs: dict[Hashable, dict[Hashable, tuple[str, Hashable]]] = {}
    dependents: dict[Hashable, set[Hashable]] = {}
    data: dict[Hashable, Any] = {}
    for key, node in dsk.items():
        if isinstance(node, Alias):
            continue
        if isinstance(node, DataNode):
            data[key] = node.value
            continue
        tasks[key] = node
        inputs[key] = {dep: resolve(dep) for dep in node.dependencies}
        dependents.setdefault(key, set())
    for key, sources in inputs.items():
        for kind, source in sources.values():
            if kind == "task":
                dependents[source].add(key)
    sources = {key: resolve(key) for key in wanted}
    priority = order(dsk) if tasks else {}
    return Plan(tasks, inputs, dependents, data, sources, {k: priority[k] for k in tasks})
