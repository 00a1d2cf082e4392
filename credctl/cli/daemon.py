"""daemon start|stop|status|clear|install|uninstall."""

from __future__ import annotations

import os
import re
import sys
from typing import Any

import click

from credctl.cli.common import print_json
from credctl.errors import CredctlError
from credctl.home import check_home_private, credctl_home

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> float:
    """Seconds from a Go-style duration (30m, 1h30m, 90s, 0); a bare number is seconds."""
    text = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(text)
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


class Duration(click.ParamType):  # type: ignore[type-arg]
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float):
            return value
        try:
            return parse_duration(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a duration like 30m, 1h, 90s or 0", param, ctx)


@click.group()
def daemon() -> None:
    """The credential cache daemon (Unix socket in the credctl home)."""


@daemon.command()
@click.option(
    "--idle-timeout",
    type=Duration(),
    default="30m",
    show_default=True,
    help="Exit after this long without a request; 0 disables.",
)
@click.option(
    "--foreground/--background",
    default=True,
    help="Run in this terminal (default), or detach with output to daemon.log.",
)
def start(idle_timeout: float, foreground: bool) -> None:
    """Start the daemon."""
    from credctl.daemon.process import check_can_start, daemon_command, start_background

    home = credctl_home().absolute()
    if not foreground:
        pid = start_background(home, idle_timeout)
        click.echo(f"Daemon started (PID {pid})")
        return
    check_can_start(home)
    # Become the daemon module, so the long-lived process carries no click.
    command = daemon_command(home, idle_timeout)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)  # noqa: S606 -- argv list, no shell


@daemon.command()
def stop() -> None:
    """Stop the daemon (SIGTERM) and wait for it to exit."""
    from credctl.daemon.process import stop_daemon

    pid, removed = stop_daemon(credctl_home())
    if pid is not None:
        click.echo(f"Daemon stopped (PID {pid})")
    else:
        click.echo("Daemon is not running")
    for path in removed:
        click.echo(f"Removed stale {path}")


def _cache_line(name: str, entry: dict[str, Any]) -> str:
    expires = entry.get("expires_at", "?")
    if not entry.get("valid"):
        state = "expired"
    elif entry.get("needs_refresh"):
        state = "needs refresh"
    else:
        state = "valid"
    return f"  {name}: {state} (expires {expires})"


@daemon.command()
@click.option("--json", "as_json", is_flag=True, help="Print the daemon's status document.")
def status(as_json: bool) -> None:
    """Uptime and cache state of the running daemon."""
    from credctl.daemon.client import fetch_status, socket_path
    from credctl.daemon.pidfile import pid_path, running_pid

    home = credctl_home()
    document = fetch_status(home)
    if document is None:
        pid = running_pid(home)
        if pid:
            raise CredctlError(
                f"the daemon (PID {pid}) holds {pid_path(home)} but does not answer "
                f"on {socket_path(home)}; restart it with `credctl daemon stop` and "
                "`credctl daemon start`"
            )
        if as_json:
            print_json({"running": False})
        else:
            click.echo("Daemon is not running")
        return
    if as_json:
        print_json(document)
        return
    click.echo(f"Daemon running (PID {document.get('pid')})")
    click.echo(f"Uptime: {document.get('uptime')}")
    click.echo(f"Started: {document.get('start_time')}")
    cache = document.get("cache") or {}
    if not cache:
        click.echo("Cache: empty")
        return
    click.echo("Cache:")
    for name, entry in cache.items():
        click.echo(_cache_line(name, entry))


@daemon.command()
def clear() -> None:
    """Empty the daemon's cache (the next auth signs and exchanges again)."""
    from credctl.daemon.client import clear_cache
    from credctl.daemon.pidfile import running_pid

    home = credctl_home()
    if clear_cache(home):
        click.echo("Cache cleared")
        return
    if running_pid(home):
        raise CredctlError("the daemon runs but did not answer; the cache was not cleared")
    click.echo("Daemon is not running")


@daemon.command()
@click.option(
    "--idle-timeout",
    type=Duration(),
    default="0",
    show_default=True,
    help="Idle exit for the login daemon; 0 keeps it running for the session.",
)
@click.option("--print", "print_only", is_flag=True, help="Print the unit or plist only.")
def install(idle_timeout: float, print_only: bool) -> None:
    """Start the daemon at login (systemd user unit, or LaunchAgent on macOS)."""
    from credctl.daemon import service

    home = credctl_home().absolute()
    if print_only:
        click.echo(service.service_file(home, idle_timeout).content.decode("utf-8"), nl=False)
        return
    check_home_private(home)
    installed = service.install(home, idle_timeout)
    click.echo(f"Installed {installed.path} ({installed.manager}); the daemon starts at login")


@daemon.command()
def uninstall() -> None:
    """Stop starting the daemon at login."""
    from credctl.daemon import service

    removed = service.uninstall()
    if removed is None:
        click.echo("Not installed")
    else:
        click.echo(f"Removed {removed}")
