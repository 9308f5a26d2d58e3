"""See and steer a run: progress bars, timeline plots, cost and budget, the job record, attach.

The executor's monitor calls the watchers :func:`watchers_for` picks from the configuration
(see :mod:`~lambdaexec.runtime.watcher`); the rest are functions of finished futures or of job
records. Nothing here imports tqdm or matplotlib until a bar or a plot is asked for.
"""

from __future__ import annotations

from typing import Any

from lambdaexec.runtime.watcher import Watcher


def watchers_for(config: Any, storage: Any, executor_id: str) -> list[Watcher]:
    """The watchers an executor with ``config`` needs: progress bar, budget, job record."""
    out: list[Watcher] = []
    from lambdaexec.observe import progress

    if progress.wanted(config.progress):
        out.append(progress.ProgressBar())
    if config.max_cost > 0:
        from lambdaexec.observe.cost import Budget, load_prices

        out.append(Budget(config.max_cost, config.memory, config.architecture, load_prices(config.price_table)))
    if config.job_record:
        from lambdaexec.observe.record import JobRecorder

        out.append(JobRecorder(storage, config, executor_id))
    return out
