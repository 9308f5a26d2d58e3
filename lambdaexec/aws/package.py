"""The deployment package: ``worker/`` + ``lambdaexec`` + cloudpickle as a reproducible zip
(so unchanged code is not re-uploaded), the Lambda runtime matching this Python, and the
container image alternative (``worker/Dockerfile``, for numpy and scipy)."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from typing import Callable

from lambdaexec.aws.clients import AwsClients, DeployError
from lambdaexec.config import Config
from lambdaexec.errors import ConfigError

#: Python versions with a Lambda runtime (python3.9 was deprecated on 2025-12-15)
LAMBDA_PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14")
#: packages copied into the deployment package, if importable
PACKAGE_MODULES = ("worker", "lambdaexec", "cloudpickle", "lambdaexec_joblib", "lambdaexec_dask")
#: the function's handler, as Lambda's runtime (or ``python -m awslambdaric``) is given it
HANDLER = "worker.handler.handler"
_EPOCH = (1980, 1, 1, 0, 0, 0)


def lambda_runtime(version: tuple[int, int] | None = None) -> str:
    """The Lambda runtime matching this Python (``python3.11`` for 3.11), or a clear error.

    >>> lambda_runtime((3, 12))
    'python3.12'
    """
    major, minor = version or sys.version_info[:2]
    if f"{major}.{minor}" not in LAMBDA_PYTHONS:
        raise ConfigError(
            f"AWS Lambda has no Python {major}.{minor} runtime (it has {', '.join(LAMBDA_PYTHONS)}); the "
            "worker must run the client's Python minor version for pickles to load: run your client on one "
            f"of those, or deploy a container image with Python {major}.{minor} (worker/Dockerfile, image_uri=)")
    return f"python{major}.{minor}"


def _package_files() -> list[tuple[str, str]]:
    """(archive name, file path) of every file the package holds, sorted."""
    import importlib

    files = []
    for name in PACKAGE_MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            if name in ("worker", "lambdaexec", "cloudpickle"):
                raise
            continue
        root = os.path.dirname(mod.__file__ or "")
        base = os.path.dirname(root)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for f in filenames:
                if not f.endswith((".pyc", ".pyo")):
                    path = os.path.join(dirpath, f)
                    files.append((os.path.relpath(path, base), path))
    return sorted(files)


def package_bytes() -> bytes:
    """The deployment zip, byte-for-byte reproducible (so unchanged code is not re-uploaded)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for arcname, path in _package_files():
            info = zipfile.ZipInfo(arcname, _EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as f:
                z.writestr(info, f.read())
    return buf.getvalue()


def build_package(path: str) -> str:
    """Write the deployment zip to ``path``; return its ``CodeSha256`` (as Lambda reports it)."""
    data = package_bytes()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return code_sha256(data)


def unpack_package(package: str, root: str) -> None:
    """Copy (a directory) or unzip the deployment ``package`` to ``root``, as the Lambda emulator runs
    it; a :class:`~lambdaexec.errors.ConfigError` naming it if it is missing or not a zip."""
    how = ("build one with `lambdaexec deploy --package-only PATH`, or leave --package out and "
           "`lambdaexec emulate` builds it")
    if os.path.isdir(package):
        shutil.copytree(package, root)
        return
    if not os.path.exists(package):
        raise ConfigError(f"deployment package {package!r}: no such file or directory; {how}")
    try:
        with zipfile.ZipFile(package) as z:
            z.extractall(root)
    except zipfile.BadZipFile:
        raise ConfigError(f"deployment package {package!r} is not a zip file; {how}") from None


def code_sha256(data: bytes) -> str:
    """Lambda's ``CodeSha256`` of a zip: base64 of its SHA-256."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def build_image(config: Config, log: Callable[[str], None] = print) -> str:
    """Build ``worker/Dockerfile`` with numpy and scipy, push it to ECR, return its URI.

    Needs a docker engine; where there is none, build the image elsewhere and pass ``image_uri``.
    """
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "info"], capture_output=True).returncode != 0:
        raise DeployError("no docker engine here to build the worker image: build worker/Dockerfile on a "
                          "machine with docker and deploy with image_uri=<uri>, or use layers=<numpy layer ARN>")
    import cloudpickle

    aws = AwsClients(config)
    repo = config.function_name
    try:
        uri = aws.client("ecr").create_repository(repositoryName=repo)["repository"]["repositoryUri"]
    except aws.client("ecr").exceptions.RepositoryAlreadyExistsException:
        uri = aws.client("ecr").describe_repositories(repositoryNames=[repo])["repositories"][0]["repositoryUri"]
    tag = f"{uri}:{code_sha256(package_bytes())[:12].replace('/', '_').replace('+', '-')}"
    with tempfile.TemporaryDirectory() as ctx:
        with zipfile.ZipFile(io.BytesIO(package_bytes())) as z:
            z.extractall(os.path.join(ctx, "package"))
        shutil.copy(os.path.join(os.path.dirname(_package_root("worker")), "worker", "Dockerfile"), ctx)
        py = f"{sys.version_info[0]}.{sys.version_info[1]}"
        platform = "linux/arm64" if config.architecture == "arm64" else "linux/amd64"
        log(f"building {tag} (python {py}, {platform})")
        subprocess.run([docker, "build", "--platform", platform, "--build-arg", f"PYTHON_VERSION={py}",
                        "--build-arg", f"CLOUDPICKLE_VERSION={cloudpickle.__version__}", "-t", tag, ctx], check=True)
    token = aws.client("ecr").get_authorization_token()["authorizationData"][0]
    user, password = base64.b64decode(token["authorizationToken"]).decode().split(":", 1)
    subprocess.run([docker, "login", "-u", user, "--password-stdin", token["proxyEndpoint"]],
                   input=password.encode(), check=True)
    subprocess.run([docker, "push", tag], check=True)
    return tag


def _package_root(name: str) -> str:
    import importlib

    return os.path.dirname(importlib.import_module(name).__file__ or "")
