"""Fixtures shared by every test: a private credctl home and a way to run the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

CLI_TIMEOUT = 60


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty credctl home (not yet created) with CREDCTL_HOME pointing at it."""
    path = tmp_path / "credctl-home"
    monkeypatch.setenv("CREDCTL_HOME", str(path))
    monkeypatch.delenv("CREDCTL_NO_DAEMON", raising=False)
    yield path


RunCli = Callable[..., subprocess.CompletedProcess[bytes]]


@pytest.fixture
def run_cli(home: Path) -> RunCli:
    """Run ``python -m credctl ARGS`` as a user would, in the test's environment."""

    def run(
        *args: str,
        env: dict[str, str] | None = None,
        input: bytes | None = None,
        timeout: float = CLI_TIMEOUT,
    ) -> subprocess.CompletedProcess[bytes]:
        full_env = dict(os.environ)
        full_env.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "credctl", *args],
            env=full_env,
            input=input,
            capture_output=True,
            timeout=timeout,
            check=False,
        )

    return run


@pytest.fixture
def initialised_home(home: Path, run_cli: RunCli) -> Path:
    """A home with a software device key."""
    result = run_cli("init", "--backend", "software")
    assert result.returncode == 0, result.stderr.decode()
    return home
