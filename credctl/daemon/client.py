"""A small client for the daemon's HTTP/1.1 API over its Unix socket.

Not the hot path (that is the native client); this serves `credctl auth` when
the native module is missing, and `credctl status` / `daemon status|clear`.
Every function answers "no daemon" (None / False) instead of raising when the
socket is missing, refuses, times out or answers something unexpected.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

from credctl.home import SOCKET_FILE

CONNECT_TIMEOUT = 2.0
# A miss may wait for a Touch ID prompt and a cloud exchange.
FETCH_TIMEOUT = 65.0
STATUS_TIMEOUT = 5.0
MAX_RESPONSE = 1 << 20
# sun_path is 108 bytes on Linux, 104 on macOS, including the NUL.
_SUN_PATH_MAX = 103


def socket_path(home: Path) -> Path:
    return home / SOCKET_FILE


def connect_unix(path: Path, timeout: float) -> socket.socket:
    """Connect to the Unix socket at ``path``; raises OSError when nobody answers.

    A path too long for sun_path is reached on Linux through the directory's
    /proc/self/fd entry, so a deep CREDCTL_HOME still works.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        raw = os.fsencode(path)
        if len(raw) <= _SUN_PATH_MAX:
            sock.connect(raw)
            return sock
        if not sys.platform.startswith("linux"):
            raise OSError(f"socket path too long: {path}")
        dir_fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
        try:
            sock.connect(os.fsencode(f"/proc/self/fd/{dir_fd}/") + os.fsencode(path.name))
        finally:
            os.close(dir_fd)
        return sock
    except BaseException:
        sock.close()
        raise


def request(
    home: Path,
    method: str,
    target: str,
    timeout: float = STATUS_TIMEOUT,
) -> tuple[int, dict[str, str], bytes] | None:
    """One HTTP/1.1 request on a fresh connection: (status, headers, body), or None."""
    try:
        sock = connect_unix(socket_path(home), CONNECT_TIMEOUT)
    except OSError:
        return None
    try:
        sock.settimeout(timeout)
        sock.sendall(
            f"{method} {target} HTTP/1.1\r\nHost: localhost\r\n"
            "Content-Length: 0\r\nConnection: close\r\n\r\n".encode("ascii")
        )
        return _read_response(sock)
    except (OSError, ValueError):
        return None
    finally:
        sock.close()


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes] | None:
    data = bytearray()
    head_end = -1
    while head_end < 0:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
        if len(data) > MAX_RESPONSE:
            return None
        head_end = data.find(b"\r\n\r\n")
    lines = bytes(data[:head_end]).decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    length_text = headers.get("content-length")
    if length_text is None or not length_text.isdigit():
        return None
    length = int(length_text)
    if length > MAX_RESPONSE:
        return None
    body = bytes(data[head_end + 4 :])
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        body += chunk
    return int(parts[1]), headers, body[:length]


def credential_target(provider: str, fmt: str, refresh: bool = False) -> str:
    target = f"/v1/credentials/{quote(provider, safe='')}?format={quote(fmt, safe='')}"
    return target + "&refresh=1" if refresh else target


def fetch_credential(home: Path, provider: str, fmt: str, refresh: bool = False) -> bytes | None:
    """The body `credctl auth` prints, from the daemon; None if it did not answer 200."""
    answer = request(home, "GET", credential_target(provider, fmt, refresh), FETCH_TIMEOUT)
    if answer is None or answer[0] != 200:
        return None
    return answer[2]


def fetch_status(home: Path) -> dict[str, Any] | None:
    """The daemon's status document, or None when no daemon answers."""
    answer = request(home, "GET", "/v1/status")
    if answer is None or answer[0] != 200:
        return None
    try:
        document = json.loads(answer[2])
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def clear_cache(home: Path) -> bool:
    """Empty the daemon's cache; False when no daemon answered."""
    answer = request(home, "POST", "/v1/clear")
    return answer is not None and answer[0] == 200


def daemon_summary(home: Path) -> dict[str, Any]:
    """``{"running": bool, "pid": int | None}`` for `credctl status`."""
    document = fetch_status(home)
    if document is not None and isinstance(document.get("pid"), int):
        return {"running": True, "pid": document["pid"]}
    from credctl.daemon.pidfile import running_pid

    pid = running_pid(home)
    return {"running": pid is not None, "pid": pid}
