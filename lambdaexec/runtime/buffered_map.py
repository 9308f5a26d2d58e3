"""``Executor.map``'s result iterator, eager (the standard's default) or with Python 3.14's ``buffersize``.

Without ``buffersize``, ``map`` submits every call before it returns, as ``Executor.map`` has
always done. With ``buffersize=N`` (an int > 0), inputs are taken from the iterables lazily, as
CPython 3.14's ``Executor.map`` takes them: the first ``N`` calls are submitted when ``map``
returns; each time the iterator is advanced it submits one more (the next input) and then waits
for the oldest result. So a consumer that has taken ``k`` results has pulled at most ``N + k``
inputs, and at most ``N`` calls run or wait beyond the results it has seen: an endless or huge
iterable maps in bounded memory::

    map(fn, count(), buffersize=2)     inputs taken   futures held     yielded
      at return                        0 1            [f0 f1]          -
      next()                           2              [f1 f2]          r0
      next()                           3              [f2 f3]          r1

Closing the iterator (or dropping it: a generator is closed when collected) cancels every call it
submitted and has not yielded; so does a ``timeout`` that expires. The window holds only a weak
reference to the executor, as CPython's does, so an executor dropped while an iterator lives is
still collected (the iterator then yields what it submitted and stops refilling).

``map_futures`` uses the same window with futures instead of results: each ``next()`` submits
one more input and yields the oldest future, done or not.

This module knows nothing of how calls run: it is given the executor's ``submit`` and a
``submit_many`` that starts a list of calls at once (one upload for the first window).
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import time
import weakref
from typing import Any, Callable, Iterable, Iterator, Sequence


def check_buffersize(buffersize: Any) -> None:
    """Refuse a ``buffersize`` that is not None or an int > 0, with CPython 3.14's messages."""
    if buffersize is not None and not isinstance(buffersize, int):
        raise TypeError("buffersize must be an integer or None")
    if buffersize is not None and buffersize < 1:
        raise ValueError("buffersize must be None or > 0")


def batched(iterable: Iterable, n: int) -> Iterator[tuple]:
    """``itertools.batched`` (Python 3.12+) for every Python: tuples of ``n`` items, the last shorter."""
    it = iter(iterable)
    while chunk := tuple(itertools.islice(it, n)):
        yield chunk


class Window:
    """The calls a buffered map has submitted and not yet yielded, oldest first, and how to
    submit the next one. ``fs`` is the only reference the window keeps to their futures."""

    def __init__(self, executor: Any, fn: Callable, args: Iterator[tuple], buffersize: int | None,
                 submit_many: Callable[[Callable, Sequence[tuple]], list]):
        self.fn, self.args, self.buffersize = fn, args, buffersize
        first = list(itertools.islice(args, buffersize)) if buffersize else list(args)
        self.fs: collections.deque = collections.deque(submit_many(fn, first))
        self._executor = weakref.ref(executor)

    def refill(self) -> None:
        """Submit the next input's call, if there is one and the executor is still alive (3.14's
        rule: one call submitted per item yielded); nothing without ``buffersize``."""
        if not self.buffersize:
            return
        executor = self._executor()
        if executor is None:
            return
        args = next(self.args, None)
        if args is not None:
            self.fs.append(executor.submit(self.fn, *args))

    def cancel(self) -> None:
        """Cancel every call submitted and not yielded (closed, dropped, timed out)."""
        for f in self.fs:
            f.cancel()


def futures_in_order(window: Window) -> Iterator[concurrent.futures.Future]:
    """Yield the window's futures in input order, refilling it one call per future yielded."""
    try:
        while window.fs:
            window.refill()
            yield window.fs.popleft()
    finally:
        window.cancel()


def results_in_order(window: Window, end_time: float | None) -> Iterator:
    """Yield the window's results in input order, refilling it one call per result (as CPython
    3.14's ``result_iterator``); a timeout or an early close cancels what is left. Like the
    standard library's, it keeps no reference to a result it has yielded."""
    try:
        while window.fs:
            window.refill()
            # no local holds the future or its value while suspended at the yield
            if end_time is None:
                yield result_or_cancel(window.fs.popleft(), None)
            else:
                yield result_or_cancel(window.fs.popleft(), end_time - time.monotonic())
    finally:
        window.cancel()


class Lazy:
    """The iterator a buffered ``map`` or ``map_futures`` returns: ``gen``'s items, and closing
    or dropping it cancels the window's calls not yielded even before the first item (a
    generator not yet started runs no ``finally`` when closed). Eager maps return the plain
    generator, as the standard does: dropping one unread leaves its calls running."""

    __slots__ = ("_gen", "_window")

    def __init__(self, gen: Iterator, window: Window):
        self._gen, self._window = gen, window

    def __iter__(self) -> Lazy:
        return self

    def __next__(self) -> Any:
        return next(self._gen)

    def close(self) -> None:
        """Stop: cancel every call submitted and not yet yielded."""
        self._gen.close()
        self._window.cancel()

    def __del__(self) -> None:
        self.close()


def result_or_cancel(future: concurrent.futures.Future, timeout: float | None) -> Any:
    """``future.result(timeout)``; cancel it if that raises (a timeout, or the caller interrupted)."""
    try:
        try:
            return future.result(timeout)
        finally:
            future.cancel()
    finally:
        del future  # the frame of a raised exception must not hold the future (and its result)
