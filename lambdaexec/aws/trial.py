"""The trial call: one synchronous invocation, made when a Lambda executor starts, that asks
the worker to put, get, list and delete a small object in the job storage (``worker/probe.py``).

A worker that cannot reach storage cannot write a status for its calls either, so without this
the client would wait for the call deadline with no hint. The trial runs beside the first real
invocations (it does not delay them) and answers within seconds; when the worker fails it, the
invoker fails every call with the worker's own message, which names the step that failed and
the fix. The answer carries the end of the worker's log (``X-Amz-Log-Type: Tail``).
"""

from __future__ import annotations

import json
import time
from typing import Any

#: error types of a failed trial that mean no call can succeed (the rest, e.g. an older worker
#: that does not know the probe, are not held against the executor)
_FATAL = ("StorageAccessError", "Runtime.ImportModuleError", "Runtime.HandlerNotFound", "Runtime.ExitError",
          "Runtime.OutOfMemory")


def trial_call(sender: Any, storage_spec: dict[str, Any], prefix: str, attempts: int = 5,
               stats: dict[str, int] | None = None) -> tuple[str, str] | None:
    """``(error_type, message)`` if the worker cannot run calls against ``storage_spec`` (or
    the Invoke endpoint cannot be connected to at all: ``InvokeEndpointError``), else ``None``
    (also when the trial got no answer otherwise: the calls' own deadlines then apply).
    Its throttled requests are counted in ``stats`` (the invoker's)."""
    stats = {} if stats is None else stats
    payload = json.dumps({"lambdaexec_probe": {"storage": storage_spec, "prefix": prefix}}).encode()
    for attempt in range(attempts):
        result = sender.invoke(payload, "RequestResponse", tail=True)
        stats["throttled"] = stats.get("throttled", 0) + (result.status == 429)
        if not result.retriable:
            break
        if attempt < attempts - 1:
            time.sleep(min(2.0, 0.2 * 2 ** attempt))
    else:
        if result.unreachable:  # every attempt, over seconds: no call can even be sent
            return "InvokeEndpointError", result.message
        return None
    if result.status >= 300 or not result.function_error:
        return None  # ok, or refused: the invocations themselves report a refusal
    try:
        doc = json.loads(result.payload)
        kind, message = str(doc.get("errorType", "")), str(doc.get("errorMessage", ""))
    except ValueError:
        kind, message = "", result.payload[:500].decode(errors="replace")
    if kind not in _FATAL:
        return None
    log = "\n".join(result.log.strip().splitlines()[-12:])
    if kind == "StorageAccessError":
        return "WorkerStorageError", message + (f"\n--- the end of the worker's log ---\n{log}" if log else "")
    return "WorkerStartError", (f"the worker function cannot run calls: its trial call failed with {kind}: {message}"
                                + (f"\n--- the end of the worker's log ---\n{log}" if log else "")
                                + "\n(fix: redeploy with `lambdaexec deploy`, then check with `lambdaexec doctor`)")
