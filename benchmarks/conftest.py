"""Fixtures for the pytest-benchmark suites: a warm credctl daemon on loopback.

Run them explicitly (plain `pytest` collects only tests/):

    pytest benchmarks/ --benchmark-only

Figures that pytest-benchmark does not time itself (ratios, requests per
second, percentiles, RSS) are printed at the end of the session with the
issue's targets as PASS or MISS: numbers to read, never assertions.
"""

from __future__ import annotations

from collections.abc import Iterator

import harness
import loadgen
import pytest
from summary import REPORT


@pytest.fixture(scope="session")
def installation() -> harness.Installation:
    try:
        return harness.Installation.find()
    except harness.BenchSetupError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def loadgen_binary() -> None:
    try:
        loadgen.build()
    except loadgen.LoadgenUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def bench_env(installation: harness.Installation) -> Iterator[harness.BenchEnv]:
    """The daemon, running, with the AWS credential_process entry in its cache."""
    with harness.BenchEnv(installation) as env:
        env.warm()
        yield env


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not REPORT:
        return
    terminalreporter.section("credctl benchmark report (targets: PASS/MISS, not asserted)")
    for section, lines in REPORT.items():
        terminalreporter.write_line(f"\n{section}")
        for line in lines.values():
            terminalreporter.write_line(f"  {line}")
