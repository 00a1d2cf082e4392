"""A stand-in daemon for the tests: an HTTP server on a Unix socket.

Use from a test module (tests/ is on sys.path in pytest's default import mode)::

    from unix_http_server import UnixHttpServer, fixed, daemon_response, short_socket_dir

The server accepts one connection at a time, reads the request head, records
it and hands (connection, request bytes) to a responder, which writes whatever
bytes it likes; `fixed(data)` is the responder that always sends `data`.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

Responder = Callable[[socket.socket, bytes], None]


class UnixHttpServer:
    """Accepts connections on a Unix socket, one at a time, and hands each
    (connection, request bytes) to `respond`."""

    def __init__(self, path: Path, respond: Responder) -> None:
        self.requests: list[bytes] = []
        self._respond = respond
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        self._sock.listen(16)
        self._sock.settimeout(0.05)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def request_lines(self) -> list[bytes]:
        """The first line of every request received, e.g. b"GET /x HTTP/1.1"."""
        return [request.split(b"\r\n", 1)[0] for request in self.requests]

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                request = b""
                while b"\r\n\r\n" not in request and len(request) < 65536:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    request += chunk
                self.requests.append(request)
                try:
                    self._respond(conn, request)
                except OSError:
                    pass

    def wait_stopping(self, seconds: float) -> None:
        """For responders that stall: return early when the server shuts down."""
        self._stop.wait(seconds)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._sock.close()


def fixed(data: bytes) -> Responder:
    """A responder that answers every request with the same bytes."""

    def respond(conn: socket.socket, request: bytes) -> None:
        conn.sendall(data)

    return respond


def daemon_response(body: bytes, status: str = "200 OK") -> bytes:
    """An HTTP response the way the credctl daemon sends a cache hit."""
    head = (
        f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n"
        "X-Credctl-Cache: hit\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


@contextmanager
def short_socket_dir() -> Iterator[Path]:
    """A fresh directory under /tmp, removed afterwards. pytest's tmp_path can
    make a socket path longer than sun_path (104 bytes on macOS)."""
    path = Path(tempfile.mkdtemp(prefix="cc-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
