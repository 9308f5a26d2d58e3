"""Run CPython's own ``concurrent.futures`` test suite against ``LambdaExecutor``.

A reference check, not part of the default test run: users run test suites written by others
against our executor, and CPython's ``Lib/test/test_concurrent_futures.py`` is the reference.
This script holds none of CPython's code. It fetches the file from Debian's
``libpython3.X-testsuite`` package (``apt-get download`` into a temporary directory, no root
needed) or takes ``--test-file PATH``, imports it as a plain module, and runs its executor-
agnostic mixins with ``executor_type = LambdaExecutor`` (local workers, local storage in a
temporary directory)::

    Debian package --dpkg -x--> test_concurrent_futures.py --import--> cpython_cf
        cpython_cf.WaitTests, ExecutorTest, ... + LambdaMixin --> unittest --> summary table

Tests that construct ``ProcessPoolExecutor``/``ThreadPoolExecutor`` by name, read their private
attributes (``_processes``, ``_threads``, ``_executor_manager_thread``) or check ``print`` in a
worker are also run as ports (``PortsTest``, our own code): the same scenario on
``LambdaExecutor``, observed through public behaviour (the ports have calls write a file).

Every failure CPython's tests report is listed in :data:`EXPECTED` with the reason it does not
apply; anything else is printed as UNEXPECTED and makes the exit status 1. The table is
summarised in docs/errors.md ("CPython's concurrent.futures tests").

From Python 3.12 the tests are a package (``Lib/test/test_concurrent_futures/``: ``util.py``,
``executor.py``, ``test_*.py``); ``--test-dir`` takes that directory, imports it as the package
``cpython_cf`` and runs the same mixins from its modules. A newer version's files (3.14's
``buffersize`` tests of ``executor.py``, ``terminate_workers``/``kill_workers`` of
``test_process_pool.py``) run under an older interpreter: ``shim_newer_tests`` supplies the
few names they import that the older standard library lacks (none of them used by a test that
runs against ``LambdaExecutor``). Fetching, importing and shimming are in
``tools/cpython_futures_loader.py``.

Usage::

    python tools/run_cpython_futures_tests.py            # needs apt-get (Debian/Ubuntu)
    python tools/run_cpython_futures_tests.py --test-file /path/to/test_concurrent_futures.py
    python tools/run_cpython_futures_tests.py --test-dir /path/to/Lib/test/test_concurrent_futures
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

from cpython_futures_loader import fetch_test_file, load_cpython_package, load_cpython_tests

#: CPython test -> why it fails here on purpose (see docs/errors.md)
EXPECTED = {
    # the executor stays usable when one worker dies: the call is retried, then fails alone with
    # WorkerDiedError, a BrokenProcessPool (so test_crash_* and test_shutdown_deadlock pass)
    "test_exit_during_result_pickle_on_worker": "expects the SystemExit raised while pickling the result; the "
                                                "worker exits on it: WorkerDiedError (a BrokenProcessPool)",
    "test_killed_child": "reads _processes; a killed worker is replaced (by design)",
    # inputs and results are unpickled as part of the call: the call fails, the executor does not
    "test_error_at_task_unpickle": "the call raises the UnpicklingError itself (remote traceback attached)",
    "test_exit_at_task_unpickle": "the call raises the SystemExit itself",
    # arguments are serialized at submit, so the error comes from submit, naming the object
    "test_error_at_task_pickle": "submit raises UnpicklableError (a PicklingError) at once, not result()",
    "test_shutdown_deadlock_pickle": "same, and reads _executor_manager_thread",
    # objects that only travel to multiprocessing children or to threads of this process
    "test_ressources_gced_in_workers": "a multiprocessing Manager proxy needs the parent's authkey, "
                                       "which fresh-interpreter workers do not have",
    "test_processes_terminate": "passes a multiprocessing Semaphore (only inherited by mp children); _processes",
    "test_saturation": "multiprocessing Semaphore; _processes",
    "test_pending_calls_race": "a thread-pool test: the call closes over a threading.Event",
    "test_executor_map_current_future_cancel": "a thread-pool test (closes over a threading.Event); "
                                               "ported as PortsTest.test_map_timeout_cancels_the_rest",
    "test_map_submits_without_iteration": "a thread-pool test (appends to the client's list); map does "
                                          "submit everything at once (test_map_futures_all_at_once)",
    "test_initializer@LambdaFailingInitializerTest": "passes a multiprocessing Queue as initarg (only "
                                                     "inherited by mp children); the no-mp_context variant passes",
    # private attributes of ProcessPoolExecutor
    "test_idle_process_reuse_one": "reads _max_workers/_processes",
    "test_idle_process_reuse_multiple": "reads _max_workers/_processes",
    "test_max_tasks_per_child": "reads _processes (the pid pattern is tests/test_executor.py::"
                                "test_max_tasks_per_child_replaces_workers)",
    "test_max_tasks_per_child_defaults_to_spawn_context": "reads _mp_context (workers are always fresh interpreters)",
    "test_multiple_set_result@LambdaFutureTests": "matches '<Future at ...' in the message; ours names "
                                                   "its class: '<LambdaFuture at ...'",
    "test_multiple_set_exception@LambdaFutureTests": "same",
    "test_traceback": "the cause is lambdaexec.RemoteTraceback, not the private process._RemoteTraceback "
                      "(same .tb text, printed by excepthook: PortsTest.test_remote_traceback)",
    # worker output is kept per call (future.stdout), not written to the client's terminal
    # 3.12+ (package layout) and 3.14: ProcessPoolExecutor internals, multiprocessing objects
    "test_force_shutdown_workers": "passes multiprocessing Manager proxies and reads _processes (the same "
                                   "scenario: tests/test_terminate.py::test_running_and_queued_calls_all_end_"
                                   "and_no_process_is_left)",
    "test_force_shutdown_workers_stops_pool": "reads _processes (ported: tests/test_terminate.py)",
    "test_broken_process_pool_traceback": "closes over a multiprocessing Event and reads _processes",
    "test_traceback_when_child_process_terminates_abruptly": "the cause is lambdaexec.RemoteTraceback, not "
                                                             "process._RemoteTraceback",
    "test_sysconf_permission_error": "patches os.sysconf for ProcessPoolExecutor's own semaphore check",
    "test_python_finalization_error": "patches threading._start_joinable_thread (3.13+) for "
                                      "ProcessPoolExecutor's manager thread",
    "test_max_tasks_per_child_pending_tasks_gh115634": "reads _max_workers semantics of the fork check",
    "test_shutdown_no_wait_max_tasks_gh119592": "multiprocessing Manager proxies; _executor_manager_thread",
    "test_gc_during_max_tasks_worker_exit_gh152967": "same",
    "test_force_shutdown_during_max_tasks_worker_exit": "same; _force_shutting_down",
    "test_failed_worker_replacement_breaks_pool": "same; patches process._spawn_worker",
}


def build_suite(T) -> unittest.TestSuite:  # noqa: N803 (T: CPython's test module)
    """CPython's mixins with LambdaExecutor as the executor, plus :class:`PortsTest`."""
    from lambdaexec import LambdaExecutor

    original = T.assert_python_ok

    def assert_python_ok(*args, **env):  # the subprocess tests import the executor by name
        args = tuple(a.replace("from concurrent.futures import LambdaExecutor", "from lambdaexec import LambdaExecutor")
                     .replace("from concurrent.futures import ThreadPoolExecutor",  # its thread-pool-only tests
                              "from lambdaexec import LambdaExecutor as ThreadPoolExecutor")
                     .replace("test.test_concurrent_futures", "cpython_cf") for a in args)
        for name in ("PYTHONPATH", "LAMBDAEXEC_STORAGE", "LAMBDAEXEC_STORAGE_PATH", "LAMBDAEXEC_BACKEND"):
            env.setdefault(name, os.environ[name])
        return original(*args, **env)

    T.assert_python_ok = assert_python_ok
    for module in getattr(T, "modules", ()):  # the package layout: each module imported its own
        if hasattr(module, "assert_python_ok"):
            module.assert_python_ok = assert_python_ok

    class LambdaMixin(T.ExecutorMixin):  # as ProcessPoolSpawnMixin: mp_context is accepted and ignored
        executor_type = LambdaExecutor
        ctx = "spawn"

    class LambdaNoContextMixin(T.ExecutorMixin):  # as ThreadPoolMixin: no mp_context
        executor_type = LambdaExecutor

    def case(name, *bases, **extra):
        return type(name, (*bases, T.BaseTestCase), extra)

    classes = [
        case("LambdaInitializerTest", T.InitializerMixin, LambdaMixin),
        case("LambdaFailingInitializerTest", T.FailingInitializerMixin, LambdaMixin),
        case("LambdaFailingInitializerNoContextTest", T.FailingInitializerMixin, LambdaNoContextMixin),
        case("LambdaShutdownTest", T.ExecutorShutdownTest, LambdaNoContextMixin,
             test_cancel_futures_wait_false=T.ThreadPoolShutdownTest.test_cancel_futures_wait_false),
        # its other tests build a ProcessPoolExecutor by name (see PortsTest) or are LambdaShutdownTest's
        case("LambdaProcessPoolShutdownTest", T.ProcessPoolShutdownTest, LambdaMixin,
             **{name: None for name in dir(T.ProcessPoolShutdownTest)
                if name.startswith("test_") and name != "test_processes_terminate"}),
        case("LambdaWaitTest", T.WaitTests, LambdaMixin,
             test_pending_calls_race=T.ThreadPoolWaitTests.test_pending_calls_race),
        case("LambdaAsCompletedTest", T.AsCompletedTests, LambdaMixin),
        case("LambdaExecutorTest", T.ProcessPoolExecutorTest, LambdaMixin,
             test_map_submits_without_iteration=T.ThreadPoolExecutorTest.test_map_submits_without_iteration,
             test_executor_map_current_future_cancel=T.ThreadPoolExecutorTest.test_executor_map_current_future_cancel),
        case("LambdaDeadlockTest", T.ExecutorDeadlockTest, LambdaMixin),
        type("LambdaFutureTests", (T.FutureTests,), {"setUp": _use_lambda_future(T, True),
                                                     "tearDown": _use_lambda_future(T, False)}),
        PortsTest,
    ]
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for cls in classes:
        for name in loader.getTestCaseNames(cls):
            if getattr(cls, name) is not None:
                suite.addTest(cls(name))
    return suite


def _use_lambda_future(T, on: bool):  # noqa: N803
    """setUp/tearDown that make CPython's FutureTests build LambdaFutures (its module's ``Future``)."""
    from concurrent.futures import Future

    from lambdaexec.future import LambdaFuture

    def switch(self):
        (T.BaseTestCase.setUp if on else T.BaseTestCase.tearDown)(self)
        T.Future = LambdaFuture if on else Future
        for module in getattr(T, "modules", ()):
            if hasattr(module, "Future"):
                module.Future = LambdaFuture if on else Future

    return switch


def _write(path: str, text: str, delay: float = 0.0) -> None:
    time.sleep(delay)
    with open(path, "a") as f:
        f.write(text)


def _run_script(directory: str, body: str) -> subprocess.CompletedProcess:
    """Run ``body`` as a script in a fresh interpreter (LambdaExecutor imported); output captured."""
    path = os.path.join(directory, "script.py")  # a file, so that tracebacks can show its lines
    with open(path, "w") as f:
        f.write("from lambdaexec import LambdaExecutor\nimport time\n" + textwrap.dedent(body))
    return subprocess.run([sys.executable, path], capture_output=True, text=True, timeout=120)


class PortsTest(unittest.TestCase):
    """CPython scenarios that name the stdlib executors or their private attributes, on LambdaExecutor."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="cf-ports-")
        self.out = os.path.join(self.dir, "out")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def read(self) -> str:
        with open(self.out) as f:
            return f.read()

    def test_context_manager_shutdown(self):
        from lambdaexec import LambdaExecutor

        with LambdaExecutor(max_workers=5) as e:
            self.assertEqual(list(e.map(abs, range(-5, 5))), [5, 4, 3, 2, 1, 0, 1, 2, 3, 4])
        self.assertRaises(RuntimeError, e.submit, abs, 1)

    def test_del_shutdown(self):
        from lambdaexec import LambdaExecutor

        executor = LambdaExecutor(max_workers=5)
        results = executor.map(abs, range(-5, 5))
        del executor
        gc.collect()
        self.assertEqual(list(results), [abs(v) for v in range(-5, 5)])

    def test_shutdown_no_wait(self):
        from lambdaexec import LambdaExecutor

        executor = LambdaExecutor(max_workers=5)
        results = executor.map(abs, range(-5, 5))
        executor.shutdown(wait=False)
        self.assertEqual(list(results), [abs(v) for v in range(-5, 5)])

    def _check_script(self, tail: str):
        done = _run_script(self.dir, f"""
            def write(path, text, delay):
                time.sleep(delay)
                with open(path, "a") as f:
                    f.write(text)
            if __name__ == "__main__":
                t = LambdaExecutor(max_workers=3)
                t.submit(write, {self.out!r}, "apple", 1.0)
                {tail}
            """)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stderr, "")
        self.assertEqual(self.read(), "apple")

    def test_interpreter_shutdown(self):
        self._check_script("pass")  # the exit hook lets the submitted call finish

    def test_hang_gh83386(self):
        self._check_script("t.shutdown(wait=False)")

    def test_cancel_futures_wait_false(self):
        self._check_script("t.shutdown(wait=False, cancel_futures=True)")  # the running call still finishes

    def test_map_timeout_cancels_the_rest(self):
        import concurrent.futures as cf

        from lambdaexec import LambdaExecutor

        with LambdaExecutor(max_workers=1) as pool:
            first = pool.submit(_write, self.out, "first;", 1.0)
            with contextlib.closing(pool.map(_write, [self.out] * 2, ["second;", "third;"], timeout=0)) as gen:
                with self.assertRaises(cf.TimeoutError):
                    next(gen)
            first.result()
        self.assertEqual(self.read(), "first;")

    def test_remote_traceback(self):
        from lambdaexec import LambdaExecutor

        with LambdaExecutor(max_workers=1) as ex:
            future = ex.submit(_raise_runtime_error)
            with self.assertRaises(RuntimeError) as cm:
                future.result()
        self.assertEqual(cm.exception.args, (123,))
        self.assertIn("raise RuntimeError(123)  # the line to find", cm.exception.__cause__.tb)
        stderr = _run_script(self.dir, """
            import sys
            def boom():
                raise RuntimeError(123)  # the line to find
            if __name__ == "__main__":
                with LambdaExecutor(max_workers=1) as ex:
                    ex.submit(boom).result()
            """).stderr
        self.assertIn("raise RuntimeError(123)  # the line to find", stderr)


def _raise_runtime_error():
    raise RuntimeError(123)  # the line to find


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--test-file", help="CPython's Lib/test/test_concurrent_futures.py (default: from Debian)")
    parser.add_argument("--test-dir", help="CPython's Lib/test/test_concurrent_futures/ (3.12+: a package)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="cpython-cf-")
    os.environ["LAMBDAEXEC_BACKEND"] = "local"
    os.environ["LAMBDAEXEC_STORAGE"] = "local"
    os.environ["LAMBDAEXEC_STORAGE_PATH"] = os.path.join(workdir, "store")
    try:
        path = args.test_dir or args.test_file or fetch_test_file(workdir)
        if os.path.isdir(path.removesuffix(".py")):  # 3.12+: a package
            T = load_cpython_package(path.removesuffix(".py"), workdir)  # noqa: N806
        else:
            T = load_cpython_tests(path, workdir)  # noqa: N806
        suite = build_suite(T)
        tests = list(_all_tests(suite))  # the suite forgets its tests as they run
        T.setUpModule()
        result = unittest.TextTestRunner(verbosity=2 if args.verbose else 1).run(suite)
        unittest.case.doModuleCleanups()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    failed = {}
    for test, trace in result.failures + result.errors:
        failed[(type(test).__name__, test._testMethodName)] = trace.strip().splitlines()[-1]
    unexpected = 0
    print(f"\n{'test':58} outcome")
    for test in tests:
        key = (type(test).__name__, test._testMethodName)
        reason = None if key[0] == "PortsTest" else EXPECTED.get(f"{key[1]}@{key[0]}") or EXPECTED.get(key[1])
        if key in failed:
            outcome = f"failed, not applicable: {reason}" if reason else f"UNEXPECTED: {failed[key]}"
            unexpected += reason is None
        elif any(t is test for t, _ in result.skipped):
            outcome = "skipped"
        else:
            outcome = "passed" + (" (listed as expected to fail: update EXPECTED)" if reason else "")
        print(f"{key[0] + '.' + key[1]:58} {outcome}")
    return 1 if unexpected else 0


def _all_tests(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from _all_tests(item)
        else:
            yield item


if __name__ == "__main__":
    sys.exit(main())
