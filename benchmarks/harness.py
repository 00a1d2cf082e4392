"""A credctl installation set up for benchmarking, on loopback only.

``BenchEnv`` makes a private credctl home in a short temp dir, starts moto's
STS server on 127.0.0.1 in its own process, runs ``credctl init --backend
software`` and ``credctl setup aws`` pointing at it, and starts the daemon as a
user would (``credctl daemon start --background``). Warming the cache is left
to the caller, so the daemon's memory can be read before its first miss.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"
AWS_TARGET = "/v1/credentials/aws?format=credential_process"
ROLE_ARN = "arn:aws:iam::123456789012:role/bench"
ISSUER_URL = "https://issuer.example.com"
COMMAND_TIMEOUT = 120


class BenchSetupError(RuntimeError):
    pass


@dataclass(frozen=True)
class Installation:
    """The programs under test: the credctl script, its interpreter, the launcher."""

    credctl: Path
    python: Path
    launcher: Path | None

    @classmethod
    def find(cls, credctl: str | None = None) -> Installation:
        """The ``credctl`` next to this interpreter, else on PATH, else ``credctl``."""
        if credctl is None:
            beside = Path(sysconfig.get_path("scripts")) / "credctl"
            found = str(beside) if beside.exists() else shutil.which("credctl")
            if found is None:
                raise BenchSetupError(
                    "no credctl script: run `pip install -e '.[test]'` in this environment, "
                    "or pass --credctl PATH"
                )
            credctl = found
        script = Path(credctl).absolute()
        python = _shebang_interpreter(script) or Path(sys.executable)
        launcher = script.with_name("credctl-fast")
        return cls(script, python, launcher if os.access(launcher, os.X_OK) else None)


def _shebang_interpreter(script: Path) -> Path | None:
    with script.open("rb") as handle:
        first = handle.readline().strip()
    if not first.startswith(b"#!"):
        return None
    words = first[2:].split()
    if not words:
        return None
    return Path(os.fsdecode(words[0]))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise BenchSetupError(f"timed out after {timeout:.0f}s waiting for {what}")


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of ``pid`` in KiB, from /proc/PID/status."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


@dataclass
class MotoServer:
    """moto's STS on 127.0.0.1 in its own process, so it shares no GIL with us."""

    python: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> MotoServer:
        self.process = subprocess.Popen(
            [str(self.python), "-m", "moto.server", "-H", LOOPBACK, "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, 60, f"moto server on {self.url}")
        return self

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise BenchSetupError(
                f"moto server exited ({self.process.returncode}): is moto[server] installed "
                f"for {self.python}? (`pip install -e '.[test]'`)"
            )
        try:
            with urllib.request.urlopen(self.url + "/moto-api/", timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class BenchEnv:
    """A temp credctl home wired to moto, with the daemon started in the background."""

    def __init__(self, installation: Installation) -> None:
        self.installation = installation
        # Short: the socket path must fit sun_path (108 bytes).
        self.root = Path(tempfile.mkdtemp(prefix="credctl-bench-", dir="/tmp"))
        self.home = self.root / "home"
        self.moto = MotoServer(installation.python)
        self.env = dict(os.environ)
        for name in ("CREDCTL_NO_DAEMON", "CREDCTL_DAEMON_TRIED", "AWS_PROFILE"):
            self.env.pop(name, None)
        self.env.update(
            {
                "CREDCTL_HOME": str(self.home),
                # Keep the user's AWS files and the instance metadata service out of it.
                "AWS_CONFIG_FILE": str(self.root / "aws-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(self.root / "aws-credentials"),
                "AWS_EC2_METADATA_DISABLED": "true",
            }
        )
        self.daemon_started = False

    @property
    def socket_path(self) -> Path:
        return self.home / "daemon.sock"

    def credctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(
            [str(self.installation.credctl), *args],
            env=self.env,
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        if check and result.returncode != 0:
            raise BenchSetupError(
                f"`credctl {' '.join(args)}` failed ({result.returncode}): "
                f"{result.stderr.decode(errors='replace').strip()}"
            )
        return result

    def start(self) -> BenchEnv:
        """Identity, AWS settings against moto, and a running daemon (cache still cold)."""
        self.moto.start()
        self.credctl("init", "--backend", "software")
        self.credctl(
            "setup",
            "aws",
            "--role-arn",
            ROLE_ARN,
            "--issuer-url",
            ISSUER_URL,
            "--sts-endpoint",
            self.moto.url,
        )
        self.start_daemon()
        return self

    def start_daemon(self) -> None:
        self.credctl("daemon", "start", "--background")
        self.daemon_started = True
        wait_for(self.socket_path.exists, 30, f"the daemon socket {self.socket_path}")
        wait_for(lambda: self.daemon_pid() is not None, 30, "daemon.pid")

    def daemon_pid(self) -> int | None:
        try:
            text = (self.home / "daemon.pid").read_text().strip()
        except FileNotFoundError:
            return None
        if not text.isdigit():
            return None
        pid = int(text)
        return pid if Path(f"/proc/{pid}").exists() else None

    def warm(self) -> bytes:
        """One `credctl auth` through the daemon: its first miss. Returns the body."""
        return self.credctl("auth").stdout

    def stop(self) -> None:
        try:
            if self.daemon_started:
                pid = self.daemon_pid()
                result = self.credctl("daemon", "stop", check=False)
                if result.returncode != 0 and pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
        finally:
            self.moto.stop()
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> BenchEnv:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def fixed_body_server(python: Path | str = sys.executable) -> Iterator[tuple[Path, int]]:
    """The bare asyncio reference server (fixed_server.py) on a temp socket: (path, pid)."""
    root = Path(tempfile.mkdtemp(prefix="credctl-bench-", dir="/tmp"))
    path = root / "fixed.sock"
    process = subprocess.Popen(
        [str(python), str(Path(__file__).with_name("fixed_server.py")), str(path)]
    )
    try:
        wait_for(path.exists, 30, f"the reference server socket {path}")
        yield path, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)
