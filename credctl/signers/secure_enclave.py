"""The device key in the Mac's Secure Enclave, reached through the native shim.

The Objective-C side only creates, finds, signs and deletes; encoding (X9.63
point to SubjectPublicKeyInfo, DER signature to raw R||S) happens here.
"""

from __future__ import annotations

import sys
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from credctl.errors import AuthenticationCancelled, DeviceKeyError, SigningError
from credctl.keys import der_signature_to_raw

# Mirrors the CREDCTL_SE_* codes in native/credctl_native.h.
SE_OK = 0
SE_CANCELLED = 1
SE_NOT_FOUND = 2
_POLICIES = {"none": 0, "any": 1, "fingerprint": 2}
_ERROR_CAP = 512
_MAX_SIGNATURE = 80
_X963_POINT = 65


def _native() -> tuple[Any, Any]:
    if sys.platform != "darwin":
        raise DeviceKeyError(
            "the Secure Enclave backend is only available on macOS; "
            "use `credctl init --backend software` here"
        )
    from credctl._native import ffi, lib  # type: ignore[attr-defined,unused-ignore]

    return ffi, lib


def _spki_from_x963(point: bytes) -> bytes:
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _error_text(ffi: Any, err: Any) -> str:
    return str(ffi.string(err).decode(errors="replace"))


def _public_key(function_name: str, *args: Any) -> tuple[int, bytes, str]:
    """Call a shim function that hands back the public key as an X9.63 point.

    Returns the shim's code, the key as DER SubjectPublicKeyInfo (empty unless
    the code is SE_OK) and the shim's error text.
    """
    ffi, lib = _native()
    point = ffi.new("unsigned char[]", _X963_POINT)
    point_len = ffi.new("size_t *", _X963_POINT)
    err = ffi.new("char[]", _ERROR_CAP)
    rc = getattr(lib, function_name)(*args, point, point_len, err, _ERROR_CAP)
    if rc != SE_OK:
        return rc, b"", _error_text(ffi, err)
    return rc, _spki_from_x963(bytes(ffi.buffer(point, point_len[0]))), ""


class SecureEnclaveSigner:
    backend = "secure_enclave"

    def __init__(self, key_tag: str, public_key_der: bytes) -> None:
        self.key_tag = key_tag
        self._public_key_der = public_key_der

    @classmethod
    def create(cls, key_tag: str, biometric: str) -> SecureEnclaveSigner:
        rc, der, error = _public_key(
            "credctl_se_create_key", key_tag.encode(), _POLICIES[biometric]
        )
        if rc != SE_OK:
            raise DeviceKeyError(f"Secure Enclave key creation failed: {error}")
        return cls(key_tag, der)

    @classmethod
    def open(cls, key_tag: str) -> SecureEnclaveSigner:
        rc, der, error = _public_key("credctl_se_copy_public_key", key_tag.encode())
        if rc == SE_NOT_FOUND:
            raise DeviceKeyError(
                f"no Secure Enclave key with tag {key_tag!r}: "
                "run `credctl init --force` to create a new identity"
            )
        if rc != SE_OK:
            raise DeviceKeyError(f"Secure Enclave key lookup failed: {error}")
        return cls(key_tag, der)

    def public_key_der(self) -> bytes:
        return self._public_key_der

    def sign(self, message: bytes, reason: str) -> bytes:
        ffi, lib = _native()
        signature = ffi.new("unsigned char[]", _MAX_SIGNATURE)
        signature_len = ffi.new("size_t *", _MAX_SIGNATURE)
        err = ffi.new("char[]", _ERROR_CAP)
        rc = lib.credctl_se_sign(
            self.key_tag.encode(),
            reason.encode(),
            message,
            len(message),
            signature,
            signature_len,
            err,
            _ERROR_CAP,
        )
        if rc == SE_CANCELLED:
            raise AuthenticationCancelled("authentication cancelled")
        if rc != SE_OK:
            raise SigningError(f"Secure Enclave signing failed: {_error_text(ffi, err)}")
        try:
            return der_signature_to_raw(bytes(ffi.buffer(signature, signature_len[0])))
        except ValueError as exc:
            raise SigningError(
                f"the Secure Enclave returned an unusable signature ({exc})"
            ) from None

    def delete(self) -> None:
        delete_keys_with_tag(self.key_tag)


def delete_keys_with_tag(key_tag: str) -> None:
    """Delete every Secure Enclave key carrying ``key_tag`` (used by init --force)."""
    ffi, lib = _native()
    err = ffi.new("char[]", _ERROR_CAP)
    if lib.credctl_se_delete_keys(key_tag.encode(), err, _ERROR_CAP) != SE_OK:
        raise DeviceKeyError(f"Secure Enclave key deletion failed: {_error_text(ffi, err)}")
