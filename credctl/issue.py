"""The one pipeline: config + signer + provider -> the bytes `credctl auth` prints.

The direct path of `credctl auth` and the daemon both call issue_credential,
so what a user sees cannot depend on which of them answered.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from credctl.config import Config, load_config
from credctl.credential import PROVIDER_FORMATS, IssuedCredential
from credctl.errors import NotConfiguredError, UsageError
from credctl.home import credctl_home
from credctl.keys import key_id
from credctl.timestamps import rfc3339

if TYPE_CHECKING:
    from credctl.signers import Signer

# credctl.jwt (cryptography), the signers and the providers (boto3, google-auth)
# are imported where they are used: the daemon imports this module at start
# and should stay small until its first cache miss.


def silent(message: str) -> None:
    """An ``explain`` that says nothing."""
    del message


def check_request(provider: str, fmt: str) -> None:
    """UsageError unless ``fmt`` is one of ``provider``'s output formats."""
    if provider not in PROVIDER_FORMATS:
        raise UsageError(
            f"unknown provider {provider!r}: expected one of {', '.join(PROVIDER_FORMATS)}"
        )
    if fmt not in PROVIDER_FORMATS[provider]:
        raise UsageError(
            f"unknown format {fmt!r} for {provider}: expected one of "
            f"{', '.join(PROVIDER_FORMATS[provider])}"
        )


def issue_credential(
    provider: str,
    fmt: str,
    home: Path | None = None,
    explain: Callable[[str], None] | None = None,
) -> IssuedCredential:
    """Sign a device JWT and turn it into ``provider`` credentials rendered as ``fmt``.

    ``explain`` receives one line per step (key id, issuer, audience, endpoint;
    never a token or a secret). There is no cache here: every call signs and
    exchanges anew.
    Raises only CredctlError subclasses.
    """
    check_request(provider, fmt)
    say = explain or silent
    home = home if home is not None else credctl_home()
    config = load_config(home)
    say(f"config {config.path}")
    if provider == "aws":
        return _issue_aws(config, home, fmt, say)
    return _issue_gcp(config, home, fmt, say)


def _open_signer(config: Config, home: Path, say: Callable[[str], None]) -> tuple[Signer, str]:
    """The device key's signer and its key id."""
    from credctl.signers import open_signer

    signer = open_signer(config.backend, home, config.key_tag)
    kid = key_id(signer.public_key_der())
    say(f"device {config.device_id}, key id {kid}, backend {config.backend}")
    return signer, kid


def _issue_aws(
    config: Config, home: Path, fmt: str, say: Callable[[str], None]
) -> IssuedCredential:
    from credctl.jwt import AWS_AUDIENCE, AWS_TOKEN_LIFETIME_SECONDS, issue_device_jwt
    from credctl.providers import aws

    settings = config.aws
    if settings is None:
        raise NotConfiguredError("aws")
    signer, kid = _open_signer(config, home, say)
    say(
        f"signing a JWT: iss {settings.issuer_url}, aud {AWS_AUDIENCE}, "
        f"lifetime {AWS_TOKEN_LIFETIME_SECONDS}s"
    )
    token = issue_device_jwt(
        config,
        signer,
        settings.issuer_url,
        AWS_AUDIENCE,
        AWS_TOKEN_LIFETIME_SECONDS,
        "get AWS credentials",
    )
    credentials = aws.assume_role_with_web_identity(
        settings, token, aws.role_session_name(kid), say
    )
    say(f"AWS credentials expire {rfc3339(credentials.expiration)}")
    return IssuedCredential(aws.render(credentials, fmt), credentials.expiration)


def _issue_gcp(
    config: Config, home: Path, fmt: str, say: Callable[[str], None]
) -> IssuedCredential:
    from credctl.jwt import issue_device_jwt
    from credctl.providers import gcp

    settings = config.gcp
    if settings is None:
        raise NotConfiguredError("gcp")
    signer, _ = _open_signer(config, home, say)
    lifetime = settings.token_lifetime_seconds
    say(f"signing a JWT: iss {settings.issuer_url}, aud {settings.audience}, lifetime {lifetime}s")
    issued_at = datetime.now(timezone.utc)
    token = issue_device_jwt(
        config,
        signer,
        settings.issuer_url,
        settings.audience,
        lifetime,
        "get Google Cloud credentials",
        now=issued_at.timestamp(),
    )
    if fmt == "executable":
        expires_at = datetime.fromtimestamp(int(issued_at.timestamp()) + lifetime, timezone.utc)
        return IssuedCredential(gcp.executable_response(token, expires_at), expires_at)
    access_token = gcp.exchange_for_access_token(settings, token, say)
    say(f"GCP access token expires {rfc3339(access_token.expires_at)}")
    return IssuedCredential(gcp.render_env(access_token), access_token.expires_at)
