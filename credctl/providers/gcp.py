"""GCP: record an existing federation, render the executable response, exchange a
device JWT for a service-account access token, write the credential-config file.

google-auth is imported only inside the exchange: the `executable` format needs
no network and no google-auth at all (google-auth is the caller there).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from credctl.config import GcpSettings, load_config
from credctl.errors import CredctlError, ExchangeError, NotConfiguredError, UsageError
from credctl.home import GCP_CREDENTIAL_FILE, write_private_file
from credctl.validation import check_email, check_pool_id, check_project_number, check_url

JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105 (a type name)
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
EXECUTABLE_TIMEOUT_MILLIS = 30000
HTTP_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class GcpAccessToken:
    token: str
    expires_at: datetime  # timezone-aware, UTC

    def __repr__(self) -> str:
        return f"GcpAccessToken(expires_at={self.expires_at.isoformat()}, token=<redacted>)"


def record_federation(
    home: Path,
    project_number: str,
    pool_id: str,
    provider_id: str,
    service_account_email: str,
    issuer_url: str,
    sts_endpoint: str | None = None,
    iam_credentials_endpoint: str | None = None,
) -> GcpSettings:
    """Validate and save the ``gcp`` section of config.json; keys not given are kept."""
    check_project_number(project_number, "--project-number")
    check_pool_id(pool_id, "--pool-id")
    check_pool_id(provider_id, "--provider-id")
    check_email(service_account_email, "--service-account")
    check_url(issuer_url, "--issuer-url")
    if sts_endpoint is not None:
        check_url(sts_endpoint, "--sts-endpoint")
    if iam_credentials_endpoint is not None:
        check_url(iam_credentials_endpoint, "--iam-credentials-endpoint")
    config = load_config(home)
    config.update_section(
        "gcp",
        {
            "project_number": project_number,
            "workload_pool_id": pool_id,
            "provider_id": provider_id,
            "service_account_email": service_account_email,
            "issuer_url": issuer_url.rstrip("/"),
            "sts_endpoint": sts_endpoint,
            "iam_credentials_endpoint": iam_credentials_endpoint,
        },
    )
    config.save()
    settings = config.gcp
    assert settings is not None
    return settings


def impersonation_url(settings: GcpSettings) -> str:
    return (
        f"{settings.iam_credentials_endpoint.rstrip('/')}/v1/projects/-/serviceAccounts/"
        f"{settings.service_account_email}:generateAccessToken"
    )


def executable_response(token: str, expires_at: datetime) -> bytes:
    """The executable-sourced credential response google-auth reads from stdout."""
    document = {
        "version": 1,
        "success": True,
        "token_type": JWT_TOKEN_TYPE,
        "id_token": token,
        "expiration_time": int(expires_at.timestamp()),
    }
    return (json.dumps(document, separators=(",", ":")) + "\n").encode()


def executable_failure(error: CredctlError) -> bytes:
    """The ``success: false`` response: google-auth shows ``code`` and ``message``."""
    document = {"version": 1, "success": False, "code": error.code, "message": str(error)}
    return (json.dumps(document, separators=(",", ":")) + "\n").encode()


def render_env(access_token: GcpAccessToken) -> bytes:
    quoted = shlex.quote(access_token.token)
    return (
        f"export CLOUDSDK_AUTH_ACCESS_TOKEN={quoted}\nexport GOOGLE_OAUTH_ACCESS_TOKEN={quoted}\n"
    ).encode()


def exchange_for_access_token(
    settings: GcpSettings,
    token: str,
    explain: Callable[[str], None],
) -> GcpAccessToken:
    """STS token exchange, then generateAccessToken for the service account."""
    import google.auth.transport.requests
    from google.auth import exceptions, identity_pool

    class DeviceToken(identity_pool.SubjectTokenSupplier):
        def get_subject_token(self, context: Any, request: Any) -> str:
            return token

    class Request(google.auth.transport.requests.Request):
        """Adds a timeout, and remembers the endpoint it called last (for errors)."""

        last_url = ""

        def __call__(self, url: str, *args: Any, **kwargs: Any) -> Any:
            self.last_url = url
            kwargs.setdefault("timeout", HTTP_TIMEOUT_SECONDS)
            return super().__call__(url, *args, **kwargs)  # type: ignore[no-untyped-call]

    request = Request()
    url = impersonation_url(settings)
    credentials = identity_pool.Credentials(  # type: ignore[no-untyped-call]
        audience=settings.audience,
        subject_token_type=JWT_TOKEN_TYPE,
        token_url=settings.sts_endpoint,
        subject_token_supplier=DeviceToken(),
        service_account_impersonation_url=url,
        scopes=[CLOUD_PLATFORM_SCOPE],
    )
    explain(f"GCP STS token exchange at {settings.sts_endpoint} (audience {settings.audience})")
    explain(f"GCP IAM Credentials generateAccessToken at {url}")
    try:
        credentials.refresh(request)  # type: ignore[no-untyped-call]
    except exceptions.TransportError as exc:
        if request.last_url == url:
            raise _unreachable(
                "GCP IAM Credentials", url, "gcp.iam_credentials_endpoint", exc, token
            ) from None
        raise _unreachable(
            "GCP STS", settings.sts_endpoint, "gcp.sts_endpoint", exc, token
        ) from None
    except exceptions.GoogleAuthError as exc:  # RefreshError, OAuthError, ...
        if request.last_url != url:
            raise _sts_error(settings, exc, token) from None
        raise ExchangeError(
            f"GCP IAM Credentials refused to issue a token for "
            f"{settings.service_account_email} ({_describe(exc, token)}); check that the "
            "service account exists and that the pool's principals may impersonate it "
            "(roles/iam.workloadIdentityUser on the service account)"
        ) from None
    # google-auth keeps expiry as a naive UTC datetime.
    expiry: datetime = credentials.expiry or datetime.now(timezone.utc).replace(tzinfo=None)
    expires_at = expiry.replace(tzinfo=timezone.utc) if expiry.tzinfo is None else expiry
    return GcpAccessToken(token=str(credentials.token), expires_at=expires_at)


def _describe(exc: Exception, token: str) -> str:
    from google.auth.exceptions import OAuthError

    # OAuthError's first argument already summarises the response body it carries.
    parts = exc.args[:1] if isinstance(exc, OAuthError) else exc.args
    text = " ".join(str(arg) for arg in parts) or type(exc).__name__
    return text.replace(token, "<token>")[:300]


def _unreachable(
    service: str, endpoint: str, field: str, exc: Exception, token: str
) -> ExchangeError:
    return ExchangeError(
        f"cannot reach {service} at {endpoint} ({_describe(exc, token)}): check the network, "
        f"a proxy, and {field} in config.json"
    )


def _sts_error(settings: GcpSettings, exc: Exception, token: str) -> ExchangeError:
    detail = _describe(exc, token)
    what = f"GCP STS refused the token exchange ({detail})"
    if "invalid_target" in detail:
        hint = (
            f"the audience {settings.audience} is not a usable provider: check "
            "gcp.project_number, gcp.workload_pool_id and gcp.provider_id (`credctl setup gcp`) "
            "and that the pool and provider exist and are enabled"
        )
    elif "invalid_grant" in detail:
        hint = (
            f"the provider did not accept the device token: check that its issuer is "
            f"{settings.issuer_url}, that {settings.issuer_url}/keys.json holds this device's key "
            "(`credctl oidc generate` after `credctl init`), the provider's attribute "
            "condition, and this machine's clock"
        )
    else:
        hint = f"check gcp.sts_endpoint ({settings.sts_endpoint}) and the provider settings"
    return ExchangeError(f"{what}; {hint}")


def credential_config(settings: GcpSettings, command: str) -> dict[str, Any]:
    """The external-account credential config whose executable is ``command``."""
    return {
        "type": "external_account",
        "audience": settings.audience,
        "subject_token_type": JWT_TOKEN_TYPE,
        "token_url": settings.sts_endpoint,
        "service_account_impersonation_url": impersonation_url(settings),
        "credential_source": {
            "executable": {
                "command": f"{command} auth --provider gcp --format executable",
                "timeout_millis": EXECUTABLE_TIMEOUT_MILLIS,
            }
        },
    }


def write_credential_file(home: Path, command: str, output: Path | None = None) -> Path:
    """Write the credential config (0600) and record its path as gcp.credential_file_path."""
    config = load_config(home)
    settings = config.gcp
    if settings is None:
        raise NotConfiguredError("gcp")
    path = (output or home / GCP_CREDENTIAL_FILE).expanduser().absolute()
    if path.is_dir():
        raise UsageError(f"--output: {path} is a directory; give a file path")
    if not path.parent.is_dir():
        raise UsageError(f"--output: directory {path.parent} does not exist")
    document = json.dumps(credential_config(settings, command), indent=2) + "\n"
    write_private_file(path, document.encode())
    config.update_section("gcp", {"credential_file_path": str(path)})
    config.save()
    return path
