"""The layout is the architecture: the import contracts in ``.importlinter`` hold, no module of
the package imports its own ``__init__``, and ``import lambdaexec`` loads no optional extra."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_import_contracts_hold():
    # `lint-imports`, run by this interpreter (the command's own shebang may name another venv)
    lint = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    run = subprocess.run([sys.executable, "-c", lint, "--config", str(ROOT / ".importlinter")], cwd=ROOT,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def _names_from_package_init(path: pathlib.Path, package: str) -> list[str]:
    """Names a module takes from ``package``'s ``__init__`` (not from one of its submodules)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == package and node.level == 0:
            found += [a.name for a in node.names
                      if not (ROOT / package / f"{a.name}.py").exists() and not (ROOT / package / a.name).is_dir()]
        elif isinstance(node, ast.Import) and any(a.name == package for a in node.names):
            found.append(f"import {package}")
    return found


@pytest.mark.parametrize("package", ["lambdaexec"])
def test_no_module_imports_its_own_package_init(package):
    offenders = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        if path.name == "__init__.py" and path.parent == ROOT / package:
            continue
        names = _names_from_package_init(path, package)
        if names:
            offenders[str(path.relative_to(ROOT))] = names
    assert offenders == {}, f"modules importing lambdaexec/__init__ (import the defining module instead): {offenders}"


def test_import_lambdaexec_loads_no_optional_extra():
    optional = ("tqdm", "matplotlib", "fsspec", "s3fs", "redis", "pandas", "boto3", "botocore", "joblib", "dask")
    code = ("import sys, lambdaexec, lambdaexec.pywren\n"
            "with lambdaexec.LambdaExecutor(max_workers=1) as ex: assert ex.submit(abs, -1).result() == 1\n"
            f"print(','.join(m for m in {optional!r} if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "", f"`import lambdaexec` and a local map loaded {run.stdout.strip()}"


def test_s3_storage_loads_boto3_only_when_used():
    code = ("import sys\nfrom lambdaexec.storage import open_storage\n"
            "assert 'boto3' not in sys.modules\n"
            "try:\n    open_storage({'kind': 's3', 'bucket': 'b', 'endpoint_url': 'http://127.0.0.1:9'})\n"
            "except Exception:\n    pass\n"
            "print('boto3' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "True"


def test_unknown_storage_kind_names_the_known_ones():
    from lambdaexec.storage import open_storage

    with pytest.raises(ValueError, match="unknown storage kind 'ftp'; choose one of .*'local'.*'redis'.*'s3'"):
        open_storage({"kind": "ftp"})
