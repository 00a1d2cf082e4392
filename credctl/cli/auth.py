"""auth: print cloud credentials, from the daemon when it runs, else directly."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable

import click

from credctl.cli.common import CliState
from credctl.credential import DEFAULT_FORMAT, PROVIDER_FORMATS
from credctl.errors import CredctlError
from credctl.home import credctl_home, daemon_disabled
from credctl.issue import check_request, issue_credential, silent

_FORMATS = sorted({fmt for formats in PROVIDER_FORMATS.values() for fmt in formats})


@click.command()
@click.option(
    "--provider", type=click.Choice(list(PROVIDER_FORMATS)), default="aws", show_default=True
)
@click.option(
    "--format",
    "fmt",
    metavar="|".join(_FORMATS),
    help="aws: credential_process (default) or env; gcp: executable (default) or env.",
)
@click.option("--no-daemon", is_flag=True, help="Sign and exchange here, even if a daemon runs.")
@click.option("--refresh", is_flag=True, help="Ask the daemon for fresh credentials.")
@click.pass_obj
def auth(state: CliState, provider: str, fmt: str | None, no_daemon: bool, refresh: bool) -> None:
    """Print credentials for AWS or GCP on stdout."""
    fmt = fmt or DEFAULT_FORMAT[provider]
    if provider == "gcp" and fmt == "executable":
        body = _issue_for_google_auth(state, no_daemon, refresh)
    else:
        body = _issue(state, provider, fmt, no_daemon, refresh, state.explain)
    _write_stdout(body)


def _write_stdout(body: bytes) -> None:
    sys.stdout.flush()
    sys.stdout.buffer.write(body)
    sys.stdout.buffer.flush()


def _issue(
    state: CliState,
    provider: str,
    fmt: str,
    no_daemon: bool,
    refresh: bool,
    explain: Callable[[str], None],
) -> bytes:
    check_request(provider, fmt)
    home = credctl_home()
    if not (no_daemon or state.daemon_tried or daemon_disabled()):
        from credctl.daemon.client import fetch_credential

        body = fetch_credential(home, provider, fmt, refresh)
        if body is not None:
            explain("served by the daemon")
            return body
        explain("no answer from the daemon; signing and exchanging directly")
    return issue_credential(provider, fmt, home, explain).body


def _issue_for_google_auth(state: CliState, no_daemon: bool, refresh: bool) -> bytes:
    """The executable response; on failure the ``success: false`` one and exit 1.

    google-auth merges the executable's stderr into the stdout it parses, so
    nothing at all goes to stderr here, not even --verbose steps or warnings.
    """
    from credctl.providers.gcp import executable_failure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return _issue(state, "gcp", "executable", no_daemon, refresh, silent)
        except CredctlError as exc:
            error = exc
        except Exception as exc:  # a bug must still produce a response google-auth reads
            error = CredctlError(f"unexpected error ({type(exc).__name__})")
    _write_stdout(executable_failure(error))
    raise click.exceptions.Exit(1)
