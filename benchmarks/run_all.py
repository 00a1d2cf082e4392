"""credctl's performance report: whole processes, the daemon under load, the miss path, memory.

    python benchmarks/run_all.py            # about three minutes
    python benchmarks/run_all.py --quick    # fewer runs, shorter load phases
    python benchmarks/run_all.py --self-test  # the harness alone, against a bare server

Everything runs on this machine, on loopback and Unix sockets: a temp
CREDCTL_HOME, moto's STS on 127.0.0.1, `credctl daemon start --background`.
Every ratio compares numbers taken in the same run. The targets are those of
the hot-path issue; they are reported as PASS or MISS, never asserted. Needs a
C compiler (for the load generator) and curl; uses hyperfine when on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path

import harness
import loadgen
import startup

HERE = Path(__file__).resolve().parent
CLIENT_COUNTS = (1, 8, 32, 128)
MIB = 1024
RSS_FLAT_KIB = 1024  # "flat": at most 1 MiB more after 10,000 requests


# ---------------------------------------------------------------------------
# measuring


def http_get(
    sock_path: Path, target: str, timeout: float = 70
) -> tuple[int, dict[str, str], bytes]:
    """One GET over the Unix socket with Connection: close: (status, headers, body)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(sock_path))
        sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
        )
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", len(body)))
    return status, headers, body[:length]


def python_paths(python: Path) -> list[str]:
    """Where credctl and _cffi_backend live, for running the entry under -I -S."""
    code = (
        "import os, credctl, _cffi_backend as c\n"
        "print(os.path.dirname(os.path.dirname(credctl.__file__)))\n"
        "print(os.path.dirname(c.__file__))"
    )
    out = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split("\n")
    return list(dict.fromkeys(line for line in out if line))


def isolated_entry(python: Path, paths: list[str], *args: str) -> tuple[str, ...]:
    """`credctl ARGS` through the same entry point, as `python -I -S -c ...`."""
    code = (
        f"import sys; sys.path[:0] = {paths!r}; from credctl.__main__ import main; sys.exit(main())"
    )
    return (str(python), "-I", "-S", "-c", code, *args)


def load_matrix(
    sock_path: Path,
    target: str,
    server_pid: int,
    *,
    counts: tuple[int, ...],
    seconds: float,
    max_requests: int,
    repeats: int,
) -> list[list[loadgen.LoadResult]]:
    """For each mode and client count, ``repeats`` bounded runs after a warm-up."""
    points = []
    for new_connection in (False, True):
        for clients in counts:
            # A short unrecorded run first: connections, allocator and caches warm.
            loadgen.run(
                sock_path,
                target,
                clients=clients,
                requests=max_requests,
                duration=min(0.5, seconds),
                new_connection=new_connection,
            )
            points.append(
                [
                    loadgen.run(
                        sock_path,
                        target,
                        clients=clients,
                        requests=max_requests,
                        duration=seconds,
                        new_connection=new_connection,
                        server_pid=server_pid,
                    )
                    for _ in range(repeats)
                ]
            )
    return points


def median_run(runs: list[loadgen.LoadResult]) -> loadgen.LoadResult:
    """The run with the median throughput (the lower middle one for an even count)."""
    return sorted(runs, key=lambda run: run.rps)[(len(runs) - 1) // 2]


def memory_profile(
    sock_path: Path, target: str, pid: int, first_miss: Callable[[], object]
) -> dict[str, object]:
    """RSS idle, after the first miss, then before and after 10,000 hits."""
    time.sleep(1.0)  # let the freshly started daemon settle
    memory: dict[str, object] = {"idle_before_first_miss": harness.rss_kib(pid)}
    started = time.perf_counter()
    first_miss()
    memory["first_request_ms"] = (time.perf_counter() - started) * 1e3
    memory["after_first_miss"] = harness.rss_kib(pid)
    loadgen.run(sock_path, target, clients=8, requests=1_000, duration=30)
    memory["after_1k_hits"] = harness.rss_kib(pid)
    run = loadgen.run(sock_path, target, clients=8, requests=10_000, duration=60)
    memory["after_10k_more_hits"] = harness.rss_kib(pid)
    memory["hits_completed"] = run.completed
    run = loadgen.run(
        sock_path, target, clients=8, requests=10_000, duration=60, new_connection=True
    )
    memory["after_10k_more_new_connection_hits"] = harness.rss_kib(pid)
    memory["new_connection_hits_completed"] = run.completed
    return memory


def profile_daemon(
    pid: int, sock_path: Path, target: str, seconds: float, new_connection: bool
) -> list[str] | None:
    """Top self-time frames from py-spy while 32 clients load the daemon."""
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        return None
    with tempfile.TemporaryDirectory(prefix="credctl-bench-") as tmp:
        out = Path(tmp) / "daemon.txt"
        recorder = subprocess.Popen(
            [
                *(py_spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "200"),
                *("-f", "raw", "-o", str(out), "--nonblocking"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        loadgen.run(
            sock_path,
            target,
            clients=32,
            requests=5_000_000,
            duration=seconds,
            new_connection=new_connection,
        )
        recorder.wait(timeout=seconds + 60)
        if not out.exists():
            return None
        self_samples: dict[str, int] = {}
        total = 0
        for line in out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            frame = stack.rsplit(";", 1)[-1]
            self_samples[frame] = self_samples.get(frame, 0) + int(count)
            total += int(count)
    top = sorted(self_samples.items(), key=lambda item: item[1], reverse=True)[:12]
    return [f"{count / total:6.1%}  {frame}" for frame, count in top]


# ---------------------------------------------------------------------------
# report


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  " + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))


def mib(kib: int) -> str:
    return f"{kib / MIB:.1f} MiB"


STARTUP_CHECKS = (
    # (label, numerator, denominator, limit)
    (
        "Python-entry hit / python -I -S -c pass",
        "credctl auth (python -I -S entry)",
        "python -I -S -c pass",
        1.2,
    ),
    (
        "installed-script hit / python -c pass (site on)",
        "credctl auth (installed script)",
        "python -c pass",
        1.2,
    ),
    (
        "launcher hit / curl --unix-socket",
        "credctl-fast auth (launcher)",
        "curl --unix-socket",
        1.0,
    ),
)


def report_startup(results: dict[str, object]) -> None:
    timings: dict[str, startup.Timing] = results["startup"]  # type: ignore[assignment]
    cross: dict[str, startup.Timing] = results.get("startup_hyperfine") or {}  # type: ignore[assignment]
    print("\n== Whole-process cache hit: `credctl auth` and its yardsticks ==")
    print(f"  timer: {results['timer']}, {next(iter(timings.values())).runs} runs each")
    if cross:
        print(f"  cross-check: {results['timer_hyperfine']}")
    base = timings.get("python -I -S -c pass")
    rows = []
    for name, t in timings.items():
        ratio = f"{t.median_ms / base.median_ms:.2f}x" if base else ""
        row = (name, f"{t.median_ms:.2f}", f"{t.p90_ms:.2f}", f"{t.min_ms:.2f}", ratio)
        if cross:
            hf = cross.get(name)
            row += (f"{hf.median_ms:.2f}" if hf else "",)
        rows.append(row)
    header = ("command", "median ms", "p90 ms", "min ms", "vs python -I -S")
    print_table(rows, header + (("hyperfine median",) if cross else ()))
    print()
    checks = []
    for label, num, den, limit in STARTUP_CHECKS:
        if num in timings and den in timings:
            ratio = timings[num].median_ms / timings[den].median_ms
            row = (label, f"{ratio:.2f}x", f"<= {limit:.2f}x", verdict(ratio <= limit))
            if cross and num in cross and den in cross:
                row += (f"{cross[num].median_ms / cross[den].median_ms:.2f}x",)
            checks.append(row)
    if checks:
        print_table(
            checks, ("target", "measured", "target", "") + (("hyperfine",) if cross else ())
        )
    if results.get("outputs_identical") is not None:
        print(f"\n  same bytes from every hit command and curl: {results['outputs_identical']}")
    for label, key in (
        ("installed script", "importtime_script"),
        ("python -I -S entry", "importtime_isolated"),
    ):
        offenders = results.get(key)
        if offenders:
            listed = ", ".join(f"{name} {us / 1000:.1f}" for name, us in offenders)  # type: ignore[attr-defined]
            print(f"  slowest imports on the hit path, {label} (ms, cumulative): {listed}")


def report_load(results: dict[str, object]) -> None:
    points: list[list[loadgen.LoadResult]] = results["load"]  # type: ignore[assignment]
    repeats = len(points[0])
    print(f"\n== {results['load_label']} under load (cache hits, C load generator) ==")
    print(f"  {repeats} bounded run(s) per row, the median one shown (req/s range in brackets).")
    print(
        "  CPU in cores (2 in all): server = the daemon's CPU time / wall time; others' = what\n"
        "  neither the daemon nor the load generator used (the machine's other tenants)."
    )
    rows = []
    load = [median_run(runs) for runs in points]
    for r, runs in zip(load, points, strict=True):
        share = r.server_cpu_share
        others = r.others_cpu_share
        low = min(run.rps for run in runs)
        high = max(run.rps for run in runs)
        rows.append(
            (
                r.mode,
                str(r.clients),
                f"{r.rps:,.0f}" + (f" [{low:,.0f}-{high:,.0f}]" if repeats > 1 else ""),
                f"{r.p50_ms:.3f}",
                f"{r.p99_ms:.3f}",
                f"{r.max_ms:.1f}",
                str(r.completed),
                str(r.errors + r.non_200),
                "" if share is None else f"{share:.2f}",
                "" if others is None else f"{others:.2f}",
            )
        )
    print_table(
        rows,
        (
            "mode",
            "clients",
            "req/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "requests",
            "errors",
            "server CPU",
            "others' CPU",
        ),
    )
    targets = {"keep-alive": 40_000, "new-connection": 15_000}
    checks = []
    for r in load:
        if r.clients == 32:
            ok = r.rps >= targets[r.mode] and r.p99_ms < 5 and r.errors + r.non_200 == 0
            checks.append(
                (
                    f"{r.mode}, 32 clients",
                    f"{r.rps:,.0f}/s, p99 {r.p99_ms:.2f} ms",
                    f">= {targets[r.mode]:,}/s, p99 < 5 ms",
                    verdict(ok),
                )
            )
    print()
    print_table(checks, ("target", "measured", "target", ""))
    paired: dict[str, dict[str, list[loadgen.LoadResult]]] = results.get("paired") or {}  # type: ignore[assignment]
    if paired:
        print(
            "\n  for scale: 32 clients on the daemon and on a bare asyncio server answering a"
            "\n  fixed body (benchmarks/fixed_server.py), runs alternating, medians:"
        )
        rows = []
        for mode, runs in paired.items():
            daemon = median_run(runs["daemon"])
            bare = median_run(runs["bare"])
            others = statistics.median(
                run.others_cpu_share or 0.0 for run in runs["daemon"] + runs["bare"]
            )
            rows.append(
                (
                    mode,
                    f"{daemon.rps:,.0f}/s p99 {daemon.p99_ms:.2f} ms",
                    f"{bare.rps:,.0f}/s p99 {bare.p99_ms:.2f} ms",
                    f"{daemon.rps / bare.rps:.2f}x",
                    f"{others:.2f}",
                )
            )
        print_table(rows, ("mode", "credctl daemon", "bare asyncio", "ratio", "others' CPU"))
    profiles: dict[str, list[str] | None] = results.get("profile") or {}  # type: ignore[assignment]
    for mode, lines in profiles.items():
        if lines:
            print(f"\n  py-spy, the daemon under 32 {mode} clients, top self-time frames:")
            for line in lines:
                print(f"    {line}")


def report_memory(results: dict[str, object]) -> None:
    memory: dict[str, object] = results["memory"]  # type: ignore[assignment]
    print("\n== Daemon resident memory (VmRSS from /proc/PID/status) ==")
    rows = []
    for key in (
        "idle_before_first_miss",
        "after_first_miss",
        "after_1k_hits",
        "after_10k_more_hits",
        "after_10k_more_new_connection_hits",
        "after_load_tests",
    ):
        if key in memory:
            values: dict[str, int] = memory[key]  # type: ignore[assignment]
            rows.append((key.replace("_", " "), mib(values["VmRSS"]), mib(values["VmHWM"])))
    print_table(rows, ("when", "VmRSS", "peak (VmHWM)"))
    idle = memory["idle_before_first_miss"]["VmRSS"]  # type: ignore[index]
    after = memory["after_first_miss"]["VmRSS"]  # type: ignore[index]
    base = memory["after_1k_hits"]["VmRSS"]  # type: ignore[index]
    grown = memory["after_10k_more_hits"]["VmRSS"] - base  # type: ignore[index]
    grown_nc = memory["after_10k_more_new_connection_hits"]["VmRSS"] - base  # type: ignore[index]
    print()
    print_table(
        [
            ("RSS before the first miss", mib(idle), "<= 30 MiB", verdict(idle <= 30 * MIB)),
            ("RSS after the first miss", mib(after), "<= 90 MiB", verdict(after <= 90 * MIB)),
            (
                "growth over 10k keep-alive + 10k new-connection hits",
                f"{grown:+d} KiB, {grown_nc:+d} KiB",
                f"<= {RSS_FLAT_KIB} KiB",
                verdict(max(grown, grown_nc) <= RSS_FLAT_KIB),
            ),
        ],
        ("target", "measured", "target", ""),
    )
    if "first_miss_ms" in memory:
        print(
            f"\n  the first miss (whole `credctl auth` process): {memory['first_miss_ms']:.0f} ms"
        )


def report_miss(results: dict[str, object]) -> None:
    miss: dict[str, object] = results["miss"]  # type: ignore[assignment]
    probe: dict[str, float] = miss["probe"]  # type: ignore[assignment]
    print("\n== The miss path (sign + exchange against moto on 127.0.0.1) ==")
    rows = [
        ("sign (build, sign, verify the JWT)", f"{probe['sign_ms']:.2f}"),
        ("exchange (STS call on a reused boto3 client)", f"{probe['exchange_ms']:.2f}"),
        ("overhead (issue - sign - exchange)", f"{probe['overhead_ms']:.2f}"),
        ("  of which: config.json + open the key", f"{probe['config_and_signer_ms']:.2f}"),
        (
            "  of which: credctl's STS call beyond the bare exchange",
            f"{probe['exchange_as_called_ms'] - probe['exchange_ms']:.2f}",
        ),
        ("issue_credential(), warm process", f"{probe['issue_ms']:.2f}"),
        (
            "first issue_credential() in a process (imports, client)",
            f"{probe['cold_first_issue_ms']:.0f}",
        ),
        ("import credctl.issue", f"{probe['import_credctl_issue_ms']:.1f}"),
    ]
    daemon_miss = miss.get("daemon_refresh")
    if daemon_miss:
        rows.append(
            ("daemon miss, GET ...&refresh=1 (median of warm)", f"{daemon_miss['median_ms']:.2f}")
        )  # type: ignore[index]
    no_daemon: startup.Timing | None = miss.get("no_daemon")  # type: ignore[assignment]
    if no_daemon:
        rows.append(
            ("whole process `credctl auth --no-daemon` (median)", f"{no_daemon.median_ms:.0f}")
        )
    print_table(rows, ("part", "ms (median)"))
    offenders = miss.get("importtime_no_daemon")
    if offenders:
        listed = ", ".join(f"{name} {us / 1000:.0f}" for name, us in offenders)  # type: ignore[attr-defined]
        print(f"\n  slowest imports of `credctl auth --no-daemon` (ms, cumulative): {listed}")


def print_report(results: dict[str, object]) -> None:
    print("\n" + "=" * 78)
    print(f"credctl performance report  {results['when']}")
    print(f"  machine: {results['machine']}")
    print(f"  credctl: {results.get('credctl', '-')}   python: {results['python']}")
    if "startup" in results:
        report_startup(results)
    if "load" in results:
        report_load(results)
    if "memory" in results:
        report_memory(results)
    if "miss" in results:
        report_miss(results)
    print()


def machine_description() -> str:
    """CPUs, load average, and how busy the machine was just before the run."""
    load = os.getloadavg()
    busy_before = loadgen.machine_busy_seconds()
    time.sleep(2.0)
    busy = (loadgen.machine_busy_seconds() - busy_before) / 2.0
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start, "
        f"{busy:.2f} cores busy with other work in the 2 s before the run"
    )


def to_json(results: dict[str, object]) -> str:
    def default(value: object) -> object:
        if hasattr(value, "__dataclass_fields__"):
            return asdict(value)  # type: ignore[call-overload]
        return str(value)

    return json.dumps(results, default=default, indent=2)


# ---------------------------------------------------------------------------
# runs


def time_startup(
    commands: dict[str, tuple[str, ...]],
    env: Mapping[str, str],
    args: argparse.Namespace,
    results: dict[str, object],
) -> None:
    """The interleaved loop for the figures and targets; hyperfine as a cross-check."""
    results["timer"] = startup.timer_name("loop")
    results["startup"] = startup.time_commands(commands, env, runs=args.runs, timer="loop")
    if args.hyperfine and startup.hyperfine_available():
        results["timer_hyperfine"] = startup.timer_name("hyperfine")
        results["startup_hyperfine"] = startup.time_commands(
            commands, env, runs=args.runs, timer="hyperfine"
        )


def run_credctl(args: argparse.Namespace, results: dict[str, object]) -> None:
    inst = harness.Installation.find(args.credctl)
    results["credctl"] = str(inst.credctl)
    results["python"] = str(inst.python)
    with harness.BenchEnv(inst) as env:
        pid = env.daemon_pid()
        assert pid is not None
        sock = env.socket_path
        target = harness.AWS_TARGET

        if "memory" in args.sections:
            print("memory: idle, first miss, 10k hits ...", file=sys.stderr)
            results["first_request"] = "`credctl auth`, whole process, a daemon miss"
            results["memory"] = memory_profile(sock, target, pid, env.warm)
        else:
            env.warm()
        status, headers, curl_body = http_get(sock, target)
        if status != 200 or headers.get("x-credctl-cache") != "hit":
            raise harness.BenchSetupError(
                f"the daemon does not serve a cache hit: {status} {headers}"
            )

        if "startup" in args.sections:
            print("startup: whole-process timings ...", file=sys.stderr)
            paths = python_paths(inst.python)
            py = str(inst.python)
            commands: dict[str, tuple[str, ...]] = {"/bin/true": ("/bin/true",)}
            commands.update(curl_command(sock, target))
            if inst.launcher:
                commands["credctl-fast auth (launcher)"] = (str(inst.launcher), "auth")
            commands["python -I -S -c pass"] = (py, "-I", "-S", "-c", "pass")
            # Where the entry's time goes beyond the bare interpreter:
            commands["python -I -S -c 'import os'"] = (py, "-I", "-S", "-c", "import os")
            commands["python -I -S: import credctl._native"] = (
                py,
                "-I",
                "-S",
                "-c",
                f"import sys; sys.path[:0] = {paths!r}; import os, credctl._native",
            )
            commands["credctl auth (python -I -S entry)"] = isolated_entry(
                inst.python, paths, "auth"
            )
            commands["python -c pass"] = (py, "-c", "pass")
            commands["credctl auth (installed script)"] = (str(inst.credctl), "auth")
            outputs = {
                name: startup.check_output(argv, env.env)
                for name, argv in commands.items()
                if "auth" in name or "curl" in name
            }
            results["outputs_identical"] = all(out == curl_body for out in outputs.values())
            time_startup(commands, env.env, args, results)
            results["importtime_script"] = startup.import_time_offenders(
                (py, str(inst.credctl), "auth"), env.env
            )
            results["importtime_isolated"] = startup.import_time_offenders(
                commands["credctl auth (python -I -S entry)"], env.env
            )

        if "load" in args.sections:
            print("load: daemon under 1-128 clients ...", file=sys.stderr)
            results["load_label"] = "The credctl daemon"
            results["load"] = load_matrix_from_args(sock, target, pid, args)
            if args.reference:
                print("load: alternating with the bare asyncio server ...", file=sys.stderr)
                results["paired"] = paired_with_reference(sock, pid, inst.python, args)
            if args.profile:
                results["profile"] = {
                    mode: profile_daemon(pid, sock, target, args.load_seconds, mode != "keep-alive")
                    for mode in ("keep-alive", "new-connection")
                }
            if "memory" in results:
                results["memory"]["after_load_tests"] = harness.rss_kib(pid)  # type: ignore[index]

        if "miss" in args.sections:
            print("miss: sign + exchange against moto ...", file=sys.stderr)
            miss: dict[str, object] = {}
            probe = subprocess.run(
                [str(inst.python), str(HERE / "miss_probe.py"), str(args.miss_rounds)],
                env=env.env,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if probe.returncode != 0:
                raise RuntimeError(f"miss_probe.py failed: {probe.stderr.strip()}")
            miss["probe"] = json.loads(probe.stdout)
            refresh_target = target + "&refresh=1"
            samples = []
            for _ in range(args.miss_rounds):
                started = time.perf_counter()
                status, _, _ = http_get(sock, refresh_target)
                samples.append(time.perf_counter() - started)
                if status != 200:
                    raise RuntimeError(f"daemon refresh answered {status}")
            miss["daemon_refresh"] = {"median_ms": statistics.median(samples) * 1e3}
            no_daemon = (str(inst.credctl), "auth", "--no-daemon")
            miss["no_daemon"] = startup.time_commands(
                {"credctl auth --no-daemon": no_daemon},
                env.env,
                runs=max(3, args.miss_rounds // 2),
                warmup=1,
            )["credctl auth --no-daemon"]
            miss["importtime_no_daemon"] = startup.import_time_offenders(
                (str(inst.python), *no_daemon), env.env
            )
            results["miss"] = miss


def paired_with_reference(
    sock_path: Path,
    server_pid: int,
    python: Path,
    args: argparse.Namespace,
) -> dict[str, dict[str, list[loadgen.LoadResult]]]:
    """32 clients on the daemon and on the bare asyncio server, runs alternating.

    On a shared machine the load of the neighbours changes from one second to the
    next; alternating the two servers lets them share it, so their ratio holds.
    """
    pairs: dict[str, dict[str, list[loadgen.LoadResult]]] = {}
    with harness.fixed_body_server(python) as (ref_sock, ref_pid):
        for new_connection in (False, True):
            runs: dict[str, list[loadgen.LoadResult]] = {"daemon": [], "bare": []}
            for _ in range(args.load_repeats):
                for name, sock, pid in (
                    ("daemon", sock_path, server_pid),
                    ("bare", ref_sock, ref_pid),
                ):
                    runs[name].append(
                        loadgen.run(
                            sock,
                            harness.AWS_TARGET,
                            clients=32,
                            requests=args.max_requests,
                            duration=args.load_seconds,
                            new_connection=new_connection,
                            server_pid=pid,
                        )
                    )
            pairs["new-connection" if new_connection else "keep-alive"] = runs
    return pairs


def curl_command(sock: Path, target: str) -> dict[str, tuple[str, ...]]:
    """`curl --unix-socket` fetching ``target``, when curl is installed."""
    curl = shutil.which("curl")
    if curl is None:
        return {}
    return {
        "curl --unix-socket": (curl, "-sf", "--unix-socket", str(sock), "http://localhost" + target)
    }


def load_matrix_from_args(
    sock: Path, target: str, pid: int, args: argparse.Namespace
) -> list[list[loadgen.LoadResult]]:
    """The load matrix over CLIENT_COUNTS with the run's time and count bounds."""
    return load_matrix(
        sock,
        target,
        pid,
        counts=CLIENT_COUNTS,
        seconds=args.load_seconds,
        max_requests=args.max_requests,
        repeats=args.load_repeats,
    )


def run_self_test(args: argparse.Namespace, results: dict[str, object]) -> None:
    """The harness against the bare asyncio server: no credctl involved."""
    results["python"] = sys.executable
    py = sys.executable
    with harness.fixed_body_server(py) as (sock, pid):
        target = harness.AWS_TARGET
        if "memory" in args.sections:
            results["first_request"] = "one GET"
            results["memory"] = memory_profile(sock, target, pid, lambda: http_get(sock, target))
        if "startup" in args.sections:
            commands: dict[str, tuple[str, ...]] = {
                "/bin/true": ("/bin/true",),
                "python -I -S -c pass": (py, "-I", "-S", "-c", "pass"),
                "python -c pass": (py, "-c", "pass"),
            }
            commands.update(curl_command(sock, target))
            time_startup(commands, os.environ, args, results)
        if "load" in args.sections:
            results["load_label"] = "The bare asyncio fixed-body server (self-test)"
            results["load"] = load_matrix_from_args(sock, target, pid, args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--credctl", help="the credctl script to measure (default: beside python)")
    parser.add_argument("--quick", action="store_true", help="fewer runs, shorter load phases")
    parser.add_argument("--runs", type=int, help="runs per whole-process command (default 200)")
    parser.add_argument("--load-seconds", type=float, help="seconds per load phase (default 5)")
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    parser.add_argument("--miss-rounds", type=int, help="rounds of the miss path (default 20)")
    parser.add_argument(
        "--no-hyperfine",
        dest="hyperfine",
        action="store_false",
        help="skip the hyperfine cross-check of the whole-process timings",
    )
    parser.add_argument("--load-repeats", type=int, help="runs per load point (default 3)")
    parser.add_argument(
        "--sections",
        default="memory,startup,load,miss",
        help="comma-separated subset of memory,startup,load,miss",
    )
    parser.add_argument(
        "--no-reference",
        dest="reference",
        action="store_false",
        help="skip the runs alternating with the bare asyncio server",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the daemon under load")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--self-test", action="store_true", help="the harness alone, no credctl")
    args = parser.parse_args(argv)
    args.sections = set(args.sections.split(","))
    args.runs = args.runs or (50 if args.quick else 200)
    args.load_seconds = args.load_seconds or (2.0 if args.quick else 3.0)
    args.load_repeats = args.load_repeats or (1 if args.quick else 3)
    args.miss_rounds = args.miss_rounds or (8 if args.quick else 20)

    results: dict[str, object] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine_description(),
        "argv": shlex.join(sys.argv),
    }
    try:
        if args.self_test:
            run_self_test(args, results)
        else:
            run_credctl(args, results)
    except (harness.BenchSetupError, loadgen.LoadgenUnavailable) as exc:
        print(f"run_all: {exc}", file=sys.stderr)
        return 1
    print_report(results)
    if args.json:
        args.json.write_text(to_json(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
