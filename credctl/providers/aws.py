"""AWS: record an existing federation, exchange a device JWT at STS, render the output.

boto3 is imported only inside the exchange, so a process that never talks to
AWS (the daemon before its first miss, `credctl status`) does not pay for it.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from credctl.config import DEFAULT_AWS_REGION, AwsSettings, load_config
from credctl.errors import ExchangeError, UsageError
from credctl.timestamps import rfc3339
from credctl.validation import check_region, check_role_arn, check_url

# Standard mode retries throttling, 5xx and connection errors with jittered
# exponential backoff; four attempts keep the worst case to a few seconds.
MAX_ATTEMPTS = 4
CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 20

_SESSION_NAME_INVALID = re.compile(r"[^\w+=,.@-]")
_THROTTLING_CODES = frozenset(
    {"Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException"}
)


@dataclass(frozen=True)
class AwsCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str
    expiration: datetime  # timezone-aware, UTC

    def __repr__(self) -> str:
        return f"AwsCredentials(access_key_id={self.access_key_id}, secret=<redacted>)"


def record_federation(
    home: Path,
    role_arn: str,
    issuer_url: str,
    region: str | None = None,
    sts_endpoint: str | None = None,
) -> AwsSettings:
    """Validate and save the ``aws`` section of config.json; keys not given are kept."""
    check_role_arn(role_arn)
    check_url(issuer_url, "--issuer-url")
    if region is not None:
        check_region(region, "--region")
    if sts_endpoint is not None:
        check_url(sts_endpoint, "--sts-endpoint")
    config = load_config(home)
    existing = config.raw.get("aws") or {}
    config.update_section(
        "aws",
        {
            "role_arn": role_arn,
            "issuer_url": issuer_url.rstrip("/"),
            "region": region or existing.get("region") or DEFAULT_AWS_REGION,
            "sts_endpoint": sts_endpoint,
        },
    )
    config.save()
    settings = config.aws
    assert settings is not None
    return settings


def role_session_name(kid: str) -> str:
    """``credctl-<kid>-<8 hex>``, always within STS's ``[\\w+=,.@-]{2,64}``."""
    safe_kid = _SESSION_NAME_INVALID.sub("-", kid)[:40]
    return f"credctl-{safe_kid}-{secrets.token_hex(4)}"


@functools.lru_cache(maxsize=8)
def _sts_client(region: str, endpoint: str | None) -> Any:
    """An STS client per (region, endpoint), built once per process.

    Building one decodes botocore's service model, about ten times the cost
    of the STS call itself; the daemon re-uses it on every miss. boto3
    clients are safe to share between threads.
    """
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config as BotoConfig

    # Unsigned: the call needs no AWS credentials, and resolving them could run
    # this very credential_process again (AWS_PROFILE pointing at credctl).
    boto_config = BotoConfig(
        signature_version=UNSIGNED,
        retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
    )
    return boto3.session.Session().client(
        "sts", region_name=region, endpoint_url=endpoint, config=boto_config
    )


def assume_role_with_web_identity(
    settings: AwsSettings,
    token: str,
    session_name: str,
    explain: Callable[[str], None],
) -> AwsCredentials:
    """Call STS AssumeRoleWithWebIdentity with ``token``; ExchangeError on any failure."""
    from botocore.exceptions import BotoCoreError, ClientError

    endpoint = settings.sts_endpoint
    try:
        client = _sts_client(settings.region, endpoint)
        endpoint = client.meta.endpoint_url
        explain(
            f"AWS STS AssumeRoleWithWebIdentity at {endpoint} (region {settings.region}): "
            f"role {settings.role_arn}, session {session_name}, "
            f"duration {settings.duration_seconds}s"
        )
        response = client.assume_role_with_web_identity(
            RoleArn=settings.role_arn,
            RoleSessionName=session_name,
            WebIdentityToken=token,
            DurationSeconds=settings.duration_seconds,
        )
    except ClientError as exc:
        raise _client_error(exc, settings, endpoint, token) from None
    except BotoCoreError as exc:
        raise ExchangeError(
            f"cannot reach AWS STS at {endpoint or 'the regional endpoint'} "
            f"({_scrub(str(exc), token)}): check the network, a proxy, and aws.sts_endpoint / "
            "aws.region in config.json"
        ) from None
    credentials = response["Credentials"]
    return AwsCredentials(
        access_key_id=credentials["AccessKeyId"],
        secret_access_key=credentials["SecretAccessKey"],
        session_token=credentials["SessionToken"],
        expiration=credentials["Expiration"].astimezone(timezone.utc),
    )


def _scrub(text: str, token: str) -> str:
    """Keep the JWT out of a message, should a server or library ever echo it."""
    return text.replace(token, "<token>")[:300] if token else text[:300]


def _client_error(
    exc: Any, settings: AwsSettings, endpoint: str | None, token: str
) -> ExchangeError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    message = _scrub(str(error.get("Message", "")), token)
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    what = f"AWS STS refused AssumeRoleWithWebIdentity for {settings.role_arn} ({code}: {message})"
    issuer = settings.issuer_url
    if code == "AccessDenied":
        hint = (
            "check the role's trust policy: it must allow sts:AssumeRoleWithWebIdentity for the "
            f"OIDC provider {issuer} with aud sts.amazonaws.com and sub = this device ID "
            "(`credctl status`)"
        )
    elif code == "InvalidIdentityToken":
        hint = (
            f"check that an IAM OIDC provider exists for {issuer} and that "
            f"{issuer}/.well-known/openid-configuration and its keys.json are reachable over "
            "HTTPS and hold this device's key (`credctl oidc generate` after `credctl init`)"
        )
    elif code in ("ExpiredTokenException", "ExpiredToken"):
        hint = "the signed token had expired on arrival: check this machine's clock (clock skew)"
    elif code == "IDPRejectedClaim":
        hint = (
            "check the role's trust policy conditions on aud (sts.amazonaws.com) and sub "
            "(this device's ID, see `credctl status`), and the issuer URL"
        )
    elif code in _THROTTLING_CODES:
        hint = f"still throttled after {MAX_ATTEMPTS} attempts: try again in a moment"
    elif status >= 500:
        hint = f"AWS STS at {endpoint} failed {MAX_ATTEMPTS} times (HTTP {status}): try again later"
    else:
        hint = "check aws.role_arn and the role's trust policy"
    return ExchangeError(f"{what}; {hint}")


def render(credentials: AwsCredentials, fmt: str) -> bytes:
    """The exact bytes `credctl auth --provider aws --format FMT` prints."""
    expiration = rfc3339(credentials.expiration)
    if fmt == "credential_process":
        document = {
            "Version": 1,
            "AccessKeyId": credentials.access_key_id,
            "SecretAccessKey": credentials.secret_access_key,
            "SessionToken": credentials.session_token,
            "Expiration": expiration,
        }
        return (json.dumps(document, separators=(",", ":")) + "\n").encode()
    if fmt == "env":
        import shlex

        lines = [
            f"export AWS_ACCESS_KEY_ID={shlex.quote(credentials.access_key_id)}",
            f"export AWS_SECRET_ACCESS_KEY={shlex.quote(credentials.secret_access_key)}",
            f"export AWS_SESSION_TOKEN={shlex.quote(credentials.session_token)}",
            f"export AWS_CREDENTIAL_EXPIRATION={expiration}",
        ]
        return ("\n".join(lines) + "\n").encode()
    raise UsageError(f"unknown AWS format {fmt!r}: expected credential_process or env")
