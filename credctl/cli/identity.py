"""init, status, reset, version."""

from __future__ import annotations

import platform
import sys

import click

from credctl import __version__, signers
from credctl.cli.common import print_json
from credctl.config import DEFAULT_KEY_TAG, Config
from credctl.home import credctl_home
from credctl.identity import NOT_HARDWARE_BOUND, init_identity, reset_identity, status_document

_BACKEND_CHOICES = {"auto": None, "secure-enclave": signers.SECURE_ENCLAVE, "software": "software"}
_POLICY_TEXT = {
    "any": "Touch ID or the login password for every signature",
    "fingerprint": "Touch ID with the currently enrolled fingers for every signature",
    "none": "no user verification",
}


def _show_identity(config: Config) -> None:
    click.echo(f"Device ID:   {config.device_id}")
    click.echo(f"Public key:  {config.public_key_path}")
    click.echo(f"Backend:     {config.backend}")
    click.echo(f"User verification: {config.biometric} ({_POLICY_TEXT[config.biometric]})")
    if config.backend == signers.SOFTWARE:
        click.echo(f"Warning: {NOT_HARDWARE_BOUND}")


@click.command()
@click.option("--force", is_flag=True, help="Delete the existing key and create a new one.")
@click.option("--key-tag", default=DEFAULT_KEY_TAG, show_default=True, help="Keychain tag.")
@click.option(
    "--biometric",
    type=click.Choice(["any", "fingerprint", "none"]),
    help="User verification: any (default on the Secure Enclave) or none (software).",
)
@click.option(
    "--backend",
    type=click.Choice(list(_BACKEND_CHOICES)),
    default="auto",
    show_default=True,
    help="auto = Secure Enclave on macOS, software elsewhere.",
)
def init(force: bool, key_tag: str, biometric: str | None, backend: str) -> None:
    """Create the device key and config.json."""
    chosen = _BACKEND_CHOICES[backend] or signers.default_backend()
    result = init_identity(credctl_home(), chosen, key_tag, biometric, force)
    if result.created:
        from credctl.daemon.client import clear_cache

        # A new key: a running daemon must not serve credentials of the old one.
        clear_cache(credctl_home())
        click.echo("Device identity created.")
    else:
        click.echo("Device identity already exists (use --force to replace it).")
    _show_identity(result.config)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(as_json: bool) -> None:
    """Identity, key health, cloud settings and daemon state."""
    document = status_document(credctl_home())
    from credctl.daemon.client import daemon_summary

    document["daemon"] = daemon_summary(credctl_home())
    if as_json:
        print_json(document)
        return
    if not document["initialised"]:
        click.echo(f"Not initialised ({document['home']}). Run `credctl init` to create a key.")
        _echo_daemon(document["daemon"])
        return
    click.echo(f"Device ID:   {document['device_id']}")
    click.echo(f"Key ID:      {document['key_id']}")
    click.echo(f"Backend:     {document['backend']}")
    click.echo(f"Public key:  {document['public_key_path']}")
    click.echo(f"User verification: {document['biometric']}")
    if document["key_usable"]:
        click.echo("Key:         usable")
    else:
        click.echo(f"Key:         NOT usable: {document['key_problem']}")
    if not document["hardware_bound"]:
        click.echo(f"Warning: {NOT_HARDWARE_BOUND}")
    for section, label in (("aws", "AWS"), ("gcp", "GCP")):
        settings = document.get(section)
        if settings:
            click.echo(f"{label}:")
            for key, value in settings.items():
                click.echo(f"  {key}: {value}")
        else:
            click.echo(f"{label}: not configured (credctl setup {section})")
    _echo_daemon(document["daemon"])


def _echo_daemon(summary: dict[str, object]) -> None:
    if summary.get("running"):
        click.echo(f"Daemon:      running (PID {summary['pid']})")
    else:
        click.echo("Daemon:      not running")


@click.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def reset(yes: bool) -> None:
    """Delete the device key and the credctl files."""
    home = credctl_home()
    if not yes:
        click.confirm(
            f"Delete the device key and every credctl file in {home}? "
            "The cloud roles trusting this device stop working for it",
            abort=True,
        )
    from credctl.daemon.process import stop_daemon

    # The daemon holds credentials of this identity, and its files are in the home.
    stopped, removed = stop_daemon(home)
    if stopped is not None:
        click.echo(f"Daemon stopped (PID {stopped})")
    removed += reset_identity(home)
    if removed:
        for path in removed:
            click.echo(f"Removed {path}")
    else:
        click.echo("Nothing to remove.")


@click.command()
def version() -> None:
    """Version, platform and key backend."""
    click.echo(f"credctl {__version__}")
    click.echo(f"Python {platform.python_version()} on {sys.platform} ({platform.machine()})")
    click.echo(f"Backend: {signers.default_backend()}")
