"""`python -m credctl.daemon`: the daemon process itself.

`credctl daemon start` execs (foreground) or spawns (background) this module so
that the long-lived process never imports click, boto3, google-auth or
cryptography until a cache miss needs them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from credctl.daemon.server import DEFAULT_READ_TIMEOUT
from credctl.errors import CredctlError


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m credctl.daemon")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--idle-timeout", type=_seconds, default=1800.0, help="seconds; 0: never")
    parser.add_argument("--read-timeout", type=_seconds, default=DEFAULT_READ_TIMEOUT)
    parser.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from credctl.daemon.process import run_daemon

    try:
        run_daemon(args.home, args.idle_timeout, args.read_timeout, ready_fd=args.ready_fd)
    except CredctlError as exc:
        return _report(str(exc), args.ready_fd)
    except OSError as exc:
        # bind, prctl, setrlimit, the PID file, the ready pipe: the system said no.
        return _report(f"the daemon could not run: {exc}", args.ready_fd)
    return 0


def _report(message: str, ready_fd: int | None) -> int:
    """One ``credctl:`` line on stderr (and to a background starter); exit status 1."""
    if ready_fd is not None:
        with contextlib.suppress(OSError):
            os.write(ready_fd, f"error: {message}\n".encode())
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"credctl: {message}\n")
        sys.stderr.flush()
    return 1


if __name__ == "__main__":
    sys.exit(main())
