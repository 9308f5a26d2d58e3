"""``lambdaexec clean``: delete what jobs and killed clients left in storage, never what a live
client still uses.

An executor keeps its objects under ``<prefix>/<executor-id>/``: the functions it uploaded
(``funcs/``), its initializer (``init``) and one prefix per job. A client that shuts down
deletes them (unless ``keep_data``); a client that is killed cannot, and leaves them::

    <prefix>/jobs/<time>-<executor>-<job>/manifest   the record: when, which client (pid, start,
                                                     machine), keep_data, where the data is (one
                                                     object may hold several jobs': observe/clients.py)
    <prefix>/<executor>/funcs/..., init, <job>/...   the data a killed client left

Who still needs an executor's objects is read from its job records:

- **age** (as for the records themselves): a record older than ``older_than`` is deleted with
  its job's data; an executor whose records are all that old loses ``funcs/`` and ``init`` too.
  Whatever the age, the data of a client known to be alive (below) is left to that client.
- **the client process**, for executors with younger records (:func:`clean_gone_clients`, run
  by the CLI): a manifest names its client's pid, when that process started and the machine
  (boot id and pid namespace). On the same machine, a client whose pid is gone, or belongs to
  a process started at another time, is gone for good: its executor's objects are deleted,
  unless it ran with ``keep_data``. A client on another machine is never judged by its pid,
  only by age, so a live executor anywhere keeps its objects.

An executor that keeps no job records (``job_record=False``) names no client: clean leaves its
objects (an S3 bucket made by ``lambdaexec deploy`` expires them after ``lifecycle_days``).
"""

from __future__ import annotations

import calendar
import time
from typing import Any

from lambdaexec.observe.clients import client_alive, read_record, record_index
from lambdaexec.runtime.replay import replay_prefix
from lambdaexec.storage import Storage
from lambdaexec.storage.signed import forget, unsigned


def created_at(job_id: str) -> float:
    """When ``job_id`` was created (from the id itself), seconds since the epoch."""
    return calendar.timegm(time.strptime(job_id.split("-", 1)[0], "%Y%m%dT%H%M%S"))


def executor_of(job_id: str) -> str:
    """The id of the executor that ran ``job_id`` (``<time>-<executor>-<job>``)."""
    return job_id.split("-")[1]


def _manifest(storage: Storage, index: dict[str, dict[str, str]], job_id: str,
              cache: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return read_record(unsigned(storage), index[job_id]["manifest"], job_id, cache)
    except (KeyError, ValueError):
        return None


def _job_prefix(root: str, manifest: dict[str, Any] | None) -> str | None:
    """The job's data prefix a manifest names, if it lies under ``root``'s executors: records
    are not signed (docs/security.md), so a forged one must not make clean delete elsewhere."""
    prefix = (manifest or {}).get("job_prefix")
    if not isinstance(prefix, str) or not prefix.startswith(f"{root}/") or prefix.count("/") < root.count("/") + 2 \
            or prefix.startswith(f"{root}/jobs/"):
        return None
    return prefix


def _executor_prefix(root: str, manifest: dict[str, Any] | None, executor: str) -> str:
    prefix = _job_prefix(root, manifest)
    if prefix:
        return prefix.rsplit("/", 1)[0] + "/"
    return f"{root}/{executor}/"


def clean(storage: Storage, root: str, older_than: float, dry_run: bool = False) -> list[str]:
    """Delete the records of jobs created more than ``older_than`` seconds ago, whatever data of
    theirs is left (a client that exited early leaves it) and the objects of executors whose
    records are all that old; never the data of a client known to be alive. Return the records'
    ids."""
    now = time.time()
    index, cache = record_index(storage, root), {}
    ids = sorted(index)
    old = [i for i in ids if now - created_at(i) > older_than]
    if dry_run:
        return old
    young = {executor_of(i) for i in ids if now - created_at(i) <= older_than}
    newest: dict[str, dict[str, Any] | None] = {}  # executor -> the manifest of its newest old record
    deleted: set[str] = set()  # record objects (one may hold several jobs' records, all as old)
    for job_id in old:  # oldest first
        manifest = _manifest(storage, index, job_id, cache)
        alive = client_alive((manifest or {}).get("client")) is True
        if _job_prefix(root, manifest) and not alive:  # a live client deletes its own
            storage.delete(_job_prefix(root, manifest) + "/")
        for name in {k.rsplit("/", 1)[0] + "/" for k in index[job_id].values()} - deleted:
            storage.delete(name)
            deleted.add(name)
        storage.delete(f"{replay_prefix(root)}{job_id.split('-', 1)[-1]}/")  # its failed calls kept for replay
        newest[executor_of(job_id)] = None if alive else manifest
    for executor, manifest in newest.items():
        if executor not in young and manifest is not None:
            storage.delete(_executor_prefix(root, manifest, executor))  # funcs/, init
            forget(executor)  # its signing secret, if it ran on this machine
    return old


def clean_gone_clients(storage: Storage, root: str, dry_run: bool = False) -> list[str]:
    """Delete every object of executors whose client process has ended on this machine without
    deleting them (killed), unless they ran with ``keep_data``; return those executors' ids.
    Their job records stay (``lambdaexec jobs`` still lists them) until they expire by age."""
    newest: dict[str, str] = {}
    index, cache = record_index(storage, root), {}
    for job_id in sorted(index):  # oldest first: the last one per executor is its newest
        newest[executor_of(job_id)] = job_id
    gone = []
    for executor, job_id in newest.items():
        manifest = _manifest(storage, index, job_id, cache)
        if manifest is None or manifest.get("keep_data") or client_alive(manifest.get("client")) is not False:
            continue
        prefix = _executor_prefix(root, manifest, executor)
        if not storage.list(prefix):
            continue  # it shut down properly, or was cleaned already
        gone.append(executor)
        if not dry_run:
            storage.delete(prefix)
            forget(executor)
    return gone
