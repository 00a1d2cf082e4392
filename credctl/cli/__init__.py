"""The full command line (the slow path): click commands that call the services."""

from __future__ import annotations

import sys

import click

from credctl.cli.auth import auth
from credctl.cli.common import CliState, fail
from credctl.cli.daemon import daemon
from credctl.cli.identity import init, reset, status, version
from credctl.cli.oidc import oidc
from credctl.cli.setup import setup
from credctl.errors import CredctlError, UsageError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--verbose", is_flag=True, help="Explain each step on stderr (never a secret).")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Short-lived AWS and GCP credentials from a device-bound key."""
    ctx.obj = CliState(verbose=verbose, daemon_tried=ctx.meta.get(_DAEMON_TRIED, False))


cli.add_command(init)
cli.add_command(status)
cli.add_command(reset)
cli.add_command(version)
cli.add_command(oidc)
cli.add_command(auth)
cli.add_command(setup)
cli.add_command(daemon)


_DAEMON_TRIED = "credctl.daemon_tried"


def main(argv: list[str] | None = None, daemon_tried: bool = False) -> int:
    """Run the CLI; errors become one ``credctl:`` line on stderr and exit 1.

    ``daemon_tried`` says the caller already asked the daemon for this call.
    """
    try:
        with cli.make_context("credctl", list(sys.argv[1:] if argv is None else argv)) as ctx:
            ctx.meta[_DAEMON_TRIED] = daemon_tried
            cli.invoke(ctx)
    except click.exceptions.Abort:
        click.echo("credctl: aborted", err=True)
        return 1
    except click.exceptions.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "credctl"
        fail(f"{exc.format_message()} (see `{command} --help`)")
        return 2
    except click.exceptions.ClickException as exc:
        fail(exc.format_message())
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except UsageError as exc:
        fail(str(exc))
        return 2
    except CredctlError as exc:
        fail(str(exc))
        return 1
    except KeyboardInterrupt:
        click.echo("credctl: interrupted", err=True)
        return 1
    except Exception as exc:  # a bug: still one line, no traceback, nothing secret
        fail(f"unexpected error ({type(exc).__name__}); please report it")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
