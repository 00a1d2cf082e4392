"""The Python side of the Secure Enclave backend, against a stand-in for the shim.

The Objective-C shim builds only on macOS; here a fake ``lib`` with the shim's
C signatures (real cffi buffers) plays it, backed by a software key, so the
encoding and error mapping around the shim are checked on every platform.
"""

from __future__ import annotations

from typing import Any

import pytest
from cffi import FFI
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from credctl.errors import AuthenticationCancelled, DeviceKeyError, SigningError
from credctl.keys import raw_signature_to_der
from credctl.signers import secure_enclave

ffi = FFI()


def _bytes(value: Any) -> bytes:
    """A ``const char *`` argument: Python passes bytes, which cffi would convert."""
    return value if isinstance(value, bytes) else ffi.string(value)


class FakeShim:
    """Implements the credctl_se_* calls with the header's codes."""

    def __init__(self) -> None:
        self.keys: dict[bytes, ec.EllipticCurvePrivateKey] = {}
        self.sign_result = secure_enclave.SE_OK
        self.reasons: list[bytes] = []

    def _point(self, tag: bytes, out: Any, out_len: Any) -> int:
        point = (
            self.keys[tag]
            .public_key()
            .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        )
        ffi.memmove(out, point, len(point))
        out_len[0] = len(point)
        return secure_enclave.SE_OK

    def credctl_se_create_key(self, tag, policy, out, out_len, err, cap):
        self.keys[_bytes(tag)] = ec.generate_private_key(ec.SECP256R1())
        return self._point(_bytes(tag), out, out_len)

    def credctl_se_copy_public_key(self, tag, out, out_len, err, cap):
        if _bytes(tag) not in self.keys:
            return secure_enclave.SE_NOT_FOUND
        return self._point(_bytes(tag), out, out_len)

    def credctl_se_sign(self, tag, reason, msg, msg_len, sig, sig_len, err, cap):
        self.reasons.append(_bytes(reason))
        if self.sign_result != secure_enclave.SE_OK:
            text = b"LAError -1: biometry lockout"
            ffi.memmove(err, text + b"\0", len(text) + 1)
            return self.sign_result
        der = self.keys[_bytes(tag)].sign(_bytes(msg)[:msg_len], ec.ECDSA(hashes.SHA256()))
        assert len(der) <= sig_len[0]
        ffi.memmove(sig, der, len(der))
        sig_len[0] = len(der)
        return secure_enclave.SE_OK

    def credctl_se_delete_keys(self, tag, err, cap):
        self.keys.pop(_bytes(tag), None)
        return secure_enclave.SE_OK


@pytest.fixture
def shim(monkeypatch: pytest.MonkeyPatch) -> FakeShim:
    fake = FakeShim()
    monkeypatch.setattr(secure_enclave, "_native", lambda: (ffi, fake))
    return fake


def test_create_open_sign_round_trip(shim: FakeShim) -> None:
    created = secure_enclave.SecureEnclaveSigner.create("tag.a", "any")
    opened = secure_enclave.SecureEnclaveSigner.open("tag.a")
    assert created.public_key_der() == opened.public_key_der()
    public = serialization.load_der_public_key(opened.public_key_der())
    assert isinstance(public, ec.EllipticCurvePublicKey)

    raw = opened.sign(b"payload", "sign in to AWS")
    assert len(raw) == 64
    public.verify(raw_signature_to_der(raw), b"payload", ec.ECDSA(hashes.SHA256()))
    assert shim.reasons == [b"sign in to AWS"]


def test_cancelled_prompt_is_distinct_from_a_failure(shim: FakeShim) -> None:
    signer = secure_enclave.SecureEnclaveSigner.create("tag.b", "fingerprint")
    shim.sign_result = secure_enclave.SE_CANCELLED
    with pytest.raises(AuthenticationCancelled, match="authentication cancelled"):
        signer.sign(b"x", "reason")
    shim.sign_result = 3
    with pytest.raises(SigningError, match="biometry lockout") as failure:
        signer.sign(b"x", "reason")
    assert not isinstance(failure.value, AuthenticationCancelled)


def test_missing_key_and_delete(shim: FakeShim) -> None:
    with pytest.raises(DeviceKeyError, match="init --force"):
        secure_enclave.SecureEnclaveSigner.open("tag.none")
    secure_enclave.SecureEnclaveSigner.create("tag.c", "none").delete()
    with pytest.raises(DeviceKeyError):
        secure_enclave.SecureEnclaveSigner.open("tag.c")
