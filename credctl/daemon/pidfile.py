"""daemon.pid: created O_EXCL, held under an exclusive flock while the daemon runs.

The flock, not the PID inside, says whether a daemon runs: the kernel drops it
when the process dies however it dies, and a PID can be reused.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time
from pathlib import Path

from credctl.errors import CredctlError
from credctl.home import PID_FILE, SOCKET_FILE

# A daemon that has created the file but not yet written its PID.
_STARTING_GRACE = 5.0
_ATTEMPTS = 50


class DaemonRunningError(CredctlError):
    """Another daemon holds the PID file."""

    def __init__(self, pid: int | None) -> None:
        shown = f" (PID {pid})" if pid else ""
        super().__init__(f"daemon already running{shown}")
        self.pid = pid


def pid_path(home: Path) -> Path:
    return home / PID_FILE


def _read_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 32).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.lstat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PidFile:
    """The daemon's claim on the home; acquire() before binding the socket."""

    def __init__(self, home: Path) -> None:
        self.path = pid_path(home)
        self.fd: int | None = None

    def acquire(self) -> None:
        """Create and lock daemon.pid, or raise DaemonRunningError.

        Two daemons started at once both try O_EXCL; the loser finds the file
        locked (or about to be) and reports the winner. A file whose lock is
        free belongs to a dead daemon: it is removed under its own lock and
        the creation retried.
        """
        for _ in range(_ATTEMPTS):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except FileExistsError:
                self._resolve_existing()
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if not _same_file(fd, self.path):
                    # Removed as stale by a racing starter before we locked it.
                    os.close(fd)
                    continue
                os.fchmod(fd, 0o600)
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode("ascii"))
            except BaseException:
                os.close(fd)
                raise
            self.fd = fd
            return
        raise CredctlError(f"could not claim {self.path}: it keeps changing; try again")

    def _resolve_existing(self) -> None:
        """The PID file exists: raise if its daemon lives, else remove it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise CredctlError(f"{self.path}: cannot be opened ({exc.strerror})") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                if pid is None or _alive(pid) or not _same_file(fd, self.path):
                    if pid is None:
                        # The winner locked it and is writing its PID.
                        time.sleep(0.02)
                        pid = _read_pid(fd)
                    raise DaemonRunningError(pid) from None
                # A starter is removing this stale file right now.
                time.sleep(0.02)
                return
            if not _same_file(fd, self.path):
                return
            pid = _read_pid(fd)
            if pid is None and time.time() - os.fstat(fd).st_mtime < _STARTING_GRACE:
                # Created by a starter that has not locked it yet: let it win.
                fcntl.flock(fd, fcntl.LOCK_UN)
                time.sleep(0.05)
                return
            os.unlink(self.path)
        finally:
            os.close(fd)

    def release(self) -> None:
        """Remove the file (still ours while locked) and drop the lock."""
        if self.fd is None:
            return
        if _same_file(self.fd, self.path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        os.close(self.fd)
        self.fd = None


def running_pid(home: Path) -> int | None:
    """The PID of the daemon holding daemon.pid's lock, or None if none does."""
    path = pid_path(home)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            return pid if pid is not None else 0
        return None
    finally:
        os.close(fd)


def remove_stale_files(home: Path) -> list[Path]:
    """Remove daemon.pid and daemon.sock when no daemon holds the lock."""
    if running_pid(home) is not None:
        return []
    removed = []
    path = pid_path(home)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        fd = None
    except OSError:
        fd = None
        if path.is_symlink():
            path.unlink()
            removed.append(path)
    if fd is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _same_file(fd, path):
                path.unlink()
                removed.append(path)
        except BlockingIOError:
            return removed
        finally:
            os.close(fd)
    sock = home / SOCKET_FILE
    with contextlib.suppress(FileNotFoundError):
        info = os.lstat(sock)
        if stat.S_ISSOCK(info.st_mode) or stat.S_ISLNK(info.st_mode):
            sock.unlink()
            removed.append(sock)
    return removed
