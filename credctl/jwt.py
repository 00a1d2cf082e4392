"""ES256 JWTs signed by the device key and checked against device.pub before use."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from credctl.config import Config
from credctl.errors import DeviceKeyError
from credctl.keys import b64url, key_id, raw_signature_to_der
from credctl.signers import Signer

AWS_AUDIENCE = "sts.amazonaws.com"
AWS_TOKEN_LIFETIME_SECONDS = 300


def load_device_public_key(config: Config) -> bytes:
    """The DER SubjectPublicKeyInfo from device.pub; DeviceKeyError when missing or bad."""
    path = config.public_key_path
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        raise DeviceKeyError(
            f"{path} is missing: run `credctl init --force` to create a new identity"
        ) from None
    except OSError as exc:
        raise DeviceKeyError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise DeviceKeyError(f"{path} is not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise DeviceKeyError(f"{path} does not hold a P-256 public key")
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def build_claims(
    config: Config, issuer: str, audience: str, lifetime_seconds: int, now: float | None = None
) -> dict[str, Any]:
    issued_at = int(time.time() if now is None else now)
    return {
        "iss": issuer,
        "sub": config.device_id,
        "aud": audience,
        "iat": issued_at,
        "exp": issued_at + lifetime_seconds,
        "jti": secrets.token_hex(16),
    }


def sign_jwt(signer: Signer, public_key_der: bytes, claims: dict[str, Any], reason: str) -> str:
    """Sign ``claims`` as a compact ES256 JWS with the device key."""
    header = {"alg": "ES256", "typ": "JWT", "kid": key_id(public_key_der)}
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    signature = signer.sign(signing_input.encode("ascii"), reason)
    return signing_input + "." + b64url(signature)


def verify_jwt_signature(token: str, public_key_der: bytes) -> None:
    """Raise DeviceKeyError unless ``token`` carries a valid signature by ``public_key_der``."""
    import base64

    signing_input, _, encoded_signature = token.rpartition(".")
    padded = encoded_signature + "=" * (-len(encoded_signature) % 4)
    key = serialization.load_der_public_key(public_key_der)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    try:
        raw = base64.urlsafe_b64decode(padded)
        key.verify(raw_signature_to_der(raw), signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise DeviceKeyError(
            "the device key does not match device.pub: the signature did not verify. "
            "Run `credctl init --force` to create a consistent identity"
        ) from None


def issue_device_jwt(
    config: Config,
    signer: Signer,
    issuer: str,
    audience: str,
    lifetime_seconds: int,
    reason: str,
    now: float | None = None,
) -> str:
    """Build, sign and verify (against device.pub) a JWT for ``audience``."""
    public_key_der = load_device_public_key(config)
    claims = build_claims(config, issuer, audience, lifetime_seconds, now)
    token = sign_jwt(signer, public_key_der, claims, reason)
    verify_jwt_signature(token, public_key_der)
    return token
