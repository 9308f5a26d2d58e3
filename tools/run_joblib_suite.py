"""Run joblib's own backend tests against the ``"lambda"`` backend (not part of the default test run).

joblib ships its test suite inside the installed package. This script copies the chosen test
files from the installed joblib to a temporary directory, adds ``"lambda"`` to the backend lists
they are parametrized over (``PROCESS_BACKENDS``, and so ``PARALLEL_BACKENDS``; ``BACKENDS`` and
the lists built from it get it by registration), registers the backend in a ``sitecustomize.py``
(so processes the tests start have it too),
and runs pytest there on the cases parametrized with ``"lambda"`` or a ``LambdaBackend`` (a
``conftest.py`` deselects the others). No joblib code is stored in this repository.

    python tools/run_joblib_suite.py                      # test_parallel.py, cases on "lambda"
    python tools/run_joblib_suite.py -- -k generator -x   # arguments after -- go to pytest
    python tools/run_joblib_suite.py --default            # every test, "lambda" the default backend
    python tools/run_joblib_suite.py --files test_parallel.py test_memmapping.py

Workers use the default local storage; set ``LAMBDAEXEC_*`` variables to run on another.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

#: imported by every Python process started with the temp dir on PYTHONPATH (the pytest run, the
#: scripts some tests start, loky's workers running a nested ``Parallel(backend="lambda")``), so
#: each registers "lambda" as a user's program would by importing lambdaexec_joblib
SITECUSTOMIZE = '''
import lambdaexec_joblib  # noqa: F401
'''
DEFAULT = '''
import joblib
joblib.register_parallel_backend("lambda", lambdaexec_joblib.LambdaBackend, make_default=True)
'''

#: keeps only the cases run on "lambda": a parameter that is the name or a LambdaBackend instance
CONFTEST = '''
from lambdaexec_joblib import LambdaBackend


def pytest_collection_modifyitems(config, items):
    def on_lambda(item):
        params = getattr(getattr(item, "callspec", None), "params", {})
        return any(v == "lambda" or isinstance(v, LambdaBackend) for v in params.values())
    kept = [item for item in items if on_lambda(item)]
    config.hook.pytest_deselected(items=[item for item in items if not on_lambda(item)])
    items[:] = kept
'''

HELPERS = ["testutils.py", "common.py"]

#: text in joblib's test files -> the same with "lambda" added
PATCHES = {
    'PROCESS_BACKENDS = ["multiprocessing", "loky"]': 'PROCESS_BACKENDS = ["multiprocessing", "loky", "lambda"]',
    # lists written out in single tests
    '["threading", "loky", "multiprocessing", "back_compat_backend"]':
        '["threading", "loky", "multiprocessing", "back_compat_backend", "lambda"]',
    '[None, "loky", "threading"]': '[None, "loky", "threading", "lambda"]',
    '["loky", "threading"]': '["loky", "threading", "lambda"]',
    '@parametrize("backend", ["multiprocessing", "loky"])':  # test_memmapping.py
        '@parametrize("backend", ["multiprocessing", "loky", "lambda"])',
}


def main(argv: list[str] | None = None) -> int:
    """Copy joblib's test files to a temp dir, add ``"lambda"``, run pytest; return its exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", nargs="+", default=["test_parallel.py"],
                        help="test files of joblib.test to run (default: test_parallel.py)")
    parser.add_argument("--default", action="store_true",
                        help='make "lambda" joblib\'s default backend and run every test (the ones that '
                             "name no backend run on it)")
    parser.add_argument("pytest_args", nargs="*", help="arguments for pytest (after --)")
    args = parser.parse_args(argv)

    import joblib

    source = os.path.join(os.path.dirname(joblib.__file__), "test")
    with tempfile.TemporaryDirectory(prefix="joblib-suite-") as tmp:
        for name in args.files:
            with open(os.path.join(source, name)) as f:
                text = f.read()
            for old, new in PATCHES.items():
                text = text.replace(old, new)
            with open(os.path.join(tmp, name), "w") as f:
                f.write(text)
        for helper in HELPERS:  # modules the scripts some tests start import by name
            if os.path.exists(os.path.join(source, helper)):
                shutil.copy(os.path.join(source, helper), tmp)
        with open(os.path.join(tmp, "sitecustomize.py"), "w") as f:
            f.write(SITECUSTOMIZE + (DEFAULT if args.default else ""))
        if not args.default:
            with open(os.path.join(tmp, "conftest.py"), "w") as f:
                f.write(CONFTEST)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [tmp, *filter(None, [os.environ.get("PYTHONPATH")])]))
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfE",
               "-o", "addopts=", "--rootdir", tmp, *args.files, *args.pytest_args]
        print("joblib", joblib.__version__, "tests from", source, file=sys.stderr)
        return subprocess.call(cmd, cwd=tmp, env=env)


if __name__ == "__main__":
    sys.exit(main())
