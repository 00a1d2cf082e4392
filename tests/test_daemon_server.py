"""The daemon's transport and cache, in process, with an injected issue function and clock."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from test_daemon_helpers import (
    WAIT,
    DetailedFailure,
    FakeClock,
    FakeIssuer,
    InProcessDaemon,
    get,
    raw_exchange,
    read_response,
)

from credctl.credential import IssuedCredential
from credctl.daemon import client
from credctl.daemon.client import connect_unix, fetch_credential
from credctl.daemon.server import BadRequest, DaemonDeps, format_uptime, parse_route

AWS = "/v1/credentials/aws?format=credential_process"


@pytest.fixture
def sock_dir(tmp_path: Path) -> Path:
    path = tmp_path / "h"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def issuer(clock: FakeClock) -> FakeIssuer:
    return FakeIssuer(clock)


@pytest.fixture
def daemon(sock_dir: Path, clock: FakeClock, issuer: FakeIssuer) -> Iterator[InProcessDaemon]:
    logged: list[str] = []
    deps = DaemonDeps(issue=issuer, clock=clock, log=logged.append)
    with InProcessDaemon(sock_dir / "daemon.sock", deps, read_timeout=1.0) as running:
        running.logged = logged  # type: ignore[attr-defined]
        yield running


def test_socket_is_created_0600(daemon: InProcessDaemon) -> None:
    assert stat.S_IMODE(os.lstat(daemon.path).st_mode) == 0o600


def test_a_miss_then_hits_call_issue_once(daemon: InProcessDaemon, issuer: FakeIssuer) -> None:
    first = get(daemon.path, AWS)
    assert first.status == 200
    assert first.headers["x-credctl-cache"] == "miss"
    assert first.headers["cache-control"] == "no-store"
    for _ in range(20):
        again = get(daemon.path, AWS)
        assert again.headers["x-credctl-cache"] == "hit"
        assert again.body == first.body
    assert issuer.calls == 1
    other = get(daemon.path, "/v1/credentials/aws?format=env")
    assert other.headers["x-credctl-cache"] == "miss"
    assert issuer.calls == 2


def test_default_format_and_keys(daemon: InProcessDaemon, issuer: FakeIssuer) -> None:
    gcp = get(daemon.path, "/v1/credentials/gcp")
    assert json.loads(gcp.body)["format"] == "executable"
    aws = get(daemon.path, "/v1/credentials/aws")
    assert json.loads(aws.body)["format"] == "credential_process"
    assert issuer.calls == 2


def test_refresh_window_is_the_last_five_minutes(
    daemon: InProcessDaemon, issuer: FakeIssuer, clock: FakeClock
) -> None:
    get(daemon.path, AWS)
    clock.now += 3600 - 300 - 1
    assert get(daemon.path, AWS).headers["x-credctl-cache"] == "hit"
    clock.now += 1
    refetched = get(daemon.path, AWS)
    assert refetched.headers["x-credctl-cache"] == "miss"
    assert json.loads(refetched.body)["n"] == 2
    assert get(daemon.path, AWS).headers["x-credctl-cache"] == "hit"
    assert issuer.calls == 2


def test_stale_rule_serves_the_valid_cached_credential_when_the_refetch_fails(
    daemon: InProcessDaemon, issuer: FakeIssuer, clock: FakeClock
) -> None:
    first = get(daemon.path, AWS)
    issuer.error = DetailedFailure("STS at https://sts.internal/ said AccessDenied for role x")
    clock.now += 3600 - 60
    stale = get(daemon.path, AWS)
    assert stale.status == 200
    assert stale.headers["x-credctl-cache"] == "stale"
    assert stale.body == first.body
    assert any("AccessDenied" in line for line in daemon.logged)  # type: ignore[attr-defined]
    # Once expired, the failure reaches the client, generically.
    clock.now += 61
    failed = get(daemon.path, AWS)
    assert failed.status == 503
    assert json.loads(failed.body) == {"error": "credential exchange failed"}
    assert issuer.calls == 3


def test_refresh_forces_a_fetch(daemon: InProcessDaemon, issuer: FakeIssuer) -> None:
    get(daemon.path, AWS)
    forced = get(daemon.path, AWS + "&refresh=1")
    assert forced.headers["x-credctl-cache"] == "miss"
    assert json.loads(forced.body)["n"] == 2
    assert issuer.calls == 2
    assert json.loads(get(daemon.path, AWS).body)["n"] == 2


def test_concurrent_requests_for_one_key_share_one_fetch(
    daemon: InProcessDaemon, issuer: FakeIssuer
) -> None:
    issuer.gate = threading.Event()
    bodies: list[bytes] = []
    lock = threading.Lock()

    def fetch() -> None:
        response = get(daemon.path, AWS)
        with lock:
            bodies.append(response.body)

    threads = [threading.Thread(target=fetch) for _ in range(50)]
    for thread in threads:
        thread.start()
    assert issuer.started.wait(WAIT)
    # Let every request reach the daemon before the one fetch completes.
    deadline = time.monotonic() + WAIT
    while len(daemon.server.connections) < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    issuer.gate.set()
    for thread in threads:
        thread.join(WAIT)
    assert len(bodies) == 50
    assert len(set(bodies)) == 1
    assert issuer.calls == 1


def test_a_failed_fetch_without_cache_is_a_generic_error(
    daemon: InProcessDaemon, issuer: FakeIssuer
) -> None:
    issuer.error = DetailedFailure("token endpoint https://x/ answered 'secret-ish detail'")
    response = get(daemon.path, AWS)
    assert response.status == 503
    assert response.body == b'{"error":"credential exchange failed"}'
    issuer.error = RuntimeError("a bug with /some/path in it")
    response = get(daemon.path, AWS)
    assert response.status == 500
    assert response.body == b'{"error":"internal error"}'
    logged = daemon.logged  # type: ignore[attr-defined]
    # A CredctlError's message is written for the log; an unexpected one's text is not.
    assert any("token endpoint https://x/" in line for line in logged)
    assert "fetch aws:credential_process failed unexpectedly: RuntimeError" in logged
    assert not any("/some/path" in line for line in logged)


def test_status_document_and_clear(
    daemon: InProcessDaemon, issuer: FakeIssuer, clock: FakeClock
) -> None:
    raw = get(daemon.path, "/v1/status").body
    empty = json.loads(raw)
    # Compact JSON, as the original daemon answers.
    assert raw == json.dumps(empty, separators=(",", ":")).encode()
    assert empty["pid"] == os.getpid()
    assert empty["cache"] == {}
    assert empty["start_time"] == "2027-01-15T08:00:00Z"
    get(daemon.path, AWS)
    get(daemon.path, "/v1/credentials/gcp?format=executable")
    clock.now += 3600 - 200
    document = json.loads(get(daemon.path, "/v1/status").body)
    assert document["cache"] == {
        "aws:credential_process": {
            "expires_at": "2027-01-15T09:00:00Z",
            "valid": True,
            "needs_refresh": True,
        },
        "gcp:executable": {
            "expires_at": "2027-01-15T09:00:00Z",
            "valid": True,
            "needs_refresh": True,
        },
    }
    clock.now += 300
    document = json.loads(get(daemon.path, "/v1/status").body)
    assert document["cache"]["aws:credential_process"]["valid"] is False
    cleared = raw_exchange(daemon.path, b"POST /v1/clear HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert cleared is not None and cleared.status == 200
    assert json.loads(cleared.body) == {"ok": True}
    assert json.loads(get(daemon.path, "/v1/status").body)["cache"] == {}
    assert issuer.calls == 2


def test_keep_alive_and_pipelined_requests_are_answered_in_order(
    daemon: InProcessDaemon, issuer: FakeIssuer
) -> None:
    request = f"GET {AWS} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    env = b"GET /v1/credentials/aws?format=env HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect_unix(daemon.path, WAIT) as sock:
        # A miss, then a request for another key, pipelined behind it.
        sock.sendall(request + env + request)
        leftover = bytearray()
        answers = [read_response(sock, leftover) for _ in range(3)]
        assert all(answer is not None for answer in answers)
        states = [answer.headers["x-credctl-cache"] for answer in answers]  # type: ignore[union-attr]
        assert states == ["miss", "miss", "hit"]
        assert json.loads(answers[1].body)["format"] == "env"  # type: ignore[union-attr]
        for _ in range(10):
            sock.sendall(request)
            again = read_response(sock, leftover)
            assert again is not None and again.headers["x-credctl-cache"] == "hit"
    assert issuer.calls == 2


MALFORMED = [
    b"\x00\x01\x02garbage\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET / HTTP/1.1 extra\r\n\r\n",
    b"GET /v1/status HTTP/2.0\r\n\r\n",
    b"get /v1/status HTTP/1.1\r\n\r\n",
    b"BREW /v1/status HTTP/1.1\r\n\r\n",
    b"DELETE /v1/credentials/aws HTTP/1.1\r\n\r\n",
    b"GET /v1/clear HTTP/1.1\r\n\r\n",
    b"POST /v1/credentials/aws HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    b"GET /nope HTTP/1.1\r\n\r\n",
    b"GET /v1/credentials/azure HTTP/1.1\r\n\r\n",
    b"GET /v1/credentials/aws?format=xml HTTP/1.1\r\n\r\n",
    b"GET /v1/credentials/gcp?format=credential_process HTTP/1.1\r\n\r\n",
    b"GET /v1/credentials/aws?format HTTP/1.1\r\n\r\n",
    b"GET /v1/credentials/aws?format=env&format=env HTTP/1.1\r\n\r\n",
    b"GET /v1/credentials/aws?refresh=maybe HTTP/1.1\r\n\r\n",
    b"GET /v1/credentials/aws?format=%ff%fe HTTP/1.1\r\n\r\n",
    b"GET /v1/credentials/aws?x=1 HTTP/1.1\r\n\r\n",
    b"GET /v1/credentials/../status HTTP/1.1\r\n\r\n",
    b"GET /v1/credentials/aws/../../status HTTP/1.1\r\n\r\n",
    b"GET /v1/credentials/%2e%2e/status HTTP/1.1\r\n\r\n",
    b"GET //v1/status HTTP/1.1\r\n\r\n",
    b"GET /v1/status/ HTTP/1.1\r\n\r\n",
    b"GET /v1/credentials/aws/extra HTTP/1.1\r\n\r\n",
    b"GET http://localhost/v1/status HTTP/1.1\r\n\r\n",
    b"GET /v1/\xc3\x28status HTTP/1.1\r\n\r\n",
    b"GET /v1/credentials/aws?format=\xff HTTP/1.1\r\n\r\n",
    b"GET /v1/status HTTP/1.1\r\nno colon here\r\n\r\n",
    b"GET /v1/status HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    b"GET /v1/status HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
    b"POST /v1/clear HTTP/1.1\r\nContent-Length: 10485760\r\n\r\n",
    b"POST /v1/clear HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /v1/clear HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
    b"POST /v1/clear HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello",
    b"GET /v1/status HTTP/1.1\r\nX: " + b"a" * (70 * 1024) + b"\r\n\r\n",
    b"GET /v1/status HTTP/1.1\r\nX: " + b"a" * (70 * 1024),
]


@pytest.mark.parametrize("request_bytes", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_requests_get_a_4xx_or_a_close_and_the_daemon_keeps_serving(
    daemon: InProcessDaemon, issuer: FakeIssuer, request_bytes: bytes
) -> None:
    get(daemon.path, AWS)
    response = raw_exchange(daemon.path, request_bytes)
    if response is not None:
        assert 400 <= response.status < 500, response.status
        assert set(json.loads(response.body)) == {"error"}
    hit = get(daemon.path, AWS)
    assert hit.status == 200 and hit.headers["x-credctl-cache"] == "hit"
    assert issuer.calls == 1


def test_specific_answers_for_limits_and_routes(daemon: InProcessDaemon) -> None:
    def status_of(data: bytes) -> int | None:
        response = raw_exchange(daemon.path, data)
        return None if response is None else response.status

    assert status_of(b"GET /v1/status HTTP/1.1\r\nX: " + b"a" * (70 * 1024) + b"\r\n\r\n") == 431
    assert status_of(b"POST /v1/clear HTTP/1.1\r\nContent-Length: 10485760\r\n\r\n") == 413
    assert status_of(b"BREW /v1/status HTTP/1.1\r\n\r\n") == 405
    assert status_of(b"GET /v1/credentials/azure HTTP/1.1\r\n\r\n") == 404
    assert status_of(b"GET /v1/credentials/../status HTTP/1.1\r\n\r\n") == 400
    unknown = raw_exchange(daemon.path, b"GET /v1/credentials/aws?format=xml HTTP/1.1\r\n\r\n")
    assert unknown is not None and json.loads(unknown.body) == {"error": "unknown format"}


@pytest.mark.parametrize("second", [b"0", b"4"])
def test_a_repeated_content_length_is_refused_and_the_connection_closed(
    daemon: InProcessDaemon, second: bytes
) -> None:
    # Equal or not, two lengths mean a proxy and this daemon may frame differently.
    request = (
        b"POST /v1/clear HTTP/1.1\r\nContent-Length: 0\r\nContent-length: "
        + second
        + b"\r\n\r\nGET /v1/status HTTP/1.1\r\n\r\n"
    )
    with connect_unix(daemon.path, WAIT) as sock:
        sock.sendall(request)
        leftover = bytearray()
        response = read_response(sock, leftover)
        assert response is not None
        assert response.status == 400
        assert response.body == b'{"error":"bad request"}'
        assert response.headers["connection"] == "close"
        # Nothing after it is answered: the connection is closed.
        assert not leftover and sock.recv(4096) == b""
    assert get(daemon.path, "/v1/status").status == 200


def test_early_close_and_a_request_with_its_body_split(daemon: InProcessDaemon) -> None:
    with connect_unix(daemon.path, WAIT) as sock:
        sock.sendall(b"GET /v1/sta")
    with connect_unix(daemon.path, WAIT) as sock:
        sock.sendall(b"POST /v1/clear HTTP/1.1\r\nContent-Length: 4\r\n\r\nab")
        time.sleep(0.05)
        sock.sendall(b"cd")
        response = read_response(sock)
        assert response is not None and response.status == 200
    assert get(daemon.path, "/v1/status").status == 200


def test_silent_and_slow_clients_are_dropped_without_delaying_others(
    daemon: InProcessDaemon,
) -> None:
    silent = connect_unix(daemon.path, WAIT)
    dribbler = connect_unix(daemon.path, WAIT)
    try:
        dribbler.sendall(b"G")
        # Others are served meanwhile.
        assert get(daemon.path, AWS).status == 200
        dropped = []
        for sock in (silent, dribbler):
            sock.settimeout(WAIT)
            data = b""
            for _ in range(50):
                try:
                    sock.sendall(b"E")
                except (BrokenPipeError, ConnectionResetError):
                    break
                try:
                    sock.settimeout(0.2)
                    chunk = sock.recv(4096)
                except TimeoutError:
                    continue
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                data += chunk
            dropped.append(data)
        # The dribbler is told 408 then closed; the silent one too (it sent bytes here).
        assert all(data == b"" or b" 408 " in data.split(b"\r\n")[0] for data in dropped)
    finally:
        silent.close()
        dribbler.close()
    assert daemon.server.connections == set() or len(daemon.server.connections) <= 1


def test_connection_cap(sock_dir: Path, clock: FakeClock, issuer: FakeIssuer) -> None:
    deps = DaemonDeps(issue=issuer, clock=clock, log=lambda line: None)
    with InProcessDaemon(sock_dir / "daemon.sock", deps, max_connections=3) as running:
        held = [connect_unix(running.path, WAIT) for _ in range(3)]
        try:
            deadline = time.monotonic() + WAIT
            while len(running.server.connections) < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            refused = raw_exchange(running.path, b"GET /v1/status HTTP/1.1\r\n\r\n")
            assert refused is None or refused.status == 503
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + WAIT
        while running.server.connections and time.monotonic() < deadline:
            time.sleep(0.01)
        assert get(running.path, "/v1/status").status == 200


def test_shutdown_answers_a_request_in_flight(
    sock_dir: Path, clock: FakeClock, issuer: FakeIssuer
) -> None:
    issuer.gate = threading.Event()
    deps = DaemonDeps(issue=issuer, clock=clock, log=lambda line: None)
    running = InProcessDaemon(sock_dir / "daemon.sock", deps)
    with running:
        answers: list[object] = []
        worker = threading.Thread(target=lambda: answers.append(get(running.path, AWS)))
        worker.start()
        assert issuer.started.wait(WAIT)
        running.loop.call_soon_threadsafe(running.server.begin_shutdown, "test")
        deadline = time.monotonic() + WAIT
        while os.path.exists(running.path) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not os.path.exists(running.path)
        issuer.gate.set()
        worker.join(WAIT)
        assert len(answers) == 1
        assert answers[0].status == 200  # type: ignore[attr-defined]


def test_long_socket_paths_work(tmp_path: Path, clock: FakeClock, issuer: FakeIssuer) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True, mode=0o700)
    path = deep / "daemon.sock"
    assert len(str(path)) > 108
    deps = DaemonDeps(issue=issuer, clock=clock, log=lambda line: None)
    with InProcessDaemon(path, deps):
        body = fetch_credential(deep, "aws", "credential_process")
        assert body is not None and json.loads(body)["n"] == 1


def test_fetch_credential_answers_none_instead_of_raising(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "h"
    home.mkdir()
    assert fetch_credential(home, "aws", "credential_process") is None
    assert client.daemon_summary(home) == {"running": False, "pid": None}
    # A socket file with no listener.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(home / "daemon.sock"))
    stale.close()
    assert fetch_credential(home, "aws", "credential_process") is None
    os.unlink(home / "daemon.sock")

    def serve(answer: bytes | None) -> threading.Thread:
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(home / "daemon.sock"))
        listener.listen(1)

        def run() -> None:
            conn, _ = listener.accept()
            conn.recv(65536)
            if answer is not None:
                conn.sendall(answer)
                conn.close()
            else:
                time.sleep(1.0)
                conn.close()
            listener.close()
            os.unlink(home / "daemon.sock")

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    monkeypatch.setattr(client, "FETCH_TIMEOUT", 0.2)
    for answer in (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"nonsense\r\n\r\n",
        b"",
        None,  # never answers: the read timeout
    ):
        thread = serve(answer)
        assert fetch_credential(home, "aws", "credential_process") is None
        thread.join(WAIT)


def test_parse_route_and_uptime() -> None:
    assert parse_route(b"GET /v1/credentials/aws?format=env&refresh=1 HTTP/1.1") == (
        0,
        ("aws", "env"),
        True,
    )
    with pytest.raises(BadRequest):
        parse_route(b"GET /v1/credentials/aws?format=env&refresh=2 HTTP/1.1")
    assert format_uptime(42 * 60 + 15) == "42m15s"
    assert format_uptime(3600 + 2 * 60 + 3) == "1h2m3s"
    assert format_uptime(9.9) == "9s"


def test_a_credential_that_cannot_be_stored_answers_every_waiter_500(
    sock_dir: Path, clock: FakeClock
) -> None:
    """A broken issue result must not leave the requests sharing its fetch hanging."""
    gate = threading.Event()
    started = threading.Event()
    broken = [True]
    logged: list[str] = []

    def issue(provider: str, fmt: str) -> IssuedCredential:
        started.set()
        assert gate.wait(WAIT)
        expires = datetime.fromtimestamp(clock.now + 3600, timezone.utc)
        body: Any = "a str, not bytes: rendering it fails" if broken[0] else b"{}\n"
        return IssuedCredential(body=body, expires_at=expires)

    deps = DaemonDeps(issue=issue, clock=clock, log=logged.append)
    with InProcessDaemon(sock_dir / "daemon.sock", deps) as running:
        answers: list[object] = []
        lock = threading.Lock()

        def fetch() -> None:
            response = get(running.path, AWS)
            with lock:
                answers.append(response)

        threads = [threading.Thread(target=fetch) for _ in range(5)]
        for thread in threads:
            thread.start()
        assert started.wait(WAIT)
        deadline = time.monotonic() + WAIT
        while len(running.server.connections) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        gate.set()
        for thread in threads:
            thread.join(WAIT)
        assert len(answers) == 5
        for answer in answers:
            assert answer.status == 500  # type: ignore[attr-defined]
            assert answer.body == b'{"error":"internal error"}'  # type: ignore[attr-defined]
        assert "storing aws:credential_process failed unexpectedly: TypeError" in logged
        assert running.server.cache.entries == {}
        # The daemon goes on: the next fetch is made and served.
        broken[0] = False
        served = get(running.path, AWS)
        assert served.status == 200 and served.body == b"{}\n"
        assert served.headers["x-credctl-cache"] == "miss"


def test_an_unexpected_failure_answering_a_request_is_logged_by_type(
    daemon: InProcessDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(key: object, refresh: bool) -> object:
        raise RuntimeError("text that could quote anything")

    monkeypatch.setattr(daemon.server.cache, "get", broken)
    response = get(daemon.path, AWS)
    assert response.status == 500
    assert response.body == b'{"error":"internal error"}'
    logged = daemon.logged  # type: ignore[attr-defined]
    assert "answering a request failed unexpectedly: RuntimeError" in logged
    assert not any("quote anything" in line for line in logged)
    assert get(daemon.path, "/v1/status").status == 200


def test_a_fetch_in_flight_when_the_cache_is_cleared_is_not_cached(
    daemon: InProcessDaemon, issuer: FakeIssuer
) -> None:
    """`setup` clears the cache: a fetch begun with the old settings must not fill it again."""
    issuer.gate = threading.Event()
    answers: list[object] = []
    worker = threading.Thread(target=lambda: answers.append(get(daemon.path, AWS)))
    worker.start()
    assert issuer.started.wait(WAIT)
    cleared = raw_exchange(daemon.path, b"POST /v1/clear HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert cleared is not None and cleared.status == 200
    issuer.gate.set()
    worker.join(WAIT)
    assert len(answers) == 1 and answers[0].status == 200  # type: ignore[attr-defined]
    after = get(daemon.path, AWS)
    assert after.headers["x-credctl-cache"] == "miss"
    assert json.loads(after.body)["n"] == 2
    assert get(daemon.path, AWS).headers["x-credctl-cache"] == "hit"
    assert issuer.calls == 2
