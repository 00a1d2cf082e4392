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


_AWS_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
_GCP_PROJECT_NUMBER = re.compile(r"^\d{1,20}$")
# Workload identity pool and provider IDs: 4-32 lowercase letters, digits, hyphens.
_GCP_POOL_ID = re.compile(r"^[a-z0-9-]{4,32}$")


def check_region(region: str, option: str) -> str:
    if not _AWS_REGION.match(region):
        raise UsageError(f"{option}: {region!r} is not an AWS region (expected e.g. us-east-1)")
    return region


def check_project_number(number: str, option: str) -> str:
    if not _GCP_PROJECT_NUMBER.match(number):
        raise UsageError(
            f"{option}: {number!r} is not a project number (the digits shown by "
            "`gcloud projects describe PROJECT --format='value(projectNumber)'`)"
        )
    return number


def check_pool_id(value: str, option: str) -> str:
    if not _GCP_POOL_ID.match(value) or value.startswith("-") or value.endswith("-"):
        raise UsageError(
            f"{option}: {value!r} is not a workload identity pool/provider ID "
            "(4-32 lowercase letters, digits and hyphens)"
        )
    return value
