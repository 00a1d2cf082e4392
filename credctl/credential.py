"""What `credctl auth` produces: the exact output bytes and when they expire.

The direct path and the daemon both deal in IssuedCredential, so the bytes a
user sees cannot differ between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

PROVIDER_FORMATS: dict[str, tuple[str, ...]] = {
    "aws": ("credential_process", "env"),
    "gcp": ("executable", "env"),
}
DEFAULT_FORMAT: dict[str, str] = {"aws": "credential_process", "gcp": "executable"}


@dataclass(frozen=True)
class IssuedCredential:
    body: bytes
    expires_at: datetime  # timezone-aware, UTC

    def __repr__(self) -> str:
        # The body is a secret: keep it out of reprs, tracebacks and logs.
        return f"IssuedCredential(expires_at={self.expires_at.isoformat()}, body=<redacted>)"
