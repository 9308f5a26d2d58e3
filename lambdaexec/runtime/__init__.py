"""The client's machinery for a running job: the engine (submit queue, upload), the monitor
(invoke, fetch, retry), its watchers' hooks, speculation, the sweeper, outcomes, travelling futures.

Nothing here is imported by the worker; it imports the invokers, storage and wire layers below it.
"""
