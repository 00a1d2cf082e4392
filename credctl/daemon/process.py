"""Running the daemon as a process: hardening, PID file, signals, background start, stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from credctl.daemon.client import fetch_status, socket_path
from credctl.daemon.pidfile import DaemonRunningError, PidFile, remove_stale_files, running_pid
from credctl.daemon.server import DaemonDeps, DaemonServer, default_deps, format_uptime
from credctl.errors import CredctlError
from credctl.home import LOG_FILE, check_home_private

BACKGROUND_START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_PR_SET_DUMPABLE = 4


def disable_core_dumps() -> None:
    """No core file, and (Linux) no ptrace/proc-mem reads: the cache holds secrets."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def run_daemon(
    home: Path,
    idle_timeout: float,
    read_timeout: float,
    deps: DaemonDeps | None = None,
    ready_fd: int | None = None,
) -> None:
    """Serve in this process until SIGTERM/SIGINT or the idle timeout.

    ``ready_fd`` (background start) gets ``ready PID`` once the socket listens.
    Raises CredctlError before serving when the home or the PID file forbid it.
    """
    check_home_private(home)
    os.umask(0o077)
    disable_core_dumps()
    pidfile = PidFile(home)
    pidfile.acquire()
    server = DaemonServer(deps or default_deps(home), idle_timeout, read_timeout)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(server.start(socket_path(home)))
        os.chdir("/")
        # SIGHUP: the terminal of a foreground daemon went away.
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, server.begin_shutdown, signal.Signals(signum).name)
        idle = format_uptime(idle_timeout) if idle_timeout else "off"
        server.log(f"listening on {socket_path(home)} (PID {os.getpid()}, idle timeout {idle})")
        if ready_fd is not None:
            os.write(ready_fd, f"ready {os.getpid()}\n".encode("ascii"))
            os.close(ready_fd)
        loop.run_until_complete(server.wait_stopped())
    finally:
        server.remove_socket()
        pidfile.release()
        loop.close()
    server.log("stopped")


def _open_log(home: Path) -> int:
    fd = os.open(
        home / LOG_FILE,
        os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
    )
    os.fchmod(fd, 0o600)
    return fd


def daemon_command(home: Path, idle_timeout: float) -> list[str]:
    """The daemon process's argv: no click, nothing heavy until the first miss."""
    return [
        sys.executable,
        "-m",
        "credctl.daemon",
        "--home",
        str(home),
        "--idle-timeout",
        f"{idle_timeout:g}",
    ]


def check_can_start(home: Path) -> None:
    """Refuse early, with the clear message, what the daemon itself would refuse:
    a home that is not private, or a daemon already running."""
    check_home_private(home)
    pid = running_pid(home)
    if pid:
        raise DaemonRunningError(pid)


def start_background(home: Path, idle_timeout: float) -> int:
    """Start a detached daemon (new session, stdio to daemon.log); its PID once it answers."""
    check_can_start(home)
    read_end, write_end = os.pipe()
    log_fd = _open_log(home)
    try:
        process = subprocess.Popen(
            [*daemon_command(home, idle_timeout), "--ready-fd", str(write_end)],
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            pass_fds=(write_end,),
            start_new_session=True,
        )
    finally:
        os.close(write_end)
        os.close(log_fd)
    try:
        message = _read_until_eof(read_end, BACKGROUND_START_TIMEOUT)
    finally:
        os.close(read_end)
    if message.startswith("ready "):
        pid = int(message.split()[1])
        for _ in range(100):
            if fetch_status(home) is not None:
                return pid
            time.sleep(0.05)
        raise CredctlError(
            f"the daemon (PID {pid}) started but does not answer; see {home / LOG_FILE}"
        )
    if message.startswith("error: "):
        raise CredctlError(message[len("error: ") :].strip())
    code = process.poll()
    if code is None:
        raise CredctlError(
            f"the daemon (PID {process.pid}) did not become ready in "
            f"{BACKGROUND_START_TIMEOUT:g}s; see {home / LOG_FILE}"
        )
    raise CredctlError(
        f"the daemon exited with status {code} while starting; see {home / LOG_FILE}"
    )


def _read_until_eof(fd: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    data = b""
    while len(data) < 4096:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", "replace")


def stop_daemon(home: Path, timeout: float = STOP_TIMEOUT) -> tuple[int | None, list[Path]]:
    """SIGTERM the daemon and wait for it to release its PID file.

    Returns (the PID stopped or None, stale files removed). Raises CredctlError
    when it is still running after ``timeout`` seconds.
    """
    pid = running_pid(home)
    if not pid:
        return None, remove_stale_files(home)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running_pid(home) is None:
            return pid, remove_stale_files(home)
        time.sleep(0.05)
    raise CredctlError(
        f"the daemon (PID {pid}) is still running {timeout:g}s after SIGTERM; "
        f"check it with `ps -p {pid}` and stop it with `kill -9 {pid}`"
    )
