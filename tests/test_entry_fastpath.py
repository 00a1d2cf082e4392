"""The `credctl` entry and the credctl-fast launcher, run as processes against
a stand-in daemon on `$CREDCTL_HOME/daemon.sock`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import types
from collections.abc import Iterator
from pathlib import Path

import _cffi_backend
import pytest
from unix_http_server import UnixHttpServer, daemon_response, fixed, short_socket_dir

import credctl
from credctl import __main__ as entry

TIMEOUT = 60
# Not valid JSON on purpose, and no trailing newline: the bytes go out untouched.
BODY = b'{"Version":1,"AccessKeyId":"AKIA\xc3\xa9","SessionToken":"a\r\nb"}\x00tail'
SCRIPTS = Path(sysconfig.get_path("scripts"))


def fixed_daemon(path: Path, body: bytes = BODY, status: str = "200 OK") -> UnixHttpServer:
    """A stand-in daemon answering every request with one fixed HTTP response."""
    return UnixHttpServer(path, fixed(daemon_response(body, status)))


@pytest.fixture
def short_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    with short_socket_dir() as path:
        monkeypatch.setenv("CREDCTL_HOME", str(path))
        monkeypatch.delenv("CREDCTL_NO_DAEMON", raising=False)
        monkeypatch.delenv("CREDCTL_DAEMON_TRIED", raising=False)
        yield path


@pytest.fixture
def daemon(short_home: Path) -> Iterator[UnixHttpServer]:
    server = fixed_daemon(short_home / "daemon.sock")
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


# `python -I -S` skips site, so nothing has imported os when the entry starts;
# the entry and the native module come from where this interpreter found them.
ISOLATED_PATH = [
    str(Path(credctl.__file__).parent.parent),
    str(Path(_cffi_backend.__file__).parent),
]
ISOLATED_ENTRY = f"""
import sys
sys.path[:0] = {ISOLATED_PATH!r}
sys.argv = ["credctl", *sys.argv[1:]]

def cli_main(argv, daemon_tried=False):
    os_imported = "os" in sys.modules
    import os, subprocess
    child = subprocess.run(
        [sys.executable, "-I", "-S", "-c", "import posix; print(posix.environ)"],
        capture_output=True, check=True,
    ).stdout
    print(daemon_tried, os_imported, os.environ.get("CREDCTL_DAEMON_TRIED"),
          b"CREDCTL_DAEMON_TRIED" in child)
    return 7

class StandInCli:  # a class, not types.SimpleNamespace: types is not loaded yet
    main = staticmethod(cli_main)

sys.modules["credctl.cli"] = StandInCli
import credctl.__main__
sys.exit(credctl.__main__.main())
"""


@pytest.mark.parametrize(("flags", "os_imported"), [(["-I", "-S"], "False"), (["-I"], "True")])
def test_entry_removes_the_launcher_mark_with_or_without_os(
    daemon, monkeypatch, flags, os_imported
):
    # Without os the entry edits posix.environ and the process environment;
    # with os loaded (site imports it) it edits os.environ.
    monkeypatch.setenv("CREDCTL_DAEMON_TRIED", "1")
    result = run([sys.executable, *flags, "-c", ISOLATED_ENTRY, "auth"])
    assert (result.returncode, result.stderr) == (7, b"")
    assert result.stdout.split() == [b"True", os_imported.encode(), b"None", b"False"]
    assert daemon.requests == []


def test_isolated_hit_imports_nothing_beyond_the_native_module(daemon):
    allowed = {"credctl", "credctl.__main__", "credctl._native", "_cffi_backend"}
    baseline = run([sys.executable, "-I", "-S", "-X", "importtime", "-c", "import sys"])
    hit = run([sys.executable, "-I", "-S", "-X", "importtime", "-c", ISOLATED_ENTRY, "auth"])
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
    server = fixed_daemon(short_home / "daemon.sock", b'{"error":"x"}', "503 Unavailable")
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


GCP_EXECUTABLE_CALLS = [
    ["auth", "--provider", "gcp"],
    ["auth", "--provider=gcp", "--format", "executable"],
    ["auth", "--refresh", "--format=executable", "--provider", "gcp"],
]


@pytest.mark.parametrize("args", GCP_EXECUTABLE_CALLS)
@pytest.mark.parametrize("no_daemon", ["", "1"])
def test_launcher_without_a_sibling_answers_gcp_on_stdout(
    launcher_copy, monkeypatch, args, no_daemon
):
    # google-auth reads stdout and merges stderr into it: one response, no stderr.
    monkeypatch.setenv("CREDCTL_NO_DAEMON", no_daemon)
    (launcher_copy.parent / "credctl").unlink()
    result = run([launcher_copy, *args])
    assert (result.returncode, result.stderr) == (1, b"")
    assert result.stdout.endswith(b"}\n") and result.stdout.count(b"\n") == 1
    assert json.loads(result.stdout) == {
        "version": 1,
        "success": False,
        "code": "CREDCTL_NOT_FOUND",
        "message": f"cannot find the credctl command next to {launcher_copy.resolve()}",
    }


def test_launcher_gcp_error_is_json_whatever_the_path(short_home):
    # A path may hold quotes, backslashes, control characters and bytes that
    # are not UTF-8; the response still parses, the last as U+FFFD.
    name = 'q"b\\s\tt\u00e9\udcff'
    directory = short_home / name
    directory.mkdir()
    launcher = directory / "credctl-fast"
    shutil.copy2(installed("credctl-fast"), launcher)
    result = run([launcher, "auth", "--provider", "gcp"])
    assert (result.returncode, result.stderr) == (1, b"")
    message = json.loads(result.stdout.decode("utf-8"))["message"]
    resolved = str(launcher.resolve()).replace("\udcff", "\ufffd")
    assert message == f"cannot find the credctl command next to {resolved}"


@pytest.mark.parametrize(
    "args",
    [
        ["auth"],
        ["auth", "--provider", "gcp", "--format", "env"],
        ["auth", "--provider", "gcp", "-v"],
    ],
)
def test_launcher_other_calls_without_a_sibling_say_so_on_stderr(launcher_copy, args):
    (launcher_copy.parent / "credctl").unlink()
    result = run([launcher_copy, *args])
    assert (result.returncode, result.stdout) == (1, b"")
    assert result.stderr.startswith(b"credctl: cannot find the credctl command next to ")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/PID/status")
def test_launcher_fallback_leaves_sigpipe_alone(launcher_copy):
    # An ignored SIGPIPE would survive exec into the CLI and whatever it starts.
    (launcher_copy.parent / "credctl").write_text(
        "#!/bin/sh\nsed -n 's/^SigIgn:[[:space:]]*//p' /proc/$$/status\n"
    )
    result = run([launcher_copy, "auth"])  # no daemon: asked, then handed over
    assert result.returncode == 0
    assert int(result.stdout, 16) & (1 << (signal.SIGPIPE - 1)) == 0


@pytest.mark.parametrize(
    ("value", "uses_daemon"), [("1", False), ("yes", False), ("0", True), ("", True)]
)
def test_launcher_no_daemon_rule(launcher_copy, daemon, monkeypatch, value, uses_daemon):
    # The C side's rule: any non-empty value other than "0" skips the daemon.
    monkeypatch.setenv("CREDCTL_NO_DAEMON", value)
    result = run([launcher_copy, "auth"])
    if uses_daemon:
        assert (result.returncode, result.stdout) == (0, BODY)
        assert len(daemon.requests) == 1
    else:
        assert result.returncode == 3
        assert result.stdout.startswith(b"[auth]\ntried=unset ")
        assert daemon.requests == []
