"""The daemon under load: cache hits from the C load generator in its own process.

pytest-benchmark times each whole bounded run; the figures that matter
(requests per second, p50/p99) are in extra_info and in the session summary.
"""

from __future__ import annotations

import harness
import loadgen
import pytest
from summary import report

SECONDS = 3.0
MAX_REQUESTS = 1_000_000
TARGET_RPS = {"keep-alive": 40_000, "new-connection": 15_000}


@pytest.mark.parametrize("clients", [1, 8, 32, 128])
@pytest.mark.parametrize("mode", ["keep-alive", "new-connection"])
def test_daemon_hits_under_load(
    benchmark, bench_env: harness.BenchEnv, loadgen_binary: None, mode: str, clients: int
) -> None:
    pid = bench_env.daemon_pid()
    assert pid is not None
    new_connection = mode == "new-connection"

    def bounded_run() -> loadgen.LoadResult:
        return loadgen.run(
            bench_env.socket_path,
            harness.AWS_TARGET,
            clients=clients,
            requests=MAX_REQUESTS,
            duration=SECONDS,
            new_connection=new_connection,
            server_pid=pid,
        )

    bounded_run()  # warm-up, not recorded
    benchmark.group = f"daemon load, {mode}"
    result = benchmark.pedantic(bounded_run, rounds=1, iterations=1)
    benchmark.extra_info.update(
        rps=round(result.rps),
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        errors=result.errors + result.non_200,
        server_cpu_cores=result.server_cpu_share,
    )
    line = (
        f"{mode}, {clients:>3} clients: {result.rps:>9,.0f} req/s, p50 {result.p50_ms:.3f} ms, "
        f"p99 {result.p99_ms:.3f} ms, errors {result.errors + result.non_200}"
    )
    if clients == 32:
        ok = result.rps >= TARGET_RPS[mode] and result.p99_ms < 5
        line += f"  (target >= {TARGET_RPS[mode]:,}/s, p99 < 5 ms: {'PASS' if ok else 'MISS'})"
    report("daemon under load (cache hits)", f"{mode}-{clients}", line)
