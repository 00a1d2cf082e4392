"""oidc generate: the issuer's discovery document and JWKS."""

from __future__ import annotations

from pathlib import Path

import click

from credctl.config import load_config
from credctl.home import credctl_home
from credctl.jwt import load_device_public_key
from credctl.oidc import write_documents
from credctl.validation import check_url


@click.group()
def oidc() -> None:
    """OIDC issuer documents for the device key."""


@oidc.command()
@click.option("--issuer-url", required=True, help="The HTTPS URL the documents are served from.")
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("credctl-oidc"),
    show_default=True,
)
def generate(issuer_url: str, output_dir: Path) -> None:
    """Write .well-known/openid-configuration and keys.json."""
    check_url(issuer_url, "--issuer-url")
    config = load_config(credctl_home())
    for path in write_documents(load_device_public_key(config), issuer_url, output_dir):
        click.echo(f"Wrote {path}")
    click.echo(f"Serve these at {issuer_url.rstrip('/')}/ (e.g. `credctl oidc publish`).")
