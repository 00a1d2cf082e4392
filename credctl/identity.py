"""The device identity: create, inspect and remove the key and its files."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from credctl import signers
from credctl.config import DEFAULT_KEY_TAG, Config, load_config, new_config
from credctl.errors import CredctlError, NotInitialisedError
from credctl.home import (
    CONFIG_FILE,
    GCP_CREDENTIAL_FILE,
    LOG_FILE,
    PRIVATE_KEY_FILE,
    PUBLIC_KEY_FILE,
    ensure_home,
    write_private_file,
)
from credctl.jwt import load_device_public_key, sign_jwt, verify_jwt_signature
from credctl.keys import device_id, key_id, public_key_pem
from credctl.timestamps import rfc3339

NOT_HARDWARE_BOUND = (
    "software key: stored in device.key, NOT hardware-bound; "
    "anyone who can read that file can act as this device"
)


@dataclass(frozen=True)
class InitResult:
    config: Config
    created: bool


def _display_path(path: Path) -> str:
    home = Path.home()
    try:
        return "~/" + str(path.relative_to(home))
    except ValueError:
        return str(path)


def init_identity(
    home: Path,
    backend: str,
    key_tag: str = DEFAULT_KEY_TAG,
    biometric: str | None = None,
    force: bool = False,
) -> InitResult:
    """Create the device key, device.pub and config.json; keep an existing identity
    unless ``force``."""
    policy = biometric or signers.default_biometric(backend)
    signers.check_biometric(backend, policy)
    ensure_home(home)
    # A config that cannot be read raises here, even with --force: it is never
    # overwritten, the user fixes or removes it first.
    try:
        existing: Config | None = load_config(home)
    except NotInitialisedError:
        existing = None
    if existing is not None and not force:
        return InitResult(existing, created=False)
    if existing is not None:
        remove_key(home, existing.key_tag, existing.backend)
    remove_key(home, key_tag, backend)
    signer = signers.create_signer(backend, home, key_tag, policy)
    public_der = signer.public_key_der()
    public_path = home / PUBLIC_KEY_FILE
    write_private_file(public_path, public_key_pem(public_der))
    values: dict[str, Any] = {
        "device_id": device_id(public_der),
        "key_tag": key_tag,
        "created_at": rfc3339(),
        "enclave_type": backend,
        "public_key_path": _display_path(public_path),
        "biometric": policy,
    }
    previous = existing.raw if existing is not None else {}
    # A new identity keeps the cloud sections and the keys credctl does not know.
    merged = {k: v for k, v in previous.items() if k != "version"}
    merged.update(values)
    config = new_config(home, merged)
    config.save()
    return InitResult(config, created=True)


def remove_key(home: Path, key_tag: str, backend: str) -> None:
    """Delete the private key (every duplicate with ``key_tag`` in the enclave)."""
    if backend == signers.SECURE_ENCLAVE:
        from credctl.signers.secure_enclave import delete_keys_with_tag

        delete_keys_with_tag(key_tag)
    with contextlib.suppress(FileNotFoundError):
        (home / PRIVATE_KEY_FILE).unlink()


def probe_key(config: Config, home: Path) -> str | None:
    """Load the key and sign a probe; None when usable, else what is wrong.

    On the Secure Enclave a probe would prompt for Touch ID, so there only the
    key's presence and its match with device.pub are checked.
    """
    try:
        public_der = load_device_public_key(config)
        signer = signers.open_signer(config.backend, home, config.key_tag)
        if signer.public_key_der() != public_der:
            return "the device key does not match device.pub"
        if config.backend == signers.SOFTWARE:
            token = sign_jwt(signer, public_der, {"probe": int(time.time())}, "status probe")
            verify_jwt_signature(token, public_der)
    except CredctlError as exc:
        return str(exc)
    return None


def status_document(home: Path) -> dict[str, Any]:
    """Everything `credctl status` shows, as one JSON-ready document."""
    try:
        config = load_config(home)
    except NotInitialisedError:
        return {"initialised": False, "home": str(home)}
    problem = probe_key(config, home)
    document: dict[str, Any] = {
        "initialised": True,
        "home": str(home),
        "device_id": config.device_id,
        "key_id": None,
        "backend": config.backend,
        "hardware_bound": config.backend == signers.SECURE_ENCLAVE,
        "key_tag": config.key_tag,
        "biometric": config.biometric,
        "created_at": config.created_at,
        "public_key_path": str(config.public_key_path),
        "key_usable": problem is None,
        "key_problem": problem,
    }
    with contextlib.suppress(CredctlError):
        document["key_id"] = key_id(load_device_public_key(config))
    for section in ("aws", "gcp"):
        if config.raw.get(section):
            document[section] = config.raw[section]
    return document


def reset_identity(home: Path) -> list[Path]:
    """Delete the device key and credctl's files; return what was removed."""
    removed: list[Path] = []
    try:
        config: Config | None = load_config(home)
    except CredctlError:
        config = None
    if config is not None and config.backend == signers.SECURE_ENCLAVE:
        remove_key(home, config.key_tag, config.backend)
    elif config is None and signers.default_backend() == signers.SECURE_ENCLAVE:
        # config.json is gone or unreadable: the tag it named is unknown, so the
        # key under the default tag, the one `init` creates, is what is removed.
        remove_key(home, DEFAULT_KEY_TAG, signers.SECURE_ENCLAVE)
    for name in (PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, CONFIG_FILE, GCP_CREDENTIAL_FILE, LOG_FILE):
        path = home / name
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed
