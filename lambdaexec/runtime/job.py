"""A job: the calls of one function uploaded together, as the monitor tracks them.

The engine makes one per batch of submitted calls; the monitor keeps each call's state
(``PENDING`` until invoked, ``RUNNING``, ``FINISHED``) and its lost-attempt count here; the
watchers read it (:mod:`lambdaexec.runtime.watcher`).
"""

from __future__ import annotations

import dataclasses

from lambdaexec.future import LambdaFuture

PENDING, RUNNING, FINISHED = 0, 1, 2
#: the first part number of inputs uploaded again after the store lost them (runtime/recovery.py)
RESTORED = 1 << 30


@dataclasses.dataclass
class Job:
    """Calls of one function uploaded together: their inputs in one args object or a few
    (parts, :func:`lambdaexec.runtime.engine.parts`), one future per call.

    A call's future is dropped (``None``) once it is finished, so the job never keeps a result
    alive after its caller has let go of it (a streaming ``map`` holds one result at a time)."""

    prefix: str
    func_key: str
    #: the key of each part's args object, as the parts are stored
    args_keys: list[str]
    #: per call, ``(part, start, end)``: its inputs' bytes in that part's object
    ranges: list[tuple[int, int, int]]
    futures: list[LambdaFuture | None]
    init_key: str = ""
    #: the function's ``module.qualname`` (for the job record)
    name: str = ""
    #: per call, the SHA-256 (hex) of its slice of the args object (storage/signed.py)
    digests: list[str] = dataclasses.field(default_factory=list)
    #: per call, its result cache key (``cache=True``: :mod:`lambdaexec.runtime.cache`), else None
    cache_keys: list[str] | None = None
    state: list[int] = dataclasses.field(default_factory=list)
    lost: list[int] = dataclasses.field(default_factory=list)
    remaining: int = 0
    #: keys of the objects holding inputs uploaded again (parts ``RESTORED``, ``RESTORED + 1``, ...)
    restored_keys: list[str] = dataclasses.field(default_factory=list)
    #: per call whose inputs were uploaded again, how many times
    restored: dict[int, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.futures)
        self.state, self.lost, self.remaining = [PENDING] * n, [0] * n, n

    def args_key(self, part: int) -> str:
        """The key of the object holding the inputs of ``part`` (a part of the upload, or
        inputs uploaded again: :data:`RESTORED` and up)."""
        return self.restored_keys[part - RESTORED] if part >= RESTORED else self.args_keys[part]
