"""Typed errors: each carries a message a user can act on.

``str(error)`` is the detailed message for the terminal and the daemon log.
``public_message`` is the generic text the daemon may send to a client; it
never contains a path, an endpoint's answer or anything secret.
"""

from __future__ import annotations


class CredctlError(Exception):
    """An error whose message tells the user what to fix."""

    public_message = "internal error"
    http_status = 500
    # The short machine-readable code used in the GCP executable response.
    code = "CREDCTL_ERROR"


class ConfigError(CredctlError):
    """config.json is missing, unreadable or has a field of the wrong type."""

    public_message = "configuration error"
    code = "CONFIG_ERROR"


class NotInitialisedError(CredctlError):
    """No device identity exists yet."""

    public_message = "device not initialised"
    http_status = 503
    code = "NOT_INITIALISED"


class HomePermissionError(CredctlError):
    """The credctl home is not private to the user."""

    public_message = "configuration error"
    code = "HOME_PERMISSIONS"


class DeviceKeyError(CredctlError):
    """The device key is missing, unusable or does not match device.pub."""

    public_message = "authentication failed"
    code = "KEY_ERROR"


class SigningError(CredctlError):
    """The key backend failed to sign."""

    public_message = "authentication failed"
    code = "SIGNING_FAILED"


class AuthenticationCancelled(SigningError):
    """The user cancelled the Touch ID / password prompt."""

    public_message = "authentication cancelled"
    code = "AUTHENTICATION_CANCELLED"


class NotConfiguredError(CredctlError):
    """The requested cloud provider has no section in config.json."""

    http_status = 503

    def __init__(self, provider: str) -> None:
        label = {"aws": "AWS", "gcp": "GCP"}.get(provider, provider)
        command = "credctl setup aws" if provider == "aws" else "credctl setup gcp"
        super().__init__(f"{label} not configured: run `{command}` first")
        self.public_message = f"{label} not configured"
        self.code = f"{label}_NOT_CONFIGURED"


class ExchangeError(CredctlError):
    """The cloud provider refused or could not be reached for the exchange."""

    public_message = "credential exchange failed"
    http_status = 503
    code = "EXCHANGE_FAILED"


class UsageError(CredctlError):
    """A value given on the command line is invalid."""

    public_message = "bad request"
    http_status = 400
    code = "USAGE_ERROR"
