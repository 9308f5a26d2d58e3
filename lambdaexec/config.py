"""Every setting, read in one place: keyword arguments > ``LAMBDAEXEC_*`` environment variables >
a config file (``LAMBDAEXEC_CONFIG``, default ``~/.config/lambdaexec/config.ini``, section
``[lambdaexec]``) > defaults. Unknown keys and bad values raise :class:`ConfigError` naming the key.

Example config file::

    [lambdaexec]
    storage = s3
    bucket = my-lambdaexec-bucket
    region = us-east-1
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import re
import tempfile
from typing import Any, Mapping

from lambdaexec.errors import ConfigError

BACKENDS = ("local", "lambda")
STORAGES = ("local", "s3", "redis")


def default_storage_path() -> str:
    """This user's own directory in RAM (``/dev/shm/lambdaexec-<uid>``) when there is room,
    else in the temp dir; created 0700 (see :mod:`lambdaexec.storage.local`).

    Job data lives only until its results are collected, and creating a file on tmpfs takes
    microseconds where a disk can take milliseconds, which would dominate a small call.
    """
    name = f"lambdaexec-{os.getuid()}"
    shm = "/dev/shm"
    try:
        st = os.statvfs(shm)
        if os.access(shm, os.W_OK) and st.f_bavail * st.f_frsize >= 2 << 30:
            return os.path.join(shm, name)
    except OSError:
        pass
    return os.path.join(tempfile.gettempdir(), name)


@dataclasses.dataclass(frozen=True)
class Config:
    """Resolved settings of one executor. Build it with :func:`load_config`."""

    #: where calls run: ``local`` worker processes or AWS ``lambda``
    backend: str = "local"
    #: where jobs and results live: ``local`` directory, ``s3`` bucket or ``redis``
    storage: str = "local"
    #: directory of ``local`` storage, private to its user (default: /dev/shm/lambdaexec-<uid> when
    #: /dev/shm has 2 GiB free, else the same name in the temp dir)
    storage_path: str = dataclasses.field(default_factory=default_storage_path)
    #: S3 bucket (``s3`` storage)
    bucket: str = ""
    #: S3 endpoint URL, for S3-compatible stores (SeaweedFS, MinIO, ...)
    endpoint_url: str = ""
    #: AWS region (S3 and Lambda); empty means boto3's default chain
    region: str = ""
    #: where shuffle intermediates go (``local``, ``s3`` or ``redis``; empty: same as ``storage``)
    shuffle_storage: str = ""
    #: Redis URL (``redis`` storage)
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: key prefix under which every executor keeps its jobs
    prefix: str = "lambdaexec"
    #: local worker processes (``local`` backend; 0: cores), or calls in flight (``lambda``; 0: 1000)
    max_workers: int = 0
    #: seconds one call may run before its worker is stopped and the call retried or failed
    timeout: float = 300.0
    #: times a call whose worker died or timed out is run again before its future fails
    retries: int = 2
    #: largest result a call may return, in bytes
    max_result_size: int = 1 << 30
    #: keep job data in storage after results are collected (for inspection)
    keep_data: bool = False
    #: Lambda function name (``lambda`` backend)
    function_name: str = "lambdaexec-worker"
    #: Lambda Invoke endpoint URL, for a local Lambda emulator; empty: AWS
    lambda_endpoint_url: str = ""
    #: memory per worker in MB: the Lambda function's (128-10240; 1769 MB is one full vCPU), and
    #: the data limit of each local worker (a call growing past it gets a MemoryError)
    memory: int = 2048
    #: Lambda function /tmp size in MB (512-10240)
    ephemeral_storage: int = 512
    #: Lambda function architecture: ``x86_64`` or ``arm64``
    architecture: str = "x86_64"
    #: Lambda layer ARNs (comma-separated) providing numpy, scipy, ... to the worker
    layers: str = ""
    #: container image URI to deploy instead of a zip package (see worker/Dockerfile)
    image_uri: str = ""
    #: days after which job data under ``prefix`` expires from the bucket (lifecycle rule)
    lifecycle_days: int = 7
    #: seconds an invoked Lambda call may take to start before it is invoked again
    start_deadline: float = 120.0
    #: progress bar (tqdm, extra ``[progress]``): ``auto`` (when stderr is a terminal or in
    #: Jupyter), ``true`` or ``false``
    progress: str = "auto"
    #: dollars a job may cost, as Lambda would bill it; 0: no limit. Past it, no new calls start
    #: and the rest fail with BudgetExceededError
    max_cost: float = 0.0
    #: JSON price table overriding the packaged one (lambdaexec/observe/prices.json)
    price_table: str = ""
    #: print what each call printed (its ``stdout`` and ``stderr``, also kept on its future) on the
    #: client's own, as it finishes, as ``ProcessPoolExecutor``'s workers print on the terminal
    echo_output: bool = True
    #: keep a durable record of every job (manifest, per-call status and output) under
    #: ``<prefix>/jobs/``, read by ``lambdaexec jobs``, ``logs``, ``plot``
    job_record: bool = True
    #: days after which ``lambdaexec clean`` (and each new executor) deletes old job records
    job_retention_days: int = 30
    #: back up stragglers near the end of a job (see lambdaexec.runtime.speculation): ``auto`` (on for the
    #: ``lambda`` backend, off for ``local``), ``true`` or ``false``; resolved to ``true``/``false``
    speculative: str = "auto"
    #: keep each successful call's result under ``<prefix>/cache/`` and complete a later call of the
    #: same function code and arguments from it without running it (docs/cache.md)
    cache: bool = False
    #: a call's array (or other out-of-band buffer) of at least this many bytes is stored once by
    #: content and shared by every call and job of the executor that passes it; 0: never
    large_argument_size: int = 1 << 20
    #: environment variables workers get besides the minimal set of lambdaexec.invokers.environment:
    #: comma-separated ``NAME`` (its value in the client's environment) or ``NAME=value``; local
    #: workers get them at start, the Lambda function at ``lambdaexec deploy``
    worker_env: str = ""

    def resolved_workers(self) -> int:
        """``max_workers``, with 0 meaning the number of cores."""
        return self.max_workers or os.cpu_count() or 1

    def storage_spec(self) -> dict[str, Any]:
        """What a worker needs to open the same storage (no credentials)."""
        if self.storage == "local":
            return {"kind": "local", "path": self.storage_path}
        if self.storage == "s3":
            if not self.bucket:
                raise ConfigError("storage 's3' needs a bucket: pass bucket= or set LAMBDAEXEC_BUCKET")
            return {"kind": "s3", "bucket": self.bucket, "region": self.region or None,
                    "endpoint_url": self.endpoint_url or None}
        return {"kind": "redis", "url": self.redis_url}

    def shuffle_storage_spec(self) -> dict[str, Any]:
        """The spec of the store that shuffles write their intermediates to."""
        return dataclasses.replace(self, storage=self.shuffle_storage or self.storage).storage_spec()


FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def _coerce(key: str, value: Any, source: str) -> Any:
    field = FIELDS[key]
    kind = str if field.default is dataclasses.MISSING else type(field.default)
    try:
        if kind is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(value)
                return low in ("1", "true", "yes", "on")
            if not isinstance(value, bool):
                raise ValueError(value)
            return value
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{source}: {key} must be {kind.__name__}, got {value!r}"
        ) from None


def _validate(cfg: Config) -> Config:
    if cfg.backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {cfg.backend!r}")
    if cfg.storage not in STORAGES:
        raise ConfigError(f"storage must be one of {STORAGES}, got {cfg.storage!r}")
    if cfg.shuffle_storage not in ("", *STORAGES):
        raise ConfigError(f"shuffle_storage must be empty (same as storage) or one of {STORAGES}, "
                          f"got {cfg.shuffle_storage!r}")
    if cfg.max_workers < 0:
        raise ConfigError(f"max_workers must be >= 0 (0 means one per core), got {cfg.max_workers}")
    if cfg.timeout <= 0:
        raise ConfigError(f"timeout must be > 0 seconds, got {cfg.timeout}")
    if cfg.retries < 0:
        raise ConfigError(f"retries must be >= 0, got {cfg.retries}")
    if cfg.max_result_size <= 0:
        raise ConfigError(f"max_result_size must be > 0 bytes, got {cfg.max_result_size}")
    if cfg.architecture not in ("x86_64", "arm64"):
        raise ConfigError(f"architecture must be 'x86_64' or 'arm64', got {cfg.architecture!r}")
    if not 128 <= cfg.memory <= 10240:
        raise ConfigError(f"memory must be 128 to 10240 (MB), got {cfg.memory}")
    if not 512 <= cfg.ephemeral_storage <= 10240:
        raise ConfigError(f"ephemeral_storage must be 512 to 10240 (MB), got {cfg.ephemeral_storage}")
    if cfg.lifecycle_days < 1:
        raise ConfigError(f"lifecycle_days must be >= 1, got {cfg.lifecycle_days}")
    if cfg.start_deadline <= 0:
        raise ConfigError(f"start_deadline must be > 0 seconds, got {cfg.start_deadline}")
    if cfg.backend == "lambda" and cfg.storage == "local":
        raise ConfigError(
            "backend 'lambda' cannot use local storage (Lambda workers cannot see this disk): "
            "set storage='s3' and a bucket (LAMBDAEXEC_STORAGE=s3, LAMBDAEXEC_BUCKET=...)"
        )
    if cfg.backend == "lambda" and cfg.shuffle_storage == "local":
        raise ConfigError("backend 'lambda' cannot shuffle through local storage: set shuffle_storage "
                          "to 's3' or 'redis' (LAMBDAEXEC_SHUFFLE_STORAGE)")
    if cfg.max_cost < 0:
        raise ConfigError(f"max_cost must be >= 0 dollars (0: no limit), got {cfg.max_cost}")
    if cfg.job_retention_days < 1:
        raise ConfigError(f"job_retention_days must be >= 1, got {cfg.job_retention_days}")
    progress = _PROGRESS.get(cfg.progress.strip().lower())
    if progress is None:
        raise ConfigError(f"progress must be 'auto', true or false, got {cfg.progress!r}")
    speculative = _PROGRESS.get(cfg.speculative.strip().lower())
    if speculative is None:
        raise ConfigError(f"speculative must be 'auto', true or false, got {cfg.speculative!r}")
    if speculative == "auto":
        speculative = "true" if cfg.backend == "lambda" else "false"
    _check_shapes(cfg)
    for item in cfg.worker_env.split(","):
        name = item.partition("=")[0].strip()
        if item.strip() and not _ENV_NAME.fullmatch(name):
            raise ConfigError(f"worker_env must be comma-separated NAME or NAME=value items (NAME: letters, "
                              f"digits and _, not starting with a digit), got {item.strip()!r}")
    cfg.storage_spec()
    cfg.shuffle_storage_spec()
    return dataclasses.replace(cfg, progress=progress, speculative=speculative)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _check_shapes(cfg: Config) -> None:
    """Refuse a bucket, Redis URL or endpoint of the wrong shape here, naming the fix, rather than
    as a botocore or redis-py error at the first request."""
    bucket = cfg.bucket.strip()
    if bucket and not bucket.startswith("arn:") and not _BUCKET.fullmatch(bucket):
        if "://" in bucket or bucket.lower().startswith("s3:"):
            name, _, rest = bucket.split("://", 1)[-1].partition("/")
            fix = f"bucket={name!r}" + (f" and prefix={rest.strip('/')!r} (the key prefix)" if rest.strip("/") else "")
            raise ConfigError(f"bucket must be a bucket name, not a URL, got {cfg.bucket!r}: use {fix}")
        if "/" in bucket:
            name, _, rest = bucket.partition("/")
            raise ConfigError(f"bucket must be a bucket name without '/', got {cfg.bucket!r}: use bucket={name!r} "
                              f"and prefix={rest.strip('/')!r} (the key prefix)")
        raise ConfigError(f"bucket {cfg.bucket!r} is not a bucket name (letters, digits, '.' and '-')")
    if not cfg.redis_url.startswith(_REDIS_SCHEMES):
        raise ConfigError(f"redis_url must start with redis://, rediss:// (TLS) or unix://, got {cfg.redis_url!r}: "
                          "for example redis://127.0.0.1:6379/0")
    for key in ("endpoint_url", "lambda_endpoint_url"):
        url = getattr(cfg, key)
        if url and not url.startswith(("http://", "https://")):
            raise ConfigError(f"{key} must be an http:// or https:// URL, got {url!r}: for example "
                              f"http://{url.split('://')[-1] or '127.0.0.1:9000'}")
_PROGRESS = {"auto": "auto", **{v: "true" for v in ("1", "true", "yes", "on")},
             **{v: "false" for v in ("0", "false", "no", "off")}}


def config_file() -> str:
    """The path of the config file that :func:`load_config` reads."""
    return os.environ.get("LAMBDAEXEC_CONFIG") or os.path.join(
        os.path.expanduser("~"), ".config", "lambdaexec", "config.ini"
    )


def load_config(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Resolve settings: ``overrides`` > ``LAMBDAEXEC_*`` variables > config file > defaults.

    >>> load_config({"max_workers": 3}).max_workers
    3
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = environ.get("LAMBDAEXEC_CONFIG") or config_file()
    if os.path.exists(path):
        parser = configparser.ConfigParser()
        try:
            parser.read(path)
        except configparser.Error as err:
            raise ConfigError(f"config file {path} cannot be parsed: {err}") from None
        for section in parser.sections():
            if section != "lambdaexec":
                raise ConfigError(f"config file {path}: unknown section [{section}]; use [lambdaexec]")
        if parser.has_section("lambdaexec"):
            for key, value in parser.items("lambdaexec"):
                if key not in FIELDS:
                    raise ConfigError(f"config file {path}: unknown key {key!r}; known keys: {', '.join(FIELDS)}")
                values[key] = _coerce(key, value, f"config file {path}")
    for name, value in environ.items():
        if name.startswith("LAMBDAEXEC_") and name not in ("LAMBDAEXEC_CONFIG", "LAMBDAEXEC_IN_WORKER"):
            key = name[len("LAMBDAEXEC_"):].lower()
            if key not in FIELDS:
                raise ConfigError(f"environment variable {name}: unknown setting {key!r}; known: {', '.join(FIELDS)}")
            values[key] = _coerce(key, value, f"environment variable {name}")
    for key, value in (overrides or {}).items():
        if key not in FIELDS:
            raise ConfigError(f"unknown setting {key!r}; known settings: {', '.join(FIELDS)}")
        if value is not None:
            values[key] = _coerce(key, value, "keyword argument")
    return _validate(Config(**values))
