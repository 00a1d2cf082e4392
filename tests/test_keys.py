"""Fingerprints, key ids and signature encoding, checked against independent computations."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from credctl.keys import der_signature_to_raw, device_id, key_id, raw_signature_to_der


def _spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_device_id_and_kid_match_an_independent_computation() -> None:
    der = _spki(ec.generate_private_key(ec.SECP256R1()))
    digest = hashlib.sha256(der).digest()
    assert device_id(der) == "SHA256:" + base64.b64encode(digest).decode()
    expected_kid = base64.urlsafe_b64encode(digest).decode().rstrip("=")[:16]
    assert key_id(der) == expected_kid
    assert len(key_id(der)) == 16 and "=" not in key_id(der)


@pytest.mark.parametrize(
    ("r", "s"),
    [
        (1, 1),  # one-byte integers
        (0x7F << 248, 0x80 << 248),  # top bit clear / set: 32 and 33 DER bytes
        ((1 << 255) + 12345, 2**200 + 7),  # 33-byte R with a leading 0x00, short S
        (0xFF, (1 << 256) - 1),  # short R, full-width S
    ],
)
def test_der_to_raw_pads_and_strips_each_integer_to_32_bytes(r: int, s: int) -> None:
    raw = der_signature_to_raw(encode_dss_signature(r, s))
    assert len(raw) == 64
    assert int.from_bytes(raw[:32], "big") == r
    assert int.from_bytes(raw[32:], "big") == s
    assert decode_dss_signature(raw_signature_to_der(raw)) == (r, s)


def test_der_to_raw_round_trips_real_signatures() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    for i in range(300):
        der = key.sign(f"message {i}".encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        raw = der_signature_to_raw(der)
        assert raw == r.to_bytes(32, "big") + s.to_bytes(32, "big")
        key.public_key().verify(
            raw_signature_to_der(raw), f"message {i}".encode(), ec.ECDSA(hashes.SHA256())
        )


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\x30",
        b"\x31\x06\x02\x01\x01\x02\x01\x01",  # SET, not SEQUENCE
        b"\x30\x06\x02\x01\x01\x02\x01",  # truncated
        b"\x30\x07\x02\x01\x01\x02\x01\x01\x00",  # trailing byte
        b"\x30\x06\x02\x01\x81\x02\x01\x01",  # negative R
        b"\x30\x06\x02\x01\x00\x02\x01\x01",  # zero R
        b"\x30\x26\x02\x21\x01" + b"\x00" * 32 + b"\x02\x01\x01",  # R wider than 256 bits
    ],
)
def test_der_to_raw_rejects_malformed_input(bad: bytes) -> None:
    with pytest.raises(ValueError):
        der_signature_to_raw(bad)
