"""Everything AWS Lambda-specific, one module per job: the ``lambda`` backend's invoker, and
deploying, checking and emulating the worker function. ``import lambdaexec`` imports none of it.

::

    clients      boto3 session, region and clients; DeployError
    senders      one Invoke request (hand-signed HTTP, or boto3 behind a proxy; the signing
                 is shared with S3 storage: lambdaexec.storage.sigv4)
    invoker      the ``lambda`` backend: many invocations in flight, deadlines, retries
    grouping     how many calls of a job one invocation carries, from their measured time
    inflight     the calls in flight, the invocation carrying each, their deadlines
    trial        the trial call an executor makes first: can the worker reach storage?
    package      the deployment zip (and the container image)
    provision    deploy / teardown: bucket, IAM role, function
    doctor       check a setup, one line per piece, with the fix
    commands     the ``lambdaexec deploy|teardown|doctor|emulate`` subcommands
    emulator     a local Lambda: the Invoke API in front of execution environments
    runtime_api  one execution environment: the Lambda Runtime API served to ``awslambdaric``
    failure_log  the emulator's failed invocations: one line per kind, with a count
    local_cloud  a local S3 (SeaweedFS) for ``emulate --s3``, and ``emulate --background``

The main entry points, importable from here::

    from lambdaexec.aws import deploy, doctor, teardown, build_package
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {"deploy": "provision", "teardown": "provision", "doctor": "doctor", "build_package": "package"}


def __getattr__(name: str) -> Any:
    """Import the entry points on first use, so that ``lambdaexec.storage.sigv4`` stays light."""
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
