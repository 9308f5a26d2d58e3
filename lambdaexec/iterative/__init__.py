"""Iterative jobs built from ordinary calls: values broadcast once per worker, rounds
checkpointed to storage, and a Redis parameter server for asynchronous updates.

>>> from lambdaexec.iterative import Broadcast, ParameterServer, broadcast, iterate  # doctest: +SKIP
"""

from lambdaexec.iterative.broadcast import Broadcast, BroadcastMissingError, broadcast
from lambdaexec.iterative.iterate import iterate
from lambdaexec.iterative.params import ParameterMismatchError, ParameterServer, ParameterServerUnavailableError

__all__ = ["Broadcast", "BroadcastMissingError", "ParameterMismatchError", "ParameterServer",
           "ParameterServerUnavailableError", "broadcast", "iterate"]
