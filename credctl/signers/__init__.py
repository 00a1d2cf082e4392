"""Key backends behind one small protocol: a public key and a signature.

``software`` keeps a PKCS#8 key in the credctl home; ``secure_enclave`` keeps
the key in the Mac's Secure Enclave and signs through the native shim.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Protocol

from credctl.errors import DeviceKeyError, UsageError


class Signer(Protocol):
    backend: str

    def public_key_der(self) -> bytes:
        """The DER SubjectPublicKeyInfo of the device key."""
        ...

    def sign(self, message: bytes, reason: str) -> bytes:
        """ECDSA P-256 / SHA-256 over ``message``, as raw R||S (64 bytes).

        ``reason`` is shown to the user when the backend prompts (Touch ID).
        """
        ...

    def delete(self) -> None:
        """Remove the private key from the backend."""
        ...


SOFTWARE = "software"
SECURE_ENCLAVE = "secure_enclave"


def default_backend() -> str:
    return SECURE_ENCLAVE if sys.platform == "darwin" else SOFTWARE


def default_biometric(backend: str) -> str:
    return "any" if backend == SECURE_ENCLAVE else "none"


def check_biometric(backend: str, biometric: str) -> None:
    if backend == SOFTWARE and biometric != "none":
        raise UsageError(
            f"--biometric {biometric} needs the Secure Enclave: a software key has no "
            "user-verification gate, so only --biometric none is accepted with "
            "--backend software"
        )


def create_signer(backend: str, home: Path, key_tag: str, biometric: str) -> Signer:
    """Create a new device key in ``backend``."""
    check_biometric(backend, biometric)
    if backend == SOFTWARE:
        from credctl.signers.software import SoftwareSigner

        return SoftwareSigner.create(home)
    from credctl.signers.secure_enclave import SecureEnclaveSigner

    return SecureEnclaveSigner.create(key_tag, biometric)


def open_signer(backend: str, home: Path, key_tag: str) -> Signer:
    """Open the existing device key; raise DeviceKeyError when it is gone."""
    if backend == SOFTWARE:
        from credctl.signers.software import SoftwareSigner

        return SoftwareSigner.open(home)
    if backend == SECURE_ENCLAVE:
        from credctl.signers.secure_enclave import SecureEnclaveSigner

        return SecureEnclaveSigner.open(key_tag)
    raise DeviceKeyError(f"unknown key backend {backend!r}")
