"""A P-256 key kept as device.key (PKCS#8 PEM, 0600). Not hardware-bound."""

from __future__ import annotations

import contextlib
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from credctl.errors import DeviceKeyError, SigningError
from credctl.home import PRIVATE_KEY_FILE, write_private_file
from credctl.keys import der_signature_to_raw


class SoftwareSigner:
    backend = "software"

    def __init__(self, path: Path, key: ec.EllipticCurvePrivateKey) -> None:
        self.path = path
        self._key = key

    @classmethod
    def create(cls, home: Path) -> SoftwareSigner:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path = home / PRIVATE_KEY_FILE
        write_private_file(path, pem)
        return cls(path, key)

    @classmethod
    def open(cls, home: Path) -> SoftwareSigner:
        path = home / PRIVATE_KEY_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise DeviceKeyError(
                f"{path} is missing: the software device key is gone; "
                "run `credctl init --force` to create a new identity"
            ) from None
        except OSError as exc:
            raise DeviceKeyError(f"{path}: cannot be read ({exc.strerror})") from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise DeviceKeyError(
                f"{path} is not a PKCS#8 PEM private key; "
                "run `credctl init --force` to create a new identity"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise DeviceKeyError(f"{path} does not hold a P-256 key")
        return cls(path, key)

    def public_key_der(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, message: bytes, reason: str) -> bytes:
        del reason  # no prompt: a software key has no user-verification gate
        try:
            return der_signature_to_raw(self._key.sign(message, ec.ECDSA(hashes.SHA256())))
        except ValueError as exc:
            raise SigningError(f"the software key produced an unusable signature ({exc})") from None

    def delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
