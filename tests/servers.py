"""Real cloud endpoints on loopback for the tests: AWS STS and GCP STS + IAM Credentials.

AWS: moto's ``ThreadedMotoServer`` does the real AssumeRoleWithWebIdentity and
GetCallerIdentity work. In front of it sits a small recording proxy, because
moto accepts any web identity token: the proxy keeps every token it sees (so
tests can check alg/kid/aud/sub), counts the calls, and answers with a real STS
error document when a test asks it to fail.

GCP: ``FakeGcpServer`` plays STS (``/v1/token``, RFC 8693 token exchange as
google-auth sends it) and IAM Credentials
(``/v1/projects/-/serviceAccounts/EMAIL:generateAccessToken``). It verifies the
subject JWT's ES256 signature against the JWKS that ``credctl oidc generate``
wrote and checks iss, aud, sub and exp, the way Google's STS would.

Use from a test module (tests/ is on sys.path in pytest's default import mode)::

    from servers import aws_sts, moto_server, gcp_server, closed_port_url  # fixtures
    from servers import AwsStsServer, FakeGcpServer, decode_jwt_unverified  # classes

Every server binds 127.0.0.1 on a free port and runs in daemon threads.
"""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from credctl.config import load_config

LOOPBACK = "127.0.0.1"
HTTP_TIMEOUT = 30

# ---------------------------------------------------------------------------
# shared plumbing


class _QuietHandler(BaseHTTPRequestHandler):
    server_version = "credctl-test"

    def log_message(self, format: str, *args: Any) -> None:
        del format, args

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _ThreadedServer:
    """An http.server on 127.0.0.1:0 served from a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._httpd = ThreadingHTTPServer((LOOPBACK, 0), handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> _ThreadedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def decode_jwt_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of a compact JWS, without checking the signature."""

    def part(segment: str) -> dict[str, Any]:
        padded = segment + "=" * (-len(segment) % 4)
        return dict(json.loads(base64.urlsafe_b64decode(padded)))

    header, claims, _signature = token.split(".")
    return part(header), part(claims)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------
# AWS STS: moto behind a recording, fail-on-demand proxy


@dataclass(frozen=True)
class StsError:
    status: int
    code: str
    message: str


# What real STS answers for each failure the tests exercise.
STS_ERRORS: dict[str, StsError] = {
    "AccessDenied": StsError(
        403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity"
    ),
    "InvalidIdentityToken": StsError(
        400,
        "InvalidIdentityToken",
        "Couldn't retrieve verification key from your identity provider",
    ),
    "ExpiredTokenException": StsError(
        400, "ExpiredTokenException", "Token expired: current date/time is after exp"
    ),
    "IDPRejectedClaim": StsError(403, "IDPRejectedClaim", "Incorrect token audience"),
    "Throttling": StsError(400, "Throttling", "Rate exceeded"),
    "InternalFailure": StsError(500, "InternalFailure", "An internal error occurred"),
    "ServiceUnavailable": StsError(503, "ServiceUnavailable", "Service unavailable"),
}


def sts_error_document(error: StsError) -> bytes:
    return (
        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        f"<Error><Type>{'Receiver' if error.status >= 500 else 'Sender'}</Type>"
        f"<Code>{error.code}</Code><Message>{error.message}</Message></Error>"
        f"<RequestId>{secrets.token_hex(16)}</RequestId></ErrorResponse>"
    ).encode()


class _StsProxyHandler(_QuietHandler):
    def do_POST(self) -> None:
        owner: AwsStsServer = self.server.owner  # type: ignore[attr-defined]
        body = self.read_body()
        params = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}
        if params.get("Action") == "AssumeRoleWithWebIdentity":
            failure = owner._record(params)
            if failure is not None:
                self.reply(failure.status, sts_error_document(failure), "text/xml")
                return
        self._forward(owner.moto_url, body)

    def do_GET(self) -> None:
        owner: AwsStsServer = self.server.owner  # type: ignore[attr-defined]
        self._forward(owner.moto_url, b"")

    def _forward(self, upstream: str, body: bytes) -> None:
        parts = urlsplit(upstream)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=HTTP_TIMEOUT)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
        try:
            connection.request(self.command, self.path, body=body or None, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        finally:
            connection.close()
        self.reply(response.status, payload, response.getheader("Content-Type") or "text/xml")


class AwsStsServer(_ThreadedServer):
    """STS on loopback: moto does the work, this proxy records and fails on demand.

    - ``url``: the endpoint to put in ``aws.sts_endpoint``.
    - ``web_identity_calls``: how many AssumeRoleWithWebIdentity requests arrived
      (failed ones included).
    - ``tokens`` / ``requests``: each call's WebIdentityToken / form parameters.
    - ``fail_next(code, times=1)``: answer the next ``times`` calls with the STS
      error ``code`` (a key of STS_ERRORS, or an StsError).
    - ``fail_always(code)`` / ``stop_failing()``.
    """

    def __init__(self, moto_url: str) -> None:
        super().__init__(_StsProxyHandler)
        self.moto_url = moto_url
        self.requests: list[dict[str, str]] = []
        self._queued: list[StsError] = []
        self._always: StsError | None = None

    @property
    def web_identity_calls(self) -> int:
        with self.lock:
            return len(self.requests)

    @property
    def tokens(self) -> list[str]:
        with self.lock:
            return [r.get("WebIdentityToken", "") for r in self.requests]

    def fail_next(self, error: str | StsError, times: int = 1) -> None:
        with self.lock:
            self._queued.extend([_sts_error(error)] * times)

    def fail_always(self, error: str | StsError) -> None:
        with self.lock:
            self._always = _sts_error(error)

    def stop_failing(self) -> None:
        with self.lock:
            self._queued.clear()
            self._always = None

    def _record(self, params: dict[str, str]) -> StsError | None:
        with self.lock:
            self.requests.append(params)
            if self._queued:
                return self._queued.pop(0)
            return self._always


def _sts_error(error: str | StsError) -> StsError:
    return error if isinstance(error, StsError) else STS_ERRORS[error]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's server on 127.0.0.1 for the whole session; yields its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_sts(moto_server: str) -> Iterator[AwsStsServer]:
    """A fresh recording STS proxy (zero calls, no failures) in front of moto."""
    with AwsStsServer(moto_server) as server:
        yield server


@pytest.fixture
def closed_port_url() -> str:
    """An http://127.0.0.1:PORT URL where nothing listens."""
    return f"http://{LOOPBACK}:{closed_port()}"


# ---------------------------------------------------------------------------
# GCP: STS token exchange and IAM Credentials generateAccessToken

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
GENERATE_PREFIX = "/v1/projects/-/serviceAccounts/"
GENERATE_SUFFIX = ":generateAccessToken"


@dataclass
class GcpExpectations:
    """What the fake Google side trusts; set by the test once the device exists."""

    jwks_path: Path | None = None
    issuer: str | None = None
    audience: str | None = None
    subject: str | None = None
    service_account_email: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _GcpHandler(_QuietHandler):
    def do_POST(self) -> None:
        owner: FakeGcpServer = self.server.owner  # type: ignore[attr-defined]
        body = self.read_body()
        path = urlsplit(self.path).path
        if path == "/v1/token":
            status, document = owner._token_exchange(body)
        elif path.startswith(GENERATE_PREFIX) and path.endswith(GENERATE_SUFFIX):
            email = unquote(path[len(GENERATE_PREFIX) : -len(GENERATE_SUFFIX)])
            status, document = owner._generate_access_token(
                email, self.headers.get("Authorization", ""), body
            )
        else:
            status, document = 404, {"error": {"code": 404, "message": f"no route {path}"}}
        self.reply(status, json.dumps(document).encode(), "application/json")


class FakeGcpServer(_ThreadedServer):
    """Google STS + IAM Credentials on loopback.

    - ``sts_endpoint`` (``URL/v1/token``) and ``iam_credentials_endpoint`` (``URL``)
      go into the gcp section of config.json.
    - ``expect``: a GcpExpectations; set ``jwks_path`` (keys.json from
      ``credctl oidc generate``), ``issuer``, ``audience``, ``subject``
      (device_id) and ``service_account_email`` before the first exchange.
    - ``sts_calls`` / ``iam_calls`` count requests; ``subject_tokens`` keeps
      each exchanged JWT; ``failures`` holds the reason of each refused one.
    - ``federated_token`` (STS answer) and ``access_token`` (generateAccessToken
      answer) are random per server; ``access_token_lifetime`` sets expireTime.
    """

    def __init__(self) -> None:
        super().__init__(_GcpHandler)
        self.expect = GcpExpectations()
        self.sts_calls = 0
        self.iam_calls = 0
        self.subject_tokens: list[str] = []
        self.failures: list[str] = []
        self.federated_token = "fed-" + secrets.token_urlsafe(24)
        self.access_token = "ya29.test-" + secrets.token_urlsafe(24)
        self.access_token_lifetime = timedelta(hours=1)
        self.scopes_seen: list[list[str]] = []

    @property
    def sts_endpoint(self) -> str:
        return f"{self.url}/v1/token"

    @property
    def iam_credentials_endpoint(self) -> str:
        return self.url

    def _refuse(self, status: int, error: str, description: str) -> tuple[int, dict[str, Any]]:
        self.failures.append(f"{error}: {description}")
        return status, {"error": error, "error_description": description}

    def _token_exchange(self, body: bytes) -> tuple[int, dict[str, Any]]:
        import jwt as pyjwt

        params = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}
        with self.lock:
            self.sts_calls += 1
            self.subject_tokens.append(params.get("subject_token", ""))
        expect = self.expect
        if params.get("grant_type") != TOKEN_EXCHANGE_GRANT:
            return self._refuse(400, "unsupported_grant_type", "grant_type must be token-exchange")
        if params.get("subject_token_type") != JWT_TOKEN_TYPE:
            return self._refuse(400, "invalid_request", "subject_token_type must be jwt")
        if params.get("requested_token_type") != ACCESS_TOKEN_TYPE:
            return self._refuse(400, "invalid_request", "requested_token_type must be access_token")
        if params.get("audience") != expect.audience:
            return self._refuse(
                400,
                "invalid_target",
                'The target service indicated by the "audience" parameters is invalid. '
                "This might either be because the pool or provider is disabled or deleted "
                "or because it doesn't exist.",
            )
        token = params.get("subject_token", "")
        if expect.jwks_path is None:
            return self._refuse(500, "server_error", "test server has no JWKS")
        try:
            header = pyjwt.get_unverified_header(token)
            jwks = pyjwt.PyJWKSet.from_dict(json.loads(expect.jwks_path.read_text()))
            keys = [k for k in jwks.keys if k.key_id == header.get("kid")]
            if not keys:
                return self._refuse(
                    400, "invalid_grant", f"The key id {header.get('kid')} is not in the JWKS"
                )
            claims = pyjwt.decode(
                token,
                keys[0].key,
                algorithms=["ES256"],
                audience=expect.audience,
                issuer=expect.issuer,
                options={"require": ["iss", "sub", "aud", "iat", "exp"]},
            )
        except pyjwt.InvalidTokenError as exc:
            return self._refuse(400, "invalid_grant", f"The subject token is invalid: {exc}")
        if claims["sub"] != expect.subject:
            return self._refuse(400, "invalid_grant", "The subject does not match")
        if claims["exp"] <= time.time():
            return self._refuse(400, "invalid_grant", "The subject token has expired")
        return 200, {
            "access_token": self.federated_token,
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": 3600,
        }

    def _generate_access_token(
        self, email: str, authorization: str, body: bytes
    ) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.iam_calls += 1
        if authorization != f"Bearer {self.federated_token}":
            return 401, {
                "error": {
                    "code": 401,
                    "message": "Request had invalid authentication credentials.",
                    "status": "UNAUTHENTICATED",
                }
            }
        if email != self.expect.service_account_email:
            return 403, {
                "error": {
                    "code": 403,
                    "message": "Permission 'iam.serviceAccounts.getAccessToken' denied on "
                    f"resource (or it may not exist): {email}",
                    "status": "PERMISSION_DENIED",
                }
            }
        request = json.loads(body or b"{}")
        self.scopes_seen.append(list(request.get("scope") or []))
        expire = datetime.now(timezone.utc) + self.access_token_lifetime
        return 200, {
            "accessToken": self.access_token,
            "expireTime": expire.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


@pytest.fixture
def gcp_server() -> Iterator[FakeGcpServer]:
    """A fresh FakeGcpServer; the test fills ``server.expect`` after `credctl init`."""
    with FakeGcpServer() as server:
        yield server


# ---------------------------------------------------------------------------
# The federation the end-to-end tests configure against these servers

REPO = Path(__file__).resolve().parent.parent
ROLE_ARN = "arn:aws:iam::123456789012:role/credctl-device-role"
ISSUER = "https://issuer.example.com"
PROJECT_NUMBER = "123456789012"
POOL = "credctl-pool"
PROVIDER = "credctl-provider"
SERVICE_ACCOUNT = "credctl@demo-project.iam.gserviceaccount.com"
AUDIENCE = (
    f"//iam.googleapis.com/projects/{PROJECT_NUMBER}/locations/global/"
    f"workloadIdentityPools/{POOL}/providers/{PROVIDER}"
)
AWS_ENVIRONMENT = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_STS",
)


def isolate_aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No real AWS config, credentials or settings; credctl importable in every
    process the test starts, from any cwd. Returns the (not yet written) AWS
    config file."""
    config_file = tmp_path / "aws-config"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config_file))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    for name in AWS_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    return config_file


def setup_aws(run_cli: Any, endpoint: str) -> None:
    """`credctl setup aws` with ROLE_ARN and ISSUER against the STS at `endpoint`."""
    result = run_cli(
        "setup", "aws", "--role-arn", ROLE_ARN, "--issuer-url", ISSUER, "--sts-endpoint", endpoint
    )
    assert result.returncode == 0, result.stderr.decode()


def publish_jwks(run_cli: Any, directory: Path) -> Path:
    """`credctl oidc generate` for ISSUER into `directory`; returns keys.json."""
    result = run_cli("oidc", "generate", "--issuer-url", ISSUER, "--output-dir", str(directory))
    assert result.returncode == 0, result.stderr.decode()
    return directory / "keys.json"


def setup_gcp(
    run_cli: Any, server: FakeGcpServer, pool: str = POOL, sts: str | None = None
) -> None:
    """`credctl setup gcp` for the pool above, against `server` (or another STS)."""
    result = run_cli(
        "setup", "gcp",
        "--project-number", PROJECT_NUMBER,
        "--pool-id", pool,
        "--provider-id", PROVIDER,
        "--service-account", SERVICE_ACCOUNT,
        "--issuer-url", ISSUER,
        "--sts-endpoint", sts or server.sts_endpoint,
        "--iam-credentials-endpoint", server.iam_credentials_endpoint,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()


def configure_gcp(run_cli: Any, server: FakeGcpServer, home: Path, oidc_dir: Path) -> None:
    """A device the fake Google side trusts: its JWKS published into `oidc_dir`,
    `server` expecting its tokens, the pool configured with `credctl setup gcp`."""
    server.expect.jwks_path = publish_jwks(run_cli, oidc_dir)
    server.expect.issuer = ISSUER
    server.expect.audience = AUDIENCE
    server.expect.subject = load_config(home).device_id
    server.expect.service_account_email = SERVICE_ACCOUNT
    setup_gcp(run_cli, server)
