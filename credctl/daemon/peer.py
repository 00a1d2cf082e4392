"""Who is on the other end of a Unix socket: SO_PEERCRED (Linux), getpeereid (macOS/BSD)."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

_UCRED = struct.Struct("iII")  # struct ucred: pid_t pid; uid_t uid; gid_t gid


def _peercred_uid(sock: socket.socket) -> int:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return int(_UCRED.unpack(raw)[1])


def _getpeereid_function() -> Callable[[socket.socket], int]:
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    getpeereid = libc.getpeereid
    getpeereid.argtypes = [
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_uint32),
        ctypes.POINTER(ctypes.c_uint32),
    ]
    getpeereid.restype = ctypes.c_int

    def peer_uid(sock: socket.socket) -> int:
        uid = ctypes.c_uint32()
        gid = ctypes.c_uint32()
        if getpeereid(sock.fileno(), ctypes.byref(uid), ctypes.byref(gid)) != 0:
            raise OSError(ctypes.get_errno(), "getpeereid failed")
        return uid.value

    return peer_uid


def peer_uid_function() -> Callable[[socket.socket], int]:
    """The platform's way to read a connected peer's effective UID (raises OSError)."""
    if hasattr(socket, "SO_PEERCRED"):
        return _peercred_uid
    return _getpeereid_function()
