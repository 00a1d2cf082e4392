"""Whole-process timings: fork/exec, run to exit, stdout to /dev/null, every run.

The main timer spawns the commands itself, interleaved round-robin, so that a
noisy neighbour slows all of them alike and ratios stay fair on a shared
machine. hyperfine (``-N``: no shell in between), when on PATH, gives a
cross-check; it runs each command's rounds back to back.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Timing:
    name: str
    argv: tuple[str, ...]
    runs: int
    median_ms: float
    mean_ms: float
    p90_ms: float
    min_ms: float

    @classmethod
    def from_seconds(cls, name: str, argv: tuple[str, ...], times: list[float]) -> Timing:
        ordered = sorted(times)
        return cls(
            name=name,
            argv=argv,
            runs=len(ordered),
            median_ms=statistics.median(ordered) * 1e3,
            mean_ms=statistics.fmean(ordered) * 1e3,
            p90_ms=percentile(ordered, 0.90) * 1e3,
            min_ms=ordered[0] * 1e3,
        )


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, min(len(ordered), int(q * len(ordered) + 0.999999)))
    return ordered[rank - 1]


def check_output(argv: tuple[str, ...], env: Mapping[str, str]) -> bytes:
    """Run once and return stdout; raise with stderr when the command fails."""
    result = subprocess.run(argv, env=dict(env), capture_output=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(argv)} exited {result.returncode}: "
            f"{result.stderr.decode(errors='replace').strip()}"
        )
    return result.stdout


def hyperfine_available() -> bool:
    return shutil.which("hyperfine") is not None


def time_commands(
    commands: Mapping[str, tuple[str, ...]],
    env: Mapping[str, str],
    *,
    runs: int,
    warmup: int = 10,
    timer: str = "loop",
) -> dict[str, Timing]:
    """Median/p90 wall time of each command; ``timer`` is loop or hyperfine."""
    if timer == "hyperfine":
        return _hyperfine(commands, env, runs=runs, warmup=warmup)
    return _interleaved_loop(commands, env, runs=runs, warmup=warmup)


def timer_name(timer: str) -> str:
    if timer == "hyperfine":
        version = subprocess.run(
            ["hyperfine", "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        return f"{version} -N (no shell; each command's runs back to back)"
    return "posix_spawn + waitpid, commands interleaved round-robin"


def _hyperfine(
    commands: Mapping[str, tuple[str, ...]],
    env: Mapping[str, str],
    *,
    runs: int,
    warmup: int,
) -> dict[str, Timing]:
    with tempfile.TemporaryDirectory(prefix="credctl-bench-") as tmp:
        export = Path(tmp) / "hyperfine.json"
        argv = [
            "hyperfine",
            "-N",
            "--style",
            "none",
            "--warmup",
            str(warmup),
            "--runs",
            str(runs),
            "--export-json",
            str(export),
        ]
        for name, command in commands.items():
            argv += ["-n", name, shlex.join(command)]
        result = subprocess.run(argv, env=dict(env), capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            raise RuntimeError(f"hyperfine failed ({result.returncode}): {result.stderr.strip()}")
        results = json.loads(export.read_text())["results"]
    timings = {}
    for (name, command), result in zip(commands.items(), results, strict=True):
        timings[name] = Timing.from_seconds(name, command, list(result["times"]))
    return timings


def _spawn_and_wait(argv: tuple[str, ...], env: Mapping[str, str]) -> float:
    actions = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]
    started = time.perf_counter()
    pid = os.posix_spawn(argv[0], list(argv), env, file_actions=actions)
    _, status = os.waitpid(pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{shlex.join(argv)} exited {os.waitstatus_to_exitcode(status)}")
    return elapsed


def _interleaved_loop(
    commands: Mapping[str, tuple[str, ...]],
    env: Mapping[str, str],
    *,
    runs: int,
    warmup: int,
) -> dict[str, Timing]:
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for round_number in range(warmup + runs):
        for name, argv in commands.items():
            elapsed = _spawn_and_wait(argv, env)
            if round_number >= warmup:
                samples[name].append(elapsed)
    return {name: Timing.from_seconds(name, commands[name], samples[name]) for name in commands}


def import_time_offenders(
    argv: tuple[str, ...], env: Mapping[str, str], top: int = 8
) -> list[tuple[str, int]]:
    """The slowest imports (cumulative microseconds) of one run under -X importtime.

    ``argv`` starts with a Python interpreter; ``-X importtime`` is put after it.
    """
    result = subprocess.run(
        [argv[0], "-X", "importtime", *argv[1:]],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    top_level = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative_us, module = line.split("|", 2)
        # One space before a module that the program itself imported; more for nested ones.
        if not module.startswith("  "):
            top_level.append((module.strip(), int(cumulative_us)))
    return sorted(top_level, key=lambda row: row[1], reverse=True)[:top]
