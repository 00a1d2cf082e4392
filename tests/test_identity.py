"""init, status, reset, version and oidc generate, run as a user runs them."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import jwt as pyjwt
import pytest
from conftest import RunCli
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from credctl.config import load_config
from credctl.errors import DeviceKeyError, HomePermissionError
from credctl.home import check_home_private
from credctl.jwt import issue_device_jwt
from credctl.signers import open_signer


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _spki_of_pem(path: Path) -> bytes:
    key = serialization.load_pem_public_key(path.read_bytes())
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _snapshot(home: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(home.iterdir()) if p.is_file()}


def test_init_creates_private_home_key_and_config(home: Path, run_cli: RunCli) -> None:
    result = run_cli("init")
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert _mode(home) == 0o700
    for name in ("config.json", "device.pub", "device.key"):
        assert _mode(home / name) == 0o600, name
    der = _spki_of_pem(home / "device.pub")
    fingerprint = "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode()
    assert fingerprint in out
    assert str(home / "device.pub") in out
    assert "none" in out and "NOT hardware-bound" in out
    config = json.loads((home / "config.json").read_text())
    assert config["device_id"] == fingerprint
    assert config["enclave_type"] == "software"
    assert config["biometric"] == "none"
    assert config["key_tag"] == "com.crzy.credctl.device-key"
    assert config["version"] == 1


def test_init_keeps_an_existing_identity_without_force(initialised_home: Path, run_cli: RunCli):
    before = _snapshot(initialised_home)
    result = run_cli("init")
    assert result.returncode == 0
    assert "already exists" in result.stdout.decode()
    assert _snapshot(initialised_home) == before


def test_init_force_replaces_the_key_and_keeps_cloud_settings(
    initialised_home: Path, run_cli: RunCli
) -> None:
    path = initialised_home / "config.json"
    config = json.loads(path.read_text())
    config["aws"] = {"role_arn": "arn:aws:iam::123456789012:role/r", "issuer_url": "https://i.x"}
    config["team_note"] = "kept"
    path.write_text(json.dumps(config))
    old_pub = (initialised_home / "device.pub").read_bytes()

    result = run_cli("init", "--force")
    assert result.returncode == 0, result.stderr
    new_config = json.loads(path.read_text())
    assert (initialised_home / "device.pub").read_bytes() != old_pub
    assert new_config["device_id"] != config["device_id"]
    assert new_config["aws"] == config["aws"]
    assert new_config["team_note"] == "kept"


def test_software_backend_refuses_user_verification(home: Path, run_cli: RunCli) -> None:
    result = run_cli("init", "--backend", "software", "--biometric", "fingerprint")
    assert result.returncode == 2
    assert "Secure Enclave" in result.stderr.decode()
    assert not (home / "config.json").exists()


def test_secure_enclave_backend_is_refused_off_macos(home: Path, run_cli: RunCli) -> None:
    result = run_cli("init", "--backend", "secure-enclave")
    assert result.returncode == 1
    assert result.stderr.decode().startswith("credctl: ")
    assert "--backend software" in result.stderr.decode()
    assert not (home / "config.json").exists()


def test_status_before_init_says_what_to_run(home: Path, run_cli: RunCli) -> None:
    result = run_cli("status")
    assert result.returncode == 0
    assert "Not initialised" in result.stdout.decode()
    assert "credctl init" in result.stdout.decode()


def test_status_json_reports_a_usable_software_key(initialised_home: Path, run_cli: RunCli):
    result = run_cli("status", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["initialised"] is True
    assert document["backend"] == "software"
    assert document["hardware_bound"] is False
    assert document["key_usable"] is True
    assert document["daemon"]["running"] is False
    text = run_cli("status").stdout.decode()
    assert "usable" in text and "NOT hardware-bound" in text
    assert "AWS: not configured" in text


def test_status_reports_a_device_pub_that_does_not_match_the_key(
    initialised_home: Path, run_cli: RunCli
) -> None:
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    (initialised_home / "device.pub").write_bytes(
        other.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    document = json.loads(run_cli("status", "--json").stdout)
    assert document["key_usable"] is False
    assert "device.pub" in document["key_problem"]


def test_missing_device_pub_stops_signing_with_a_clear_error(initialised_home: Path) -> None:
    (initialised_home / "device.pub").unlink()
    config = load_config(initialised_home)
    signer = open_signer(config.backend, initialised_home, config.key_tag)
    with pytest.raises(DeviceKeyError, match=r"device\.pub is missing"):
        issue_device_jwt(config, signer, "https://i.example", "aud", 300, "test")


def test_reset_asks_then_removes_everything(initialised_home: Path, run_cli: RunCli) -> None:
    declined = run_cli("reset", input=b"n\n")
    assert declined.returncode == 1
    assert (initialised_home / "device.key").exists()
    result = run_cli("reset", "--yes")
    assert result.returncode == 0, result.stderr
    assert not any(p.is_file() for p in initialised_home.iterdir())
    assert "Not initialised" in run_cli("status").stdout.decode()


def test_version_names_platform_and_backend(run_cli: RunCli) -> None:
    out = run_cli("version").stdout.decode()
    assert out.startswith("credctl 0.")
    assert "linux" in out and "Backend: software" in out


def test_jwt_verifies_with_an_independent_library_against_generated_jwks(
    initialised_home: Path, run_cli: RunCli, tmp_path: Path
) -> None:
    issuer = "https://issuer.example.com/device"
    out_dir = tmp_path / "oidc"
    result = run_cli("oidc", "generate", "--issuer-url", issuer, "--output-dir", str(out_dir))
    assert result.returncode == 0, result.stderr
    discovery = json.loads((out_dir / ".well-known/openid-configuration").read_text())
    assert discovery["issuer"] == issuer
    assert discovery["jwks_uri"] == issuer + "/keys.json"
    jwks = json.loads((out_dir / "keys.json").read_text())
    (jwk,) = jwks["keys"]
    assert (jwk["kty"], jwk["crv"], jwk["use"], jwk["alg"]) == ("EC", "P-256", "sig", "ES256")

    config = load_config(initialised_home)
    signer = open_signer(config.backend, initialised_home, config.key_tag)
    token = issue_device_jwt(config, signer, issuer, "sts.amazonaws.com", 300, "test")
    header = pyjwt.get_unverified_header(token)
    assert header == {"alg": "ES256", "typ": "JWT", "kid": jwk["kid"]}
    key = pyjwt.PyJWK(jwk).key
    claims = pyjwt.decode(token, key, algorithms=["ES256"], audience="sts.amazonaws.com")
    assert claims["iss"] == issuer and claims["sub"] == config.device_id
    assert claims["exp"] - claims["iat"] == 300
    assert len(claims["jti"]) == 32 and int(claims["jti"], 16) >= 0
    signature = token.rsplit(".", 1)[1]
    assert len(base64.urlsafe_b64decode(signature + "==")) == 64 and "=" not in signature


def test_oidc_generate_after_rotation_keeps_the_old_key(
    initialised_home: Path, run_cli: RunCli, tmp_path: Path
) -> None:
    args = ("oidc", "generate", "--issuer-url", "https://i.example", "--output-dir", str(tmp_path))
    assert run_cli(*args).returncode == 0
    first = json.loads((tmp_path / "keys.json").read_text())["keys"]
    assert run_cli("init", "--force").returncode == 0
    assert run_cli(*args).returncode == 0
    keys = json.loads((tmp_path / "keys.json").read_text())["keys"]
    assert len(keys) == 2 and keys[0] == first[0]
    assert run_cli(*args).returncode == 0
    assert len(json.loads((tmp_path / "keys.json").read_text())["keys"]) == 2


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"version": 1, "device_id": "SHA256:x", "enclave_ty', "not valid JSON"),
        (b"[1, 2]", "top level"),
        (b"\xff\xfe garbage", "cannot be read"),
    ],
)
def test_unreadable_config_is_reported_and_never_overwritten(
    initialised_home: Path, run_cli: RunCli, content: bytes, expected: str
) -> None:
    path = initialised_home / "config.json"
    path.write_bytes(content)
    for args in (
        ("status",),
        ("init",),
        ("init", "--force"),
        ("oidc", "generate", "--issuer-url", "https://i.example", "--output-dir", "out"),
    ):
        result = run_cli(*args)
        assert result.returncode == 1, args
        err = result.stderr.decode()
        assert err.startswith("credctl: ") and str(path) in err and expected in err, err
        assert "Traceback" not in err
        assert path.read_bytes() == content


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("enclave_type", "tpm", "'enclave_type'"),
        ("device_id", 42, "'device_id' must be a string"),
        (
            "aws",
            {"role_arn": "arn", "issuer_url": "https://i", "duration_seconds": "1h"},
            "'aws.duration_seconds' must be an integer",
        ),
        ("gcp", {"project_number": "1"}, "'gcp.workload_pool_id' is missing"),
        ("biometric", "face", "'biometric'"),
    ],
)
def test_wrongly_typed_config_field_is_named(
    initialised_home: Path, run_cli: RunCli, field: str, value: object, named: str
) -> None:
    path = initialised_home / "config.json"
    config = json.loads(path.read_text())
    config[field] = value
    path.write_text(json.dumps(config))
    before = path.read_bytes()
    result = run_cli("status")
    assert result.returncode == 1
    assert named in result.stderr.decode() and str(path) in result.stderr.decode()
    assert run_cli("init", "--force").returncode == 1
    assert path.read_bytes() == before


def test_home_privacy_checks_name_the_fix(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir(mode=0o700)
    check_home_private(home)
    os.chmod(home, 0o755)
    with pytest.raises(HomePermissionError, match=re.escape(f"chmod 700 {home}")):
        check_home_private(home)
    os.chmod(home, 0o700)
    link = tmp_path / "link"
    link.symlink_to(home)
    with pytest.raises(HomePermissionError, match="symlink"):
        check_home_private(link)
    os.chown(home, 65534, -1)
    try:
        with pytest.raises(HomePermissionError, match="owned by UID 65534"):
            check_home_private(home)
    finally:
        os.chown(home, os.getuid(), -1)


@pytest.mark.parametrize(
    "content", [b'{"keys": ["not a key"]}', b'{"keys": {"kid": "x"}}', b"[]", b"{oops"]
)
def test_oidc_generate_refuses_a_broken_keys_json(
    initialised_home: Path, run_cli: RunCli, tmp_path: Path, content: bytes
) -> None:
    (tmp_path / "keys.json").write_bytes(content)
    result = run_cli(
        "oidc", "generate", "--issuer-url", "https://i.example", "--output-dir", str(tmp_path)
    )
    assert result.returncode == 1
    err = result.stderr.decode()
    assert err.startswith("credctl: ") and str(tmp_path / "keys.json") in err, err
    assert "will not overwrite" in err
    assert (tmp_path / "keys.json").read_bytes() == content


def test_relative_credctl_home_is_recorded_as_an_absolute_path(
    tmp_path: Path, run_cli: RunCli
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "credctl", "init"],
        cwd=tmp_path,
        env={**os.environ, "CREDCTL_HOME": "relative-home"},
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "relative-home" / "config.json").read_text())
    assert config["public_key_path"] == str(tmp_path / "relative-home" / "device.pub")
