"""How workers start on this machine: a pool of local worker processes (forked from a warm
zygote) that run the same handler Lambda runs, behind the invoker interface (:mod:`.base`).

The Lambda invoker implements the same interface in :mod:`lambdaexec.aws.invoker`.
"""
