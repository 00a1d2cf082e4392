"""Start the daemon at login: a systemd user unit (Linux) or a LaunchAgent (macOS).

The unit and the plist are generated here from the running interpreter and
the credctl home, so they start exactly the daemon `credctl daemon start`
would, through `python -m credctl.daemon` (no click in the long-lived process).
"""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from credctl.daemon.process import daemon_command
from credctl.errors import CredctlError
from credctl.home import LOG_FILE

SYSTEMD_UNIT_NAME = "credctl-daemon.service"
LAUNCHD_LABEL = "com.crzy.credctl.daemon"
_COMMAND_TIMEOUT = 30


class ServiceManagerError(CredctlError):
    """The platform's service manager is missing or refused."""


@dataclass(frozen=True)
class ServiceFile:
    path: Path
    content: bytes
    manager: str  # "systemd" or "launchd"


def _systemd_quote(word: str) -> str:
    """One ExecStart word, quoted for systemd (which also expands % and $)."""
    escaped = word.replace("%", "%%").replace("$", "$$")
    if escaped and not any(c in escaped for c in " \t\"'\\;"):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_unit(home: Path, idle_timeout: float) -> str:
    command = " ".join(_systemd_quote(word) for word in daemon_command(home, idle_timeout))
    return (
        "[Unit]\n"
        "Description=credctl credential cache daemon\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={command}\n"
        f"Environment={_systemd_quote('CREDCTL_HOME=' + str(home))}\n"
        # An idle exit is a success and stays down; a crash is restarted.
        "Restart=on-failure\n"
        "RestartSec=5\n"
        "UMask=0077\n"
        "LimitCORE=0\n"
        "NoNewPrivileges=yes\n"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def launchd_plist(home: Path, idle_timeout: float) -> bytes:
    document = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": daemon_command(home, idle_timeout),
        "EnvironmentVariables": {"CREDCTL_HOME": str(home)},
        "RunAtLoad": True,
        # Restart after a crash, not after an idle-timeout exit.
        "KeepAlive": {"SuccessfulExit": False},
        "ProcessType": "Interactive",
        # launchd creates the log files; keep them 0600 like daemon.log.
        "Umask": 0o077,
        "StandardOutPath": str(home / LOG_FILE),
        "StandardErrorPath": str(home / LOG_FILE),
    }
    return plistlib.dumps(document)


def systemd_unit_path() -> Path:
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "systemd" / "user" / SYSTEMD_UNIT_NAME


def launchd_plist_path() -> Path:
    return Path.home() / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"


def service_file(home: Path, idle_timeout: float) -> ServiceFile:
    """The file `daemon install` writes on this platform."""
    if sys.platform == "darwin":
        return ServiceFile(launchd_plist_path(), launchd_plist(home, idle_timeout), "launchd")
    if sys.platform.startswith("linux"):
        unit = systemd_unit(home, idle_timeout).encode("utf-8")
        return ServiceFile(systemd_unit_path(), unit, "systemd")
    raise ServiceManagerError(
        f"`credctl daemon install` supports Linux (systemd) and macOS (launchd), not {sys.platform}"
    )


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceManagerError(f"`{' '.join(argv)}` failed: {exc}") from None


def _check(result: subprocess.CompletedProcess[str], argv: list[str]) -> None:
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        reason = detail[-1] if detail else f"exit status {result.returncode}"
        raise ServiceManagerError(f"`{' '.join(argv)}` failed: {reason}")


def _require_systemd_user() -> None:
    if shutil.which("systemctl") is None:
        raise ServiceManagerError(
            "systemd is not available here (no `systemctl`): start the daemon with "
            "`credctl daemon start --background` from your login scripts instead"
        )
    probe = _run(["systemctl", "--user", "show-environment"])
    if probe.returncode != 0:
        raise ServiceManagerError(
            "no systemd user session here (`systemctl --user` cannot reach the user "
            "manager): start the daemon with `credctl daemon start --background` from "
            "your login scripts instead"
        )


def _require_launchctl() -> None:
    if shutil.which("launchctl") is None:
        raise ServiceManagerError("launchctl is not available here")


def install(home: Path, idle_timeout: float) -> ServiceFile:
    """Write the unit or plist and load it so the daemon starts now and at login."""
    chosen = service_file(home, idle_timeout)
    if chosen.manager == "systemd":
        _require_systemd_user()
    else:
        _require_launchctl()
    chosen.path.parent.mkdir(parents=True, exist_ok=True)
    chosen.path.write_bytes(chosen.content)
    os.chmod(chosen.path, 0o644)
    if chosen.manager == "systemd":
        for argv in (
            ["systemctl", "--user", "daemon-reload"],
            ["systemctl", "--user", "enable", "--now", SYSTEMD_UNIT_NAME],
        ):
            _check(_run(argv), argv)
    else:
        domain = f"gui/{os.getuid()}"
        # A previous registration would make bootstrap fail; replace it.
        _run(["launchctl", "bootout", f"{domain}/{LAUNCHD_LABEL}"])
        argv = ["launchctl", "bootstrap", domain, str(chosen.path)]
        _check(_run(argv), argv)
    return chosen


def uninstall() -> Path | None:
    """Unload and remove the unit or plist; the path removed, or None if none was there."""
    if sys.platform == "darwin":
        path = launchd_plist_path()
        _require_launchctl()
        _run(["launchctl", "bootout", f"gui/{os.getuid()}/{LAUNCHD_LABEL}"])
    elif sys.platform.startswith("linux"):
        path = systemd_unit_path()
        _require_systemd_user()
        argv = ["systemctl", "--user", "disable", "--now", SYSTEMD_UNIT_NAME]
        result = _run(argv)
        if result.returncode != 0 and path.exists():
            _check(result, argv)
    else:
        raise ServiceManagerError(f"no service manager support on {sys.platform}")
    if not path.exists():
        return None
    path.unlink()
    if sys.platform.startswith("linux"):
        _run(["systemctl", "--user", "daemon-reload"])
    return path
