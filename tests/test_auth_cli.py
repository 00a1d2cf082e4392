"""credctl auth as a command: daemon first, direct path otherwise, usage and error output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timezone
from pathlib import Path

import pytest
from servers import AwsStsServer, aws_sts, moto_server
from unix_http_server import UnixHttpServer, daemon_response, fixed

from credctl.errors import NotConfiguredError, UsageError
from credctl.issue import issue_credential

__all__ = ["aws_sts", "moto_server"]  # fixtures used below

ROLE_ARN = "arn:aws:iam::123456789012:role/credctl-device-role"


@pytest.fixture
def daemon_factory(initialised_home: Path) -> Iterator:
    """Starts stand-in daemons on daemon.sock, each answering with one canned response."""
    daemons: list[UnixHttpServer] = []

    def start(status: int, body: bytes) -> UnixHttpServer:
        reason = "OK" if status == 200 else "Service Unavailable"
        response = daemon_response(body, f"{status} {reason}")
        daemon = UnixHttpServer(initialised_home / "daemon.sock", fixed(response))
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        daemon.close()


DAEMON_BODY = b'{"Version":1,"AccessKeyId":"AKIDFROMDAEMON","Expiration":"x"}\n'


def test_a_daemon_answer_is_printed_unchanged(run_cli, daemon_factory) -> None:
    daemon = daemon_factory(200, DAEMON_BODY)
    result = run_cli("auth")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == DAEMON_BODY
    assert daemon.request_lines == [b"GET /v1/credentials/aws?format=credential_process HTTP/1.1"]


def test_gcp_executable_from_the_daemon(run_cli, daemon_factory) -> None:
    body = b'{"version":1,"success":true}\n'
    daemon = daemon_factory(200, body)
    result = run_cli("--verbose", "auth", "--provider", "gcp")
    assert (result.returncode, result.stdout, result.stderr) == (0, body, b"")
    assert daemon.request_lines == [b"GET /v1/credentials/gcp?format=executable HTTP/1.1"]


@pytest.mark.parametrize("bypass", [["--no-daemon"], "CREDCTL_NO_DAEMON"])
def test_the_daemon_can_be_bypassed(run_cli, daemon_factory, bypass) -> None:
    daemon = daemon_factory(200, DAEMON_BODY)
    if bypass == "CREDCTL_NO_DAEMON":
        result = run_cli("auth", env={"CREDCTL_NO_DAEMON": "1"})
    else:
        result = run_cli("auth", *bypass)
    # The direct path ran: this home has no AWS settings.
    assert result.returncode == 1
    assert result.stderr == b"credctl: AWS not configured: run `credctl setup aws` first\n"
    assert daemon.requests == []


@pytest.mark.parametrize(
    ("value", "asked"), [("yes", False), ("1", False), ("0", True), ("", True)]
)
def test_no_daemon_variable_means_the_same_on_the_python_path(
    run_cli, daemon_factory, value: str, asked: bool
) -> None:
    # --verbose is not served by the native fast path, so the CLI itself decides.
    daemon = daemon_factory(200, DAEMON_BODY)
    result = run_cli("--verbose", "auth", env={"CREDCTL_NO_DAEMON": value})
    assert bool(daemon.requests) is asked
    assert (result.stdout == DAEMON_BODY) is asked


def test_a_daemon_error_falls_back_to_the_direct_path(run_cli, daemon_factory) -> None:
    daemon_factory(503, b'{"error":"AWS not configured"}')
    result = run_cli("auth")
    assert result.returncode == 1
    assert result.stderr == b"credctl: AWS not configured: run `credctl setup aws` first\n"


def test_unknown_format_is_a_usage_error(initialised_home: Path, run_cli) -> None:
    result = run_cli("auth", "--format", "yaml")
    assert result.returncode == 2
    assert result.stderr.decode() == (
        "credctl: unknown format 'yaml' for aws: expected one of credential_process, env\n"
    )
    result = run_cli("auth", "--provider", "gcp", "--format", "credential_process")
    assert result.returncode == 2


def test_unknown_provider_is_a_usage_error(run_cli) -> None:
    result = run_cli("auth", "--provider", "azure")
    assert result.returncode == 2
    assert result.stdout == b""


def test_not_initialised(home: Path, run_cli) -> None:
    result = run_cli("auth", "--no-daemon")
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert stderr.startswith("credctl: Not initialised") and "credctl init" in stderr

    result = run_cli("--verbose", "auth", "--provider", "gcp", "--no-daemon")
    assert (result.returncode, result.stderr) == (1, b"")
    document = json.loads(result.stdout)
    assert document["success"] is False and document["code"] == "NOT_INITIALISED"


def test_issue_credential_in_process(
    initialised_home: Path, run_cli, aws_sts: AwsStsServer
) -> None:
    with pytest.raises(UsageError):
        issue_credential("azure", "env", initialised_home)
    with pytest.raises(NotConfiguredError):
        issue_credential("aws", "env", initialised_home)
    setup = run_cli(
        "setup", "aws", "--role-arn", ROLE_ARN,
        "--issuer-url", "https://issuer.example.com", "--sts-endpoint", aws_sts.url,
    )  # fmt: skip
    assert setup.returncode == 0, setup.stderr.decode()

    steps: list[str] = []
    issued = issue_credential("aws", "credential_process", initialised_home, steps.append)

    document = json.loads(issued.body)
    assert issued.expires_at.tzinfo is not None
    assert (
        issued.expires_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        == (document["Expiration"])
    )
    assert "redacted" in repr(issued) and document["SecretAccessKey"] not in repr(issued)
    assert steps and not any(aws_sts.tokens[0] in step for step in steps)
    assert aws_sts.web_identity_calls == 1
