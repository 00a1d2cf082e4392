"""Build and run the C load generator (loadgen.c) against a Unix socket."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "loadgen.c"


class LoadgenUnavailable(RuntimeError):
    pass


def build() -> Path:
    """Compile loadgen.c once per source version into the temp dir; its path."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise LoadgenUnavailable("no C compiler (cc or gcc) to build benchmarks/loadgen.c")
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    binary = Path(tempfile.gettempdir()) / f"credctl-loadgen-{os.getuid()}-{digest}"
    if not binary.exists():
        partial = binary.with_suffix(f".{os.getpid()}.tmp")
        result = subprocess.run(
            [compiler, "-O2", "-Wall", "-o", str(partial), str(SOURCE)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise LoadgenUnavailable(f"cannot build loadgen.c:\n{result.stderr}")
        partial.replace(binary)
    return binary


@dataclass(frozen=True)
class LoadResult:
    mode: str
    clients: int
    completed: int
    errors: int
    non_200: int
    connect_retries: int
    reconnects: int
    elapsed_s: float
    rps: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    loadgen_cpu_s: float
    server_cpu_s: float | None = None
    # CPU time of the whole machine over the run, and the run's wall time: what is
    # left after the server and the generator is other processes (a noisy neighbour).
    machine_busy_s: float | None = None
    wall_s: float | None = None

    @property
    def others_cpu_share(self) -> float | None:
        """CPU used by neither the server nor the generator, in cores."""
        if self.machine_busy_s is None or not self.wall_s or self.server_cpu_s is None:
            return None
        others = self.machine_busy_s - self.server_cpu_s - self.loadgen_cpu_s
        return max(0.0, others / self.wall_s)

    @property
    def server_cpu_share(self) -> float | None:
        """The server's CPU time over wall time (1.0 = one core fully busy)."""
        if self.server_cpu_s is None or self.elapsed_s <= 0:
            return None
        return self.server_cpu_s / self.elapsed_s


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def machine_busy_seconds() -> float:
    """Non-idle CPU time of all CPUs since boot, from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run(
    socket_path: Path | str,
    target: str,
    *,
    clients: int,
    requests: int,
    duration: float,
    new_connection: bool = False,
    server_pid: int | None = None,
) -> LoadResult:
    """One bounded load run: stops after ``requests`` or ``duration`` seconds."""
    argv = [
        str(build()),
        "--socket",
        str(socket_path),
        "--target",
        target,
        "--clients",
        str(clients),
        "--requests",
        str(requests),
        "--duration",
        str(duration),
    ]
    if new_connection:
        argv.append("--new-connection")
    cpu_before = process_cpu_seconds(server_pid) if server_pid else None
    busy_before = machine_busy_seconds()
    started = time.perf_counter()
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration + 60, check=False
    )
    wall = time.perf_counter() - started
    busy = machine_busy_seconds() - busy_before
    cpu_after = process_cpu_seconds(server_pid) if server_pid else None
    if result.returncode != 0:
        raise RuntimeError(f"loadgen failed ({result.returncode}): {result.stderr.strip()}")
    fields = json.loads(result.stdout)
    server_cpu = (
        cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
    )
    return LoadResult(**fields, server_cpu_s=server_cpu, machine_busy_s=busy, wall_s=wall)
