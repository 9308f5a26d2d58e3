"""The future type lambdaexec returns: a real ``concurrent.futures.Future`` with call details."""

from __future__ import annotations

import concurrent.futures
from typing import Any


class LambdaFuture(concurrent.futures.Future):
    """A ``concurrent.futures.Future`` that also tells where and how its call ran.

    Attributes (filled in as the call progresses):

    - ``call_id``: ``"<job>/<call>"``, the call's name in storage
    - ``stats``: timestamps (``submitted``, ``invoked``, ``received``, ``func_start``,
      ``func_end``, ``result_written``, ``seen``; seconds since the epoch), ``worker``,
      ``bytes_in``, ``bytes_out``, ``attempt``
    - ``stdout``, ``stderr``: what the call printed (Python-level writes, up to 1 MiB each)
    - ``attempts``: how many times the call was started
    - ``remote_traceback``: the worker-side traceback text when the call raised
    """

    # class-level defaults: a map of 100,000 calls holds 100,000 of these, so no per-instance copies
    call_id = ""
    stdout = ""
    stderr = ""
    attempts = 0
    remote_traceback: str | None = None

    def __init__(self) -> None:
        super().__init__()
        self.stats: dict[str, Any] = {}
