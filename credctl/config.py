"""config.json: load, validate and save the device identity and cloud settings.

The file is a superset of the original credctl's: keys credctl does not know
are kept when it rewrites the file. A file that cannot be read is never
overwritten.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from credctl.errors import ConfigError, NotInitialisedError
from credctl.home import CONFIG_FILE, write_private_file

CONFIG_VERSION = 1
DEFAULT_KEY_TAG = "com.crzy.credctl.device-key"
BACKENDS = ("secure_enclave", "software")
BIOMETRIC_POLICIES = ("any", "fingerprint", "none")

# Field name -> accepted types. bool is excluded from int fields below.
_TOP_LEVEL: dict[str, type | tuple[type, ...]] = {
    "version": int,
    "device_id": str,
    "key_tag": str,
    "created_at": str,
    "enclave_type": str,
    "public_key_path": str,
    "biometric": str,
    "aws": dict,
    "gcp": dict,
}
_AWS_FIELDS: dict[str, type | tuple[type, ...]] = {
    "role_arn": str,
    "issuer_url": str,
    "region": str,
    "s3_bucket": str,
    "sts_endpoint": str,
    "duration_seconds": int,
}
_GCP_FIELDS: dict[str, type | tuple[type, ...]] = {
    "project_number": str,
    "workload_pool_id": str,
    "provider_id": str,
    "service_account_email": str,
    "issuer_url": str,
    "credential_file_path": str,
    "sts_endpoint": str,
    "iam_credentials_endpoint": str,
    "token_lifetime_seconds": int,
}
_REQUIRED_TOP = ("device_id", "enclave_type", "public_key_path")
_REQUIRED_AWS = ("role_arn", "issuer_url")
_REQUIRED_GCP = (
    "project_number",
    "workload_pool_id",
    "provider_id",
    "service_account_email",
    "issuer_url",
)

DEFAULT_GCP_STS_ENDPOINT = "https://sts.googleapis.com/v1/token"
DEFAULT_GCP_IAM_CREDENTIALS_ENDPOINT = "https://iamcredentials.googleapis.com"


DEFAULT_AWS_REGION = "us-east-1"


@dataclass(frozen=True)
class AwsSettings:
    role_arn: str
    issuer_url: str
    region: str = DEFAULT_AWS_REGION
    s3_bucket: str | None = None
    sts_endpoint: str | None = None
    duration_seconds: int = 3600


@dataclass(frozen=True)
class GcpSettings:
    project_number: str
    workload_pool_id: str
    provider_id: str
    service_account_email: str
    issuer_url: str
    credential_file_path: str | None = None
    sts_endpoint: str = DEFAULT_GCP_STS_ENDPOINT
    iam_credentials_endpoint: str = DEFAULT_GCP_IAM_CREDENTIALS_ENDPOINT
    token_lifetime_seconds: int = 3600

    @property
    def audience(self) -> str:
        return (
            f"//iam.googleapis.com/projects/{self.project_number}/locations/global/"
            f"workloadIdentityPools/{self.workload_pool_id}/providers/{self.provider_id}"
        )


class Config:
    """The parsed config.json; ``raw`` keeps every key, known or not."""

    def __init__(self, path: Path, raw: dict[str, Any]) -> None:
        self.path = path
        self.raw = raw

    @property
    def device_id(self) -> str:
        return str(self.raw["device_id"])

    @property
    def key_tag(self) -> str:
        return str(self.raw.get("key_tag") or DEFAULT_KEY_TAG)

    @property
    def backend(self) -> str:
        return str(self.raw["enclave_type"])

    @property
    def biometric(self) -> str:
        return str(self.raw.get("biometric") or "none")

    @property
    def created_at(self) -> str:
        return str(self.raw.get("created_at", ""))

    @property
    def public_key_path(self) -> Path:
        return Path(str(self.raw["public_key_path"])).expanduser()

    @property
    def aws(self) -> AwsSettings | None:
        section = self.raw.get("aws")
        if not section:
            return None
        fields = {k: v for k, v in section.items() if k in _AWS_FIELDS and v is not None}
        return AwsSettings(**fields)

    @property
    def gcp(self) -> GcpSettings | None:
        section = self.raw.get("gcp")
        if not section:
            return None
        fields = {k: v for k, v in section.items() if k in _GCP_FIELDS and v is not None}
        return GcpSettings(**fields)

    def update_section(self, name: str, values: dict[str, Any]) -> None:
        """Merge ``values`` into the ``name`` section, keeping keys not given."""
        section = dict(self.raw.get(name) or {})
        section.update({k: v for k, v in values.items() if v is not None})
        self.raw[name] = section
        _validate(self.path, self.raw)

    def save(self) -> None:
        save_config(self)


def _check_fields(
    path: Path,
    data: dict[str, Any],
    fields: dict[str, type | tuple[type, ...]],
    prefix: str,
) -> None:
    for name, expected in fields.items():
        if name not in data or data[name] is None:
            continue
        value = data[name]
        wrong_bool = expected is int and isinstance(value, bool)
        if wrong_bool or not isinstance(value, expected):
            type_name = {str: "a string", int: "an integer", dict: "an object"}.get(
                expected if isinstance(expected, type) else dict, "a value"
            )
            raise ConfigError(
                f"{path}: field '{prefix}{name}' must be {type_name}, "
                f"got {type(value).__name__} {json.dumps(value)[:40]}"
            )


def _require(path: Path, data: dict[str, Any], names: tuple[str, ...], prefix: str) -> None:
    for name in names:
        if not data.get(name):
            raise ConfigError(f"{path}: field '{prefix}{name}' is missing")


def _validate(path: Path, raw: Any) -> None:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level")
    _check_fields(path, raw, _TOP_LEVEL, "")
    _require(path, raw, _REQUIRED_TOP, "")
    if raw["enclave_type"] not in BACKENDS:
        raise ConfigError(
            f"{path}: field 'enclave_type' must be one of {', '.join(BACKENDS)}, "
            f"got {raw['enclave_type']!r}"
        )
    if raw.get("biometric") is not None and raw["biometric"] not in BIOMETRIC_POLICIES:
        raise ConfigError(
            f"{path}: field 'biometric' must be one of {', '.join(BIOMETRIC_POLICIES)}, "
            f"got {raw['biometric']!r}"
        )
    for section, fields, required in (
        ("aws", _AWS_FIELDS, _REQUIRED_AWS),
        ("gcp", _GCP_FIELDS, _REQUIRED_GCP),
    ):
        if raw.get(section):
            _check_fields(path, raw[section], fields, f"{section}.")
            _require(path, raw[section], required, f"{section}.")


def config_path(home: Path) -> Path:
    return home / CONFIG_FILE


def load_config(home: Path) -> Config:
    """Read and validate config.json; raise NotInitialisedError when there is none."""
    path = config_path(home)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotInitialisedError(
            f"Not initialised: {path} does not exist. Run `credctl init` first."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.__class__.__name__}: {exc})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "fix or remove the file, credctl will not overwrite it"
        ) from None
    _validate(path, raw)
    return Config(path, raw)


def new_config(home: Path, values: dict[str, Any]) -> Config:
    raw = {"version": CONFIG_VERSION, **values}
    path = config_path(home)
    _validate(path, raw)
    return Config(path, raw)


def save_config(config: Config) -> None:
    """Write config.json atomically, 0600."""
    _validate(config.path, config.raw)
    data = json.dumps(config.raw, indent=2, sort_keys=False) + "\n"
    write_private_file(config.path, data.encode("utf-8"))
