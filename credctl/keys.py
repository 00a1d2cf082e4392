"""Public-key identities: device_id, kid, PEM/DER handling and signature encoding."""

from __future__ import annotations

import base64
import hashlib

P256_COORDINATE_BYTES = 32


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JOSE uses it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def device_id(public_key_der: bytes) -> str:
    """``SHA256:`` + standard base64 of SHA-256 over the DER SubjectPublicKeyInfo."""
    digest = hashlib.sha256(public_key_der).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii")


def key_id(public_key_der: bytes) -> str:
    """The JWT ``kid``: first 16 chars of unpadded base64url(SHA-256(DER SPKI))."""
    return b64url(hashlib.sha256(public_key_der).digest())[:16]


def public_key_pem(public_key_der: bytes) -> bytes:
    body = base64.encodebytes(public_key_der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN PUBLIC KEY-----\n" + b"\n".join(lines) + b"\n-----END PUBLIC KEY-----\n"


def _read_der_length(data: bytes, offset: int) -> tuple[int, int]:
    first = data[offset]
    offset += 1
    if first < 0x80:
        return first, offset
    count = first & 0x7F
    if count == 0 or count > 2 or offset + count > len(data):
        raise ValueError("bad DER length")
    return int.from_bytes(data[offset : offset + count], "big"), offset + count


def der_signature_to_raw(signature: bytes) -> bytes:
    """Convert an ECDSA-Sig-Value (DER SEQUENCE of two INTEGERs) to raw R||S, 64 bytes.

    The Secure Enclave and OpenSSL return DER, where R and S are minimal signed
    integers: 31 bytes (or fewer) when the top bytes are zero, 33 bytes when the
    top bit is set. JWS needs each as exactly 32 big-endian bytes.
    """
    try:
        if signature[0] != 0x30:
            raise ValueError("not a DER SEQUENCE")
        seq_len, offset = _read_der_length(signature, 1)
        if offset + seq_len != len(signature):
            raise ValueError("DER SEQUENCE length does not match the signature length")
        parts = []
        for _ in range(2):
            if signature[offset] != 0x02:
                raise ValueError("expected a DER INTEGER")
            length, offset = _read_der_length(signature, offset + 1)
            value = signature[offset : offset + length]
            if length == 0 or len(value) != length:
                raise ValueError("truncated DER INTEGER")
            if value[0] & 0x80:
                raise ValueError("negative DER INTEGER")
            number = int.from_bytes(value, "big")
            if number == 0 or number.bit_length() > P256_COORDINATE_BYTES * 8:
                raise ValueError("DER INTEGER out of range for P-256")
            parts.append(number.to_bytes(P256_COORDINATE_BYTES, "big"))
            offset += length
        if offset != len(signature):
            raise ValueError("trailing bytes after the DER SEQUENCE")
    except IndexError:
        raise ValueError("truncated DER signature") from None
    return parts[0] + parts[1]


def raw_signature_to_der(raw: bytes) -> bytes:
    """Inverse of der_signature_to_raw, used to verify with cryptography."""
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    if len(raw) != 2 * P256_COORDINATE_BYTES:
        raise ValueError("raw P-256 signature must be 64 bytes")
    r = int.from_bytes(raw[:P256_COORDINATE_BYTES], "big")
    s = int.from_bytes(raw[P256_COORDINATE_BYTES:], "big")
    return encode_dss_signature(r, s)
