"""The daemon's resident memory: before its first miss, after it, over 10,000 hits.

A daemon of its own (the shared one has long had its first miss).
"""

from __future__ import annotations

import time

import harness
import loadgen
from summary import report

MIB = 1024


def test_daemon_rss(benchmark, installation: harness.Installation, loadgen_binary: None) -> None:
    with harness.BenchEnv(installation) as env:
        pid = env.daemon_pid()
        assert pid is not None
        time.sleep(1.0)
        idle = harness.rss_kib(pid)["VmRSS"]
        env.warm()
        after_miss = harness.rss_kib(pid)["VmRSS"]
        loadgen.run(env.socket_path, harness.AWS_TARGET, clients=8, requests=1_000, duration=30)
        before = harness.rss_kib(pid)["VmRSS"]
        benchmark.group = "daemon memory"
        benchmark.pedantic(
            loadgen.run,
            args=(env.socket_path, harness.AWS_TARGET),
            kwargs={"clients": 8, "requests": 10_000, "duration": 60},
            rounds=1,
            iterations=1,
        )
        after = harness.rss_kib(pid)["VmRSS"]
    benchmark.extra_info.update(
        rss_idle_kib=idle, rss_after_miss_kib=after_miss, rss_growth_10k_kib=after - before
    )
    section = "daemon resident memory (VmRSS)"

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    report(
        section,
        "idle",
        f"before the first miss: {idle / MIB:.1f} MiB (target <= 30 MiB) "
        f"{verdict(idle <= 30 * MIB)}",
    )
    report(
        section,
        "miss",
        f"after the first miss: {after_miss / MIB:.1f} MiB (target <= 90 MiB) "
        f"{verdict(after_miss <= 90 * MIB)}",
    )
    report(
        section,
        "growth",
        f"growth over 10,000 hits: {after - before:+d} KiB (target: flat, <= 1024 KiB) "
        f"{verdict(after - before <= 1024)}",
    )
