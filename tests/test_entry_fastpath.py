"""The `credctl` entry and the credctl-fast launcher, run as processes against
a stand-in daemon on `$CREDCTL_HOME/daemon.sock`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

import credctl
from credctl import __main__ as entry

TIMEOUT = 60
# Not valid JSON on purpose, and no trailing newline: the bytes go out untouched.
BODY = b'{"Version":1,"AccessKeyId":"AKIA\xc3\xa9","SessionToken":"a\r\nb"}\x00tail'
SCRIPTS = Path(sysconfig.get_path("scripts"))


class FixedDaemon:
    """Answers every request on a Unix socket with one fixed HTTP response."""

    def __init__(self, path: Path, body: bytes = BODY, status: str = "200 OK") -> None:
        self.requests: list[bytes] = []
        self._response = (
            f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n"
            "X-Credctl-Cache: hit\r\nConnection: close\r\n\r\n"
        ).encode() + body
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        self._sock.listen(16)
        self._sock.settimeout(0.05)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                request = b""
                while b"\r\n\r\n" not in request and len(request) < 65536:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    request += chunk
                self.requests.append(request)
                conn.sendall(self._response)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._sock.close()


@pytest.fixture
def short_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    # A short path: pytest's tmp_path can exceed sun_path (104 bytes on macOS).
    path = Path(tempfile.mkdtemp(prefix="cc-", dir="/tmp"))
    monkeypatch.setenv("CREDCTL_HOME", str(path))
    monkeypatch.delenv("CREDCTL_NO_DAEMON", raising=False)
    monkeypatch.delenv("CREDCTL_DAEMON_TRIED", raising=False)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemon(short_home: Path) -> Iterator[FixedDaemon]:
    server = FixedDaemon(short_home / "daemon.sock")
    yield server
    server.close()


def run(argv: list[str | Path], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(arg) for arg in argv], input=stdin, capture_output=True, timeout=TIMEOUT
    )


def installed(name: str) -> Path:
    path = SCRIPTS / name
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} is not installed: run `pip install -e .` first")
    return path


# --- the Python entry ------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "target"),
    [
        (["auth"], b"/v1/credentials/aws?format=credential_process"),
        (["auth", "--provider", "gcp", "--format=env"], b"/v1/credentials/gcp?format=env"),
        (["auth", "--refresh"], b"/v1/credentials/aws?format=credential_process&refresh=1"),
    ],
)
def test_python_module_hit_prints_the_body_unchanged(daemon, args, target):
    result = run([sys.executable, "-m", "credctl", *args])
    assert (result.returncode, result.stdout, result.stderr) == (0, BODY, b"")
    assert daemon.requests == [
        b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    ]


def test_console_script_hit_prints_the_body_unchanged(daemon):
    result = run([installed("credctl"), "auth"])
    assert (result.returncode, result.stdout, result.stderr) == (0, BODY, b"")


def _imported_modules(importtime_stderr: bytes) -> set[str]:
    modules = set()
    for line in importtime_stderr.decode(errors="replace").splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                modules.add(name)
    return modules


def test_hit_imports_nothing_beyond_the_native_module(daemon):
    # Whatever this interpreter and its site-packages load at start-up (and
    # runpy, for -m) is the baseline; the hit may add only these.
    allowed = {"credctl", "credctl.__main__", "credctl._native", "_cffi_backend"}
    baseline = run([sys.executable, "-X", "importtime", "-c", "import runpy"])
    hit = run([sys.executable, "-X", "importtime", "-m", "credctl", "auth"])
    assert (hit.returncode, hit.stdout) == (0, BODY)
    offenders = _imported_modules(hit.stderr) - _imported_modules(baseline.stderr) - allowed
    assert not offenders, f"the fast path imported {sorted(offenders)}"


# --- the entry's hand-off to the full CLI ----------------------------------


@pytest.fixture
def fake_cli(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], bool, str | None]]:
    """Replaces credctl.cli with a recorder of (argv, daemon_tried, env var)."""
    calls: list[tuple[list[str], bool, str | None]] = []

    def main(argv: list[str], daemon_tried: bool = False) -> int:
        calls.append((argv, daemon_tried, os.environ.get("CREDCTL_DAEMON_TRIED")))
        return 7

    monkeypatch.setitem(sys.modules, "credctl.cli", types.SimpleNamespace(main=main))
    return calls


def run_entry(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["credctl", *args])
    return entry.main()


def test_entry_hit_does_not_load_the_cli(daemon, fake_cli, monkeypatch, capfdbinary):
    assert run_entry(monkeypatch, "auth") == 0
    assert capfdbinary.readouterr().out == BODY
    assert fake_cli == []


def test_entry_without_a_daemon_tells_the_cli_it_was_tried(short_home, fake_cli, monkeypatch):
    assert run_entry(monkeypatch, "auth", "--provider", "gcp") == 7
    assert fake_cli == [(["auth", "--provider", "gcp"], True, None)]


def test_entry_after_the_launcher_does_not_ask_again(daemon, fake_cli, monkeypatch):
    monkeypatch.setenv("CREDCTL_DAEMON_TRIED", "1")
    assert run_entry(monkeypatch, "auth") == 7
    assert fake_cli == [(["auth"], True, None)]
    assert daemon.requests == []


def test_entry_with_daemon_error_falls_back(short_home, fake_cli, monkeypatch):
    server = FixedDaemon(short_home / "daemon.sock", b'{"error":"x"}', "503 Unavailable")
    try:
        assert run_entry(monkeypatch, "auth") == 7
    finally:
        server.close()
    assert fake_cli == [(["auth"], True, None)]


@pytest.mark.parametrize(
    "args", [["status"], ["auth", "--verbose"], ["--verbose", "auth"], ["auth", "--no-daemon"]]
)
def test_entry_passes_other_calls_through(daemon, fake_cli, monkeypatch, args):
    assert run_entry(monkeypatch, *args) == 7
    assert fake_cli == [(args, False, None)]
    assert daemon.requests == []


def test_entry_without_the_native_module_falls_back(daemon, fake_cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "credctl._native", None)
    assert run_entry(monkeypatch, "auth") == 7
    assert fake_cli == [(["auth"], False, None)]


# --- the credctl-fast launcher ---------------------------------------------


def test_launcher_hit_is_byte_identical_to_the_python_path(daemon):
    fast = run([installed("credctl-fast"), "auth", "--provider=gcp"])
    slow = run([installed("credctl"), "auth", "--provider=gcp"])
    assert (fast.returncode, fast.stdout, fast.stderr) == (0, BODY, b"")
    assert fast.stdout == slow.stdout
    assert len(daemon.requests) == 2


def test_launcher_fallback_runs_the_real_cli():
    fast = run([installed("credctl-fast"), "version"])
    slow = run([installed("credctl"), "version"])
    assert fast.returncode == slow.returncode == 0
    assert fast.stdout == slow.stdout
    assert credctl.__version__ in fast.stdout.decode()


FAKE_CREDCTL = """#!/bin/sh
printf '[%s]' "$@"
printf '\\ntried=%s marker=%s\\n' "${CREDCTL_DAEMON_TRIED-unset}" "$CREDCTL_TEST_MARKER"
cat
exit 3
"""


@pytest.fixture
def launcher_copy(short_home: Path) -> Path:
    """credctl-fast copied into a directory of its own, beside a fake credctl."""
    directory = short_home / "bin"
    directory.mkdir()
    launcher = directory / "credctl-fast"
    shutil.copy2(installed("credctl-fast"), launcher)
    fake = directory / "credctl"
    fake.write_text(FAKE_CREDCTL)
    fake.chmod(0o755)
    return launcher


def test_launcher_fallback_hands_over_arguments_environment_and_stdin(launcher_copy, monkeypatch):
    monkeypatch.setenv("CREDCTL_TEST_MARKER", "kept")
    result = run([launcher_copy, "status", "--json", "two words", ""], stdin=b"from stdin\n")
    assert result.returncode == 3
    assert result.stdout == b"[status][--json][two words][]\ntried=unset marker=kept\nfrom stdin\n"


def test_launcher_says_when_it_has_asked_the_daemon(launcher_copy):
    # No daemon listening: the launcher asked, so the CLI should not ask again.
    result = run([launcher_copy, "auth", "--format", "env"])
    assert result.stdout.startswith(b"[auth][--format][env]\ntried=1 ")


def test_launcher_hit_does_not_run_the_cli(launcher_copy, daemon):
    result = run([launcher_copy, "auth"])
    assert (result.returncode, result.stdout) == (0, BODY)


def test_launcher_finds_the_cli_through_a_symlink(launcher_copy, short_home):
    elsewhere = short_home / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "credctl-fast").symlink_to(launcher_copy)
    result = run([elsewhere / "credctl-fast", "version"])
    assert (result.returncode, result.stdout.splitlines()[0]) == (3, b"[version]")


def test_launcher_without_a_sibling_credctl(launcher_copy):
    (launcher_copy.parent / "credctl").unlink()
    result = run([launcher_copy, "version"])
    assert result.returncode == 1
    assert result.stderr == (
        f"credctl: cannot find the credctl command next to {launcher_copy.resolve()}\n".encode()
    )
