"""The native daemon client and fast-path argv parsing, over real Unix sockets."""

from __future__ import annotations

import os
import pwd
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from credctl._native import ffi, lib
from unix_http_server import Responder, UnixHttpServer, fixed, short_socket_dir

AWS_TARGET = "/v1/credentials/aws?format=credential_process"
BODY = b'{"Version":1,"AccessKeyId":"AKIA","SecretAccessKey":"s\\r\\n","Expiration":"x"}\n'


def response(body: bytes, status: str = "200 OK", extra_headers: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra_headers}Connection: close\r\n\r\n"
    )
    return head.encode() + body


@pytest.fixture
def short_dir() -> Iterator[Path]:
    with short_socket_dir() as path:
        yield path


@pytest.fixture
def serve(short_dir: Path) -> Iterator[Callable[[Responder], UnixHttpServer]]:
    servers: list[UnixHttpServer] = []

    def start(respond: Responder) -> UnixHttpServer:
        server = UnixHttpServer(short_dir / "daemon.sock", respond)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def http_get(
    path: Path,
    target: str = AWS_TARGET,
    cap: int = 4096,
    connect_ms: int = 2000,
    read_ms: int = 5000,
) -> tuple[int, int, bytes]:
    status = ffi.new("int *")
    body = ffi.new("char[]", max(cap, 1))
    body_len = ffi.new("size_t *")
    rc = lib.credctl_http_get(
        str(path).encode(), target.encode(), connect_ms, read_ms, status, body, cap, body_len
    )
    data = bytes(ffi.buffer(body, body_len[0])) if rc == lib.CREDCTL_HTTP_OK else b""
    return rc, status[0], data


def fast_auth(argv: list[str], cap: int = 65536) -> tuple[int, bytes]:
    args = [ffi.new("char[]", arg.encode()) for arg in argv]
    body = ffi.new("char[]", cap)
    body_len = ffi.new("size_t *")
    rc = lib.credctl_fast_auth(len(args), ffi.new("char *[]", args), body, cap, body_len)
    return rc, bytes(ffi.buffer(body, body_len[0])) if rc == lib.CREDCTL_FAST_OK else b""


def fast_target(argv: list[str]) -> str | None:
    args = [ffi.new("char[]", arg.encode()) for arg in argv]
    target = ffi.new("char[]", 256)
    rc = lib.credctl_fast_auth_target(len(args), ffi.new("char *[]", args), target, 256)
    return ffi.string(target).decode() if rc == lib.CREDCTL_FAST_OK else None


def is_gcp_executable(argv: list[str]) -> bool:
    args = [ffi.new("char[]", arg.encode()) for arg in argv]
    return bool(lib.credctl_fast_is_gcp_executable(len(args), ffi.new("char *[]", args)))


def socket_path() -> str | None:
    path = ffi.new("char[]", 4096)
    if lib.credctl_socket_path(path, 4096) != lib.CREDCTL_FAST_OK:
        return None
    return str(ffi.string(path).decode())


# --- the HTTP client -------------------------------------------------------


def test_200_body_is_returned_exactly(serve, short_dir):
    server = serve(fixed(response(BODY, extra_headers="X-Credctl-Cache: hit\r\n")))
    assert http_get(short_dir / "daemon.sock") == (lib.CREDCTL_HTTP_OK, 200, BODY)
    assert server.requests == [
        f"GET {AWS_TARGET} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
    ]


def test_body_filling_the_buffer_exactly_fits(serve, short_dir):
    body = bytes(range(256)) * 256
    serve(fixed(response(body)))
    assert http_get(short_dir / "daemon.sock", cap=len(body)) == (lib.CREDCTL_HTTP_OK, 200, body)


def test_empty_body(serve, short_dir):
    serve(fixed(response(b"")))
    assert http_get(short_dir / "daemon.sock") == (lib.CREDCTL_HTTP_OK, 200, b"")


def test_non_200_status_and_body_are_reported(serve, short_dir):
    error = b'{"error":"AWS not configured"}'
    serve(fixed(response(error, status="503 Service Unavailable")))
    assert http_get(short_dir / "daemon.sock") == (lib.CREDCTL_HTTP_OK, 503, error)


def test_header_names_are_case_insensitive(serve, short_dir):
    raw = b"HTTP/1.1 200 OK\r\ncontent-LENGTH:   5  \r\n\r\nhello"
    serve(fixed(raw))
    assert http_get(short_dir / "daemon.sock") == (lib.CREDCTL_HTTP_OK, 200, b"hello")


def test_bytes_after_content_length_are_ignored(serve, short_dir):
    serve(fixed(response(b"hello") + b"trailing junk"))
    assert http_get(short_dir / "daemon.sock") == (lib.CREDCTL_HTTP_OK, 200, b"hello")


def test_without_content_length_the_body_runs_to_the_end_of_stream(serve, short_dir):
    serve(fixed(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + BODY))
    assert http_get(short_dir / "daemon.sock") == (lib.CREDCTL_HTTP_OK, 200, BODY)


def test_headers_and_body_split_across_many_small_writes(serve, short_dir):
    data = response(BODY)

    def dribble(conn: socket.socket, request: bytes) -> None:
        for i in range(len(data)):
            conn.sendall(data[i : i + 1])
            time.sleep(0.001)

    serve(dribble)
    assert http_get(short_dir / "daemon.sock") == (lib.CREDCTL_HTTP_OK, 200, BODY)


def test_body_larger_than_the_buffer_is_reported_not_truncated(serve, short_dir):
    serve(fixed(response(b"x" * 101)))
    assert http_get(short_dir / "daemon.sock", cap=100)[0] == lib.CREDCTL_HTTP_ERR_TOO_LARGE


def test_body_larger_than_the_buffer_without_content_length(serve, short_dir):
    serve(fixed(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 101))
    assert http_get(short_dir / "daemon.sock", cap=100)[0] == lib.CREDCTL_HTTP_ERR_TOO_LARGE


def test_connection_closed_mid_body(serve, short_dir):
    serve(fixed(response(BODY)[:-10]))
    assert http_get(short_dir / "daemon.sock")[0] == lib.CREDCTL_HTTP_ERR_PROTOCOL


def test_connection_closed_mid_headers(serve, short_dir):
    serve(fixed(b"HTTP/1.1 200 OK\r\nContent-Len"))
    assert http_get(short_dir / "daemon.sock")[0] == lib.CREDCTL_HTTP_ERR_PROTOCOL


def test_connection_closed_without_an_answer(serve, short_dir):
    serve(fixed(b""))
    assert http_get(short_dir / "daemon.sock")[0] == lib.CREDCTL_HTTP_ERR_PROTOCOL


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
        b"SPDY/9 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
    ],
    ids=["chunked", "bad-status", "not-http", "negative-length", "two-lengths", "huge-length"],
)
def test_malformed_responses(serve, short_dir, raw):
    serve(fixed(raw))
    assert http_get(short_dir / "daemon.sock")[0] == lib.CREDCTL_HTTP_ERR_PROTOCOL


def test_oversized_headers(serve, short_dir):
    serve(fixed(b"HTTP/1.1 200 OK\r\nX-Filler: " + b"a" * 10000 + b"\r\n\r\n"))
    assert http_get(short_dir / "daemon.sock")[0] == lib.CREDCTL_HTTP_ERR_HEADERS_TOO_LARGE


def test_server_that_never_answers_times_out(serve, short_dir):
    server: UnixHttpServer

    def stall(conn: socket.socket, request: bytes) -> None:
        server.wait_stopping(30)

    server = serve(stall)
    rc, _, _ = http_get(short_dir / "daemon.sock", read_ms=200)
    assert rc == lib.CREDCTL_HTTP_ERR_TIMEOUT


def test_no_socket_file(short_dir):
    assert http_get(short_dir / "daemon.sock")[0] == lib.CREDCTL_HTTP_ERR_CONNECT


def test_socket_file_without_a_listener(short_dir):
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(short_dir / "daemon.sock"))
    stale.close()
    assert http_get(short_dir / "daemon.sock")[0] == lib.CREDCTL_HTTP_ERR_CONNECT


def test_socket_path_too_long_for_sun_path():
    assert http_get(Path("/tmp/" + "x" * 200))[0] == lib.CREDCTL_HTTP_ERR_ARGS


def test_request_target_too_long(short_dir):
    assert http_get(short_dir / "daemon.sock", target="/" + "x" * 4000)[0] == (
        lib.CREDCTL_HTTP_ERR_ARGS
    )


# --- argv of the fast path -------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "target"),
    [
        (["auth"], "/v1/credentials/aws?format=credential_process"),
        (["auth", "--provider", "aws"], "/v1/credentials/aws?format=credential_process"),
        (["auth", "--provider=aws"], "/v1/credentials/aws?format=credential_process"),
        (["auth", "--format", "env"], "/v1/credentials/aws?format=env"),
        (["auth", "--format=env"], "/v1/credentials/aws?format=env"),
        (
            ["auth", "--format", "credential_process"],
            "/v1/credentials/aws?format=credential_process",
        ),
        (["auth", "--provider", "gcp"], "/v1/credentials/gcp?format=executable"),
        (["auth", "--provider=gcp", "--format=env"], "/v1/credentials/gcp?format=env"),
        (["auth", "--format", "env", "--provider", "gcp"], "/v1/credentials/gcp?format=env"),
        (
            ["auth", "--provider", "gcp", "--format", "executable"],
            "/v1/credentials/gcp?format=executable",
        ),
        (["auth", "--refresh"], "/v1/credentials/aws?format=credential_process&refresh=1"),
        (
            ["auth", "--refresh", "--provider", "gcp", "--format=env"],
            "/v1/credentials/gcp?format=env&refresh=1",
        ),
    ],
)
def test_auth_calls_the_fast_path_serves(argv, target, monkeypatch):
    monkeypatch.delenv("CREDCTL_NO_DAEMON", raising=False)
    assert fast_target(argv) == target


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["status"],
        ["version"],
        ["--verbose", "auth"],
        ["auth", "--verbose"],
        ["auth", "--no-daemon"],
        ["auth", "--help"],
        ["auth", "-h"],
        ["auth", "--provider"],
        ["auth", "--provider="],
        ["auth", "--provider", "azure"],
        ["auth", "--provider", "AWS"],
        ["auth", "--providerx=aws"],
        ["auth", "--format"],
        ["auth", "--format", "executable"],
        ["auth", "--provider", "gcp", "--format", "credential_process"],
        ["auth", "--format", "json"],
        ["auth", "--refresh", "--refresh"],
        ["auth", "--refresh=1"],
        ["auth", "--provider", "aws", "--provider", "aws"],
        ["auth", "--format=env", "--format=env"],
        ["auth", "extra"],
        ["auth", "--"],
        ["authx"],
    ],
)
def test_anything_else_falls_back(argv, monkeypatch):
    monkeypatch.delenv("CREDCTL_NO_DAEMON", raising=False)
    assert fast_target(argv) is None


def test_no_daemon_env_falls_back(monkeypatch):
    monkeypatch.setenv("CREDCTL_NO_DAEMON", "1")
    assert fast_target(["auth"]) is None


def test_no_daemon_env_set_to_zero_keeps_the_fast_path(monkeypatch):
    monkeypatch.setenv("CREDCTL_NO_DAEMON", "0")
    assert fast_target(["auth"]) == AWS_TARGET


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["auth", "--provider", "gcp"], True),
        (["auth", "--provider=gcp", "--format=executable"], True),
        (["auth", "--format", "executable", "--provider", "gcp", "--refresh"], True),
        (["auth"], False),
        (["auth", "--provider", "gcp", "--format", "env"], False),
        (["auth", "--format", "executable"], False),
        (["auth", "--provider", "gcp", "--verbose"], False),
        (["version"], False),
        ([], False),
    ],
)
@pytest.mark.parametrize("no_daemon", [None, "1"])
def test_which_calls_are_gcp_executable(argv, expected, no_daemon, monkeypatch):
    # The launcher's error format follows the call, whether or not the daemon is used.
    if no_daemon is None:
        monkeypatch.delenv("CREDCTL_NO_DAEMON", raising=False)
    else:
        monkeypatch.setenv("CREDCTL_NO_DAEMON", no_daemon)
    assert is_gcp_executable(argv) == expected


# --- where the socket is ---------------------------------------------------


def test_socket_path_from_credctl_home(monkeypatch):
    monkeypatch.setenv("CREDCTL_HOME", "/srv/credctl-home/")
    assert socket_path() == "/srv/credctl-home/daemon.sock"


def test_socket_path_expands_a_leading_tilde(monkeypatch):
    monkeypatch.setenv("HOME", "/home/someone")
    monkeypatch.setenv("CREDCTL_HOME", "~/alt")
    assert socket_path() == "/home/someone/alt/daemon.sock"


def test_socket_path_defaults_to_dot_credctl_in_home(monkeypatch):
    monkeypatch.delenv("CREDCTL_HOME", raising=False)
    monkeypatch.setenv("HOME", "/home/someone")
    assert socket_path() == "/home/someone/.credctl/daemon.sock"


def test_empty_credctl_home_counts_as_unset(monkeypatch):
    monkeypatch.setenv("CREDCTL_HOME", "")
    monkeypatch.setenv("HOME", "/home/someone")
    assert socket_path() == "/home/someone/.credctl/daemon.sock"


def test_socket_path_without_home_uses_the_password_database(monkeypatch):
    monkeypatch.delenv("CREDCTL_HOME", raising=False)
    monkeypatch.delenv("HOME", raising=False)
    expected = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".credctl" / "daemon.sock"
    assert socket_path() == str(expected)


def test_socket_path_agrees_with_the_python_home(monkeypatch):
    from credctl.home import SOCKET_FILE, credctl_home

    for home in ["/tmp/a", "/tmp/b/", "~", "~/x/y"]:
        monkeypatch.setenv("CREDCTL_HOME", home)
        assert socket_path() == str(credctl_home() / SOCKET_FILE)


# --- the whole fast path ---------------------------------------------------


def test_fast_auth_hit(serve, short_dir, monkeypatch):
    monkeypatch.setenv("CREDCTL_HOME", str(short_dir))
    monkeypatch.delenv("CREDCTL_NO_DAEMON", raising=False)
    server = serve(fixed(response(BODY)))
    assert fast_auth(["auth", "--provider", "gcp", "--refresh"]) == (lib.CREDCTL_FAST_OK, BODY)
    assert server.requests[0].startswith(
        b"GET /v1/credentials/gcp?format=executable&refresh=1 HTTP/1.1\r\n"
    )


def test_fast_auth_non_200_falls_back(serve, short_dir, monkeypatch):
    monkeypatch.setenv("CREDCTL_HOME", str(short_dir))
    monkeypatch.delenv("CREDCTL_NO_DAEMON", raising=False)
    serve(fixed(response(b'{"error":"authentication failed"}', status="500 Oops")))
    assert fast_auth(["auth"]) == (lib.CREDCTL_FAST_STATUS, b"")


def test_fast_auth_without_a_daemon_falls_back(short_dir, monkeypatch):
    monkeypatch.setenv("CREDCTL_HOME", str(short_dir))
    monkeypatch.delenv("CREDCTL_NO_DAEMON", raising=False)
    assert fast_auth(["auth"]) == (lib.CREDCTL_HTTP_ERR_CONNECT, b"")


def test_fast_auth_too_large_body_falls_back(serve, short_dir, monkeypatch):
    monkeypatch.setenv("CREDCTL_HOME", str(short_dir))
    monkeypatch.delenv("CREDCTL_NO_DAEMON", raising=False)
    serve(fixed(response(b"x" * 200)))
    assert fast_auth(["auth"], cap=100) == (lib.CREDCTL_HTTP_ERR_TOO_LARGE, b"")


def test_fast_auth_home_too_long_for_a_socket_falls_back(monkeypatch):
    monkeypatch.setenv("CREDCTL_HOME", "/tmp/" + "x" * 200)
    monkeypatch.delenv("CREDCTL_NO_DAEMON", raising=False)
    assert fast_auth(["auth"]) == (lib.CREDCTL_FAST_NO_HOME, b"")


def test_fast_auth_ignores_argv_it_does_not_serve(serve, short_dir, monkeypatch):
    monkeypatch.setenv("CREDCTL_HOME", str(short_dir))
    server = serve(fixed(response(BODY)))
    assert fast_auth(["auth", "--no-daemon"]) == (lib.CREDCTL_FAST_NOT_HANDLED, b"")
    monkeypatch.setenv("CREDCTL_NO_DAEMON", "1")
    assert fast_auth(["auth"]) == (lib.CREDCTL_FAST_NOT_HANDLED, b"")
    assert server.requests == []


@pytest.mark.parametrize(
    ("result", "tried"),
    [
        ("CREDCTL_FAST_STATUS", True),
        ("CREDCTL_HTTP_ERR_CONNECT", True),
        ("CREDCTL_HTTP_ERR_WRITE", True),
        ("CREDCTL_HTTP_ERR_TIMEOUT", True),
        ("CREDCTL_HTTP_ERR_READ", True),
        ("CREDCTL_HTTP_ERR_PROTOCOL", True),
        ("CREDCTL_HTTP_ERR_HEADERS_TOO_LARGE", True),
        ("CREDCTL_FAST_NOT_HANDLED", False),
        ("CREDCTL_FAST_NO_HOME", False),
        ("CREDCTL_HTTP_ERR_ARGS", False),
        ("CREDCTL_HTTP_ERR_TOO_LARGE", False),
    ],
)
def test_which_results_mean_the_daemon_was_asked(result, tried):
    assert lib.credctl_fast_daemon_tried(getattr(lib, result)) == int(tried)
