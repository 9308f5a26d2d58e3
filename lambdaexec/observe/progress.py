"""Progress bars (tqdm): one per executor for everything it runs, and :func:`progress` for a
list of futures.

The executor's bar is a watcher (see :mod:`~lambdaexec.runtime.watcher`): its total grows as
jobs are submitted, it advances as calls finish, and its postfix counts calls running and
failed. When every submitted call has finished the bar closes; the next submit opens a new one,
unless it was made before the bar closed (a loop of submits whose first call finished before the
rest were uploaded): then the new bar carries on the counts of the last. So ``map``,
``map_futures``, ``map_reduce``, ``wait`` and ``get_all_results`` all show progress with no code
of their own. tqdm is imported only when a bar is shown.
"""

from __future__ import annotations

import concurrent.futures
import sys
import threading
import time
from typing import Any, Iterable, Iterator

from lambdaexec.errors import ConfigError
from lambdaexec.runtime import outcome
from lambdaexec.runtime.watcher import Watcher

_EXTRA = "pip install 'lambdaexec[progress]'"


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (where tqdm shows a notebook widget)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def wanted(setting: str) -> bool:
    """Whether a ``progress`` setting (``auto``/``true``/``false``) shows a bar here and now.
    ``auto`` shows one when stderr is a terminal or in Jupyter, and only if tqdm is installed."""
    if setting == "false":
        return False
    if setting == "true":
        _tqdm()  # a clear error now, not at the first submit
        return True
    isatty = getattr(sys.stderr, "isatty", None)
    if not ((isatty is not None and isatty()) or in_notebook()):
        return False
    try:
        _tqdm()
    except ConfigError:
        return False
    return True


def _tqdm() -> Any:
    """tqdm's class for this environment (the notebook widget in Jupyter)."""
    try:
        if in_notebook():
            from tqdm.auto import tqdm
        else:
            from tqdm import tqdm
    except ImportError:
        raise ConfigError(f"progress bars need tqdm: {_EXTRA} (or set progress=false)") from None
    return tqdm


class ProgressBar(Watcher):
    """The executor's bar: ``lambdaexec: 40%|████  | 400/1000 [running=8, failed=1]``."""

    def __init__(self, **tqdm_options: Any):
        self._options = {"desc": "lambdaexec", "unit": "call", "dynamic_ncols": True, **tqdm_options}
        self._lock = threading.Lock()
        self._bar: Any = None
        self._total = self._done = self._failed = self._running = 0
        self._shown = 0.0
        self._closed_at = 0.0  # time.time() when the last bar closed

    def added(self, job: Any) -> None:
        with self._lock:
            if self._bar is None:
                submitted = min((f._submitted for f in job.futures if f is not None), default=0.0)
                if not submitted or submitted > self._closed_at:  # a new burst: a bar of its own
                    self._total = self._done = self._failed = self._running = 0
                self._total += len(job.futures)
                tqdm = _tqdm()
                self._bar = tqdm(total=self._total, initial=self._done, **self._options)
                # a call's echoed output clears the bar, then the bar is drawn below it
                outcome.set_echo_guard(lambda stream: tqdm.external_write_mode(file=stream))
                return
            self._total += len(job.futures)
            self._bar.total = self._total
            now = time.monotonic()
            if now - self._shown >= 0.1:  # a burst of one-call jobs (joblib, dask) draws 10 times a second
                self._shown = now
                self._bar.refresh()

    def invoking(self, job: Any, calls: list[int], attempt: int) -> None:
        if attempt == 0:
            with self._lock:
                self._running += len(calls)
        return None

    def finished(self, job: Any, call: int, future: Any, exc: BaseException | None) -> None:
        with self._lock:
            if self._bar is None:
                return
            self._done += 1
            self._running -= "invoked" in future.stats
            self._failed += exc is not None
            last = self._done == self._total
            now = time.monotonic()
            if not last and now - self._shown < 0.1:  # counting is cheap; drawing is not
                return
            self._shown = now
            self._bar.set_postfix_str(f"running={self._running}, failed={self._failed}", refresh=False)
            self._bar.update(self._done - self._bar.n)
            if last:
                self._bar.close()
                self._bar = None
                self._closed_at = time.time()

    def closed(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
        outcome.set_echo_guard(None)


def progress(futures: Iterable[concurrent.futures.Future], timeout: float | None = None,
             **tqdm_options: Any) -> Iterator[concurrent.futures.Future]:
    """Yield ``futures`` as they complete (as ``concurrent.futures.as_completed``), with a bar.

    The bar counts finished and failed calls (tqdm's notebook widget in Jupyter);
    ``tqdm_options`` go to tqdm (``desc``, ``file``, ``disable``, ...). Needs tqdm
    (``pip install 'lambdaexec[progress]'``).

    >>> for f in lambdaexec.progress(ex.map_futures(work, items)):  # doctest: +SKIP
    ...     print(f.result())
    """
    futures = list(futures)
    bar = _tqdm()(total=len(futures), **{"desc": "lambdaexec", "unit": "call", **tqdm_options})
    failed = 0
    try:
        for f in concurrent.futures.as_completed(futures, timeout):
            if f.cancelled() or f.exception() is not None:
                failed += 1
                bar.set_postfix_str(f"failed={failed}", refresh=False)
            bar.update(1)
            yield f
    finally:
        bar.close()
