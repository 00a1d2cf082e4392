"""The daemon's application: routes, status, connection policing, idle exit, shutdown.

Its dependencies (the blocking issue function, the clock, the log) come in one
DaemonDeps bundle, so tests drive the transport and the cache with fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from credctl.credential import DEFAULT_FORMAT, PROVIDER_FORMATS, IssuedCredential
from credctl.daemon.cache import CredentialCache, FetchFailed, IssueFunction, Key
from credctl.daemon.http import Connection, render, render_error
from credctl.daemon.peer import peer_uid_function
from credctl.errors import CredctlError
from credctl.timestamps import rfc3339

DEFAULT_READ_TIMEOUT = 10.0
DEFAULT_MAX_CONNECTIONS = 512
# How long in-flight requests may finish after SIGTERM/SIGINT.
SHUTDOWN_GRACE = 10.0
TICK = 1.0
LISTEN_BACKLOG = 1024
_ROUTE_MEMO_LIMIT = 256

CONTENT_TYPES = {
    "credential_process": "application/json",
    "executable": "application/json",
    "env": "text/plain; charset=utf-8",
}


def log_to_stderr(message: str) -> None:
    """One line on stderr (the terminal, or daemon.log in the background)."""
    stamp = rfc3339()
    # A foreground daemon's terminal may be gone; losing a log line must not stop it.
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"{stamp} credctl daemon[{os.getpid()}]: {message}\n")
        sys.stderr.flush()


@dataclass(frozen=True)
class DaemonDeps:
    """Everything the daemon needs from outside: swap these in tests."""

    issue: IssueFunction
    clock: Callable[[], float] = time.time
    log: Callable[[str], None] = field(default=log_to_stderr)


def default_deps(home: Path) -> DaemonDeps:
    """The real pipeline; boto3, google-auth and cryptography load on the first miss."""

    def issue(provider: str, fmt: str) -> IssuedCredential:
        from credctl.issue import issue_credential

        # Every call issues afresh; the cache decides when to call (and refresh=1).
        return issue_credential(provider, fmt, home=home)

    return DaemonDeps(issue=issue)


def render_credential(fmt: str, body: bytes, state: str, keep_alive: bool) -> bytes:
    return render(
        200,
        body,
        CONTENT_TYPES.get(fmt, "application/octet-stream"),
        f"Cache-Control: no-store\r\nX-Credctl-Cache: {state}\r\n",
        keep_alive,
    )


def format_uptime(seconds: float) -> str:
    """Go's duration style at one-second precision: 42m15s, 1h2m3s, 9s."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


# Routes: (kind, key, refresh) for a request line that is valid; errors are responses.
CREDENTIALS, STATUS, CLEAR = 0, 1, 2
Route = tuple[int, Key, bool]
_NO_KEY: Key = ("", "")
_ALLOWED = {CREDENTIALS: b"GET", STATUS: b"GET", CLEAR: b"POST"}


class BadRequest(Exception):
    def __init__(self, status: int, message: str, extra_headers: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra_headers = extra_headers


def _query(query: str) -> dict[str, str]:
    params: dict[str, str] = {}
    if not query:
        return params
    for pair in query.split("&"):
        name, sep, value = pair.partition("=")
        if not sep or name not in ("format", "refresh") or name in params:
            raise BadRequest(400, "bad query")
        if "%" in value or "+" in value:
            from urllib.parse import unquote

            try:
                value = unquote(value.replace("+", " "), errors="strict")
            except UnicodeDecodeError:
                raise BadRequest(400, "bad query") from None
        params[name] = value
    return params


def parse_route(request_line: bytes) -> Route:
    """The route for a request line, or BadRequest with the answer to give."""
    parts = request_line.split(b" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[0].isupper():
        raise BadRequest(400, "bad request")
    method, raw_target = parts[0], parts[1]
    try:
        target = raw_target.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest(400, "bad request") from None
    if not target.startswith("/") or not target.isprintable():
        raise BadRequest(400, "bad request")
    path, _, query = target.partition("?")
    # Routes match exactly; refuse dot segments and encodings outright.
    if "%" in path or "//" in path or "/." in path or "\\" in path:
        raise BadRequest(400, "bad path")
    route: Route
    if path == "/v1/status":
        route = (STATUS, _NO_KEY, False)
    elif path == "/v1/clear":
        route = (CLEAR, _NO_KEY, False)
    elif path.startswith("/v1/credentials/"):
        provider = path[len("/v1/credentials/") :]
        if "/" in provider:
            raise BadRequest(404, "not found")
        if provider not in PROVIDER_FORMATS:
            raise BadRequest(404, "unknown provider")
        route = (CREDENTIALS, (provider, DEFAULT_FORMAT[provider]), False)
    else:
        raise BadRequest(404, "not found")
    if method != _ALLOWED[route[0]]:
        allowed = _ALLOWED[route[0]].decode()
        raise BadRequest(405, "method not allowed", f"Allow: {allowed}\r\n")
    params = _query(query)
    if route[0] != CREDENTIALS:
        if params:
            raise BadRequest(400, "bad query")
        return route
    provider = route[1][0]
    fmt = params.get("format", DEFAULT_FORMAT[provider])
    if fmt not in PROVIDER_FORMATS[provider]:
        raise BadRequest(400, "unknown format")
    refresh_text = params.get("refresh", "0")
    if refresh_text not in ("0", "1", "true", "false"):
        raise BadRequest(400, "bad query")
    return (CREDENTIALS, (provider, fmt), refresh_text in ("1", "true"))


class DaemonServer:
    """Serves one Unix socket until stopped, idle for too long, or signalled."""

    def __init__(
        self,
        deps: DaemonDeps,
        idle_timeout: float = 0.0,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self.deps = deps
        self.log = deps.log
        self.cache = CredentialCache(deps.issue, deps.clock, render_credential, deps.log)
        self.idle_timeout = idle_timeout
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.connections: set[Connection] = set()
        self.requests = 0
        self.in_flight = 0
        self.stopping = False
        self.uid = os.getuid()
        self._peer_uid = peer_uid_function()
        self._routes: dict[bytes, Route] = {}
        self._server: asyncio.AbstractServer | None = None
        self._socket_path: Path | None = None
        self._socket_id: tuple[int, int] | None = None
        self._done: asyncio.Future[None] | None = None
        self._seen_requests = 0
        self._last_activity = 0.0
        self._started_wall = 0.0
        self._started_mono = 0.0
        self._drain_deadline = 0.0

    # lifecycle

    async def start(self, path: Path) -> None:
        """Bind ``path`` (0600 from the start) and begin serving."""
        self.loop = asyncio.get_running_loop()
        sock = bind_unix_socket(path)
        info = os.lstat(path)
        self._socket_path = path
        self._socket_id = (info.st_dev, info.st_ino)
        self._server = await self.loop.create_unix_server(
            lambda: Connection(self), sock=sock, backlog=LISTEN_BACKLOG
        )
        self._done = self.loop.create_future()
        self._started_wall = self.deps.clock()
        self._started_mono = self._last_activity = self.loop.time()
        self.loop.call_later(TICK, self._tick)

    async def wait_stopped(self) -> None:
        assert self._done is not None
        await self._done

    def begin_shutdown(self, reason: str) -> None:
        """Stop accepting, answer what is in flight, then finish."""
        if self.stopping or self._done is None:
            return
        self.stopping = True
        self.log(f"stopping: {reason}")
        if self._server is not None:
            self._server.close()
        self.remove_socket()
        for connection in list(self.connections):
            if connection.busy:
                connection.close_after = True
            else:
                connection.drop()
        self._drain_deadline = self.loop.time() + SHUTDOWN_GRACE
        self._finish_when_drained()

    def _finish_when_drained(self) -> None:
        assert self._done is not None
        busy = any(connection.busy for connection in self.connections)
        if busy and self.loop.time() < self._drain_deadline:
            self.loop.call_later(0.05, self._finish_when_drained)
            return
        for connection in list(self.connections):
            connection.drop()
        if not self._done.done():
            self._done.set_result(None)

    def remove_socket(self) -> None:
        """Unlink the socket file if it is still the one this daemon bound."""
        if self._socket_path is None or self._socket_id is None:
            return
        try:
            info = os.lstat(self._socket_path)
        except FileNotFoundError:
            return
        if (info.st_dev, info.st_ino) == self._socket_id:
            os.unlink(self._socket_path)
        self._socket_path = None

    def _tick(self) -> None:
        if self.stopping:
            return
        now = self.loop.time()
        for connection in list(self.connections):
            if connection.busy:
                continue
            if connection.buffer:
                if now - connection.partial_since >= self.read_timeout:
                    connection.drop(408)
            elif connection.served != connection.seen_served:
                connection.seen_served = connection.served
                connection.idle_ticks = 0
            else:
                connection.idle_ticks += 1
                if connection.idle_ticks * TICK >= self.read_timeout:
                    connection.drop()
        if self.requests != self._seen_requests or self.in_flight:
            self._seen_requests = self.requests
            self._last_activity = now
        elif self.idle_timeout and now - self._last_activity >= self.idle_timeout:
            self.begin_shutdown(f"idle for {format_uptime(self.idle_timeout)}")
            return
        self.loop.call_later(TICK, self._tick)

    # connections (credctl.daemon.http.ConnectionOwner)

    def admit(self, connection: Connection, transport: asyncio.Transport) -> bytes | None:
        if self.stopping:
            return render_error(503, "daemon stopping", keep_alive=False)
        if len(self.connections) >= self.max_connections:
            self.log(f"refused a connection: {self.max_connections} already open")
            return render_error(503, "too many connections", keep_alive=False)
        sock: Any = transport.get_extra_info("socket")
        try:
            uid = self._peer_uid(sock)
        except OSError as exc:
            self.log(f"refused a connection: cannot read the peer's UID ({exc})")
            return render_error(403, "forbidden", keep_alive=False)
        if uid != self.uid:
            self.log(f"refused a connection from UID {uid} (this daemon serves UID {self.uid})")
            return render_error(403, "forbidden", keep_alive=False)
        self.connections.add(connection)
        return None

    def forget(self, connection: Connection) -> None:
        self.connections.discard(connection)

    def handle(self, request_line: bytes, keep_alive: bool) -> bytes | Awaitable[bytes]:
        self.requests += 1
        route = self._routes.get(request_line)
        if route is None:
            try:
                route = parse_route(request_line)
            except BadRequest as bad:
                return render_error(bad.status, bad.message, keep_alive, bad.extra_headers)
            if route[0] == CREDENTIALS and len(self._routes) < _ROUTE_MEMO_LIMIT:
                self._routes[request_line] = route
        kind, key, refresh = route
        if kind == CREDENTIALS:
            if not refresh:
                entry = self.cache.fresh(key)
                if entry is not None:
                    return entry.hit_response if keep_alive else entry.hit_response_close
            return self._fetch(key, refresh, keep_alive)
        if kind == STATUS:
            body = json.dumps(self.status_document(), separators=(",", ":")).encode("utf-8")
            return render(200, body, keep_alive=keep_alive)
        self.cache.clear()
        self.log("cache cleared")
        return render(200, b'{"ok":true}', keep_alive=keep_alive)

    async def _fetch(self, key: Key, refresh: bool, keep_alive: bool) -> bytes:
        self.in_flight += 1
        try:
            outcome = await self.cache.get(key, refresh)
        except FetchFailed as failed:
            status = failed.status if failed.status in (400, 403, 404, 500, 503) else 500
            return render_error(status, failed.public_message, keep_alive)
        except CredctlError as exc:
            return render_error(500, exc.public_message, keep_alive)
        finally:
            self.in_flight -= 1
        if outcome.state == "stale":
            self.log(
                f"serving the cached {key[0]}:{key[1]} credential (stale) after a failed fetch"
            )
        return render_credential(key[1], outcome.body, outcome.state, keep_alive)

    def status_document(self) -> dict[str, Any]:
        now = self.deps.clock()
        cache = {}
        for (provider, fmt), entry in sorted(self.cache.entries.items()):
            cache[f"{provider}:{fmt}"] = {
                "expires_at": rfc3339(entry.expires_at),
                "valid": now < entry.expires_at,
                "needs_refresh": now >= entry.refresh_at,
            }
        return {
            "pid": os.getpid(),
            "uptime": format_uptime(self.loop.time() - self._started_mono),
            "start_time": rfc3339(self._started_wall),
            "cache": cache,
        }


def bind_unix_socket(path: Path) -> socket.socket:
    """A listening socket at ``path``, mode 0600 from its creation.

    Any socket already there is stale: the caller holds the PID file lock.
    A long path is bound relative to its directory (sun_path is short).
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not (stat.S_ISSOCK(info.st_mode) or stat.S_ISLNK(info.st_mode)):
            raise CredctlError(f"{path} exists and is not a socket: remove it and start again")
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous_umask = os.umask(0o177)
    previous_cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.chdir(path.parent)
        sock.bind(path.name)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(previous_umask)
        os.fchdir(previous_cwd)
        os.close(previous_cwd)
    return sock
