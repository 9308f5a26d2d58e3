"""Getting CPython's ``concurrent.futures`` tests and importing them under any interpreter, for
``tools/run_cpython_futures_tests.py``.

The tests come from Debian's ``libpython3.X-testsuite`` package (:func:`fetch_test_file`) or a
path the user gives; they are imported as ``cpython_cf``, a single module (up to 3.11,
:func:`load_cpython_tests`) or a package (3.12+, :func:`load_cpython_package`). A newer version's
files run under an older interpreter once :func:`shim_newer_tests` has supplied the few names
they import that the older standard library lacks.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys


def fetch_test_file(dest: str) -> str:
    """Download Debian's test-suite package for this Python into ``dest``; return the file's path."""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    subprocess.run(["apt-get", "download", f"libpython{version}-testsuite"], cwd=dest, check=True)
    deb = glob.glob(os.path.join(dest, "*.deb"))[0]
    subprocess.run(["dpkg", "-x", deb, os.path.join(dest, "x")], check=True)
    return os.path.join(dest, "x", "usr", "lib", f"python{version}", "test", "test_concurrent_futures.py")


def load_cpython_tests(path: str, workdir: str):
    """Import CPython's test file as the module ``cpython_cf`` (also importable by subprocesses)."""
    mod_dir = os.path.join(workdir, "mod")
    os.makedirs(mod_dir, exist_ok=True)
    shutil.copy(path, os.path.join(mod_dir, "cpython_cf.py"))
    sys.path.insert(0, mod_dir)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (mod_dir, os.environ.get("PYTHONPATH")) if p)
    import cpython_cf

    return cpython_cf


def _parameterize(*args_set):
    """``test.test_importlib.metadata.fixtures.parameterize`` (3.14's test files import it): run
    the test once per keyword set, each as a subtest."""
    import functools

    def wrapper(func):
        @functools.wraps(func)
        def inner(self):
            for kwargs in args_set:
                with self.subTest(**kwargs):
                    func(self, **kwargs)
        return inner
    return wrapper


def shim_newer_tests() -> None:
    """Give an older interpreter the names a newer version's test files import at module level
    (3.14's: ``ProcessPoolExecutor.terminate_workers.__name__``, ``process._TERMINATE``, a
    warnings helper, ``parameterize``). Only the runner's process is changed."""
    import concurrent.futures.process as process
    import types

    from test import support
    from test.support import warnings_helper

    from lambdaexec import LambdaExecutor

    for name in ("terminate_workers", "kill_workers"):
        if not hasattr(process.ProcessPoolExecutor, name):
            setattr(process.ProcessPoolExecutor, name, getattr(LambdaExecutor, name))
    for name, value in (("_TERMINATE", "terminate"), ("_KILL", "kill")):
        if not hasattr(process, name):
            setattr(process, name, value)
    if not hasattr(warnings_helper, "ignore_fork_in_thread_deprecation_warnings"):
        warnings_helper.ignore_fork_in_thread_deprecation_warnings = lambda: (lambda f: f)
    if not hasattr(support, "Py_GIL_DISABLED"):
        support.Py_GIL_DISABLED = False
    if not hasattr(support, "requires_gil_enabled"):  # 3.13
        support.requires_gil_enabled = lambda msg="": (lambda f: f)
    original_skip, original_check = support.skip_if_sanitizer, support.check_sanitizer
    try:
        original_check(thread=True)
    except TypeError:  # 3.13 added thread=: only a thread-sanitizer build would set it
        support.check_sanitizer = lambda *a, thread=False, **k: any(k.values()) and original_check(*a, **k)
        support.skip_if_sanitizer = lambda *a, thread=False, **k: (
            original_skip(*a, **k) if any(k.values()) else (lambda f: f))
    try:
        import test.test_importlib.metadata.fixtures  # noqa: F401
    except ImportError:
        for mod in ("test.test_importlib", "test.test_importlib.metadata"):
            sys.modules.setdefault(mod, types.ModuleType(mod))
        fixtures = types.ModuleType("test.test_importlib.metadata.fixtures")
        fixtures.parameterize = _parameterize
        sys.modules["test.test_importlib.metadata.fixtures"] = fixtures


#: the modules of the package layout (3.12+) whose mixins the suite runs
_PACKAGE_MODULES = ("util", "executor", "test_init", "test_shutdown", "test_wait", "test_as_completed",
                    "test_process_pool", "test_thread_pool", "test_deadlock", "test_future")


def load_cpython_package(path: str, workdir: str):
    """Import CPython's test package (3.12+) as ``cpython_cf``; return a namespace of the names
    :func:`build_suite` uses, with ``modules`` (for patching) and ``setUpModule``."""
    import importlib
    import types

    mod_dir = os.path.join(workdir, "mod")
    os.makedirs(mod_dir, exist_ok=True)
    shutil.copytree(path, os.path.join(mod_dir, "cpython_cf"), ignore=shutil.ignore_patterns("__pycache__"))
    sys.path.insert(0, mod_dir)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (mod_dir, os.environ.get("PYTHONPATH")) if p)
    shim_newer_tests()
    modules = [importlib.import_module(f"cpython_cf.{name}") for name in _PACKAGE_MODULES]
    T = types.SimpleNamespace()  # noqa: N806
    for module in modules:
        for name, value in vars(module).items():
            if not name.startswith("__"):
                setattr(T, name, value)
    T.modules = modules
    T.setUpModule = modules[0].setup_module
    return T


