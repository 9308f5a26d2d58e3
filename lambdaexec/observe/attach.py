"""``attach(job_id)``: futures for a job submitted by another process, on the ``lambda`` backend.

Calls on Lambda outlive the client that invoked them: each writes its result object to storage
whoever is listening. ``attach`` reads the job's manifest from the job record, makes one
future per call and a watcher thread that lists the job's result objects (one request per
thousand objects, as the monitor does; a batch object's key names the calls it holds) and
completes each future from its result, reading each object once, until every
call has finished or the job's deadline (created + ``timeout`` x (``retries`` + 1) +
``start_deadline``) has passed; a call with no result by then fails with ``CallLostError``.
The attaching process never invokes, retries or deletes anything: that stays the submitter's.

On the ``local`` backend the calls run in worker processes owned by the submitting client and
end with it, so there is nothing to attach to: :class:`~lambdaexec.errors.AttachError` says so.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from lambdaexec import errors
from lambdaexec.future import LambdaFuture
from lambdaexec.observe import jobs as records
from lambdaexec.wire import protocol


def attach(job_id: str, poll_interval: float = 0.5, secret: bytes | str | None = None,
           **settings: Any) -> list[LambdaFuture]:
    """Futures for every call of job ``job_id`` (from ``lambdaexec jobs``; a unique part of the
    id will do), completed as the calls' results appear in storage.

    ``settings`` locate the storage as for :class:`~lambdaexec.LambdaExecutor` (``storage``,
    ``bucket``, ``prefix``, ...). Raises :class:`~lambdaexec.errors.AttachError` for a job of
    the local backend. Results are checked with the submitting executor's signing secret: on
    the machine that submitted the job it is found in the user's private secrets directory;
    elsewhere pass it as ``secret`` (bytes or hex; see docs/security.md), or
    :class:`~lambdaexec.errors.IntegrityError` says it is missing.

    >>> futures = lambdaexec.attach("20261127T081348-cbc04f2b0836-000000")  # doctest: +SKIP
    >>> lambdaexec.get_all_results(futures)  # doctest: +SKIP
    """
    from lambdaexec.config import load_config
    from lambdaexec.storage import open_storage, signed

    cfg = load_config(settings)
    unsigned = open_storage(cfg.storage_spec())  # the job record is JSON, not signed
    job = records.read_job(unsigned, cfg.prefix, records.resolve(unsigned, cfg.prefix, job_id), look=False)
    m = job.manifest
    if m["backend"] != "lambda":
        raise errors.AttachError(
            f"job {job.job_id} ran on the {m['backend']!r} backend: its calls run in worker processes "
            f"owned by the client that submitted them (on {m['host']}), which stop when that client "
            "exits, so there is nothing to attach to. Its record stays readable: "
            f"`lambdaexec logs {job.job_id}`. Jobs on backend='lambda' can be attached")
    storage = signed.SignedStorage(unsigned, signed.secret_for(signed.owner_of(m["job_prefix"]), secret))
    prefix = m["job_prefix"].rsplit("/", 1)[1]
    futures = [LambdaFuture(m["created"]) for _ in range(m["calls"])]
    for i, f in enumerate(futures):
        f.call_id = f"{prefix}/{i}"
        f.set_running_or_notify_cancel()
    deadline = m["created"] + m["timeout"] * (m["retries"] + 1) + m["start_deadline"]
    threading.Thread(target=_watch, args=(storage, cfg.prefix, job, futures, deadline, poll_interval),
                     name="lambdaexec-attach", daemon=True).start()
    return futures


def _complete(storage: Any, key: str, read: dict[str, Any], future: LambdaFuture, call: int) -> bool:
    """Complete ``future`` from the object at ``key`` (read once per round into ``read``);
    False if it is not there."""
    try:
        if key not in read:
            read[key] = protocol.unpack_results(key, storage.get(key))
        status, payload = read[key][call]
    except KeyError:
        return False
    except errors.IntegrityError as err:  # forged or altered: never unpickled
        future.set_exception(err)
        return True
    from lambdaexec.runtime.outcome import decode_result, record_status

    record_status(future, status, key)
    ok, value = decode_result(status, payload, future.call_id)
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
    return True


def _watch(storage: Any, root: str, job: records.JobRecord, futures: list[LambdaFuture], deadline: float,
           poll_interval: float) -> None:
    m = job.manifest
    left = set(range(len(futures)))
    try:
        while left:
            present = protocol.keys_by_call(storage.list(m["job_prefix"] + "/calls/"))
            read: dict[str, Any] = {}
            for c in sorted(left & present.keys()):
                if _complete(storage, present[c], read, futures[c], c):
                    left.discard(c)
            if not left:
                break
            collected = records.read_job(storage.inner, root, job.job_id, look=False).calls is not None
            if collected or time.time() > deadline:
                why = ("its submitting client finished the job and deleted the results it collected "
                       "(keep_data=True keeps them)") if collected \
                    else f"no result by the job's deadline ({time.time() - deadline:.0f} s ago)"
                for c in left:
                    futures[c].set_exception(errors.CallLostError(f"call {futures[c].call_id}: {why}"))
                return
            time.sleep(poll_interval)
    except BaseException as err:  # never leave a future waiting forever
        for c in left:
            if not futures[c].done():
                futures[c].set_exception(errors.CallLostError(f"attaching to {job.job_id} failed: {err!r}"))
        raise
    finally:
        storage.close()
