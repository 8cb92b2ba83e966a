"""One HTTP request's whole-time limit: urllib bounds each socket operation, this bounds the request.

A server that sends a byte now and then could otherwise hold a request for ever; when the deadline
passes, the request's sockets are shut down, which ends any read blocked on them.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import urllib.request

from .server_answers import MAX_ANSWER_BYTES, RemoteSamplerError


def shutdown_socket(sock: socket.socket) -> None:
    # The plain socket call: an SSL socket's own shutdown would unwrap it under its reader.
    with contextlib.suppress(OSError, TypeError, ValueError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Deadline:
    """One request's total time limit: when it passes, the request's sockets are shut down.

    urllib's ``timeout`` bounds each socket operation, so a server that sends a byte now and then
    could hold a request for ever; shutting the socket down ends any read blocked on it.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            shutdown_socket(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            shutdown_socket(sock)

    def cancel(self) -> None:
        self._timer.cancel()


def watched(connection_class: type, deadline: Deadline) -> type:
    class Watched(connection_class):
        def connect(self) -> None:
            super().connect()
            deadline.watch(self.sock)

    return Watched


class WatchedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def do_open(self, http_class, req, **kwargs):
        return super().do_open(watched(http_class, self.deadline), req, **kwargs)


class WatchedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def do_open(self, http_class, req, **kwargs):
        return super().do_open(watched(http_class, self.deadline), req, **kwargs)


def read_body(response) -> bytes:
    """The whole body; ``IncompleteRead`` when the connection ends before its Content-Length."""
    parts: list[bytes] = []
    size = 0
    while True:
        piece = response.read(65536)
        if not piece:
            break
        parts.append(piece)
        size += len(piece)
        if size > MAX_ANSWER_BYTES:
            raise RemoteSamplerError(
                f"the answer is larger than {MAX_ANSWER_BYTES} bytes: refusing to read on."
            )
    body = b"".join(parts)
    missing = getattr(response, "length", None)
    if missing:  # http.client returns a short body from read(amt) without complaint
        raise http.client.IncompleteRead(body, missing)
    return body


def opener_with(deadline: Deadline) -> urllib.request.OpenerDirector:
    """A urllib opener whose connections the ``deadline`` shuts down when it passes."""
    return urllib.request.build_opener(WatchedHTTPHandler(deadline), WatchedHTTPSHandler(deadline))
