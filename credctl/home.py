"""The credctl home directory and the private files in it."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from credctl.errors import HomePermissionError

CONFIG_FILE = "config.json"
PUBLIC_KEY_FILE = "device.pub"
PRIVATE_KEY_FILE = "device.key"
SOCKET_FILE = "daemon.sock"
PID_FILE = "daemon.pid"
LOG_FILE = "daemon.log"
GCP_CREDENTIAL_FILE = "gcp-credentials.json"


def credctl_home() -> Path:
    """``$CREDCTL_HOME`` if set, else ``~/.credctl``; always absolute.

    Absolute because the paths derived from it are recorded in config.json and
    used by the daemon, which runs from ``/``.
    """
    configured = os.environ.get("CREDCTL_HOME")
    if configured:
        return Path(configured).expanduser().absolute()
    return Path.home() / ".credctl"


def daemon_disabled() -> bool:
    """``CREDCTL_NO_DAEMON`` set to anything but empty or ``0``.

    The same rule as the native fast path (native/fast_auth.c).
    """
    return os.environ.get("CREDCTL_NO_DAEMON", "") not in ("", "0")


def ensure_home(home: Path) -> Path:
    """Create the home 0700 if it is missing; an existing home is left as it is."""
    if not home.exists():
        home.mkdir(mode=0o700, parents=True)
        os.chmod(home, 0o700)
    return home


def check_home_private(home: Path) -> None:
    """Refuse a home that another user could read, swap or own.

    Raises HomePermissionError naming the command that fixes it.
    """
    try:
        info = os.lstat(home)
    except FileNotFoundError:
        raise HomePermissionError(f"{home} does not exist: run `credctl init` first") from None
    if stat.S_ISLNK(info.st_mode):
        raise HomePermissionError(
            f"{home} is a symlink; credctl needs a real directory there "
            f"(replace it with one: `mkdir -m 700 {home}`)"
        )
    if not stat.S_ISDIR(info.st_mode):
        raise HomePermissionError(f"{home} is not a directory")
    if info.st_uid != os.getuid():
        raise HomePermissionError(
            f"{home} is owned by UID {info.st_uid}, not by you (UID {os.getuid()}): "
            f"fix it with `chown {os.getuid()} {home}`"
        )
    if info.st_mode & 0o077:
        raise HomePermissionError(
            f"{home} has mode {stat.S_IMODE(info.st_mode):04o}, open to other users: "
            f"fix it with `chmod 700 {home}`"
        )


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600.

    A temporary file in the same directory is written, flushed and renamed over
    ``path``, so a reader sees the old file or the new one, never half of one.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
