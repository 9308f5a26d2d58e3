"""The memory size, kept by the worker itself so that a call exceeding it fails typed.

Lambda kills an execution environment whose memory exceeds the function's memory size; the
call's future would then only learn, at its deadline, that no result came. So the worker caps
its own data segment (``RLIMIT_DATA``: heap and private memory maps, where every Python object
and NumPy array lives) at what it uses now plus what is left of the memory size its context
reports (``context.memory_limit_in_mb``: Lambda's, the emulator's, or the ``memory`` setting
for local workers). An allocation past that raises ``MemoryError`` inside the call; the handler
then writes an ``OutOfMemoryError`` status naming the memory setting (final, not retried) and
the worker exits, as Lambda's would.
"""

from __future__ import annotations

import os
import resource
from typing import Any

_limited: int | None = None  # the memory size in MB once the cap is set in this process


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def cap(size: int | str | None) -> None:
    """Cap this process's data segment to ``size`` MB, the memory size (once per process)."""
    global _limited
    if _limited is not None or not size or not os.path.exists("/proc/self/status"):
        return
    mb = int(size)
    budget = max(0, mb * 1024 - _status_kb("VmRSS")) * 1024
    soft = _status_kb("VmData") * 1024 + budget
    hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
    try:
        resource.setrlimit(resource.RLIMIT_DATA, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
    except (ValueError, OSError):
        return
    _limited = mb


def out_of_memory(ok: bool, value: Any) -> dict[str, Any] | None:
    """The status fields of a call that failed for want of memory under the cap, else ``None``."""
    if ok or _limited is None or not isinstance(value, MemoryError):
        return None
    return {"ok": False, "error_type": "OutOfMemoryError", "message": (
        f"the call needed more memory than the function's memory size, {_limited} MB ({str(value) or 'MemoryError'}); "
        "raise the memory setting (memory= or LAMBDAEXEC_MEMORY; on Lambda, then `lambdaexec deploy`), or use less "
        "memory per call (smaller chunks)")}


def memory_error(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an error it was raised from or during, is a ``MemoryError``."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, MemoryError):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def out_of_memory_loading(exc: BaseException, what: str) -> dict[str, Any] | None:
    """The status fields of a call whose ``what`` (its arguments, its result) did not fit under
    the cap, else ``None``: an ``OutOfMemoryError`` naming the ``memory`` setting."""
    if _limited is None or not memory_error(exc):
        return None
    return {"ok": False, "error_type": "OutOfMemoryError", "message": (
        f"{what} did not fit in the worker's memory, the memory setting of {_limited} MB: raise memory (memory= or "
        "LAMBDAEXEC_MEMORY; on Lambda, then `lambdaexec deploy`), or move less data per call (put large data in "
        "storage yourself and pass its key, or read it in parts with lambdaexec.chunks)")}


def exit_if_out_of_memory(status: dict[str, Any]) -> None:
    """End the environment after an out-of-memory call, as Lambda does (its memory may be in a
    bad state); the status has been written."""
    if status.get("error_type") == "OutOfMemoryError":
        os._exit(137)


# --- the peak memory of one call ---------------------------------------------------------------
# Linux keeps a process's peak resident memory (VmHWM, also getrusage's ru_maxrss); writing "5"
# to /proc/self/clear_refs resets it to the current resident size. Resetting it before each
# call makes the peak after the call that call's own, not the worker's lifetime peak (a small
# call after a big one on the same warm worker reports its own). ~3 us + ~6 us per call.
_clear_refs: list = [None, -1]  # [fd of /proc/self/clear_refs, the pid that opened it]; fd False: unusable


def _reset_fd() -> int | None:
    fd, pid = _clear_refs
    if pid == os.getpid():
        return fd or None
    try:  # per process: a forked worker's inherited fd would reset its parent's peak
        fd = os.open("/proc/self/clear_refs", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        fd = False
    _clear_refs[:] = [fd, os.getpid()]
    return fd or None


def _max_rss() -> int:
    """This process's peak resident memory so far (since the last reset), in bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def start_peak() -> int:
    """Begin measuring a call's peak memory; pass the token to :func:`peak_since`."""
    fd = _reset_fd()
    if fd is not None:
        try:
            os.write(fd, b"5")
            return -1  # reset: the peak read afterwards is the call's own
        except OSError:
            _clear_refs[0] = False
    return _max_rss()  # no reset here: the lifetime peak before the call


def peak_since(token: int) -> int:
    """The peak resident memory (bytes) of the process since :func:`start_peak` gave ``token``.

    Where the peak cannot be reset (no ``/proc/self/clear_refs``), a peak above the one before
    the call is the call's; else the call stayed under an earlier peak, and its own is unknown
    beyond the memory resident now, which is reported."""
    peak = _max_rss()
    if token < 0 or peak > token:
        return peak
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return peak
