"""Helpers shared by the click commands."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import click


@dataclass
class CliState:
    verbose: bool = False
    # True when the native fast path already asked the daemon for this call,
    # so `auth` goes straight to the direct path instead of asking twice.
    daemon_tried: bool = False

    def explain(self, message: str) -> None:
        """A --verbose step on stderr; callers never pass a token or a secret."""
        if self.verbose:
            click.echo(f"credctl: {message}", err=True)


def fail(message: str) -> None:
    click.echo(f"credctl: {message}", err=True)


def print_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2))
