"""AWS federation setup against moto's server on loopback, behind TLS.

IAM wants the thumbprint of the issuer's TLS chain, so the moto server here
speaks TLS with a certificate made for the test; the CLI trusts it through
AWS_CA_BUNDLE (boto3) and SSL_CERT_FILE (the thumbprint connection).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import os
import socket
import ssl
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

from credctl.cloud import StepFailed
from credctl.cloud.aws_federation import tls_thumbprint
from credctl.keys import key_id

ACCOUNT = "123456789012"
BUCKET = f"credctl-oidc-{ACCOUNT}"
ADMIN = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


# -- certificates -------------------------------------------------------------


@dataclass
class Issued:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def sha1(self) -> str:
        return self.cert.fingerprint(hashes.SHA1()).hex()


def issue(name: str, issuer: Issued | None = None, ca: bool = False) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    else:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        builder = builder.add_extension(san, critical=False)
    signer = issuer.key if issuer else key
    return Issued(key, builder.sign(signer, hashes.SHA256()))


@dataclass
class Pki:
    root: Issued
    intermediate: Issued
    leaf: Issued
    ca_file: Path  # the root, for clients
    chain_file: Path  # leaf + intermediate, what the server presents
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.chain_file, self.key_file)
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    root = issue("credctl test root", ca=True)
    intermediate = issue("credctl test intermediate", root, ca=True)
    leaf = issue("127.0.0.1", intermediate)
    (directory / "root.pem").write_bytes(root.pem())
    (directory / "chain.pem").write_bytes(leaf.pem() + intermediate.pem())
    (directory / "leaf.key").write_bytes(leaf.key_pem())
    return Pki(
        root,
        intermediate,
        leaf,
        directory / "root.pem",
        directory / "chain.pem",
        directory / "leaf.key",
    )


# -- servers ------------------------------------------------------------------


@pytest.fixture
def moto_tls(pki: Pki) -> Iterator[str]:
    """moto's S3, IAM and STS over TLS on 127.0.0.1, starting from empty state."""
    dispatcher = DomainDispatcherApplication(create_backend_app)
    s3_only = create_backend_app("s3")

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        # moto serves every service on one port and routes an unsigned request by
        # its path; from moto 5.2.5 on, /<name>/.well-known/openid-configuration
        # is taken for Cognito's. Here the only unsigned GETs are anonymous reads
        # of the S3-hosted issuer, so they go to S3 (moto's state is shared).
        if environ["REQUEST_METHOD"] == "GET" and "HTTP_AUTHORIZATION" not in environ:
            return s3_only(environ, start_response)
        return dispatcher(environ, start_response)

    server = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=pki.server_context())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{server.server_address[1]}"
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    reset = urllib.request.Request(f"{url}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset, context=context, timeout=30).read()
    yield url
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture
def aws_env(
    moto_tls: str, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Point boto3 (here and in every credctl subprocess) at moto; no real credentials."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", *ADMIN):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_tls)
    monkeypatch.setenv("AWS_CA_BUNDLE", str(pki.ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return {"moto": moto_tls, "ca": str(pki.ca_file)}


def admin(service: str):  # type: ignore[no-untyped-def]
    return boto3.client(service, region_name="us-east-1", **_admin_kwargs())


def _admin_kwargs() -> dict[str, str]:
    return {
        "aws_access_key_id": ADMIN["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": ADMIN["AWS_SECRET_ACCESS_KEY"],
    }


def fetch(url: str, ca_file: str) -> tuple[bytes, str]:
    """An anonymous HTTPS GET, the way STS reads the issuer's documents."""
    context = ssl.create_default_context(cafile=ca_file)
    with urllib.request.urlopen(url, context=context, timeout=30) as response:
        return response.read(), response.headers["Content-Type"]


def aws_env_config() -> str:
    return os.environ["AWS_CONFIG_FILE"]


def config_of(home: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((home / "config.json").read_text())


def device_key_der(home: Path) -> bytes:
    key = serialization.load_pem_public_key((home / "device.pub").read_bytes())
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def make_policy() -> str:
    document = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:ListAllMyBuckets", "Resource": "*"}],
    }
    created = admin("iam").create_policy(
        PolicyName="credctl-test-policy", PolicyDocument=json.dumps(document)
    )
    return str(created["Policy"]["Arn"])


# -- the thumbprint -----------------------------------------------------------


@pytest.fixture
def tls_server(pki: Pki) -> Iterator[int]:
    """A TLS server on 127.0.0.1 that presents leaf + intermediate, then hangs up."""
    context = pki.server_context()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    listener.close()
    thread.join(timeout=10)


def test_thumbprint_is_the_top_certificate_the_server_presents(pki: Pki, tls_server: int) -> None:
    context = ssl.create_default_context(cafile=str(pki.ca_file))

    thumbprint = tls_thumbprint("127.0.0.1", tls_server, context)

    assert thumbprint == pki.intermediate.sha1()
    assert (
        thumbprint
        == hashlib.sha1(pki.intermediate.cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    )
    assert thumbprint != pki.leaf.sha1()


def test_thumbprint_refuses_an_unverified_server(tls_server: int) -> None:
    untrusting = ssl.create_default_context()
    untrusting.load_verify_locations(cadata=issue("someone else", ca=True).pem().decode())

    with pytest.raises(StepFailed, match="did not verify"):
        tls_thumbprint("127.0.0.1", tls_server, untrusting)


# -- oidc publish ---------------------------------------------------------------


def test_oidc_publish_uploads_public_documents(
    initialised_home: Path, run_cli, aws_env: dict[str, str]
) -> None:
    result = run_cli(
        "oidc", "publish", "--bucket", "my-issuer", "--endpoint-url", aws_env["moto"], env=ADMIN
    )

    assert result.returncode == 0, result.stderr.decode()
    issuer = f"{aws_env['moto']}/my-issuer"
    assert result.stdout.decode().splitlines()[-1] == f"Issuer URL: {issuer}"
    body, content_type = fetch(f"{issuer}/.well-known/openid-configuration", aws_env["ca"])
    assert content_type == "application/json"
    assert json.loads(body)["issuer"] == issuer
    body, content_type = fetch(f"{issuer}/keys.json", aws_env["ca"])
    assert content_type == "application/json"
    kids = [k["kid"] for k in json.loads(body)["keys"]]
    assert kids == [key_id(device_key_der(initialised_home))]
    policy = json.loads(admin("s3").get_bucket_policy(Bucket="my-issuer")["Policy"])
    [statement] = policy["Statement"]
    assert statement["Principal"] == "*"
    assert statement["Action"] == "s3:GetObject"
    assert sorted(statement["Resource"]) == [
        "arn:aws:s3:::my-issuer/.well-known/openid-configuration",
        "arn:aws:s3:::my-issuer/keys.json",
    ]
    block = admin("s3").get_public_access_block(Bucket="my-issuer")
    assert block["PublicAccessBlockConfiguration"]["BlockPublicAcls"] is True
    assert block["PublicAccessBlockConfiguration"]["BlockPublicPolicy"] is False


# -- setup aws, end to end ------------------------------------------------------


def test_setup_aws_from_nothing_to_credentials(
    initialised_home: Path, run_cli, aws_env: dict[str, str], pki: Pki
) -> None:
    policy_arn = make_policy()

    result = run_cli("setup", "aws", "--policy-arn", policy_arn, env=ADMIN)

    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    issuer = f"{aws_env['moto']}/{BUCKET}"
    host_path = issuer.removeprefix("https://")
    provider_arn = f"arn:aws:iam::{ACCOUNT}:oidc-provider/{host_path}"
    for line in (
        f"Created: S3 bucket {BUCKET}",
        f"Created: {issuer}/keys.json",
        f"Created: IAM OIDC provider {provider_arn}",
        "Created: IAM role credctl-device-role",
        f"Created: policy {policy_arn} on role credctl-device-role",
    ):
        assert line in out

    device_id = config_of(initialised_home)["device_id"]
    iam = admin("iam")
    role = iam.get_role(RoleName="credctl-device-role")["Role"]
    assert role["AssumeRolePolicyDocument"] == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        f"{host_path}:sub": device_id,
                        f"{host_path}:aud": "sts.amazonaws.com",
                    }
                },
            }
        ],
    }
    provider = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=provider_arn)
    assert provider["ClientIDList"] == ["sts.amazonaws.com"]
    assert provider["ThumbprintList"] == [pki.intermediate.sha1()]
    attached = iam.list_attached_role_policies(RoleName="credctl-device-role")
    assert [p["PolicyArn"] for p in attached["AttachedPolicies"]] == [policy_arn]

    aws_section = config_of(initialised_home)["aws"]
    assert aws_section == {
        "role_arn": f"arn:aws:iam::{ACCOUNT}:role/credctl-device-role",
        "issuer_url": issuer,
        "region": "us-east-1",
        "s3_bucket": BUCKET,
    }
    discovery, _ = fetch(f"{issuer}/.well-known/openid-configuration", aws_env["ca"])
    assert json.loads(discovery)["issuer"] == issuer
    profile = Path(aws_env_config()).read_text()
    assert "[profile credctl]" in profile
    assert "credential_process = " in profile

    auth = run_cli("auth", "--no-daemon")
    assert auth.returncode == 0, auth.stderr.decode()
    assert json.loads(auth.stdout)["Version"] == 1

    # botocore itself runs `credctl auth` through the profile setup wrote.
    identity = boto3.Session(profile_name="credctl").client("sts").get_caller_identity()
    assert ":assumed-role/credctl-device-role/credctl-" in identity["Arn"]


def test_setup_aws_rerun_changes_nothing(
    initialised_home: Path, run_cli, aws_env: dict[str, str]
) -> None:
    policy_arn = make_policy()
    first = run_cli("setup", "aws", "--policy-arn", policy_arn, env=ADMIN)
    assert first.returncode == 0, first.stderr.decode()
    iam = admin("iam")
    role_before = iam.get_role(RoleName="credctl-device-role")["Role"]
    config_before = config_of(initialised_home)
    profile_before = Path(aws_env_config()).read_text()

    second = run_cli("setup", "aws", "--policy-arn", policy_arn, env=ADMIN)

    assert second.returncode == 0, second.stderr.decode()
    steps = [line for line in second.stdout.decode().splitlines() if ": " in line]
    changes = [line for line in steps if line.startswith(("Created:", "Updated:"))]
    assert changes == []
    assert sum(line.startswith("Unchanged:") for line in steps) == 7
    assert iam.get_role(RoleName="credctl-device-role")["Role"] == role_before
    assert config_of(initialised_home) == config_before
    assert Path(aws_env_config()).read_text() == profile_before


def test_new_key_republishes_jwks_keeping_the_old_key(
    initialised_home: Path, run_cli, aws_env: dict[str, str]
) -> None:
    assert run_cli("setup", "aws", env=ADMIN).returncode == 0
    old_kid = key_id(device_key_der(initialised_home))
    assert run_cli("init", "--force", "--backend", "software").returncode == 0
    new_kid = key_id(device_key_der(initialised_home))
    new_device = config_of(initialised_home)["device_id"]

    result = run_cli("setup", "aws", env=ADMIN)

    assert result.returncode == 0, result.stderr.decode()
    issuer = f"{aws_env['moto']}/{BUCKET}"
    assert f"Updated: {issuer}/keys.json" in result.stdout.decode()
    assert "Updated: IAM role credctl-device-role" in result.stdout.decode()
    body, _ = fetch(f"{issuer}/keys.json", aws_env["ca"])
    assert [k["kid"] for k in json.loads(body)["keys"]] == [old_kid, new_kid]
    trust = admin("iam").get_role(RoleName="credctl-device-role")["Role"]
    condition = trust["AssumeRolePolicyDocument"]["Statement"][0]["Condition"]["StringEquals"]
    assert condition[f"{issuer.removeprefix('https://')}:sub"] == new_device
    auth = run_cli("auth", "--no-daemon")
    assert auth.returncode == 0, auth.stderr.decode()


def test_failure_part_way_says_what_exists_and_rerun_resumes(
    initialised_home: Path, run_cli, aws_env: dict[str, str]
) -> None:
    missing = f"arn:aws:iam::{ACCOUNT}:policy/not-there"

    failed = run_cli("setup", "aws", "--policy-arn", missing, env=ADMIN)

    assert failed.returncode == 1
    [line] = failed.stderr.decode().splitlines()
    assert line.startswith("credctl: Attaching the policy failed: NoSuchEntity: ")
    assert f"Exists now: S3 bucket {BUCKET}," in line
    assert "IAM role credctl-device-role." in line
    assert f"re-run `credctl setup aws --policy-arn {missing}` to resume" in line
    assert "roll back by deleting the IAM role credctl-device-role" in line
    assert "aws" not in config_of(initialised_home)  # nothing recorded until it all worked

    policy_arn = make_policy()
    resumed = run_cli("setup", "aws", "--policy-arn", policy_arn, env=ADMIN)

    assert resumed.returncode == 0, resumed.stderr.decode()
    out = resumed.stdout.decode()
    assert "Unchanged: IAM role credctl-device-role" in out
    assert f"Created: policy {policy_arn} on role credctl-device-role" in out
    assert config_of(initialised_home)["aws"]["role_arn"].endswith(":role/credctl-device-role")


def test_bad_role_name_is_a_usage_error(
    initialised_home: Path, run_cli, aws_env: dict[str, str]
) -> None:
    result = run_cli("setup", "aws", "--role-name", "bad name!", env=ADMIN)

    assert result.returncode == 2
    assert "--role-name" in result.stderr.decode()


def test_role_arn_mode_still_records(initialised_home: Path, run_cli) -> None:
    arn = f"arn:aws:iam::{ACCOUNT}:role/existing"
    result = run_cli("setup", "aws", "--role-arn", arn, "--issuer-url", "https://issuer.example")

    assert result.returncode == 0, result.stderr.decode()
    assert config_of(initialised_home)["aws"]["role_arn"] == arn
    mixed = run_cli("setup", "aws", "--issuer-url", "https://issuer.example")
    assert mixed.returncode == 2
    assert "--issuer-url goes with --role-arn" in mixed.stderr.decode()
