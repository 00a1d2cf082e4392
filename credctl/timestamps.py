"""RFC 3339 timestamps in UTC with a Z suffix, the one form credctl prints and stores."""

from __future__ import annotations

import time
from datetime import datetime, timezone


def rfc3339(moment: datetime | float | None = None) -> str:
    """``2026-03-16T10:00:00Z`` for an aware datetime, a Unix time, or now."""
    if isinstance(moment, datetime):
        return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))
