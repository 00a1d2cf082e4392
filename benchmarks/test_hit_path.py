"""Whole-process cache hits: `credctl auth` against the commands it is measured by.

Each round is one fork/exec to exit with stdout on /dev/null; the ratios in the
summary compare medians taken in this session.
"""

from __future__ import annotations

import os
import shutil

import harness
import pytest
import run_all
from summary import report

ROUNDS = 60
GROUP = "whole-process cache hit"
MEDIANS_MS: dict[str, float] = {}


def commands(env: harness.BenchEnv) -> dict[str, tuple[str, ...] | None]:
    inst = env.installation
    py = str(inst.python)
    curl = shutil.which("curl")
    return {
        "/bin/true": ("/bin/true",),
        "python -I -S -c pass": (py, "-I", "-S", "-c", "pass"),
        "python -c pass": (py, "-c", "pass"),
        "curl --unix-socket": (
            (
                curl,
                "-sf",
                "--unix-socket",
                str(env.socket_path),
                "http://localhost" + harness.AWS_TARGET,
            )
            if curl
            else None
        ),
        "credctl auth (installed script)": (str(inst.credctl), "auth"),
        "credctl auth (python -I -S entry)": run_all.isolated_entry(
            inst.python, run_all.python_paths(inst.python), "auth"
        ),
        "credctl-fast auth (launcher)": (str(inst.launcher), "auth") if inst.launcher else None,
    }


NAMES = [
    "/bin/true",
    "python -I -S -c pass",
    "python -c pass",
    "curl --unix-socket",
    "credctl auth (installed script)",
    "credctl auth (python -I -S entry)",
    "credctl-fast auth (launcher)",
]


def spawn_and_wait(argv: tuple[str, ...], env: dict[str, str]) -> None:
    actions = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]
    pid = os.posix_spawn(argv[0], list(argv), env, file_actions=actions)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{argv[0]} exited {os.waitstatus_to_exitcode(status)}")


@pytest.mark.parametrize("name", NAMES)
def test_whole_process(benchmark, bench_env: harness.BenchEnv, name: str) -> None:
    argv = commands(bench_env)[name]
    if argv is None:
        pytest.skip(f"{name}: not installed")
    benchmark.group = GROUP
    benchmark.name = name
    benchmark.pedantic(spawn_and_wait, args=(argv, bench_env.env), rounds=ROUNDS, warmup_rounds=5)
    MEDIANS_MS[name] = benchmark.stats.stats.median * 1e3
    summarise()


def summarise() -> None:
    section = "whole-process cache hit (medians, this session)"
    base = MEDIANS_MS.get("python -I -S -c pass")
    for name, median in MEDIANS_MS.items():
        ratio = f" = {median / base:.2f}x python -I -S -c pass" if base else ""
        report(section, name, f"{name}: {median:.2f} ms{ratio}")

    def check(label: str, num: str, den: str, limit: float) -> None:
        if num in MEDIANS_MS and den in MEDIANS_MS:
            ratio = MEDIANS_MS[num] / MEDIANS_MS[den]
            verdict = "PASS" if ratio <= limit else "MISS"
            report(section, label, f"{label}: {ratio:.2f}x (target <= {limit:.2f}x) {verdict}")

    check("Python-entry hit / python -I -S -c pass", NAMES[5], NAMES[1], 1.2)
    check("installed-script hit / python -c pass", NAMES[4], NAMES[2], 1.2)
    check("launcher hit / curl --unix-socket", NAMES[6], NAMES[3], 1.0)


def test_hit_is_served_from_cache(benchmark, bench_env: harness.BenchEnv) -> None:
    """One keep-alive-less GET from Python: status, cache header, latency."""
    benchmark.group = "daemon GET from Python (new connection)"
    status, headers, _ = benchmark(run_all.http_get, bench_env.socket_path, harness.AWS_TARGET)
    report(
        "daemon answer",
        "hit",
        f"status {status}, X-Credctl-Cache: {headers.get('x-credctl-cache')}",
    )
