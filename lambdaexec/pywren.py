"""PyWren's API, where PyWren users look for it::

    import lambdaexec.pywren as pywren

    pwex = pywren.default_executor()
    futures = pwex.map(lambda x: x + 1, range(10))      # PyWren's map: a list of futures
    print(pywren.get_all_results(futures))               # [1, 2, ..., 10]
    done, not_done = pywren.wait(futures, return_when=pywren.ANY_COMPLETED)

:func:`default_executor`, :func:`local_executor` and :func:`lambda_executor` return a
:class:`PyWrenExecutor`: a :class:`~lambdaexec.LambdaExecutor` whose ``map`` returns the
futures (as PyWren's did), with ``call_async``, ``reduce`` and ``get_logs``. Everything else
(``submit``, ``shutdown``, settings) is the ``LambdaExecutor``'s. ``import lambdaexec`` stays
``concurrent.futures``: its ``LambdaExecutor.map`` yields results, and
``lambdaexec.default_executor()`` is a plain ``LambdaExecutor``.

The names ``wait``, ``ALL_COMPLETED``, ``ANY_COMPLETED``, ``ALWAYS``, ``get_logs`` and
``get_all_results`` are also in :mod:`lambdaexec` itself.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
from typing import Any, Callable, Iterable, Mapping

from lambdaexec.errors import ConfigError
from lambdaexec.executor import LambdaExecutor
from lambdaexec.future import LambdaFuture

__all__ = ["ALL_COMPLETED", "ALWAYS", "ANY_COMPLETED", "PyWrenExecutor", "default_executor", "get_all_results",
           "get_logs", "lambda_executor", "local_executor", "wait"]

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

    >>> import lambdaexec.pywren as pywren
    >>> pwex = pywren.default_executor()  # doctest: +SKIP
    >>> done, not_done = pywren.wait(pwex.map(abs, [-1, -2]))  # doctest: +SKIP
    >>> [f.result() for f in done], not_done  # doctest: +SKIP
    ([1, 2], [])
    """
    futures = list(futures)
    if return_when not in _MODES:
        raise ValueError(f"return_when={return_when!r}: use lambdaexec.ALL_COMPLETED, ANY_COMPLETED or ALWAYS")
    if return_when != ALWAYS and futures:
        concurrent.futures.wait(futures, timeout=timeout, return_when=return_when)
    done = [f for f in futures if f.done()]
    return concurrent.futures._base.DoneAndNotDoneFutures(done, [f for f in futures if not f.done()])


def get_all_results(futures: Iterable[concurrent.futures.Future], timeout: float | None = None) -> list:
    """Wait for ``futures`` and return their results in the order given (PyWren's helper).

    The first call that raised re-raises here; ``timeout`` bounds the whole wait. A value that
    is not a future (say, a result of ``concurrent.futures``' ``map``) is refused naming
    :meth:`PyWrenExecutor.map`, which returns futures.
    """
    futures = list(futures)
    for f in futures:
        if not isinstance(f, concurrent.futures.Future):
            raise TypeError(f"get_all_results needs futures, got {type(f).__name__} {f!r}: lambdaexec's "
                            "LambdaExecutor.map returns results (concurrent.futures); for PyWren's map, which "
                            "returns futures, use `import lambdaexec.pywren as pywren; pywren.default_executor()` "
                            "or ex.map_futures(...)")
    done, not_done = concurrent.futures.wait(futures, timeout=timeout)
    if not_done:
        raise concurrent.futures.TimeoutError(f"{len(not_done)} of {len(futures)} calls not done after {timeout} s")
    return [f.result() for f in futures]


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


def _with_env(fn: Callable, env: dict[str, str], data: Any) -> Any:
    """Run ``fn(data)`` with ``env`` added to the worker's environment (PyWren's ``extra_env``),
    then put the environment back as it was."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return fn(data)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_with_env.lambdaexec_wraps = 0  # type: ignore[attr-defined]  # the job record names ``fn``, not this


class PyWrenExecutor(LambdaExecutor):
    """A :class:`~lambdaexec.LambdaExecutor` with PyWren's executor methods: ``map`` returns a
    list of futures (one per item, each call ``func(item)``), ``call_async`` one future.

    PyWren's tuning arguments of ``map`` (``invoke_pool_threads``, ``data_all_as_one``,
    ``use_cached_runtime``, ``overwrite_invoke_args``, ``exclude_modules``,
    ``module_dependencies_key``) are accepted and ignored; ``extra_env`` sets environment
    variables for the calls; ``extra_meta`` is refused (it wrote into PyWren's own invocation
    record, which lambdaexec does not have).
    """

    def map(self, func: Callable, iterdata: Iterable, extra_env: Mapping[str, str] | None = None,  # type: ignore[override]
            extra_meta: Mapping[str, Any] | None = None, invoke_pool_threads: int | None = None,
            data_all_as_one: bool | None = None, use_cached_runtime: bool | None = None,
            overwrite_invoke_args: Any = None, exclude_modules: Any = None,
            module_dependencies_key: Any = None) -> list[LambdaFuture]:
        """``func`` over each item of ``iterdata``; return the futures at once, in order (PyWren's
        ``map``; ``LambdaExecutor.map_futures`` with one iterable). PyWren's tuning arguments
        are accepted and ignored."""
        return self.map_futures(self._wrapped(func, extra_env, extra_meta), iterdata)

    def call_async(self, func: Callable, data: Any, extra_env: Mapping[str, str] | None = None,
                   extra_meta: Mapping[str, Any] | None = None) -> LambdaFuture:
        """``func(data)``'s future (PyWren's ``call_async``)."""
        return self.submit(self._wrapped(func, extra_env, extra_meta), data)

    def get_logs(self, future: concurrent.futures.Future, verbose: bool = True) -> str:
        """What the call printed (PyWren's ``executor.get_logs``); printed too with ``verbose``."""
        text = get_logs(future)
        if verbose:
            print(text, end="" if text.endswith("\n") or not text else "\n")
        return text

    @staticmethod
    def _wrapped(func: Callable, extra_env: Mapping[str, str] | None, extra_meta: Mapping[str, Any] | None) -> Callable:
        if extra_meta:
            raise ConfigError("extra_meta is PyWren's and has no meaning here: leave it out (a call's details "
                              "are on its future: future.stats, future.call_id)")
        if not extra_env:
            return func
        return functools.partial(_with_env, func, {str(k): str(v) for k, v in extra_env.items()})


_default: PyWrenExecutor | None = None


def _settings(config: Mapping[str, Any] | None, job_max_runtime: float | None, settings: dict[str, Any]
              ) -> dict[str, Any]:
    """lambdaexec settings from PyWren's ``config`` (a dict of lambdaexec settings, or PyWren's
    own layout: ``account.aws_region``, ``s3.bucket``, ``s3.pywren_prefix``,
    ``lambda.function_name``, ``lambda.memory``) and ``job_max_runtime`` (the ``timeout``)."""
    out: dict[str, Any] = {}
    for key, value in (config or {}).items():
        if isinstance(value, Mapping):
            known = {("account", "aws_region"): "region", ("s3", "bucket"): "bucket",
                     ("s3", "pywren_prefix"): "prefix", ("lambda", "function_name"): "function_name",
                     ("lambda", "memory"): "memory"}
            for inner, v in value.items():
                if (key, inner) in known:
                    out[known[key, inner]] = v
                    if key == "s3":
                        out.setdefault("storage", "s3")
        else:
            out[key] = value
    if job_max_runtime is not None:
        out["timeout"] = job_max_runtime
    return {**out, **settings}


def default_executor(config: Mapping[str, Any] | None = None, job_max_runtime: float | None = None,
                     **settings: Any) -> PyWrenExecutor:
    """The executor the configuration describes (``LAMBDAEXEC_*``, the config file), with
    PyWren's ``map``. Without arguments it is made once and shared; with any, a new one."""
    global _default
    if config or job_max_runtime is not None or settings:
        return PyWrenExecutor(**_settings(config, job_max_runtime, settings))
    if _default is None or _default._shutdown:
        _default = PyWrenExecutor()
    return _default


def local_executor(config: Mapping[str, Any] | None = None, job_max_runtime: float | None = None,
                   **settings: Any) -> PyWrenExecutor:
    """A :class:`PyWrenExecutor` on local worker processes (PyWren's ``local_executor``)."""
    return PyWrenExecutor(**{**_settings(config, job_max_runtime, settings), "backend": "local"})


def lambda_executor(config: Mapping[str, Any] | None = None, job_max_runtime: float | None = None,
                    **settings: Any) -> PyWrenExecutor:
    """A :class:`PyWrenExecutor` on AWS Lambda (PyWren's ``lambda_executor``): needs S3
    storage and a deployed function (``lambdaexec deploy``)."""
    return PyWrenExecutor(**{**_settings(config, job_max_runtime, settings), "backend": "lambda"})
