"""credctl auth for GCP against a local STS + IAM Credentials, and through google-auth."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import google.auth.exceptions
import google.auth.transport.requests
import jwt as pyjwt
import pytest
from google.auth import pluggable
from servers import (
    AUDIENCE,
    ISSUER,
    REPO,
    SERVICE_ACCOUNT,
    FakeGcpServer,
    closed_port_url,
    configure_gcp,
    gcp_server,
    publish_jwks,
    setup_gcp,
)

from credctl.config import load_config

__all__ = ["closed_port_url", "gcp_server"]  # fixtures used below


@pytest.fixture(autouse=True)
def importable_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES", "1")


@pytest.fixture
def gcp_home(initialised_home: Path, run_cli, gcp_server: FakeGcpServer, tmp_path: Path) -> Path:
    """A device the fake Google side trusts: its JWKS published, the pool configured."""
    configure_gcp(run_cli, gcp_server, initialised_home, tmp_path / "oidc")
    return initialised_home


def test_executable_format_is_what_google_auth_reads(
    gcp_home: Path, run_cli, gcp_server: FakeGcpServer
) -> None:
    result = run_cli("--verbose", "auth", "--provider", "gcp")
    assert result.returncode == 0
    assert result.stderr == b""  # google-auth merges stderr into what it parses
    assert result.stdout.endswith(b"}\n") and result.stdout.count(b"\n") == 1
    document = json.loads(result.stdout)
    assert list(document) == ["version", "success", "token_type", "id_token", "expiration_time"]
    assert document["version"] == 1 and document["success"] is True
    assert document["token_type"] == "urn:ietf:params:oauth:token-type:jwt"

    jwks = pyjwt.PyJWKSet.from_dict(json.loads(gcp_server.expect.jwks_path.read_text()))
    header = pyjwt.get_unverified_header(document["id_token"])
    (key,) = [k for k in jwks.keys if k.key_id == header["kid"]]
    claims = pyjwt.decode(
        document["id_token"], key.key, algorithms=["ES256"], audience=AUDIENCE, issuer=ISSUER
    )
    assert claims["sub"] == load_config(gcp_home).device_id
    assert claims["exp"] == document["expiration_time"]
    assert claims["exp"] - claims["iat"] == 3600
    assert gcp_server.sts_calls == 0  # google-auth does the exchange itself


def test_google_auth_runs_credctl_from_the_credential_file(
    gcp_home: Path, run_cli, gcp_server: FakeGcpServer
) -> None:
    result = run_cli("setup", "gcp-cred-file")
    assert result.returncode == 0, result.stderr.decode()
    path = gcp_home / "gcp-credentials.json"
    assert str(path) in result.stdout.decode()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = json.loads(path.read_text())
    assert document["type"] == "external_account"
    assert document["audience"] == AUDIENCE
    assert document["token_url"] == gcp_server.sts_endpoint
    assert document["service_account_impersonation_url"] == (
        f"{gcp_server.url}/v1/projects/-/serviceAccounts/{SERVICE_ACCOUNT}:generateAccessToken"
    )
    executable = document["credential_source"]["executable"]
    assert executable["timeout_millis"] == 30000
    assert executable["command"].endswith(" auth --provider gcp --format executable")
    assert load_config(gcp_home).raw["gcp"]["credential_file_path"] == str(path)

    credentials = pluggable.Credentials.from_file(
        str(path), scopes=["https://www.googleapis.com/auth/cloud-platform"]
    )
    credentials.refresh(google.auth.transport.requests.Request())

    assert credentials.token == gcp_server.access_token
    assert gcp_server.failures == []
    assert (gcp_server.sts_calls, gcp_server.iam_calls) == (1, 1)


def test_env_format_exchanges_and_impersonates(
    gcp_home: Path, run_cli, gcp_server: FakeGcpServer
) -> None:
    result = run_cli("--verbose", "auth", "--provider", "gcp", "--format", "env")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == (
        f"export CLOUDSDK_AUTH_ACCESS_TOKEN={gcp_server.access_token}\n"
        f"export GOOGLE_OAUTH_ACCESS_TOKEN={gcp_server.access_token}\n"
    )
    assert (gcp_server.sts_calls, gcp_server.iam_calls) == (1, 1)
    assert gcp_server.scopes_seen == [["https://www.googleapis.com/auth/cloud-platform"]]
    stderr = result.stderr.decode()
    assert AUDIENCE in stderr and gcp_server.sts_endpoint in stderr
    for secret in (gcp_server.access_token, gcp_server.federated_token,
                   gcp_server.subject_tokens[0]):  # fmt: skip
        assert secret not in stderr


def test_env_format_evaluated_by_a_shell(gcp_home: Path, gcp_server: FakeGcpServer) -> None:
    script = (
        'eval "$("$PYTHON" -m credctl auth --provider gcp --format env)" && '
        'printf %s "$GOOGLE_OAUTH_ACCESS_TOKEN"'
    )
    result = subprocess.run(
        ["bash", "-c", script],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == gcp_server.access_token


def test_wrong_audience(
    initialised_home: Path, run_cli, gcp_server: FakeGcpServer, tmp_path: Path
) -> None:
    gcp_server.expect.jwks_path = publish_jwks(run_cli, tmp_path / "oidc")
    gcp_server.expect.audience = AUDIENCE
    setup_gcp(run_cli, gcp_server, pool="some-other-pool")

    result = run_cli("auth", "--provider", "gcp", "--format", "env")
    assert result.returncode == 1 and result.stdout == b""
    stderr = result.stderr.decode()
    assert stderr.count("\n") == 1 and stderr.startswith("credctl: GCP STS refused")
    assert "invalid_target" in stderr and "gcp.workload_pool_id" in stderr
    assert gcp_server.subject_tokens[0] not in stderr

    # Through google-auth the executable succeeds and Google's STS refuses.
    assert run_cli("setup", "gcp-cred-file").returncode == 0
    credentials = pluggable.Credentials.from_file(
        str(initialised_home / "gcp-credentials.json"),
        scopes=["https://www.googleapis.com/auth/cloud-platform"],
    )
    with pytest.raises(google.auth.exceptions.GoogleAuthError, match="invalid_target"):
        credentials.refresh(google.auth.transport.requests.Request())


def test_key_not_in_the_published_jwks(gcp_home: Path, run_cli, gcp_server: FakeGcpServer) -> None:
    # A new identity whose key was never published: the provider cannot verify it.
    assert run_cli("init", "--force", "--backend", "software").returncode == 0
    gcp_server.expect.subject = load_config(gcp_home).device_id
    result = run_cli("auth", "--provider", "gcp", "--format", "env")
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert stderr.count("\n") == 1
    assert "invalid_grant" in stderr and f"{ISSUER}/keys.json" in stderr
    assert gcp_server.iam_calls == 0


def test_key_not_matching_device_pub_in_every_format(
    gcp_home: Path, run_cli, gcp_server: FakeGcpServer
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    (gcp_home / "device.pub").write_bytes(
        other.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    env_result = run_cli("auth", "--provider", "gcp", "--format", "env")
    assert env_result.returncode == 1 and env_result.stdout == b""
    assert "does not match device.pub" in env_result.stderr.decode()

    result = run_cli("--verbose", "auth", "--provider", "gcp")
    assert result.returncode == 1
    assert result.stderr == b""
    document = json.loads(result.stdout)
    assert document["version"] == 1 and document["success"] is False
    assert document["code"] == "KEY_ERROR"
    assert "does not match device.pub" in document["message"]
    assert gcp_server.sts_calls == 0

    assert run_cli("setup", "gcp-cred-file").returncode == 0
    credentials = pluggable.Credentials.from_file(str(gcp_home / "gcp-credentials.json"))
    with pytest.raises(google.auth.exceptions.RefreshError, match="KEY_ERROR"):
        credentials.refresh(google.auth.transport.requests.Request())


def test_unreachable_sts(
    initialised_home: Path, run_cli, gcp_server: FakeGcpServer, closed_port_url: str
) -> None:
    setup_gcp(run_cli, gcp_server, sts=f"{closed_port_url}/v1/token")
    result = run_cli("auth", "--provider", "gcp", "--format", "env")
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert stderr.count("\n") == 1
    assert stderr.startswith(f"credctl: cannot reach GCP STS at {closed_port_url}/v1/token")


def test_impersonation_refused(gcp_home: Path, run_cli, gcp_server: FakeGcpServer) -> None:
    gcp_server.expect.service_account_email = "someone-else@demo-project.iam.gserviceaccount.com"
    result = run_cli("auth", "--provider", "gcp", "--format", "env")
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert stderr.count("\n") == 1
    assert "GCP IAM Credentials refused" in stderr and "workloadIdentityUser" in stderr
    assert gcp_server.federated_token not in stderr


def test_not_configured_in_every_format(initialised_home: Path, run_cli) -> None:
    result = run_cli("auth", "--provider", "gcp", "--format", "env")
    assert result.returncode == 1
    assert result.stderr == b"credctl: GCP not configured: run `credctl setup gcp` first\n"

    result = run_cli("--verbose", "auth", "--provider", "gcp")
    assert result.returncode == 1 and result.stderr == b""
    assert json.loads(result.stdout) == {
        "version": 1,
        "success": False,
        "code": "GCP_NOT_CONFIGURED",
        "message": "GCP not configured: run `credctl setup gcp` first",
    }
