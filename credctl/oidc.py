"""OIDC discovery document and JWKS for the device key's issuer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from credctl.errors import ConfigError, UsageError
from credctl.keys import b64url, key_id

DISCOVERY_PATH = ".well-known/openid-configuration"
JWKS_PATH = "keys.json"


def discovery_document(issuer_url: str) -> dict[str, Any]:
    issuer = issuer_url.rstrip("/")
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/{JWKS_PATH}",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "claims_supported": ["sub", "aud", "exp", "iat", "iss", "jti"],
    }


def public_jwk(public_key_der: bytes) -> dict[str, str]:
    key = serialization.load_der_public_key(public_key_der)
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise UsageError("the device public key is not an EC key")
    numbers = key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(numbers.x.to_bytes(32, "big")),
        "y": b64url(numbers.y.to_bytes(32, "big")),
        "use": "sig",
        "alg": "ES256",
        "kid": key_id(public_key_der),
    }


def merge_jwks(public_key_der: bytes, existing: dict[str, Any] | None) -> dict[str, Any]:
    """A JWKS holding the device key, keeping every other key of ``existing``.

    After a key rotation the old key stays published until the user removes it,
    so tokens signed by it keep verifying while the cloud side catches up.
    """
    jwk = public_jwk(public_key_der)
    others = [k for k in (existing or {}).get("keys", []) if k.get("kid") != jwk["kid"]]
    return {"keys": [*others, jwk]}


def parse_jwks(data: bytes, location: str) -> dict[str, Any]:
    """An existing JWKS document; ConfigError naming ``location`` when it is not one.

    A broken JWKS is never overwritten: it may hold keys someone relies on.
    """
    try:
        jwks = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"{location}: existing JWKS is not valid JSON ({exc}); fix or move it, "
            "credctl will not overwrite it"
        ) from None
    keys = jwks.get("keys", []) if isinstance(jwks, dict) else None
    if not isinstance(keys, list) or not all(isinstance(key, dict) for key in keys):
        raise ConfigError(
            f"{location}: field 'keys' must be a list of JWK objects; fix or move it, "
            "credctl will not overwrite it"
        )
    return dict(jwks)


def read_jwks(path: Path) -> dict[str, Any] | None:
    """An existing keys.json, or None; a broken one is an error, never overwritten."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: existing JWKS cannot be read ({exc.strerror})") from None
    return parse_jwks(data, str(path))


def render_json(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


def write_documents(public_key_der: bytes, issuer_url: str, output_dir: Path) -> list[Path]:
    """Write the discovery document and keys.json under ``output_dir``."""
    discovery_path = output_dir / DISCOVERY_PATH
    jwks_path = output_dir / JWKS_PATH
    jwks = merge_jwks(public_key_der, read_jwks(jwks_path))
    discovery_path.parent.mkdir(parents=True, exist_ok=True)
    discovery_path.write_bytes(render_json(discovery_document(issuer_url)))
    jwks_path.write_bytes(render_json(jwks))
    return [discovery_path, jwks_path]
