"""The worker's trial call: can this execution environment read and write the job storage?

The client sends one synchronous invocation whose event is ``{"lambdaexec_probe": {"storage":
<spec>, "prefix": <executor prefix>}}`` when its executor starts. A worker that cannot reach
storage cannot write a status either, so without this the client would only learn of it at
the call deadline. The answer is ``{"ok": true}`` or a raised :class:`StorageAccessError`,
which the Lambda runtime returns as the invocation's error (``errorType``, ``errorMessage``).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from lambdaexec.storage import shared_unsigned_storage


class StorageAccessError(Exception):
    """The worker could not put, get, list or delete an object in the job storage."""


def _where(spec: dict[str, Any], key: str) -> str:
    if spec.get("kind") == "s3":
        return f"s3://{spec.get('bucket')}/{key}" + (f" at {spec['endpoint_url']}" if spec.get("endpoint_url") else "")
    return f"{spec.get('kind')} storage key {key}"


def _fix(spec: dict[str, Any]) -> str:
    if spec.get("kind") != "s3":
        return "give the worker access to the same storage as the client"
    return ("on AWS Lambda the function's role must allow s3:GetObject and s3:PutObject on the job prefix and "
            "s3:ListBucket on the bucket (run `lambdaexec deploy` with this bucket and prefix, then `lambdaexec "
            "doctor`); under `lambdaexec emulate` start the emulator with AWS credentials valid for this storage "
            "in its environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE), as a Lambda role "
            "gives them")


def probe(request: dict[str, Any]) -> dict[str, Any]:
    """Put, get, list and delete one small object under ``request["prefix"]``; raise
    :class:`StorageAccessError` naming the first step that failed and the fix."""
    spec, prefix = request["storage"], request["prefix"].rstrip("/")
    key = f"{prefix}/probes/{uuid.uuid4().hex}"
    step = "open"
    try:
        store = shared_unsigned_storage(spec)
        step = "write"
        store.put(key, b"lambdaexec probe")
        step = "read"
        if bytes(store.get(key)) != b"lambdaexec probe":
            raise ValueError("it read back different bytes than it wrote")
        step = "list"
        store.list(f"{prefix}/probes/")
        step = "delete"
        store.delete(key)
    except Exception as err:
        raise StorageAccessError(
            f"the worker ({os.environ.get('AWS_LAMBDA_FUNCTION_NAME', 'local')}) could not {step} "
            f"{_where(spec, key)}: {type(err).__name__}: {err}. Fix: {_fix(spec)}") from err
    return {"ok": True}
