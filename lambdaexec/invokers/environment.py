"""The environment variables of a local worker process: what a Lambda worker would have, not
the client's whole environment.

A Lambda worker sees the runtime's few variables and its role's credentials; nothing the user
had in their shell. Local workers get the same shape, built here from the client's environment::

    client's environment ──► runtime part (always) ────────────────────┐
                             storage credentials (S3 storage only) ─────┼──► worker environment
    worker_env setting ────► variables the user asked for ──────────────┘

- **runtime** (what the interpreter and the worker need to run and import exactly as the client
  does): ``PATH``, ``HOME``, ``LANG``, ``LANGUAGE``, ``LC_*``, ``TZ``, ``TMPDIR``, every
  ``PYTHON*`` (``PYTHONPATH`` among them), ``LD_*`` and ``MALLOC*`` (native libraries and
  allocator), the thread-count variables of BLAS/OpenMP (``OMP_*``, ``OPENBLAS_*``, ``MKL_*``,
  ``BLIS_*``, ``VECLIB_*``, ``NUMEXPR_*``; the pool sets the count when the client has not)
  and lambdaexec's own ``LAMBDAEXEC_*`` settings (a call that starts an executor of its own
  reads them, as the client does);
- **storage credentials**, only when the worker's storage (or ``shuffle_storage``) is S3: every
  ``AWS_*`` variable (key pair, session token, profile, credential and config files, region),
  the HTTP(S) proxy variables and the CA bundle variables, so the worker reaches the bucket as
  the client does, as a Lambda worker reaches it with its role. Local and Redis storage need
  none (a Redis password is part of ``redis_url``);
- **``worker_env``**, the setting: comma-separated ``NAME`` (the client's value) or
  ``NAME=value``. The same setting is the Lambda function's environment (``lambdaexec deploy``).

Everything else (``SECRET_TOKEN``, ``GITHUB_TOKEN``, AWS keys with local storage, ...) stays in
the client. The template process that local workers are forked from (:mod:`.zygote`) starts
with the runtime part only, so not even ``/proc/self/environ`` of a worker holds the rest.

>>> env = worker_environment(storages=("local",), environ={"PATH": "/bin", "SECRET_TOKEN": "x"})
>>> sorted(env)
['PATH']
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

#: variables every worker gets from the client's environment, by exact name
RUNTIME_NAMES = frozenset({"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR"})
#: ... and by prefix (interpreter, loader, allocator, thread counts, lambdaexec's settings)
RUNTIME_PREFIXES = ("LC_", "PYTHON", "LD_", "MALLOC", "OMP_", "OPENBLAS_", "MKL_", "BLIS_", "VECLIB_",
                    "NUMEXPR_", "LAMBDAEXEC_")
#: variables an S3 client reads: credentials, profile, region, proxies, trusted CAs
S3_PREFIXES = ("AWS_",)
S3_NAMES = frozenset({"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                      "no_proxy", "all_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
                      "CURL_CA_BUNDLE"})


def is_runtime(name: str) -> bool:
    """Whether ``name`` belongs to the runtime part every worker gets (see the module docstring)."""
    return name in RUNTIME_NAMES or name.startswith(RUNTIME_PREFIXES)


def _storage_credentials(storages: Iterable[str], environ: Mapping[str, str]) -> dict[str, str]:
    if "s3" not in storages:
        return {}
    return {k: v for k, v in environ.items() if k in S3_NAMES or k.startswith(S3_PREFIXES)}


def parse_worker_env(value: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables a ``worker_env`` setting names, with their values.

    ``NAME`` takes the value in ``environ`` (default: the client's environment; left out when
    unset there), ``NAME=value`` sets it. Syntax errors are caught by :mod:`lambdaexec.config`.

    >>> parse_worker_env("API_URL=https://x, TOKEN", {"TOKEN": "t", "OTHER": "o"})
    {'API_URL': 'https://x', 'TOKEN': 't'}
    """
    environ = os.environ if environ is None else environ
    out: dict[str, str] = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        name, eq, given = item.partition("=")
        name = name.strip()
        if eq:
            out[name] = given
        elif name in environ:
            out[name] = environ[name]
    return out


def worker_environment(storages: Iterable[str] = ("local",), worker_env: str = "",
                       environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a local worker whose storage kinds are ``storages`` (the job store
    and the shuffle store), plus what ``worker_env`` names; see the module docstring."""
    environ = os.environ if environ is None else environ
    env = {k: v for k, v in environ.items() if is_runtime(k)}
    env.update(_storage_credentials(tuple(storages), environ))
    env.update(parse_worker_env(worker_env, environ))
    return env


def runtime_part(env: Mapping[str, str]) -> dict[str, str]:
    """The part of a worker environment that every worker has (what a template starts with)."""
    return {k: v for k, v in env.items() if is_runtime(k)}
