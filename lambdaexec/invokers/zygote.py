"""Local worker processes forked from a pre-started template process, so a new worker costs a
fork, not an interpreter start and the imports of ``worker.handler``.

The template (one per client process and launch environment, started with the first local pool
that needs it) imports ``worker.handler`` and nothing of the user's, then waits::

    client (LocalInvoker) ── "spawn" + worker socket + log fd ──► template ── fork ──► worker
                          ◄── pid ─────────────────────────────┘   (setsid, env, cwd, runs
                          ── "status" pid ──► template reaps ──►    local_runtime.main)

Each worker starts its own session (a call's children are killed with its worker's process
group), takes the environment the pool gives it (:mod:`.environment`: a Lambda worker's, not the
client's whole environment; the template itself starts with the runtime part only) and the
client's working directory, and runs
:func:`lambdaexec.invokers.local_runtime.main`, the same loop a ``python -m`` worker runs, so it
calls ``worker.handler.handler`` exactly as Lambda does and caps its memory the same way. Only the
template is a child of the client, so the template reaps workers and reports their exit status.

This exists only because the local backend shares the client's machine: Lambda starts its own
containers. If the template cannot start (the runtime does not import), the pool starts each
worker with ``python -m`` instead, which reports the import error as before.
"""

from __future__ import annotations

import atexit
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from typing import Any

# environment variables that change what the template imports or how (the rest is set per worker)
_IMPORT_VARS = ("PYTHON", "LD_", "MALLOC", "OMP_", "OPENBLAS_", "MKL_", "BLIS_", "VECLIB_", "NUMEXPR_")


class _Template:
    """The client's handle on one template process (thread-safe)."""

    def __init__(self, env: dict[str, str]):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.log = tempfile.TemporaryFile()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "lambdaexec.invokers.zygote", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL,
            stdout=self.log, stderr=self.log, start_new_session=True,
        )
        theirs.close()
        self.sock = ours
        self.lock = threading.Lock()
        self.ok = self._reply(None) is not None  # ("ready", pid) once it has imported the runtime

    def _reply(self, request: Any, fds: list[int] = ()) -> Any:
        try:
            if request is not None:
                socket.send_fds(self.sock, [pickle.dumps(request)], list(fds))
            data = self.sock.recv(1 << 16)
        except OSError:
            data = b""
        if not data:
            self.ok = False
            return None
        return pickle.loads(data)

    def spawn(self, sock: socket.socket, log: Any, env: dict[str, str], args: tuple) -> int | None:
        """Fork a worker running ``local_runtime.main(sock, *args)``; its pid, or None."""
        with self.lock:
            if not self.ok:
                return None
            reply = self._reply(("spawn", env, os.getcwd(), args), [sock.fileno(), log.fileno()])
        return None if reply is None else reply[1]

    def status(self, pid: int) -> int | None:
        """The worker's exit code as ``Popen.returncode`` gives it, or None while it runs."""
        with self.lock:
            reply = self._reply(("status", pid))
        return -signal.SIGKILL if reply is None else reply[1]  # template gone: its workers too

    def close(self) -> None:
        self.sock.close()
        wait_or_kill(self.popen)
        self.log.close()


def wait_or_kill(process: subprocess.Popen | Forked, grace: float = 5.0) -> int:
    """Wait up to ``grace`` seconds for ``process`` (told to stop, or dying) to exit, then
    SIGKILL it; its exit code as ``Popen.returncode`` gives it. No process outlives a stop."""
    try:
        return process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


_templates: dict[tuple, _Template] = {}
_lock = threading.Lock()


def _forget_after_fork() -> None:  # a forked client starts its own templates
    global _lock
    _templates.clear()
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def _key(env: dict[str, str]) -> tuple:
    return (sys.executable, os.getcwd(),
            *sorted((k, v) for k, v in env.items() if k.startswith(_IMPORT_VARS)))


def template(env: dict[str, str]) -> _Template | None:
    """The running template for ``env`` (started now if need be), or None if it cannot start.

    Templates live as long as the client process: each ends when its socket closes, at exit (no
    atexit hook, so executors still stopping their workers at exit can ask it for exit codes)."""
    key = _key(env)
    with _lock:
        t = _templates.get(key)
        if t is not None and t.ok and t.popen.poll() is None:
            return t
        t = _Template(env)
        if not t.ok:
            t.close()
            return None
        _templates[key] = t
        return t


class Forked:
    """A forked worker, with the parts of ``subprocess.Popen`` the pool uses."""

    def __init__(self, template: _Template, pid: int):
        self.template, self.pid, self.returncode = template, pid, None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.template.status(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        end = None if timeout is None else time.monotonic() + timeout
        pause = 0.0005
        while self.poll() is None:
            if end is not None and time.monotonic() >= end:
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout)
            time.sleep(pause)
            pause = min(0.02, pause * 2)
        return self.returncode

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# --- the template process ----------------------------------------------------------------------

def _child(ctl: socket.socket, wake: tuple[int, int], fds: list[int], env: dict, cwd: str, args: tuple) -> None:
    code = 1
    try:
        os.setsid()  # its own process group: the pool kills a call's children with it
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        ctl.close()
        os.close(wake[0])
        os.close(wake[1])
        sock_fd, log_fd = fds
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(null)
        os.close(log_fd)
        os.environ.clear()
        os.environ.update(env)
        try:
            os.chdir(cwd)
        except OSError:
            pass
        from lambdaexec.invokers.local_runtime import main

        main(sock_fd, *args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve(fd: int) -> None:
    """The template's loop: fork workers on request, reap them, report their exit status."""
    ctl = socket.socket(fileno=fd)
    import worker.handler  # noqa: F401  (the runtime every worker needs, imported once here)
    from lambdaexec.invokers import local_runtime  # noqa: F401
    from lambdaexec.storage import local, redis, s3  # noqa: F401  (what open_storage imports: 40 ms)

    here = os.getcwd()
    sys.path[:] = [p for p in sys.path if p not in ("", here)]  # as local_runtime.main does
    wake = os.pipe()
    os.set_blocking(wake[0], False)
    os.set_blocking(wake[1], False)
    signal.set_wakeup_fd(wake[1])
    signal.signal(signal.SIGCHLD, lambda *_: None)
    exited: dict[int, int] = {}

    def reap() -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            exited[pid] = os.waitstatus_to_exitcode(status)

    ctl.send(pickle.dumps(("ready", os.getpid())))
    while True:
        readable, _, _ = select.select([ctl, wake[0]], [], [])
        if wake[0] in readable:
            try:
                while os.read(wake[0], 4096):
                    pass
            except BlockingIOError:
                pass
            reap()
        if ctl not in readable:
            continue
        data, fds, _, _ = socket.recv_fds(ctl, 1 << 20, 2)
        if not data:
            return  # the client has gone; workers notice the end of their own sockets
        request = pickle.loads(data)
        if request[0] == "spawn":
            _, env, cwd, args = request
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(ctl, wake, fds, env, cwd, args)
            for f in fds:
                os.close(f)
            ctl.send(pickle.dumps(("pid", pid)))
        else:
            reap()
            ctl.send(pickle.dumps(("status", exited.pop(request[1], None))))


if __name__ == "__main__":
    serve(int(sys.argv[1]))
