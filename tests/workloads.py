"""Functions that misbehave on purpose, shared by the failure tests of every backend."""

from __future__ import annotations

import os
import signal
import time


def exit_now(code):
    """End the worker process at once, as a crash in native code would."""
    os._exit(code)


def exit_via_kill():
    """Kill the worker process with SIGKILL, as the OOM killer does."""
    os.kill(os.getpid(), signal.SIGKILL)


def die_once(marker):
    """Kill the worker the first time (leaving ``marker``), succeed the next."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        exit_via_kill()
    return "second time lucky"


def hang(seconds):
    """Sleep ``seconds``, then return."""
    time.sleep(seconds)
    return "woke up"
