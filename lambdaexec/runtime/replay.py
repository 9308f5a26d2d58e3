"""Replaying a failed call here, under a debugger: :func:`replay` and ``lambdaexec replay CALL_ID``.

A call that fails keeps its function and inputs: in its future (until it succeeds: the same
recipe :func:`lambdaexec.retry_failed` runs again) and, for other processes, in storage::

    <prefix>/replay/<executor>-<job>/<call>     (function pickle, inputs, what failed, when),
                                                signed with the user's durable secret

written by :class:`Keeper` (a watcher of the monitor) when the call fails, in the background,
and kept after the executor's own objects are deleted, until ``lambdaexec clean`` deletes the
job's record (``job_retention_days``; ``--older-than``) or ``lambdaexec clean --replay``.
:func:`run` loads the function and its inputs in this process and calls it: its value is
returned, or its exception raised with a local traceback, which ``pdb.post_mortem`` (or an
IDE) steps into.

Not replayed: the executor's ``initializer``, ``worker_env`` variables and anything the worker
had on its disk; the function of an installed module (pickled by reference) runs as installed
here.
"""

from __future__ import annotations

import concurrent.futures
import re
import threading
import time
from typing import Any

from lambdaexec.errors import BudgetExceededError, IntegrityError, LambdaExecError
from lambdaexec.runtime.watcher import Watcher
from lambdaexec.storage import Storage, signed
from lambdaexec.wire import serialize

#: a call id: ``<executor id>-<job number>/<call number>`` (``future.call_id``)
CALL_ID = re.compile(r"^[0-9a-f]{12}-[0-9]{6}/[0-9]+$")
#: failures of calls that never ran (cancelled, refused over budget, executor broken): not kept
_NEVER_RAN = (concurrent.futures.CancelledError, BudgetExceededError, concurrent.futures.BrokenExecutor)
#: failed calls kept per executor at most (a job of many failing calls keeps its first ones)
KEEP_AT_MOST = 1000


class ReplayNotFoundError(LambdaExecError, KeyError):
    """No failed call is kept under the call id given."""

    def __str__(self) -> str:
        return str(self.args[0])


def replay_prefix(root: str) -> str:
    """Where failed calls are kept under ``root`` (the ``prefix`` setting)."""
    return f"{root}/replay/"


def record_key(root: str, call_id: str) -> str:
    """The key of the kept call ``call_id``."""
    return f"{replay_prefix(root)}{call_id}"


class Keeper(Watcher):
    """Writes each failed call's function and inputs to storage (see the module docstring)."""

    def __init__(self, storage: Storage, root: str):
        self.unsigned, self.root = signed.unsigned(storage), root
        self._store: Storage | None = None
        self._lock = threading.Lock()
        self._queue: list[tuple[str, Any]] = []
        self._thread: threading.Thread | None = None
        self._kept = 0

    def finished(self, job: Any, call: int, future: Any, exc: BaseException | None) -> None:
        recipe = getattr(future, "_recipe", None)
        if exc is None or recipe is None or not future.call_id or isinstance(exc, _NEVER_RAN):
            return
        record = (recipe[0], recipe[1], {"call_id": future.call_id, "function": getattr(job, "name", ""),
                                         "failed": time.time(), "error": f"{type(exc).__name__}: {exc}"[:2000]})
        with self._lock:
            if self._kept >= KEEP_AT_MOST:
                return
            self._kept += 1
            self._queue.append((record_key(self.root, future.call_id), record))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._write, name="lambdaexec-replay", daemon=True)
                self._thread.start()

    def _write(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._thread = None
                    return
                key, (blob, chunks, info) = self._queue.pop(0)
            try:
                if self._store is None:
                    from lambdaexec.runtime.cache import durable_secret

                    self._store = signed.SignedStorage(self.unsigned, durable_secret())
                self._store.put(key, serialize.dumps((bytes(blob), b"".join(chunks), info)))
            except Exception:
                pass  # best effort: the call's future still has its inputs (replay(future) works)

    def closed(self) -> None:
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join()


def load(storage: Storage, root: str, call_id: str) -> tuple[bytes, bytes, dict[str, Any]]:
    """The kept call ``call_id``: (function pickle, inputs, info); :class:`ReplayNotFoundError`
    naming it if none is kept."""
    if not CALL_ID.match(call_id):
        raise ReplayNotFoundError(f"{call_id!r} is not a call id: a call id looks like 3f2a9c0d1b2e-000000/7 "
                                  "(future.call_id; `lambdaexec logs JOB` lists the failed calls' ids)")
    from lambdaexec.runtime.cache import durable_secret

    key = record_key(root, call_id)
    store = signed.SignedStorage(signed.unsigned(storage), durable_secret())
    try:
        blob, inputs, info = serialize.loads(store.get(key))
    except KeyError:
        raise ReplayNotFoundError(
            f"no failed call {call_id} is kept under {replay_prefix(root)}: the id is unknown, the call "
            "succeeded, or `lambdaexec clean` has removed it") from None
    except IntegrityError:
        raise ReplayNotFoundError(f"the kept call {call_id} was not written by you on this machine (its "
                                  "signature does not check), so it is not loaded") from None
    return blob, inputs, info


def run(blob: bytes, inputs: bytes | list) -> Any:
    """Call the function pickled in ``blob`` on ``inputs`` (serialized arguments) here."""
    fn = serialize.loads(blob)
    args, kwargs = serialize.loads(inputs if not isinstance(inputs, list) else b"".join(inputs))
    return fn(*args, **kwargs)


def replay(future: Any, storage: Storage | None = None, root: str | None = None) -> Any:
    """Run ``future``'s call again in this process (see the module docstring): from what the
    future kept, else from storage (``storage``/``root``: default, the configuration's)."""
    recipe = getattr(future, "_recipe", None)
    if recipe is not None:
        return run(recipe[0], recipe[1])
    call_id = future if isinstance(future, str) else getattr(future, "call_id", "")
    if not call_id:
        raise ReplayNotFoundError(f"{future!r} names no call: it is not a future of a lambdaexec call")
    if getattr(future, "_state", None) == "FINISHED" and getattr(future, "_exception", None) is None \
            and not isinstance(future, str):
        raise ReplayNotFoundError(f"call {call_id} succeeded: only failed calls keep their function and "
                                  "inputs for replay (its result is future.result())")
    own = storage is None
    if own:
        from lambdaexec.config import load_config
        from lambdaexec.storage import open_storage

        cfg = load_config()
        storage, root = open_storage(cfg.storage_spec()), cfg.prefix
    try:
        blob, inputs, _ = load(storage, root or "lambdaexec", call_id)
    finally:
        if own:
            storage.close()
    return run(blob, inputs)


def clear(storage: Storage, root: str, call_groups: list[str] | None = None) -> int:
    """Delete the kept calls under ``root`` (only those of ``call_groups``, ``<executor>-<job>``
    names, if given); how many were deleted."""
    if call_groups is None:
        keys = storage.list(replay_prefix(root))
        storage.delete(replay_prefix(root))
        return len(keys)
    n = 0
    for group in call_groups:
        keys = storage.list(f"{replay_prefix(root)}{group}/")
        if keys:
            storage.delete_keys(keys)
            n += len(keys)
    return n
