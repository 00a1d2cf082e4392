"""The `credctl` command: the daemon fast path first, the full CLI otherwise.

A cache hit must cost little more than starting the interpreter, so until the
daemon has answered this module imports only os, sys and the compiled native
module; click and everything behind it load only on the slow path.
"""

import os
import sys

_BODY_CAP = 65536


def _fast_auth(argv: list[str]) -> tuple[bytes | None, bool]:
    """The daemon's answer to `credctl auth ...` (None: run the full CLI), and
    whether the daemon was asked without a usable answer."""
    try:
        from credctl._native import ffi, lib
    except ImportError:
        return None, False
    args = [ffi.new("char[]", os.fsencode(arg)) for arg in argv]
    body = ffi.new("char[]", _BODY_CAP)
    body_len = ffi.new("size_t *")
    result = lib.credctl_fast_auth(len(args), ffi.new("char *[]", args), body, _BODY_CAP, body_len)
    if result != lib.CREDCTL_FAST_OK:
        return None, bool(lib.credctl_fast_daemon_tried(result))
    return bytes(ffi.buffer(body, body_len[0])), True


def _write_stdout(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(1, view) :]


def main() -> int:
    argv = sys.argv[1:]
    # Set by the credctl-fast launcher when it has just asked the daemon in vain;
    # removed so that it does not reach the processes credctl starts.
    daemon_tried = os.environ.pop("CREDCTL_DAEMON_TRIED", None) == "1"
    if argv[:1] == ["auth"] and not daemon_tried:
        body, daemon_tried = _fast_auth(argv)
        if body is not None:
            try:
                _write_stdout(body)
            except OSError as exc:
                sys.stderr.write(f"credctl: cannot write the credentials to stdout: {exc}\n")
                return 1
            return 0

    from credctl.cli import main as cli_main

    return cli_main(argv, daemon_tried=daemon_tried)


if __name__ == "__main__":
    sys.exit(main())
