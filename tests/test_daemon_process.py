"""The daemon as a user runs it: `credctl daemon ...` in subprocesses, CREDCTL_HOME in tmp."""

from __future__ import annotations

import json
import os
import plistlib
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_daemon_helpers import get, read_response

from credctl.daemon.client import connect_unix, fetch_status
from credctl.daemon.pidfile import running_pid
from credctl.daemon.service import launchd_plist, systemd_unit

REPO = Path(__file__).resolve().parent.parent
WAIT = 30.0
NOBODY = 65534


@pytest.fixture(autouse=True)
def importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))


def wait_for(condition, seconds: float = WAIT, step: float = 0.05) -> bool:
    """Poll ``condition`` until true; bounded in time and in count."""
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds / step) + 1):
        if condition():
            return True
        if time.monotonic() > deadline:
            break
        time.sleep(step)
    return bool(condition())


def stop_any_daemon(home: Path) -> None:
    pid = running_pid(home)
    if not pid:
        return
    os.kill(pid, signal.SIGTERM)
    if not wait_for(lambda: running_pid(home) is None, 10):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def private_home(home: Path) -> Iterator[Path]:
    """The credctl home, created 0700 (the daemon does not need `init`)."""
    home.mkdir(mode=0o700)
    yield home
    stop_any_daemon(home)


def start_background(run_cli, *extra: str) -> int:
    result = run_cli("daemon", "start", "--background", *extra)
    assert result.returncode == 0, result.stderr.decode()
    match = re.fullmatch(rb"Daemon started \(PID (\d+)\)\n", result.stdout)
    assert match, result.stdout
    return int(match.group(1))


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_background_start_status_and_stop(private_home: Path, run_cli) -> None:
    pid = start_background(run_cli)
    assert running_pid(private_home) == pid
    assert mode(private_home / "daemon.sock") == 0o600
    assert mode(private_home / "daemon.pid") == 0o600
    assert mode(private_home / "daemon.log") == 0o600
    assert (private_home / "daemon.pid").read_text() == f"{pid}\n"

    status = run_cli("daemon", "status")
    assert status.returncode == 0
    lines = status.stdout.decode().splitlines()
    assert lines[0] == f"Daemon running (PID {pid})"
    assert re.fullmatch(r"Uptime: (\d+h)?(\d+m)?\d+s", lines[1])
    assert re.fullmatch(r"Started: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", lines[2])
    assert lines[3] == "Cache: empty"
    document = json.loads(run_cli("daemon", "status", "--json").stdout)
    assert document["pid"] == pid and document["cache"] == {}
    summary = json.loads(run_cli("status", "--json").stdout)["daemon"]
    assert summary == {"running": True, "pid": pid}

    assert run_cli("daemon", "clear").stdout == b"Cache cleared\n"
    stopped = run_cli("daemon", "stop")
    assert stopped.returncode == 0, stopped.stderr.decode()
    assert stopped.stdout == f"Daemon stopped (PID {pid})\n".encode()
    assert not (private_home / "daemon.sock").exists()
    assert not (private_home / "daemon.pid").exists()
    assert run_cli("daemon", "status").stdout == b"Daemon is not running\n"
    assert run_cli("daemon", "stop").stdout == b"Daemon is not running\n"
    log = (private_home / "daemon.log").read_text()
    assert "listening on" in log and "stopping: SIGTERM" in log


def test_the_daemon_process_loads_no_click_and_no_cloud_library() -> None:
    code = (
        "import sys, credctl.daemon.__main__, credctl.daemon.process, credctl.daemon.server\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('click', 'boto3', 'botocore', 'google', 'cryptography', 'requests')]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=WAIT)


@pytest.mark.parametrize("how", ["group-readable", "symlink"])
def test_refuses_a_home_that_is_not_private(home: Path, tmp_path: Path, run_cli, how: str) -> None:
    if how == "group-readable":
        home.mkdir(mode=0o700)
        os.chmod(home, 0o750)
        expected = f"chmod 700 {home}"
    else:
        real = tmp_path / "real-home"
        real.mkdir(mode=0o700)
        home.symlink_to(real)
        expected = "is a symlink"
    for args in (["--background"], ["--foreground"]):
        result = run_cli("daemon", "start", *args)
        assert result.returncode == 1
        assert result.stderr.decode().startswith("credctl: ")
        assert expected in result.stderr.decode()
    assert not (home / "daemon.sock").exists()


def test_a_second_daemon_is_refused(private_home: Path, run_cli) -> None:
    pid = start_background(run_cli)
    for args in (["--background"], ["--foreground"]):
        result = run_cli("daemon", "start", *args)
        assert result.returncode == 1
        assert result.stderr == f"credctl: daemon already running (PID {pid})\n".encode()
    # The daemon module itself, bypassing the CLI's early check, is refused by the lock.
    direct = subprocess.run(
        [sys.executable, "-m", "credctl.daemon", "--home", str(private_home)],
        capture_output=True,
        timeout=WAIT,
    )
    assert direct.returncode == 1
    assert f"daemon already running (PID {pid})".encode() in direct.stderr
    assert running_pid(private_home) == pid
    assert fetch_status(private_home) is not None


def test_two_daemons_started_at_the_same_instant_end_with_one(private_home: Path) -> None:
    for _ in range(3):
        starters = [
            subprocess.Popen(
                [sys.executable, "-m", "credctl", "daemon", "start", "--background"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(2)
        ]
        outcomes = [starter.communicate(timeout=WAIT) for starter in starters]
        codes = sorted(starter.returncode for starter in starters)
        assert codes == [0, 1], outcomes
        pid = running_pid(private_home)
        assert pid
        winner = next(out for out, _ in outcomes if out)
        assert winner == f"Daemon started (PID {pid})\n".encode()
        loser = next(err for _, err in outcomes if err)
        assert b"daemon already running" in loser
        document = fetch_status(private_home)
        assert document is not None and document["pid"] == pid
        stop_any_daemon(private_home)
        assert wait_for(lambda: running_pid(private_home) is None)


def test_stale_socket_and_pid_files_are_cleaned_up(private_home: Path, run_cli) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    (private_home / "daemon.pid").write_text(f"{dead.pid}\n")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(private_home / "daemon.sock"))
    stale.close()
    assert run_cli("daemon", "status").stdout == b"Daemon is not running\n"
    pid = start_background(run_cli)
    assert (private_home / "daemon.pid").read_text() == f"{pid}\n"
    assert fetch_status(private_home)["pid"] == pid

    # SIGKILL leaves both files behind; stop and start recover.
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: running_pid(private_home) is None)
    assert (private_home / "daemon.sock").exists()
    assert run_cli("daemon", "status").stdout == b"Daemon is not running\n"
    stopped = run_cli("daemon", "stop")
    assert stopped.returncode == 0
    assert b"Removed stale" in stopped.stdout
    assert not (private_home / "daemon.sock").exists()
    assert not (private_home / "daemon.pid").exists()
    start_background(run_cli)


def test_idle_timeout_stops_the_daemon(private_home: Path, run_cli) -> None:
    start_background(run_cli, "--idle-timeout", "2s")
    assert wait_for(lambda: running_pid(private_home) is None)
    assert wait_for(lambda: not (private_home / "daemon.sock").exists())
    assert not (private_home / "daemon.pid").exists()
    assert "stopping: idle for 2s" in (private_home / "daemon.log").read_text()


def test_requests_reset_the_idle_timeout(private_home: Path, run_cli) -> None:
    pid = start_background(run_cli, "--idle-timeout", "3s")
    for _ in range(6):
        assert get(private_home / "daemon.sock", "/v1/status").status == 200
        time.sleep(1)
    assert running_pid(private_home) == pid
    assert wait_for(lambda: running_pid(private_home) is None)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_foreground_daemon_shuts_down_cleanly_on_signals(private_home: Path, signum) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "credctl", "daemon", "start", "--idle-timeout", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_for(lambda: fetch_status(private_home) is not None)
        # exec'd into the daemon module: same PID, no click in the long-lived process.
        assert fetch_status(private_home)["pid"] == process.pid
        keep_alive = connect_unix(private_home / "daemon.sock", WAIT)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=WAIT)
        keep_alive.close()
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr.decode()
    assert f"stopping: {signal.Signals(signum).name}".encode() in stderr
    assert not (private_home / "daemon.sock").exists()
    assert not (private_home / "daemon.pid").exists()


def test_core_dumps_are_disabled(private_home: Path, run_cli) -> None:
    pid = start_background(run_cli)
    limits = Path(f"/proc/{pid}/limits").read_text()
    assert re.search(r"Max core file size\s+0\s+0\s", limits), limits


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another user")
def test_a_peer_with_another_uid_is_refused_even_with_the_socket_0666(
    monkeypatch: pytest.MonkeyPatch, run_cli
) -> None:
    base = Path(tempfile.mkdtemp(prefix="credctl-uid-", dir="/tmp"))
    home = base / "home"
    try:
        os.chmod(base, 0o711)
        home.mkdir(mode=0o700)
        monkeypatch.setenv("CREDCTL_HOME", str(home))
        start_background(run_cli)
        sock_path = home / "daemon.sock"
        os.chmod(home, 0o711)
        os.chmod(sock_path, 0o666)
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - the child reports through the pipe
            result = b"error"
            try:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                with socket.socket(socket.AF_UNIX) as sock:
                    sock.settimeout(10)
                    sock.connect(str(sock_path))
                    try:
                        sock.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
                    except BrokenPipeError:
                        pass  # refused and closed already; its answer may be waiting
                    response = read_response(sock)
                    result = b"closed" if response is None else str(response.status).encode()
            except ConnectionResetError:
                result = b"closed"
            except BaseException as exc:
                result = f"error {exc!r}".encode()
            os.write(write_end, result)
            os._exit(0)
        os.close(write_end)
        os.waitpid(child, 0)
        answer = os.read(read_end, 1024)
        os.close(read_end)
        assert answer in (b"403", b"closed"), answer
        assert f"refused a connection from UID {NOBODY}" in (home / "daemon.log").read_text()
        assert get(sock_path, "/v1/status").status == 200
    finally:
        os.chmod(home, 0o700)
        stop_any_daemon(home)
        shutil.rmtree(base)


def test_install_says_so_when_there_is_no_service_manager(private_home: Path, run_cli) -> None:
    probe = (
        subprocess.run(
            ["systemctl", "--user", "show-environment"], capture_output=True, check=False
        )
        if shutil.which("systemctl")
        else None
    )
    if probe is not None and probe.returncode == 0:
        pytest.skip("a systemd user session exists here")
    result = run_cli("daemon", "install")
    assert result.returncode == 1
    message = result.stderr.decode()
    assert message.startswith("credctl: ")
    assert "systemd" in message and "credctl daemon start --background" in message
    printed = run_cli("daemon", "install", "--print")
    assert printed.returncode == 0
    assert b"ExecStart=" in printed.stdout and b"credctl.daemon" in printed.stdout


def test_systemd_unit_content(tmp_path: Path) -> None:
    home = tmp_path / "my home %h"
    unit = systemd_unit(home, 0)
    assert "[Service]" in unit and "[Install]" in unit
    assert "WantedBy=default.target" in unit
    assert "Restart=on-failure" in unit
    assert "UMask=0077" in unit
    exec_line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_line.startswith(f"ExecStart={sys.executable} -m credctl.daemon --home ")
    # The space is quoted and the % escaped, so systemd passes the path unchanged.
    assert f'"{str(home).replace("%", "%%")}"' in exec_line
    assert exec_line.endswith("--idle-timeout 0")
    analyzer = shutil.which("systemd-analyze")
    if analyzer is None:
        return
    unit_path = tmp_path / "credctl-daemon.service"
    unit_path.write_text(unit)
    verify = subprocess.run(
        [analyzer, "verify", str(unit_path)], capture_output=True, text=True, timeout=WAIT
    )
    problems = [
        line
        for line in (verify.stdout + verify.stderr).splitlines()
        if "credctl-daemon.service" in line
    ]
    assert verify.returncode == 0 or not problems, verify.stdout + verify.stderr
    assert not problems, problems


def test_launchd_plist_content(tmp_path: Path) -> None:
    home = tmp_path / "home"
    document = plistlib.loads(launchd_plist(home, 1800))
    assert document["Label"] == "com.crzy.credctl.daemon"
    assert document["ProgramArguments"] == [
        sys.executable,
        "-m",
        "credctl.daemon",
        "--home",
        str(home),
        "--idle-timeout",
        "1800",
    ]
    assert document["EnvironmentVariables"] == {"CREDCTL_HOME": str(home)}
    assert document["RunAtLoad"] is True
    assert document["KeepAlive"] == {"SuccessfulExit": False}
    assert document["Umask"] == 0o077
    assert document["StandardErrorPath"] == str(home / "daemon.log")


def test_a_system_error_is_one_credctl_line_not_a_traceback(private_home: Path) -> None:
    """An OSError (here: the starter's ready pipe is gone) ends the daemon cleanly."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        command = [sys.executable, "-m", "credctl.daemon", "--home", str(private_home)]
        result = subprocess.run(
            [*command, "--ready-fd", str(write_end)],
            pass_fds=(write_end,),
            capture_output=True,
            timeout=WAIT,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1] == "credctl: the daemon could not run: [Errno 32] Broken pipe"
    assert not (private_home / "daemon.sock").exists()
    assert not (private_home / "daemon.pid").exists()


def test_a_system_error_reaches_a_background_starter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from credctl.daemon import process
    from credctl.daemon.__main__ import main

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(tmp_path / "daemon.pid"))

    monkeypatch.setattr(process, "run_daemon", refuse)
    read_end, write_end = os.pipe()
    try:
        code = main(["--home", str(tmp_path), "--ready-fd", str(write_end)])
        os.close(write_end)
        written = os.read(read_end, 4096).decode()
    finally:
        os.close(read_end)
    message = f"the daemon could not run: [Errno 13] Permission denied: '{tmp_path}/daemon.pid'"
    assert code == 1
    assert written == f"error: {message}\n"
    assert capsys.readouterr().err == f"credctl: {message}\n"
