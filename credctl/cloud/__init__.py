"""Building the cloud side of the federation: OIDC hosting, AWS IAM, GCP workload identity.

Each setup runs as a list of idempotent steps. A step looks at what exists,
creates or updates only what differs, and reports what it did through a
callback, so the CLI can print progress while it happens. When a step fails,
SetupProgress turns the failure into one error that says what exists now and
that re-running the same command resumes from there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from credctl.errors import ConfigError, CredctlError
from credctl.oidc import parse_jwks

Action = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True)
class StepResult:
    """One resource a step looked at, and what it did to it."""

    action: Action
    resource: str  # e.g. "IAM role credctl-device-role"
    detail: str = ""

    def describe(self) -> str:
        verb = {"created": "Created", "updated": "Updated", "unchanged": "Unchanged"}[self.action]
        return f"{verb}: {self.resource}" + (f" ({self.detail})" if self.detail else "")


Reporter = Callable[[StepResult], None]


class CloudSetupError(CredctlError):
    """A setup step failed; the message says what exists and how to resume or roll back."""

    public_message = "cloud setup failed"
    code = "CLOUD_SETUP_FAILED"


class StepFailed(CredctlError):
    """Raised inside a step with a message naming what the cloud answered."""


@dataclass
class SetupProgress:
    """Collects step results, forwards each to ``report`` and explains failures.

    ``rollback`` maps a resource name to the way to remove it, so a failure can
    list exactly the resources that exist now.
    """

    report: Reporter
    rerun_command: str
    results: list[StepResult] = field(default_factory=list)
    rollback: dict[str, str] = field(default_factory=dict)

    def record(self, result: StepResult, removal: str | None = None) -> None:
        self.results.append(result)
        if removal:
            self.rollback[result.resource] = removal
        self.report(result)

    def failure(self, step: str, cause: Exception) -> CloudSetupError:
        # One line, as every credctl error is; the steps printed before it
        # already listed each resource as it was made.
        reason = str(cause).rstrip(". ")
        parts = [f"{step} failed: {reason}."]
        if self.results:
            parts.append("Exists now: " + ", ".join(r.resource for r in self.results) + ".")
        else:
            parts.append("Nothing was created or changed.")
        parts.append(f"Fix the cause and re-run `{self.rerun_command}` to resume")
        if self.rollback:
            removals = "; ".join(reversed(self.rollback.values()))
            parts[-1] += f", or roll back by deleting {removals}"
        parts[-1] += "."
        return CloudSetupError(" ".join(parts))

    @property
    def changed(self) -> bool:
        return any(r.action != "unchanged" for r in self.results)


def parse_published_jwks(data: bytes | None, location: str) -> dict[str, Any] | None:
    """The JWKS already published at ``location``, or None; anything else is an error.

    A broken document is never overwritten: it may hold keys someone relies on.
    """
    if data is None:
        return None
    try:
        return parse_jwks(data, location)
    except ConfigError as exc:
        raise StepFailed(str(exc)) from None
