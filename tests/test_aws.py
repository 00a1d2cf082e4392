"""credctl auth for AWS against moto's STS on loopback, and through botocore itself."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import boto3
import jwt as pyjwt
import pytest
from servers import (
    ISSUER,
    ROLE_ARN,
    AwsStsServer,
    aws_sts,
    closed_port_url,
    decode_jwt_unverified,
    isolate_aws,
    moto_server,
    setup_aws,
)

from credctl.config import load_config
from credctl.jwt import load_device_public_key
from credctl.keys import key_id

__all__ = ["aws_sts", "closed_port_url", "moto_server"]  # fixtures used below

SESSION_NAME = re.compile(r"^credctl-[\w-]{16}-[0-9a-f]{8}$")


@pytest.fixture(autouse=True)
def isolated_aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No real AWS config or credentials; credctl importable from any cwd."""
    return isolate_aws(tmp_path, monkeypatch)


@pytest.fixture
def aws_home(initialised_home: Path, run_cli, aws_sts: AwsStsServer) -> Path:
    setup_aws(run_cli, aws_sts.url)
    return initialised_home


def device_public_der(home: Path) -> bytes:
    return load_device_public_key(load_config(home))


def test_credential_process_output_and_the_jwt_sts_received(
    aws_home: Path, run_cli, aws_sts: AwsStsServer
) -> None:
    result = run_cli("auth")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    assert result.stdout.endswith(b"}\n") and result.stdout.count(b"\n") == 1
    document = json.loads(result.stdout)
    assert list(document) == [
        "Version",
        "AccessKeyId",
        "SecretAccessKey",
        "SessionToken",
        "Expiration",
    ]
    assert document["Version"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", document["Expiration"])

    assert aws_sts.web_identity_calls == 1
    request = aws_sts.requests[0]
    assert request["RoleArn"] == ROLE_ARN
    assert request["DurationSeconds"] == "3600"
    public_der = device_public_der(aws_home)
    kid = key_id(public_der)
    assert SESSION_NAME.match(request["RoleSessionName"])
    assert request["RoleSessionName"].startswith(f"credctl-{kid}-")

    token = request["WebIdentityToken"]
    header, _ = decode_jwt_unverified(token)
    assert header == {"alg": "ES256", "typ": "JWT", "kid": kid}
    pem = (aws_home / "device.pub").read_bytes()
    claims = pyjwt.decode(
        token, pem, algorithms=["ES256"], audience="sts.amazonaws.com", issuer=ISSUER
    )
    assert claims["sub"] == load_config(aws_home).device_id
    assert claims["exp"] - claims["iat"] == 300
    assert re.fullmatch(r"[0-9a-f]{32}", claims["jti"])


def test_botocore_runs_credctl_as_its_credential_process(
    aws_home: Path, run_cli, aws_sts: AwsStsServer, isolated_aws: Path
) -> None:
    result = run_cli("setup", "aws-profile")
    assert result.returncode == 0, result.stderr.decode()
    assert "credential_process = " in isolated_aws.read_text()

    session = boto3.Session(profile_name="credctl")
    identity = session.client("sts", endpoint_url=aws_sts.url).get_caller_identity()

    assert identity["Arn"].startswith(
        "arn:aws:sts::123456789012:assumed-role/credctl-device-role/credctl-"
    )
    assert aws_sts.web_identity_calls == 1
    assert session.region_name == "us-east-1"


def test_env_format_evaluated_by_a_shell(aws_home: Path, aws_sts: AwsStsServer) -> None:
    script = (
        'eval "$("$PYTHON" -m credctl auth --format env)" || exit 9\n'
        'test -n "$AWS_CREDENTIAL_EXPIRATION" || exit 8\n'
        '"$PYTHON" -c \'import boto3, sys\n'
        'sts = boto3.client("sts", endpoint_url=sys.argv[1], region_name="us-east-1")\n'
        'print(sts.get_caller_identity()["Arn"])\' "$ENDPOINT"\n'
    )
    env = {"PYTHON": sys.executable, "ENDPOINT": aws_sts.url}
    import os

    result = subprocess.run(
        ["bash", "-c", script], env={**os.environ, **env}, capture_output=True, timeout=120
    )
    assert result.returncode == 0, result.stderr.decode()
    assert b"assumed-role/credctl-device-role/credctl-" in result.stdout
    assert aws_sts.web_identity_calls == 1


def test_env_format_lines(aws_home: Path, run_cli) -> None:
    result = run_cli("auth", "--format", "env")
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    assert [line.split("=", 1)[0] for line in lines] == [
        "export AWS_ACCESS_KEY_ID",
        "export AWS_SECRET_ACCESS_KEY",
        "export AWS_SESSION_TOKEN",
        "export AWS_CREDENTIAL_EXPIRATION",
    ]


def test_verbose_explains_without_secrets(aws_home: Path, run_cli, aws_sts: AwsStsServer) -> None:
    result = run_cli("--verbose", "auth")
    assert result.returncode == 0, result.stderr.decode()
    stderr = result.stderr.decode()
    document = json.loads(result.stdout)
    assert key_id(device_public_der(aws_home)) in stderr
    assert ISSUER in stderr
    assert "sts.amazonaws.com" in stderr
    assert aws_sts.url in stderr
    for secret in (document["SecretAccessKey"], document["SessionToken"], aws_sts.tokens[0]):
        assert secret not in stderr
    assert all(line.startswith("credctl: ") for line in stderr.splitlines())


REFUSALS = {
    "AccessDenied": "trust policy",
    "InvalidIdentityToken": "keys.json",
    "ExpiredTokenException": "clock",
    "IDPRejectedClaim": "sub",
}


@pytest.mark.parametrize("fmt", ["credential_process", "env"])
@pytest.mark.parametrize("code", list(REFUSALS))
def test_sts_refusals_give_one_clear_line(
    aws_home: Path, run_cli, aws_sts: AwsStsServer, code: str, fmt: str
) -> None:
    aws_sts.fail_always(code)
    result = run_cli("auth", "--format", fmt)
    assert result.returncode == 1
    assert result.stdout == b""
    stderr = result.stderr.decode()
    assert stderr.count("\n") == 1 and stderr.startswith("credctl: ")
    assert code in stderr and REFUSALS[code] in stderr
    assert "Traceback" not in stderr
    assert aws_sts.tokens[0] not in stderr
    assert (aws_home / "device.key").read_text().splitlines()[1] not in stderr
    assert aws_sts.web_identity_calls == 1  # refusals are final: no retry


@pytest.mark.parametrize(
    "failures", [["Throttling", "Throttling"], ["InternalFailure", "ServiceUnavailable"]]
)
def test_throttling_and_server_errors_are_retried(
    aws_home: Path, run_cli, aws_sts: AwsStsServer, failures: list[str]
) -> None:
    for failure in failures:
        aws_sts.fail_next(failure)
    result = run_cli("auth")
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["Version"] == 1
    assert aws_sts.web_identity_calls == len(failures) + 1


@pytest.mark.parametrize("code", ["Throttling", "ServiceUnavailable"])
def test_persistent_throttling_or_outage_gives_up(
    aws_home: Path, run_cli, aws_sts: AwsStsServer, code: str
) -> None:
    from credctl.providers.aws import MAX_ATTEMPTS

    aws_sts.fail_always(code)
    result = run_cli("auth")
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert stderr.count("\n") == 1 and code in stderr and "try again" in stderr
    assert aws_sts.web_identity_calls == MAX_ATTEMPTS


def test_unreachable_endpoint(initialised_home: Path, run_cli, closed_port_url: str) -> None:
    setup_aws(run_cli, closed_port_url)
    result = run_cli("auth")
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert stderr.count("\n") == 1
    assert stderr.startswith(f"credctl: cannot reach AWS STS at {closed_port_url}")
    assert "aws.sts_endpoint" in stderr


def test_key_not_matching_device_pub_is_refused_before_sts(
    aws_home: Path, run_cli, aws_sts: AwsStsServer
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    (aws_home / "device.pub").write_bytes(
        other.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    result = run_cli("auth")
    assert result.returncode == 1
    assert "does not match device.pub" in result.stderr.decode()
    assert aws_sts.web_identity_calls == 0


def test_not_configured(initialised_home: Path, run_cli) -> None:
    result = run_cli("auth")
    assert result.returncode == 1
    assert result.stderr == b"credctl: AWS not configured: run `credctl setup aws` first\n"


def test_session_names_fit_sts_rules() -> None:
    from credctl.providers.aws import role_session_name

    for kid in ("ohk7CFUhbn03-a3O", "a_b-c", "x" * 80, "we!rd/kid:"):
        name = role_session_name(kid)
        assert re.fullmatch(r"[\w+=,.@-]{2,64}", name), name
        assert name.startswith("credctl-")
