"""HTTP/1.1 framing for the daemon: an asyncio.Protocol per connection.

Deliberately small: request line, headers, an optional Content-Length body,
keep-alive and pipelining. No chunked bodies, no upgrades. Anything that does
not frame cleanly gets a 4xx and a closed connection.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Protocol

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024

REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def render(
    status: int,
    body: bytes,
    content_type: str = "application/json",
    extra_headers: str = "",
    keep_alive: bool = True,
) -> bytes:
    """A complete HTTP/1.1 response."""
    head = (
        f"HTTP/1.1 {status} {REASONS[status]}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{extra_headers}"
        f"{'' if keep_alive else 'Connection: close' + chr(13) + chr(10)}"
        "\r\n"
    )
    return head.encode("latin-1") + body


def render_error(
    status: int, message: str, keep_alive: bool = True, extra_headers: str = ""
) -> bytes:
    body = json.dumps({"error": message}, separators=(",", ":")).encode("utf-8")
    return render(status, body, extra_headers=extra_headers, keep_alive=keep_alive)


class Connection(asyncio.Protocol):
    """One client connection: parse requests, answer them in order.

    A handler answers synchronously (bytes) for hits and errors; a miss
    returns an awaitable and the connection stops reading until it is
    answered, which keeps pipelined answers in order.
    """

    __slots__ = (
        "body_needed",
        "buffer",
        "busy",
        "close_after",
        "idle_ticks",
        "partial_since",
        "seen_served",
        "served",
        "server",
        "transport",
    )

    def __init__(self, server: ConnectionOwner) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        # Bytes the buffered request needs in all, once its header block is in.
        self.body_needed = 0
        self.busy = False
        self.close_after = False
        self.served = 0
        self.seen_served = 0
        self.idle_ticks = 0
        self.partial_since = 0.0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        refusal = self.server.admit(self, transport)
        if refusal is not None:
            transport.write(refusal)
            transport.close()
            self.transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.forget(self)
        self.transport = None

    def pause_writing(self) -> None:
        # The client is not reading its answers: stop reading its requests.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.busy:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        if self.busy:
            self.buffer += data
            return
        if self.buffer:
            before = len(self.buffer)
            self.buffer += data
            if self.body_needed:
                if len(self.buffer) < self.body_needed:
                    return
            # Wait for the rest of the header block without rescanning all of it.
            elif (
                self.buffer.find(b"\r\n\r\n", max(0, before - 3)) < 0
                and len(self.buffer) <= MAX_HEADER_BYTES
            ):
                return
            data = bytes(self.buffer)
            self.buffer = bytearray()
            self.body_needed = 0
        self._process(data)

    # framing

    def _process(self, data: bytes) -> None:
        pos = 0
        size = len(data)
        while pos < size and self.transport is not None:
            end = data.find(b"\r\n\r\n", pos)
            if end < 0 or end - pos > MAX_HEADER_BYTES:
                if size - pos > MAX_HEADER_BYTES:
                    self._fail(431, "request header too large")
                    return
                self._keep_partial(data[pos:])
                return
            line_end = data.find(b"\r\n", pos)
            request_line = data[pos:line_end]
            version = request_line[-9:]
            if version == b" HTTP/1.1":
                keep_alive = True
            elif version == b" HTTP/1.0":
                keep_alive = False
            else:
                self._fail(400, "bad request")
                return
            body_length = 0
            if line_end < end:
                parsed = self._headers(data[line_end + 2 : end], keep_alive)
                if parsed is None:
                    return
                keep_alive, body_length = parsed
            request_end = end + 4 + body_length
            if request_end > size:
                self._keep_partial(data[pos:], request_end - pos)
                return
            pos = request_end
            self.served += 1
            answer = self.server.handle(request_line, keep_alive)
            if isinstance(answer, bytes):
                self.transport.write(answer)
                if not keep_alive:
                    self.transport.close()
                    return
                continue
            self._await(answer, keep_alive, data[pos:])
            return

    def _headers(self, block: bytes, keep_alive: bool) -> tuple[bool, int] | None:
        """(keep_alive, body length) from the header block; None after answering 4xx."""
        body_length: int | None = None
        for line in block.split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if not sep or not name or name[-1:] in (b" ", b"\t") or name[:1] in (b" ", b"\t"):
                self._fail(400, "bad request")
                return None
            lowered = name.lower()
            if lowered == b"content-length":
                text = value.strip()
                # A second Content-Length, equal or not, is a smuggling attempt or a bug.
                if body_length is not None or not text.isdigit() or len(text) > 12:
                    self._fail(400, "bad request")
                    return None
                body_length = int(text)
                if body_length > MAX_BODY_BYTES:
                    self._fail(413, "request body too large")
                    return None
            elif lowered == b"transfer-encoding":
                self._fail(400, "bad request")
                return None
            elif lowered == b"connection":
                token = value.strip().lower()
                if token == b"close":
                    keep_alive = False
                elif token == b"keep-alive":
                    keep_alive = True
        return keep_alive, body_length or 0

    def _keep_partial(self, rest: bytes, body_needed: int = 0) -> None:
        self.buffer = bytearray(rest)
        self.body_needed = body_needed
        self.partial_since = self.server.loop.time()

    def _await(self, answer: Awaitable[bytes], keep_alive: bool, rest: bytes) -> None:
        assert self.transport is not None
        self.busy = True
        self.buffer = bytearray(rest)
        self.transport.pause_reading()
        task = asyncio.ensure_future(answer)
        task.add_done_callback(lambda done: self._answered(done, keep_alive))

    def _answered(self, done: asyncio.Future[bytes], keep_alive: bool) -> None:
        self.busy = False
        # Retrieved even when the client has gone, so asyncio prints no traceback.
        error = "cancelled" if done.cancelled() else done.exception()
        if error is not None:
            name = error if isinstance(error, str) else type(error).__name__
            # The type only: an unexpected exception's text may quote anything.
            self.server.log(f"answering a request failed unexpectedly: {name}")
        transport = self.transport
        if transport is None:
            return
        if error is not None:
            transport.write(render_error(500, "internal error", keep_alive=False))
            transport.close()
            return
        transport.write(done.result())
        if not keep_alive or self.close_after:
            transport.close()
            return
        transport.resume_reading()
        if self.buffer:
            data = bytes(self.buffer)
            self.buffer = bytearray()
            self._process(data)

    def _fail(self, status: int, message: str) -> None:
        """Answer a framing error and close: after one, nothing later can be trusted."""
        if self.transport is not None:
            self.transport.write(render_error(status, message, keep_alive=False))
            self.transport.close()
            self.transport = None
        self.buffer = bytearray()

    def drop(self, status: int | None = None) -> None:
        """Close the connection from the server's side, answering ``status`` first."""
        if self.transport is None:
            return
        if status is not None:
            self.transport.write(render_error(status, REASONS[status].lower(), keep_alive=False))
        self.transport.close()
        self.transport = None


class ConnectionOwner(Protocol):
    """The server side a Connection talks to."""

    loop: asyncio.AbstractEventLoop
    log: Callable[[str], None]

    def admit(self, connection: Connection, transport: asyncio.Transport) -> bytes | None:
        """None to accept; else the response that refuses the connection."""

    def forget(self, connection: Connection) -> None: ...

    def handle(self, request_line: bytes, keep_alive: bool) -> bytes | Awaitable[bytes]: ...
