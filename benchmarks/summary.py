"""The figures the pytest-benchmark suites print at the end of a session.

pytest-benchmark times functions; ratios, requests per second, percentiles and
RSS are collected here and printed by conftest.py's terminal summary.
"""

from __future__ import annotations

# section -> {key: line}; a key reported again replaces its line, so a summary
# can be recomputed after every test.
REPORT: dict[str, dict[str, str]] = {}


def report(section: str, key: str, line: str) -> None:
    REPORT.setdefault(section, {})[key] = line
