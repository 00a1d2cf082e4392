"""Checks for values users type: URLs, ARNs, e-mail addresses."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from credctl.errors import UsageError

_ROLE_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, option: str) -> str:
    """https URLs, or http for loopback only (local test servers)."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise UsageError(f"{option}: {url!r} is not a URL (expected https://host/...)")
    if parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(parts.hostname)):
        return url
    raise UsageError(
        f"{option}: {url!r} must use https (http is accepted only for localhost/127.0.0.1/::1)"
    )


def check_role_arn(arn: str) -> str:
    if not _ROLE_ARN.match(arn):
        raise UsageError(
            f"--role-arn: {arn!r} is not an IAM role ARN "
            "(expected arn:aws:iam::123456789012:role/NAME)"
        )
    return arn


def check_email(email: str, option: str) -> str:
    if not _EMAIL.match(email):
        raise UsageError(f"{option}: {email!r} is not an e-mail address")
    return email
