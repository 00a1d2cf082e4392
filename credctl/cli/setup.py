"""setup aws | aws-profile | gcp | gcp-cred-file: connect the device to the clouds."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

import click

from credctl.aws_profile import DEFAULT_PROFILE, install_profile
from credctl.errors import UsageError
from credctl.home import credctl_home
from credctl.providers import aws, gcp


def credctl_command() -> str:
    """The shell-quoted command other programs run to start this credctl.

    botocore and google-auth split it with shlex. The ``credctl-fast`` launcher
    beside the ``credctl`` script answers from the daemon without starting
    Python, so it is preferred when it is installed.
    """
    script = _credctl_script()
    if script is None:
        return shlex.join([sys.executable, "-m", "credctl"])
    fast = script.parent / "credctl-fast"
    return shlex.quote(str(fast if fast.is_file() else script))


def _credctl_script() -> Path | None:
    """The ``credctl`` console script running now (or on PATH); None under ``python -m``."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "__main__.py":
        return None
    if argv0.name == "credctl" and argv0.is_file():
        return argv0.resolve()
    found = shutil.which("credctl")
    return Path(found).resolve() if found else None


def _clear_daemon_cache() -> None:
    """The settings changed: a running daemon must not serve credentials made with the old."""
    from credctl.daemon.client import clear_cache

    clear_cache(credctl_home())  # False when no daemon answers: then nothing is cached


@click.group()
def setup() -> None:
    """Connect the device identity to AWS and Google Cloud."""


@setup.command("aws")
@click.option(
    "--role-arn",
    help="An existing IAM role that trusts the device's issuer; without it credctl creates one.",
)
@click.option("--issuer-url", help="The OIDC issuer URL (https); goes with --role-arn.")
@click.option("--region", help="AWS region for STS (default: us-east-1, or the one recorded).")
@click.option("--sts-endpoint", help="STS endpoint URL (default: the regional endpoint).")
@click.option(
    "--role-name",
    help="Creating: the IAM role to create or update (default credctl-device-role).",
)
@click.option("--policy-arn", help="Creating: a managed policy to attach to the role.")
@click.option(
    "--bucket", help="Creating: S3 bucket for the OIDC documents (default credctl-oidc-ACCOUNT)."
)
def setup_aws(
    role_arn: str | None,
    issuer_url: str | None,
    region: str | None,
    sts_endpoint: str | None,
    role_name: str | None,
    policy_arn: str | None,
    bucket: str | None,
) -> None:
    """Create the AWS federation (without --role-arn), or record an existing one."""
    if role_arn is None:
        if issuer_url is not None:
            raise UsageError(
                "--issuer-url goes with --role-arn; without --role-arn credctl hosts the "
                "issuer in S3 itself"
            )
        _create_aws(region, sts_endpoint, role_name, policy_arn, bucket)
        return
    if issuer_url is None:
        raise UsageError("--issuer-url is required with --role-arn")
    if role_name or policy_arn or bucket:
        raise UsageError(
            "--role-name, --policy-arn and --bucket create the federation; "
            "leave out --role-arn to use them"
        )
    settings = aws.record_federation(credctl_home(), role_arn, issuer_url, region, sts_endpoint)
    _clear_daemon_cache()
    click.echo("AWS federation recorded:")
    click.echo(f"  role_arn:   {settings.role_arn}")
    click.echo(f"  issuer_url: {settings.issuer_url}")
    click.echo(f"  region:     {settings.region}")
    if settings.sts_endpoint:
        click.echo(f"  sts_endpoint: {settings.sts_endpoint}")
    click.echo(
        "Next: `credctl setup aws-profile`, then `aws sts get-caller-identity --profile credctl`."
    )


def _rerun_command() -> str:
    """This invocation as a shell command line, for "run it again" hints."""
    return shlex.join(["credctl", *sys.argv[1:]])


def _create_aws(
    region: str | None,
    sts_endpoint: str | None,
    role_name: str | None,
    policy_arn: str | None,
    bucket: str | None,
) -> None:
    from credctl.cloud.aws_federation import (
        DEFAULT_ROLE_NAME,
        AwsSetupOptions,
        build_aws_federation,
    )

    home = credctl_home()
    options = AwsSetupOptions(
        region=region,
        role_name=role_name or DEFAULT_ROLE_NAME,
        bucket=bucket,
        policy_arn=policy_arn,
        sts_endpoint=sts_endpoint,
        rerun_command=_rerun_command(),
    )
    federation = build_aws_federation(home, options, lambda step: click.echo(step.describe()))
    _clear_daemon_cache()
    click.echo("AWS federation ready and recorded:")
    click.echo(f"  role_arn:   {federation.role_arn}")
    click.echo(f"  issuer_url: {federation.issuer_url}")
    click.echo(f"  region:     {federation.region}")
    if not policy_arn:
        click.echo("  No policy attached: add one with --policy-arn to grant the role access.")
    profile = install_profile(home, credctl_command(), DEFAULT_PROFILE, force=False)
    if profile.action == "kept":
        click.echo(f"{profile.header} already exists in {profile.path}; left unchanged.")
    else:
        click.echo(f"Wrote {profile.header} in {profile.path}")
    click.echo(f"Try it: aws sts get-caller-identity --profile {DEFAULT_PROFILE}")


@setup.command("aws-profile")
@click.option("--profile", default=DEFAULT_PROFILE, show_default=True, help="Profile name.")
@click.option("--force", is_flag=True, help="Replace the profile if it exists.")
def setup_aws_profile(profile: str, force: bool) -> None:
    """Write a credential_process profile into the AWS config file."""
    result = install_profile(credctl_home(), credctl_command(), profile, force)
    if result.action == "kept":
        click.echo(
            f"{result.header} already exists in {result.path}; left unchanged "
            "(use --force to replace it)."
        )
        return
    click.echo(
        f"{'Added' if result.action == 'added' else 'Replaced'} {result.header} in {result.path}"
    )
    click.echo(
        f"Use it: aws sts get-caller-identity --profile {profile}  (or AWS_PROFILE={profile})"
    )


@setup.command("gcp")
@click.option(
    "--project-number",
    help="Recording: the project's number (digits) of an existing federation.",
)
@click.option(
    "--project",
    help="Creating: the project ID to create the pool, provider and bucket in.",
)
@click.option("--pool-id", help="Workload identity pool ID (creating: default credctl-pool).")
@click.option(
    "--provider-id", help="Workload identity pool provider ID (creating: default credctl-provider)."
)
@click.option("--service-account", required=True, help="Service account e-mail to impersonate.")
@click.option("--issuer-url", help="Recording: the OIDC issuer URL (https).")
@click.option(
    "--bucket", help="Creating: GCS bucket for the OIDC documents (default credctl-oidc-NUMBER)."
)
@click.option("--sts-endpoint", help="STS token URL (default https://sts.googleapis.com/v1/token).")
@click.option(
    "--iam-credentials-endpoint",
    help="IAM Credentials base URL (default https://iamcredentials.googleapis.com).",
)
def setup_gcp(
    project_number: str | None,
    project: str | None,
    pool_id: str | None,
    provider_id: str | None,
    service_account: str,
    issuer_url: str | None,
    bucket: str | None,
    sts_endpoint: str | None,
    iam_credentials_endpoint: str | None,
) -> None:
    """Create the GCP federation (--project), or record an existing one (--project-number)."""
    if project_number is None:
        if project is None:
            raise UsageError(
                "give --project to create the federation, or --project-number (with "
                "--pool-id, --provider-id and --issuer-url) to record an existing one"
            )
        if issuer_url is not None:
            raise UsageError(
                "--issuer-url goes with --project-number; with --project credctl hosts "
                "the issuer in GCS itself"
            )
        _create_gcp(
            project,
            service_account,
            pool_id,
            provider_id,
            bucket,
            sts_endpoint,
            iam_credentials_endpoint,
        )
        return
    if project is not None or bucket is not None:
        raise UsageError("--project and --bucket create the federation; leave out --project-number")
    if pool_id is None or provider_id is None or issuer_url is None:
        raise UsageError("--project-number needs --pool-id, --provider-id and --issuer-url")
    settings = gcp.record_federation(
        credctl_home(),
        project_number,
        pool_id,
        provider_id,
        service_account,
        issuer_url,
        sts_endpoint,
        iam_credentials_endpoint,
    )
    _clear_daemon_cache()
    click.echo("GCP federation recorded:")
    click.echo(f"  audience:        {settings.audience}")
    click.echo(f"  service account: {settings.service_account_email}")
    click.echo(f"  issuer_url:      {settings.issuer_url}")
    click.echo("Next: `credctl setup gcp-cred-file`.")


def _create_gcp(
    project: str,
    service_account: str,
    pool_id: str | None,
    provider_id: str | None,
    bucket: str | None,
    sts_endpoint: str | None,
    iam_credentials_endpoint: str | None,
) -> None:
    from credctl.cloud.gcp_federation import (
        DEFAULT_POOL_ID,
        DEFAULT_PROVIDER_ID,
        GcpSetupOptions,
        build_gcp_federation,
    )

    home = credctl_home()
    options = GcpSetupOptions(
        project=project,
        service_account_email=service_account,
        pool_id=pool_id or DEFAULT_POOL_ID,
        provider_id=provider_id or DEFAULT_PROVIDER_ID,
        bucket=bucket,
        sts_endpoint=sts_endpoint,
        iam_credentials_endpoint=iam_credentials_endpoint,
        rerun_command=_rerun_command(),
    )
    federation = build_gcp_federation(home, options, lambda step: click.echo(step.describe()))
    _clear_daemon_cache()
    click.echo("GCP federation ready and recorded:")
    click.echo(f"  audience:        {federation.audience}")
    click.echo(f"  service account: {federation.service_account_email}")
    click.echo(f"  issuer_url:      {federation.issuer_url}")
    path = gcp.write_credential_file(home, credctl_command())
    _echo_credential_file_usage(path)


def _echo_credential_file_usage(path: Path) -> None:
    """Where the GCP credential file went and the environment that makes it work."""
    click.echo(f"Wrote {path}")
    click.echo("Use it:")
    click.echo(f"  export GOOGLE_APPLICATION_CREDENTIALS={shlex.quote(str(path))}")
    click.echo("  export GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1")


@setup.command("gcp-cred-file")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write it (default: gcp-credentials.json in the credctl home).",
)
def setup_gcp_cred_file(output: Path | None) -> None:
    """Write the GCP external-account credential config for client libraries and gcloud."""
    path = gcp.write_credential_file(credctl_home(), credctl_command(), output)
    _echo_credential_file_usage(path)
    click.echo(f"  gcloud auth login --cred-file={shlex.quote(str(path))}")
