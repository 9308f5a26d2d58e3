"""Turning a dask graph into a plan: which remote calls to make and what each one reads.

The graph (already converted to ``dask._task_spec`` nodes and limited to what the requested keys
need) has its linear chains fused (``fuse_linear_task_spec``, unless fusing is off), so a chain
of small tasks is one call; a fused call keeps the key of the chain's last task, so every call
is named by a key of the graph. Aliases are resolved here, on the client, and so cost no call;
literal data (``DataNode``) travels inside the calls that read it, or is stored once when it is
large.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Mapping
from typing import Any

from dask._task_spec import Alias, DataNode, GraphNode, fuse_linear_task_spec


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
    #: for each call, the graph's keys it computes: the chain it fused (first to last), then the
    #: aliases that resolve to its output
    covers: dict[Hashable, list[Hashable]]
    #: aliases that resolve to literal data: computed as soon as the graph starts
    data_aliases: list[Hashable]


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


def _fuse(dsk: dict[Hashable, GraphNode], wanted: set[Hashable]) -> dict[Hashable, GraphNode]:
    """``fuse_linear_task_spec``, with each fused chain named by its last task's key again
    (dask names it anew and aliases the old key to it)."""
    fused = fuse_linear_task_spec(dsk, wanted)
    for key, node in list(fused.items()):
        if isinstance(node, Alias) and node.target not in dsk:
            fused[key] = fused.pop(node.target).substitute({}, key=key)
    return fused


def _chains(dsk: Mapping[Hashable, GraphNode], fused: Mapping[Hashable, GraphNode]) -> dict[Hashable, list]:
    """For each call of ``fused``, the keys of ``dsk`` it computes (first to last)."""
    swallowed = set(dsk) - set(fused)
    chains = {}
    for key, node in fused.items():
        if isinstance(node, (Alias, DataNode)):
            continue
        chain, stack = [key], list(dsk[key].dependencies)
        while stack:
            dep = stack.pop()
            if dep in swallowed and not isinstance(dsk[dep], DataNode):
                chain.append(dep)
                stack.extend(dsk[dep].dependencies)
        chain.reverse()
        chains[key] = chain
    return chains


def plan(dsk: Mapping[Hashable, GraphNode], wanted: set[Hashable], priority: Mapping[Hashable, int],
         fuse: bool = True) -> Plan:
    """Prepare ``dsk`` (``_task_spec`` nodes: exactly what ``wanted`` needs) for running.

    ``priority`` is dask's static order of the graph's keys; ``fuse=False`` runs every task as
    its own call.
    """
    dsk = dict(dsk)
    fused = _fuse(dsk, wanted) if fuse else dsk
    resolve = _resolver(fused)
    covers = _chains(dsk, fused)

    tasks: dict[Hashable, GraphNode] = {}
    inputs: dict[Hashable, dict[Hashable, tuple[str, Hashable]]] = {}
    dependents: dict[Hashable, set[Hashable]] = {}
    data: dict[Hashable, Any] = {}
    data_aliases: list[Hashable] = []
    for key, node in fused.items():
        if isinstance(node, Alias):
            kind, source = resolve(key)
            (covers[source] if kind == "task" else data_aliases).append(key)
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
    return Plan(tasks, inputs, dependents, data, sources, {k: priority.get(k, 0) for k in tasks}, covers,
                data_aliases)
