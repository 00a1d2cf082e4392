"""The `credctl` command: the daemon fast path first, the full CLI otherwise.

A cache hit must cost little more than starting the interpreter, so until the
daemon has answered this module imports only the compiled native module. It
uses `sys` and the built-in `posix` module, which every interpreter on Linux
and macOS has loaded before running any code, rather than `os`, which under
`python -I -S` nothing else has imported yet; click and everything behind it
load only on the slow path.
"""

import posix
import sys

_BODY_CAP = 65536
# Set by the credctl-fast launcher when it has just asked the daemon in vain.
_DAEMON_TRIED = "CREDCTL_DAEMON_TRIED"


def _fast_auth(argv: list[str]) -> tuple[bytes | None, bool]:
    """The daemon's answer to `credctl auth ...` (None: run the full CLI), and
    whether the daemon was asked without a usable answer."""
    try:
        from credctl._native import ffi, lib
    except ImportError:
        return None, False
    # What os.fsencode does on POSIX.
    encoding, errors = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
    args = [ffi.new("char[]", arg.encode(encoding, errors)) for arg in argv]
    body = ffi.new("char[]", _BODY_CAP)
    body_len = ffi.new("size_t *")
    result = lib.credctl_fast_auth(len(args), ffi.new("char *[]", args), body, _BODY_CAP, body_len)
    if result != lib.CREDCTL_FAST_OK:
        return None, bool(lib.credctl_fast_daemon_tried(result))
    return bytes(ffi.buffer(body, body_len[0])), True


def _write_stdout(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[posix.write(1, view) :]


def _take_daemon_tried() -> bool:
    """Whether the launcher set CREDCTL_DAEMON_TRIED=1; removes it, so that it
    reaches neither the processes credctl starts nor os.environ."""
    loaded_os = sys.modules.get("os")
    if loaded_os is not None:
        # os.environ is already built: its pop unsets the variable too.
        return bool(loaded_os.environ.pop(_DAEMON_TRIED, None) == "1")
    # os.environ will be built from posix.environ when os is first imported.
    value = posix.environ.pop(_DAEMON_TRIED.encode(), None)
    if value is not None:
        posix.unsetenv(_DAEMON_TRIED)
    return value == b"1"


def main() -> int:
    argv = sys.argv[1:]
    daemon_tried = _take_daemon_tried()
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
