"""A bare asyncio HTTP/1.1 server on a Unix socket that answers one fixed body.

The floor for a Python asyncio daemon: what the load generator gets from a
server doing no routing, no cache and no peer check. run_all.py reports it
beside the credctl daemon, and uses it to test the harness on its own
(``run_all.py --self-test``) when no daemon is installed.

    python benchmarks/fixed_server.py SOCKET_PATH
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys

BODY = (
    json.dumps(
        {
            "Version": 1,
            "AccessKeyId": "ASIA" + "X" * 16,
            "SecretAccessKey": "s" * 40,
            "SessionToken": "t" * 600,
            "Expiration": "2030-01-01T00:00:00Z",
        },
        separators=(",", ":"),
    ).encode()
    + b"\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Credctl-Cache: hit\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
)
CLOSE_RESPONSE = RESPONSE.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)


class FixedBody(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            if b"\nconnection: close" in head.lower():
                self.transport.write(CLOSE_RESPONSE)
                self.transport.close()
                return
            self.transport.write(RESPONSE)


async def serve(path: str) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set_result, None)
    server = await loop.create_unix_server(FixedBody, path, backlog=1024)
    os.chmod(path, 0o600)
    async with server:
        await stop
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
