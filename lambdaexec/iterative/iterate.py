"""Rounds checkpointed to storage: ``state = step(state, r)`` on the client, each round's state
written before the next starts, so a client that dies continues where it stopped.

:func:`iterate` writes each round's state to ``<prefix>/iterate/<run-id>/<round>`` before starting
the next, so that a client that dies can be run again with the same ``resume`` id and continue
after the last round it completed (the round that was cut short runs again)::

    round r: step(state, r) ──► put iterate/<run>/<r> ──► delete iterate/<run>/<r-1> ──► r+1
    resume:  list iterate/<run>/ ──► newest round r ──► state = get(...) ──► continue at r+1
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from typing import Any, Callable

from lambdaexec.errors import LambdaExecError
from lambdaexec.storage import signed
from lambdaexec.wire import serialize

log = logging.getLogger(__name__)


def iterate(ex: Any, step: Callable[[Any, int], Any], state: Any, rounds: int, *,
            until: Callable[[Any, int], bool] | None = None, resume: str | None = None) -> Any:
    """Run ``state = step(state, r)`` for ``r`` in ``range(rounds)`` on the client; return the
    final state. Each round's state is checkpointed to storage before the next round starts.

    ``step`` may use the executor (typically one ``ex.map`` per round). ``until(state, r)``
    returning true stops after round ``r``. ``resume`` names the run: if a run of that name was
    interrupted (the client crashed or was killed), it continues after its last completed
    round instead of starting again; without ``resume`` a fresh name is used (and logged).
    The checkpoints are deleted once the run finishes, unless ``keep_data`` is set::

        def epoch(w, r):
            grads = ex.map(gradient, [w] * 8, range(8))
            return w - 0.1 * np.mean(list(grads), axis=0)

        w = ex.iterate(epoch, np.zeros(64), 100, resume="sgd-run-1")
    """
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {rounds}")
    run = resume or uuid.uuid4().hex[:12]
    if "/" in run or not run:
        raise ValueError(f"resume must be a non-empty name without '/', got {run!r}")
    # the checkpoints outlive the executor (a resumed run is another executor): they are signed
    # with the run's own secret, kept beside the executors' (storage/signed.py)
    owner = "iterate-" + hashlib.sha256(run.encode()).hexdigest()[:32]
    try:
        secret = signed.secret_for(owner)
    except LambdaExecError:
        secret = signed.new_secret()
        signed.save(owner, secret)
    store = signed.SignedStorage(ex.storage.inner, secret)
    prefix = f"{ex.config.prefix}/iterate/{run}/"
    done = sorted(int(k[len(prefix):]) for k in store.list(prefix) if k[len(prefix):].isdigit())
    first = 0
    if done:
        first = done[-1] + 1
        state = serialize.loads(store.get(f"{prefix}{done[-1]:08d}"))
        log.info("iterate %s: resuming after round %d", run, done[-1])
        if until is not None and until(state, done[-1]):
            first = rounds
    else:
        log.info("iterate %s: starting (pass resume=%r to continue it after a crash)", run, run)
    for r in range(first, rounds):
        state = step(state, r)
        store.put(f"{prefix}{r:08d}", serialize.dumps(state))
        store.delete_keys([f"{prefix}{d:08d}" for d in done])
        done = [r]
        if until is not None and until(state, r):
            break
    if not ex.config.keep_data:
        store.delete(prefix)
        signed.forget(owner)
    return state
