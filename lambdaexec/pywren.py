"""PyWren's names where users paste old code: ``wait`` with ``ALL_COMPLETED``,
``ANY_COMPLETED`` and ``ALWAYS``, and ``get_logs``. (``call_async`` is a method of the
executor; ``succeeded``/``errored`` are methods of the futures; ``default_executor`` and
``get_all_results`` live in :mod:`lambdaexec`.)

::

    import lambdaexec as pywren

    pwex = pywren.default_executor()
    futures = pwex.map_futures(lambda x: x + 1, range(10))   # PyWren's map returned futures
    done, not_done = pywren.wait(futures, return_when=pywren.ANY_COMPLETED)
    print(pywren.get_all_results(futures))
"""

from __future__ import annotations

import concurrent.futures
from typing import Iterable

from lambdaexec.future import LambdaFuture

#: wait until every future is done (the default)
ALL_COMPLETED = concurrent.futures.ALL_COMPLETED
#: wait until at least one future is done
ANY_COMPLETED = concurrent.futures.FIRST_COMPLETED
#: do not wait: split the futures into done and not done as they are now
ALWAYS = "ALWAYS"

_MODES = (ALL_COMPLETED, ANY_COMPLETED, ALWAYS, concurrent.futures.FIRST_EXCEPTION)


def wait(futures: Iterable[concurrent.futures.Future], return_when: str = ALL_COMPLETED,
         timeout: float | None = None, *, THREADPOOL_SIZE: int | None = None,  # noqa: N803
         WAIT_DUR_SEC: float | None = None) -> concurrent.futures._base.DoneAndNotDoneFutures:  # noqa: N803
    """Split ``futures`` into ``(done, not_done)`` lists, in the order given, as PyWren's
    ``wait`` does: after all are done (``ALL_COMPLETED``), at least one (``ANY_COMPLETED``),
    or at once (``ALWAYS``); ``FIRST_EXCEPTION`` works as in ``concurrent.futures``.
    ``timeout`` (seconds) bounds the wait; what is done by then is returned.

    ``THREADPOOL_SIZE`` and ``WAIT_DUR_SEC`` (PyWren's polling knobs) are accepted so that old
    code runs, and ignored: futures here are completed as results arrive, not polled.

    >>> import lambdaexec
    >>> with lambdaexec.LambdaExecutor() as ex:  # doctest: +SKIP
    ...     fs = ex.map_futures(abs, [-1, -2])
    ...     done, not_done = lambdaexec.wait(fs)
    ...     [f.result() for f in done], not_done
    ([1, 2], [])
    """
    futures = list(futures)
    if return_when not in _MODES:
        raise ValueError(f"return_when={return_when!r}: use lambdaexec.ALL_COMPLETED, ANY_COMPLETED or ALWAYS")
    if return_when != ALWAYS and futures:
        concurrent.futures.wait(futures, timeout=timeout, return_when=return_when)
    done = [f for f in futures if f.done()]
    return concurrent.futures._base.DoneAndNotDoneFutures(done, [f for f in futures if not f.done()])


def get_logs(future: concurrent.futures.Future, timeout: float | None = None) -> str:
    """What the call printed: its stdout, then its stderr (PyWren read these from CloudWatch).

    Waits for the call to finish (at most ``timeout`` seconds, then
    ``concurrent.futures.TimeoutError``); a call that raised still has its logs.
    """
    if not isinstance(future, LambdaFuture):
        raise TypeError(f"get_logs needs a future lambdaexec returned, not {type(future).__name__}")
    concurrent.futures.wait([future], timeout=timeout)
    if not future.done():
        raise concurrent.futures.TimeoutError(f"call {future.call_id} not finished after {timeout} s")
    return future.stdout + future.stderr
