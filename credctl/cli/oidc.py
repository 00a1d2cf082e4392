"""oidc generate: the issuer's discovery document and JWKS."""

from __future__ import annotations

from pathlib import Path

import click

from credctl.config import DEFAULT_AWS_REGION, load_config
from credctl.home import credctl_home
from credctl.jwt import load_device_public_key
from credctl.oidc import write_documents
from credctl.validation import check_region, check_url


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


@oidc.command()
@click.option("--bucket", required=True, help="S3 bucket to serve the documents from.")
@click.option(
    "--region", help="The bucket's region (default: the AWS region recorded, else us-east-1)."
)
@click.option(
    "--endpoint-url",
    help="S3 endpoint for S3-compatible stores (default: AWS); the issuer is served under it.",
)
def publish(bucket: str, region: str | None, endpoint_url: str | None) -> None:
    """Upload the discovery document and keys.json to S3, publicly readable."""
    import boto3

    from credctl.cloud import SetupProgress
    from credctl.cloud.publish import check_bucket_name, publish_to_s3

    check_bucket_name(bucket)
    if endpoint_url is not None:
        check_url(endpoint_url, "--endpoint-url")
    config = load_config(credctl_home())
    recorded = config.aws
    region = region or (recorded.region if recorded else DEFAULT_AWS_REGION)
    check_region(region, "--region")
    s3 = boto3.session.Session().client("s3", region_name=region, endpoint_url=endpoint_url)
    command = f"credctl oidc publish --bucket {bucket}"
    progress = SetupProgress(lambda result: click.echo(result.describe()), command)
    issuer_url = publish_to_s3(s3, bucket, region, load_device_public_key(config), progress)
    click.echo(f"Issuer URL: {issuer_url}")
