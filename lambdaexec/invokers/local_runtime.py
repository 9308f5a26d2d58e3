"""The program each local worker process runs: a stand-in for the AWS Lambda runtime.

It receives invocation events over a socket from the client's pool, calls
``worker.handler.handler(event, context)`` exactly as Lambda would, and reports each finished
call back. Like a warm Lambda container, it lives for many invocations.

Frames on the socket are ``u32 length`` + pickle. Pool -> worker: ``(seq, event)`` or ``None``
(exit). Worker -> pool: ``("ready", pid)``, then ``("done", seq, calls, key, busy)`` per result
object written (one call's, or a batch's: :mod:`lambdaexec.wire.protocol`; ``busy``: seconds the
calls' user code ran).
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from typing import Any


def send(sock: socket.socket, obj: Any) -> None:
    """Write one frame."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(struct.pack("<I", len(data)) + data)


class Reader:
    """Reads frames from a socket, one ``recv`` call for small frames (bytes past a frame are kept)."""

    def __init__(self, sock: socket.socket):
        self.sock, self.buffer = sock, b""

    def recv(self) -> Any:
        """Read one frame; None at end of stream."""
        data = self.buffer
        while len(data) < 4 or len(data) < 4 + struct.unpack_from("<I", data)[0]:
            part = self.sock.recv(1 << 16)
            if not part:
                return None
            data += part
        n = 4 + struct.unpack_from("<I", data)[0]
        self.buffer = data[n:]
        return pickle.loads(data[4:n])


class LocalContext:
    """The parts of Lambda's context object a handler uses, plus ``calls_done`` for the pool."""

    function_name = "lambdaexec-local"
    function_version = "$LATEST"

    def __init__(self, sock: socket.socket, seq: int, timeout: float, memory_mb: int):
        self._sock, self._seq = sock, seq
        self._deadline = time.monotonic() + timeout
        self._request_id: str | None = None
        self.log_stream_name = f"local-{os.getpid()}"
        self.memory_limit_in_mb = memory_mb

    @property
    def aws_request_id(self) -> str:
        """A unique id per invocation, as Lambda's (made when first read: few handlers read it)."""
        if self._request_id is None:
            self._request_id = uuid.uuid4().hex
        return self._request_id

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def retiring(self) -> None:
        """Tell the pool that this worker exits after its event (it ran out of memory, and ends
        as a Lambda environment would): no call may be sent to it meanwhile."""
        send(self._sock, ("retiring",))

    def calls_done(self, calls: list[int], key: str, busy: float = 0.0) -> None:
        """Tell the pool that the object at ``key`` holds the results of ``calls``, which ran
        for ``busy`` seconds in all."""
        send(self._sock, ("done", self._seq, calls, key, busy))


def _end_with_client(client: int) -> None:
    """End this worker, and what its calls started, once the client process is gone (killed
    with SIGKILL, it could not stop us): a call may run for ``timeout`` without reading the socket."""
    while os.getppid() == client:
        time.sleep(0.5)
    os.killpg(os.getpid(), signal.SIGKILL)  # our session's group: the worker and its children


def main(fd: int, timeout: float, memory_mb: int) -> None:
    sock = socket.socket(fileno=fd)
    threading.Thread(target=_end_with_client, args=(os.getppid(),), name="lambdaexec-orphan-watch",
                     daemon=True).start()
    from worker.handler import handler

    here = os.getcwd()
    # a Lambda container has only installed code: the user's own files must travel by value
    sys.path[:] = [p for p in sys.path if p not in ("", here)]
    send(sock, ("ready", os.getpid()))
    frames = Reader(sock)
    while True:
        msg = frames.recv()
        if msg is None:
            return
        seq, event = msg
        handler(event, LocalContext(sock, seq, timeout, memory_mb))


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]))
