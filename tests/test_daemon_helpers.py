"""Helpers for the daemon tests (no tests here): an in-process daemon with fakes, raw HTTP."""

from __future__ import annotations

import asyncio
import socket
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from credctl.credential import IssuedCredential
from credctl.daemon.client import connect_unix
from credctl.daemon.server import DaemonDeps, DaemonServer
from credctl.errors import CredctlError

WAIT = 10.0


class FakeClock:
    """Wall-clock seconds that only move when a test says so."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeIssuer:
    """Counts fetches; each returns a distinct body expiring ``lifetime`` seconds later.

    ``gate``: when set, a fetch waits for it (to hold requests in flight).
    ``error``: when set, fetches raise it.
    """

    def __init__(self, clock: FakeClock, lifetime: float = 3600.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls = 0
        self.error: Exception | None = None
        self.gate: threading.Event | None = None
        self.started = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, provider: str, fmt: str) -> IssuedCredential:
        with self._lock:
            self.calls += 1
            number = self.calls
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(WAIT)
        if self.error is not None:
            raise self.error
        expires = datetime.fromtimestamp(self.clock.now + self.lifetime, timezone.utc)
        body = f'{{"provider":"{provider}","format":"{fmt}","n":{number}}}\n'.encode()
        return IssuedCredential(body=body, expires_at=expires)


class DetailedFailure(CredctlError):
    public_message = "credential exchange failed"
    http_status = 503


class InProcessDaemon:
    """A DaemonServer on ``path`` in a thread of its own, with injected deps."""

    def __init__(self, path: Path, deps: DaemonDeps, **options: Any) -> None:
        self.path = path
        self.server = DaemonServer(deps, **options)
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.start(self.path))
        self._ready.set()
        self.loop.run_until_complete(self.server.wait_stopped())

    def __enter__(self) -> InProcessDaemon:
        self._thread.start()
        assert self._ready.wait(WAIT), "the in-process daemon did not start"
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.server.begin_shutdown, "test over")
            self._thread.join(WAIT)

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


def read_response(sock: socket.socket, buffer: bytearray | None = None) -> Response | None:
    """One response from ``sock``; None when it closes first. ``buffer`` carries leftovers."""
    data = buffer if buffer is not None else bytearray()
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, rest = bytes(data).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = bytearray(rest)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        body += chunk
    data[:] = body[length:]
    return Response(status, headers, bytes(body[:length]))


def raw_exchange(path: Path, data: bytes, timeout: float = WAIT) -> Response | None:
    """Send ``data`` on a fresh connection; the first response, or None if closed unanswered."""
    with connect_unix(path, timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            return read_response(sock)
        except ConnectionResetError:
            return None


def get(path: Path, target: str, extra: str = "") -> Response:
    request = f"GET {target} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n"
    response = raw_exchange(path, request.encode())
    assert response is not None, f"no answer to {target}"
    return response
