"""The one worker entry point: ``handler(event, context)``, as AWS Lambda calls it.

It reads the job's function (cached per container by content hash) and its calls' inputs from
storage, runs each call with stdout/stderr captured, and hands each call's status and result to
:class:`worker.results.Writer`, which writes the results of calls finishing close together as
one batch object (see :mod:`lambdaexec.wire.protocol`). Whatever goes wrong, a status is written
before the handler returns.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import time
import traceback
from collections import OrderedDict
from typing import Any

from lambdaexec.errors import RemoteError
from lambdaexec.storage import Storage, shared_storage, signed
from lambdaexec.storage.base import set_retry_deadline
from lambdaexec.wire import protocol, serialize
from worker import blobs, memory
from worker.probe import probe
from worker.results import Writer

_LOG_LIMIT = 1 << 20
#: During a call, the root logger also writes to the call's stderr, one line per record with its
#: level and UTC time (Lambda's runtime prefixes records the same way). One handler, attached for
#: the call only: a handler that ``logging.basicConfig`` would bind to the first call's stderr
#: would keep writing there for every later call on this worker.
_call_log = logging.StreamHandler()
_call_log.setFormatter(logging.Formatter(
    "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(name)s\t%(message)s", "%Y-%m-%dT%H:%M:%S"))
_call_log.formatter.converter = time.gmtime  # type: ignore[union-attr]
_functions: OrderedDict[str, Any] = OrderedDict()
_initialized: set[str] = set()


def _function(store: Storage, key: str) -> tuple[Any, int]:
    if key in _functions:
        _functions.move_to_end(key)
        return _functions[key], 0
    data = store.get(key)
    fn = serialize.loads(data)
    _functions[key] = fn
    if len(_functions) > 32:
        _functions.popitem(last=False)
    return fn, len(data)


def _worker_id(context: Any) -> str:
    stream = getattr(context, "log_stream_name", None)
    return stream or f"{socket.gethostname()}:{os.getpid()}"


def _clip(text: str) -> str:
    if len(text) <= _LOG_LIMIT:
        return text
    return f"[... {len(text) - _LOG_LIMIT} characters dropped ...]\n" + text[-_LOG_LIMIT:]


def _error_status(kind: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"ok": False, "error_type": kind, "message": message, **extra}


def _write_all(store: Storage, event: dict, status: dict[str, Any], context: Any) -> None:
    """Write the same failure status for every call of the event."""
    writer = Writer(store, event["job_prefix"], getattr(context, "calls_done", None))
    for call, _, _ in event["calls"]:
        writer.add(call, status, [])
    writer.close()


class _Capture:
    """Captures each call's stdout, stderr and log records, for all the calls of one event.

    The streams are redirected and the log handler attached once per event, not per call (that
    cost a tiny call a third of its time); each call's text is what was written between its
    start and its end."""

    external: Any = None  # reads a large argument stored apart by content (worker/blobs.py)

    def __enter__(self) -> _Capture:
        self.out, self.err = io.StringIO(), io.StringIO()
        _call_log.setStream(self.err)
        self.root = logging.getLogger()
        # Lambda's runtime (awslambdaric) logs records to stdout with the request id; during a
        # call they go to the call's stderr through ours instead, once, not also into its stdout
        self.runtime = [h for h in self.root.handlers if type(h).__module__.startswith("awslambdaric")]
        for h in self.runtime:
            self.root.removeHandler(h)
        self.root.addHandler(_call_log)
        self._redirects = contextlib.ExitStack()
        self._redirects.enter_context(contextlib.redirect_stdout(self.out))
        self._redirects.enter_context(contextlib.redirect_stderr(self.err))
        return self

    def __exit__(self, *exc: object) -> None:
        self._redirects.close()
        self.root.removeHandler(_call_log)
        for h in self.runtime:
            self.root.addHandler(h)

    def run(self, fn: Any, args_blob: memoryview, status: dict[str, Any]) -> tuple[bool, Any]:
        """Run one call; its outcome, and its times and output in ``status``."""
        peak = memory.start_peak()
        status["func_start"] = time.time()
        try:
            args, kwargs = serialize.loads(args_blob, self.external)
            value, ok = fn(*args, **kwargs), True
        except BaseException as exc:  # user code may raise anything, SystemExit included
            value, ok = exc, False
            _note_missing_variable(exc)
            status["traceback"] = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        status["func_end"] = time.time()
        status["peak_memory"] = memory.peak_since(peak)  # bytes: this call's own peak (worker/memory.py)
        status["stdout"], status["stderr"] = _take(self.out), _take(self.err)
        return ok, value


def _retiring(context: Any) -> None:
    """Tell the local pool, before the results are announced, that this worker exits after
    them (its context has ``retiring``; Lambda's does not), so it sends this worker no more."""
    retiring = getattr(context, "retiring", None)
    if retiring is not None:
        retiring()


def _note_missing_variable(exc: BaseException) -> None:
    """A ``KeyError`` raised by ``os.environ[name]`` gets a note: the worker's environment is
    minimal by design (:mod:`lambdaexec.invokers.environment`), and ``worker_env`` adds to it."""
    if not isinstance(exc, KeyError) or not exc.args:
        return
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None or tb.tb_frame.f_globals.get("__name__") != "os" or tb.tb_frame.f_code.co_name != "__getitem__":
        return
    name = exc.args[0]
    note = (f"lambdaexec: the environment variable {name!r} is not set in the worker: workers get a minimal "
            f"environment, not the client's. Pass it with the worker_env setting (worker_env={name!r}, or "
            f"{name}=value; LAMBDAEXEC_WORKER_ENV), then for Lambda `lambdaexec deploy`")
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:  # Python 3.10: no notes; the message says it
        exc.args = (f"{name!r} ({note})", *exc.args[1:])


def _take(stream: io.StringIO) -> str:
    """What ``stream`` holds (clipped to the last ``_LOG_LIMIT`` characters); empty it."""
    text = stream.getvalue()
    if text:
        stream.seek(0)
        stream.truncate()
    return _clip(text)


def _serialize_value(ok: bool, value: Any, status: dict[str, Any]) -> list[memoryview]:
    try:
        return serialize.dumps(value)
    except MemoryError:
        raise  # not the value's fault: the handler reports it as out of memory
    except Exception as err:
        if memory.memory_error(err):
            raise
        what = "result" if ok else "exception"
        status["ok"] = False
        if ok:
            status.update(error_type="UnpicklableError", message=f"the call's {what} cannot be serialized: {err}")
            return []
        remote = RemoteError(f"{type(value).__name__}: {value} (the exception could not be pickled: {err})")
        return serialize.dumps(remote)


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Run the calls named in ``event`` and write each one's result to storage."""
    received = time.time()
    os.environ["LAMBDAEXEC_IN_WORKER"] = "1"
    if "lambdaexec_probe" in event:  # the client's trial call: can this worker reach storage?
        return probe(event["lambdaexec_probe"])
    memory_mb = getattr(context, "memory_limit_in_mb", None)
    memory.cap(memory_mb)
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is not None:  # storage retries (storage.base) end a second before the call's time
        set_retry_deadline(time.monotonic() + remaining() / 1000 - 1.0)
    secret = bytes.fromhex(event.get("secret", ""))  # every object is checked with it: storage/signed.py
    store = shared_storage(event["storage"], secret)
    prefix = event["job_prefix"]
    signed.enter(signed.owner_of(prefix), secret)
    worker = _worker_id(context)
    try:
        theirs, ours = event["versions"], protocol.versions()
        if theirs != ours:
            _write_all(store, event, _error_status(
                "WorkerEnvironmentError",
                f"the client runs Python {theirs['python']} with cloudpickle {theirs['cloudpickle']} "
                f"(lambdaexec protocol {theirs.get('protocol', '1')}), but this worker runs Python "
                f"{ours['python']} with cloudpickle {ours['cloudpickle']} (protocol {ours['protocol']}): "
                "use the same versions on both sides (for Lambda, `lambdaexec deploy` builds a "
                "worker that matches the client)", worker=worker), context)
            return {"calls": len(event["calls"]), "error": "version mismatch"}
        init_key = event.get("init_key")
        if init_key and init_key not in _initialized:
            initializer, initargs = serialize.loads(store.get(init_key))
            try:
                initializer(*initargs)
            except Exception as exc:
                _write_all(store, event, _error_status(
                    "InitializerError", f"the executor's initializer raised {exc!r}",
                    traceback=traceback.format_exc(), worker=worker), context)
                return {"calls": len(event["calls"]), "error": "initializer failed"}
            _initialized.add(init_key)
        fn, func_bytes = _function(store, event["func_key"])
        calls = event["calls"]
        lo, hi = min(c[1] for c in calls), max(c[2] for c in calls)
        blob = memoryview(store.get(event["args_key"], lo, hi))
        for (_, start, end), digest in zip(calls, event["args_digests"], strict=True):
            store.check_digest(event["args_key"], start, end, blob[start - lo : end - lo], digest)
    except Exception as exc:
        size = sum(c[2] - c[1] for c in event["calls"])
        oom = memory.out_of_memory_loading(exc, f"the calls' arguments ({size:,} bytes) and function")
        if oom:
            _retiring(context)  # before the failure is announced
        _write_all(store, event, {**oom, "worker": worker} if oom else _error_status(
            type(exc).__name__, f"the worker could not load the job: {exc}",
            traceback=traceback.format_exc(), worker=worker), context)
        if oom:
            memory.exit_if_out_of_memory(oom)
        return {"calls": len(event["calls"]), "error": str(exc)}

    writer = Writer(store, prefix, getattr(context, "calls_done", None))
    try:
        with _Capture() as capture:
            capture.external = blobs.fetcher(store, prefix, memory_mb)  # large arguments stored once
            for i, (call, start, end) in enumerate(calls, 1):
                status: dict[str, Any] = {
                    "ok": True, "worker": worker, "received": received, "attempt": event["attempt"],
                    "bytes_in": end - start + func_bytes,
                }
                if memory_mb:  # the memory size the call ran with: what it is billed at
                    status["memory"] = int(memory_mb)
                func_bytes = 0
                try:
                    if event.get("mark_start"):  # the first call at once; others if they run long
                        marker = protocol.started_key(prefix, call, event["attempt"])
                        if i == 1:
                            store.put(marker, b"")
                        else:
                            writer.running(marker)
                    ok, value = capture.run(fn, blob[start - lo : end - lo], status)
                    status["ok"] = ok
                    oom = memory.out_of_memory(ok, value)
                    if oom is not None:
                        status.update(oom)
                    chunks = _serialize_value(ok, value, status) if oom is None else []
                    del value
                    size = serialize.size_of(chunks)
                    if size > event["max_result_size"]:
                        status.update(ok=False, error_type="ResultTooLargeError", message=(
                            f"the result is {size:,} bytes, over max_result_size "
                            f"({event['max_result_size']:,} bytes): return less (write large outputs to "
                            "storage yourself), or raise max_result_size"))
                        chunks = []
                    status["bytes_out"] = size if chunks else 0
                    status["result_written"] = time.time()
                except Exception as exc:
                    value = None  # noqa: F841  (freed first: the failure's status must still be written)
                    status.update(memory.out_of_memory_loading(exc, "the call's result") or dict(
                        ok=False, error_type=type(exc).__name__, traceback=traceback.format_exc(),
                        message=f"the worker failed to store the result: {exc}"), result_written=time.time())
                    chunks = []
                if status.get("error_type") == "OutOfMemoryError":
                    _retiring(context)  # before its result is announced
                writer.add(call, status, chunks, last=i == len(calls))
                del chunks
                if status.get("error_type") == "OutOfMemoryError":
                    writer.close()  # before the worker exits: this result and those waiting with it
                    memory.exit_if_out_of_memory(status)
    finally:
        writer.close()
    return {"calls": len(calls)}
