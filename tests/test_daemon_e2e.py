"""The daemon end to end: the real daemon process, `credctl auth` processes, moto's STS
and the fake Google STS/IAM on loopback; cloud calls counted."""

from __future__ import annotations

import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from servers import (
    ISSUER,
    AwsStsServer,
    FakeGcpServer,
    aws_sts,
    configure_gcp,
    gcp_server,
    isolate_aws,
    moto_server,
    setup_aws,
)
from test_daemon_helpers import get, raw_exchange
from test_daemon_process import start_background, stop_any_daemon, wait_for
from test_daemon_server import MALFORMED

from credctl.daemon.pidfile import running_pid

__all__ = ["aws_sts", "gcp_server", "moto_server"]  # fixtures used below

AWS_CREDENTIALS = "/v1/credentials/aws?format=credential_process"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No real AWS settings; credctl importable in every process the tests start."""
    isolate_aws(tmp_path, monkeypatch)


@pytest.fixture
def aws_daemon(initialised_home: Path, run_cli, aws_sts: AwsStsServer):
    """A configured device and a running daemon (stopped afterwards)."""
    setup_aws(run_cli, aws_sts.url)
    start_background(run_cli)
    yield initialised_home
    stop_any_daemon(initialised_home)


def auth(run_cli, *args: str) -> bytes:
    result = run_cli("auth", *args)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def cache_state(home: Path, target: str = AWS_CREDENTIALS) -> str:
    return get(home / "daemon.sock", target).headers["x-credctl-cache"]


def test_one_sts_call_then_a_hundred_hits(aws_daemon: Path, run_cli, aws_sts: AwsStsServer) -> None:
    first = auth(run_cli)
    assert aws_sts.web_identity_calls == 1
    document = json.loads(first)
    assert list(document) == [
        "Version",
        "AccessKeyId",
        "SecretAccessKey",
        "SessionToken",
        "Expiration",
    ]
    for _ in range(100):
        assert auth(run_cli) == first
    assert aws_sts.web_identity_calls == 1
    assert cache_state(aws_daemon) == "hit"

    status = run_cli("daemon", "status").stdout.decode().splitlines()
    assert status[3] == "Cache:"
    assert status[4] == f"  aws:credential_process: valid (expires {document['Expiration']})"

    # The direct path prints the same shape of bytes (fresh credentials, one more call).
    direct = auth(run_cli, "--no-daemon")
    assert aws_sts.web_identity_calls == 2
    assert list(json.loads(direct)) == list(document)
    assert direct.count(b"\n") == first.count(b"\n") == 1
    no_daemon_env = run_cli("auth", env={"CREDCTL_NO_DAEMON": "1"})
    assert no_daemon_env.returncode == 0
    assert aws_sts.web_identity_calls == 3
    assert auth(run_cli) == first


def test_env_format_is_cached_separately(aws_daemon: Path, run_cli, aws_sts) -> None:
    process = auth(run_cli)
    env = auth(run_cli, "--format", "env")
    assert aws_sts.web_identity_calls == 2
    assert env.startswith(b"export AWS_ACCESS_KEY_ID=")
    assert auth(run_cli, "--format", "env") == env
    assert auth(run_cli) == process
    assert aws_sts.web_identity_calls == 2


def test_inside_the_refresh_window_every_request_refetches(
    initialised_home: Path, run_cli, gcp_server: FakeGcpServer, tmp_path: Path
) -> None:
    # STS will not issue AWS credentials under 900 s, Google's fake will: an access
    # token living four minutes is always inside the five-minute refresh window.
    # (The window's edges are tested with a fake clock in test_daemon_server.)
    gcp_server.access_token_lifetime = timedelta(minutes=4)
    configure_gcp(run_cli, gcp_server, initialised_home, tmp_path / "o")
    start_background(run_cli)
    try:
        for count in (1, 2, 3):
            auth(run_cli, "--provider", "gcp", "--format", "env")
            assert gcp_server.iam_calls == count
        status = run_cli("daemon", "status").stdout.decode()
        assert "gcp:env: needs refresh (expires " in status
        target = "/v1/credentials/gcp?format=env"
        assert cache_state(initialised_home, target) == "miss"
        assert gcp_server.iam_calls == 4
    finally:
        stop_any_daemon(initialised_home)


def test_stale_rule_and_refresh(aws_daemon: Path, run_cli, aws_sts: AwsStsServer) -> None:
    first = auth(run_cli)
    aws_sts.fail_next("AccessDenied")  # not retried by botocore
    # --refresh forces a fetch; it fails, the cached credential is still valid: served.
    assert auth(run_cli, "--refresh") == first
    assert aws_sts.web_identity_calls == 2
    log = (aws_daemon / "daemon.log").read_text()
    assert "fetch aws:credential_process failed" in log
    assert "(stale)" in log
    stale = get(aws_daemon / "daemon.sock", AWS_CREDENTIALS + "&refresh=1")
    assert stale.headers["x-credctl-cache"] == "miss"  # STS answers again
    refreshed = json.loads(stale.body)
    assert refreshed["AccessKeyId"] != json.loads(first)["AccessKeyId"]
    assert aws_sts.web_identity_calls == 3
    assert auth(run_cli) == stale.body


def test_fifty_concurrent_auths_after_clear_make_one_sts_call(
    aws_daemon: Path, run_cli, aws_sts: AwsStsServer
) -> None:
    auth(run_cli)
    assert run_cli("daemon", "clear").returncode == 0
    calls_before = aws_sts.web_identity_calls
    with ThreadPoolExecutor(max_workers=50) as pool:
        outputs = list(pool.map(lambda _: auth(run_cli), range(50)))
    assert aws_sts.web_identity_calls == calls_before + 1
    assert len(set(outputs)) == 1
    assert json.loads(outputs[0])["Version"] == 1


def test_a_killed_daemon_costs_a_fallback_not_a_failure(
    aws_daemon: Path, run_cli, aws_sts: AwsStsServer
) -> None:
    auth(run_cli)
    pid = running_pid(aws_daemon)
    assert pid
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: running_pid(aws_daemon) is None)
    assert (aws_daemon / "daemon.sock").exists()  # left behind, nobody listening
    after = auth(run_cli)
    assert json.loads(after)["Version"] == 1
    assert aws_sts.web_identity_calls == 2


def test_malformed_requests_then_a_normal_hit(
    aws_daemon: Path, run_cli, aws_sts: AwsStsServer
) -> None:
    first = auth(run_cli)
    sock = aws_daemon / "daemon.sock"
    for request in MALFORMED:
        response = raw_exchange(sock, request)
        assert response is None or 400 <= response.status < 500, (request[:40], response.status)
    assert auth(run_cli) == first
    assert cache_state(aws_daemon) == "hit"
    assert aws_sts.web_identity_calls == 1


def test_changing_the_settings_empties_the_daemon_cache(
    aws_daemon: Path, run_cli, aws_sts: AwsStsServer, gcp_server: FakeGcpServer, tmp_path: Path
) -> None:
    first = json.loads(auth(run_cli))
    assert json.loads(auth(run_cli)) == first
    assert aws_sts.web_identity_calls == 1
    other_role = "arn:aws:iam::123456789012:role/another-role"
    result = run_cli(
        "setup", "aws",
        "--role-arn", other_role,
        "--issuer-url", ISSUER,
        "--sts-endpoint", aws_sts.url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    # A miss: credentials for the new role, not the old role's from the cache.
    second = json.loads(auth(run_cli))
    assert aws_sts.web_identity_calls == 2
    assert second["AccessKeyId"] != first["AccessKeyId"]
    assert cache_state(aws_daemon) == "hit"

    configure_gcp(run_cli, gcp_server, aws_daemon, tmp_path / "o")
    assert run_cli("daemon", "status").stdout.decode().splitlines()[3] == "Cache: empty"
    auth(run_cli)
    assert aws_sts.web_identity_calls == 3

    result = run_cli("init", "--force", "--backend", "software")
    assert result.returncode == 0, result.stderr.decode()
    assert run_cli("daemon", "status").stdout.decode().splitlines()[3] == "Cache: empty"


def test_reset_stops_the_daemon_and_removes_its_stale_files(aws_daemon: Path, run_cli) -> None:
    auth(run_cli)
    pid = running_pid(aws_daemon)
    result = run_cli("reset", "--yes")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().splitlines()[0] == f"Daemon stopped (PID {pid})"
    assert running_pid(aws_daemon) is None
    assert not (aws_daemon / "daemon.sock").exists()
    assert not (aws_daemon / "daemon.pid").exists()
    assert not (aws_daemon / "config.json").exists()

    # A daemon killed outright leaves both files; reset removes them.
    start_background(run_cli)
    killed = running_pid(aws_daemon)
    assert killed
    os.kill(killed, signal.SIGKILL)
    assert wait_for(lambda: running_pid(aws_daemon) is None)
    result = run_cli("reset", "--yes")
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    assert f"Removed {aws_daemon / 'daemon.pid'}" in lines
    assert f"Removed {aws_daemon / 'daemon.sock'}" in lines
    assert not (aws_daemon / "daemon.sock").exists()
    assert not (aws_daemon / "daemon.pid").exists()


def test_gcp_tokens_are_cached(
    initialised_home: Path, run_cli, gcp_server: FakeGcpServer, tmp_path: Path
) -> None:
    configure_gcp(run_cli, gcp_server, initialised_home, tmp_path / "o")
    start_background(run_cli)
    try:
        executable = auth(run_cli, "--provider", "gcp")
        assert json.loads(executable)["success"] is True
        env = auth(run_cli, "--provider", "gcp", "--format", "env")
        assert gcp_server.access_token.encode() in env
        assert (gcp_server.sts_calls, gcp_server.iam_calls) == (1, 1)
        for _ in range(10):
            # The same signed JWT: served from the cache, not signed again.
            assert auth(run_cli, "--provider", "gcp") == executable
            assert auth(run_cli, "--provider", "gcp", "--format", "env") == env
        assert (gcp_server.sts_calls, gcp_server.iam_calls) == (1, 1)
        status = run_cli("daemon", "status").stdout.decode()
        assert "gcp:executable: valid (expires " in status
        assert "gcp:env: valid (expires " in status
    finally:
        stop_any_daemon(initialised_home)


def test_no_credential_reaches_a_file(
    initialised_home: Path,
    run_cli,
    aws_sts: AwsStsServer,
    gcp_server: FakeGcpServer,
    tmp_path: Path,
) -> None:
    setup_aws(run_cli, aws_sts.url)
    configure_gcp(run_cli, gcp_server, initialised_home, tmp_path / "o")
    start_background(run_cli)
    secrets: set[str] = set()
    try:
        for _ in range(2):
            document = json.loads(auth(run_cli))
            secrets.update(
                {document["AccessKeyId"], document["SecretAccessKey"], document["SessionToken"]}
            )
            auth(run_cli, "--format", "env")
            gcp_env = auth(run_cli, "--provider", "gcp", "--format", "env")
            assert gcp_server.access_token.encode() in gcp_env
            assert run_cli("daemon", "clear").returncode == 0
        aws_sts.fail_next("AccessDenied")
        assert run_cli("auth", "--refresh").returncode in (0, 1)
        run_cli("--verbose", "daemon", "status")
    finally:
        stop_any_daemon(initialised_home)
    secrets.update({gcp_server.access_token, gcp_server.federated_token})
    assert len(secrets) >= 8
    log = (initialised_home / "daemon.log").read_bytes()
    assert b"fetched aws:credential_process" in log
    checked = 0
    for root in {initialised_home, tmp_path}:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                content = path.read_bytes()
                checked += 1
                for secret in secrets:
                    assert secret.encode() not in content, f"{secret[:6]}... found in {path}"
    assert checked >= 5


def test_startup_memory_before_the_first_miss(aws_daemon: Path) -> None:
    """Reported, not timed: the daemon stays light until a miss needs the cloud libraries."""
    pid = running_pid(aws_daemon)
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])
    assert rss_kib < 30 * 1024, f"{rss_kib} KiB before the first miss"
