"""GCP workload identity federation for the device, through Google's public REST APIs.

The OIDC documents go to a GCS bucket readable by allUsers; a workload identity
pool and OIDC provider trust that issuer for this device's `sub` only; the
device's principal gets roles/iam.workloadIdentityUser on the service account.
Calls go through google-auth's AuthorizedSession; every API base URL is a field
of GcpEndpoints so tests can point them at a local server.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from google.auth.exceptions import GoogleAuthError

from credctl.cloud import (
    Action,
    CloudSetupError,
    Reporter,
    SetupProgress,
    StepFailed,
    StepResult,
    parse_published_jwks,
)
from credctl.config import load_config
from credctl.errors import UsageError
from credctl.jwt import load_device_public_key
from credctl.oidc import DISCOVERY_PATH, JWKS_PATH, discovery_document, merge_jwks, render_json
from credctl.validation import check_email, check_pool_id, check_url

DEFAULT_POOL_ID = "credctl-pool"
DEFAULT_PROVIDER_ID = "credctl-provider"
WORKLOAD_IDENTITY_USER = "roles/iam.workloadIdentityUser"
OBJECT_VIEWER = "roles/storage.objectViewer"
PUBLIC_MEMBER = "allUsers"
SUBJECT_MAPPING = {"google.subject": "assertion.sub"}
DOCUMENT_CACHE_CONTROL = "public, max-age=300"
HTTP_TIMEOUT_SECONDS = 30
# Long-running operations (pool/provider creation) usually finish in seconds.
OPERATION_POLLS = 30
OPERATION_POLL_INTERVAL_SECONDS = 2.0


@dataclass(frozen=True)
class GcpEndpoints:
    iam: str = "https://iam.googleapis.com"
    storage: str = "https://storage.googleapis.com"
    resource_manager: str = "https://cloudresourcemanager.googleapis.com"


@dataclass(frozen=True)
class GcpFederationRequest:
    device_id: str
    public_key_der: bytes
    project: str
    service_account_email: str
    pool_id: str = DEFAULT_POOL_ID
    provider_id: str = DEFAULT_PROVIDER_ID
    bucket: str | None = None


@dataclass(frozen=True)
class GcpFederation:
    project_number: str
    bucket: str
    issuer_url: str
    pool_id: str
    provider_id: str
    service_account_email: str
    audience: str


class ApiError(StepFailed):
    """A Google API answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def attribute_condition(device_id: str) -> str:
    """CEL admitting only this device's tokens (device ids hold no quote or backslash)."""
    return f"assertion.sub == {json.dumps(device_id)}"


def principal(project_number: str, pool_id: str, device_id: str) -> str:
    return (
        f"principal://iam.googleapis.com/projects/{project_number}/locations/global/"
        f"workloadIdentityPools/{pool_id}/subject/{device_id}"
    )


def provider_audience(project_number: str, pool_id: str, provider_id: str) -> str:
    return (
        f"//iam.googleapis.com/projects/{project_number}/locations/global/"
        f"workloadIdentityPools/{pool_id}/providers/{provider_id}"
    )


class GcpFederationSetup:
    """Creates or updates the GCP side with an authorized ``session``.

    Production passes ``google.auth.transport.requests.AuthorizedSession`` over
    ``google.auth.default()`` credentials; tests pass one over fixed credentials.
    ``sleep`` paces operation polling.
    """

    def __init__(
        self,
        session: requests.Session,
        progress: SetupProgress,
        endpoints: GcpEndpoints | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.session = session
        self.progress = progress
        self.endpoints = endpoints or GcpEndpoints()
        self.sleep = sleep

    def run(self, request: GcpFederationRequest) -> GcpFederation:
        numbers: list[str] = []
        self._step(
            "Looking up the GCP project",
            lambda: numbers.append(self._project_number(request.project)),
        )
        number = numbers[0]
        bucket = request.bucket or f"credctl-oidc-{number}"
        issuer_url = f"{self.endpoints.storage.rstrip('/')}/{bucket}"
        audience = provider_audience(number, request.pool_id, request.provider_id)
        steps: list[tuple[str, Callable[[], None]]] = [
            ("Creating the GCS bucket", lambda: self._ensure_bucket(request.project, bucket)),
            ("Allowing public read", lambda: self._ensure_public_read(bucket)),
            (
                "Uploading the OIDC documents",
                lambda: self._ensure_documents(bucket, issuer_url, request.public_key_der),
            ),
            (
                "Creating the workload identity pool",
                lambda: self._ensure_pool(number, request.pool_id),
            ),
            (
                "Creating the OIDC provider",
                lambda: self._ensure_provider(
                    number,
                    request.pool_id,
                    request.provider_id,
                    issuer_url,
                    audience,
                    request.device_id,
                ),
            ),
            (
                "Granting the service account",
                lambda: self._ensure_binding(
                    request.service_account_email,
                    principal(number, request.pool_id, request.device_id),
                ),
            ),
        ]
        for name, step in steps:
            self._step(name, step)
        return GcpFederation(
            project_number=number,
            bucket=bucket,
            issuer_url=issuer_url,
            pool_id=request.pool_id,
            provider_id=request.provider_id,
            service_account_email=request.service_account_email,
            audience=audience,
        )

    def _step(self, name: str, step: Callable[[], None]) -> None:
        try:
            step()
        except StepFailed as exc:
            raise self.progress.failure(name, exc) from None
        except GoogleAuthError as exc:
            raise self.progress.failure(
                name,
                StepFailed(
                    f"Google credentials failed ({exc.__class__.__name__}: {exc}); "
                    "run `gcloud auth application-default login` or set "
                    "GOOGLE_APPLICATION_CREDENTIALS"
                ),
            ) from None
        except requests.RequestException as exc:
            raise self.progress.failure(
                name, StepFailed(f"cannot reach the Google API ({exc.__class__.__name__})")
            ) from None

    # -- HTTP -------------------------------------------------------------

    def _call(
        self,
        method: str,
        url: str,
        body: Any = None,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        missing_ok: bool = False,
    ) -> Any:
        """JSON in, JSON out; None for a 404 when ``missing_ok``; ApiError otherwise."""
        response = self.session.request(
            method,
            url,
            json=body,
            data=data,
            headers=headers,
            timeout=HTTP_TIMEOUT_SECONDS,
        )
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code >= 400:
            raise ApiError(response.status_code, _error_message(response))
        if not response.content:
            return {}
        if response.headers.get("Content-Type", "").startswith("application/json"):
            return response.json()
        return response.content

    def _iam(self, path: str) -> str:
        return f"{self.endpoints.iam.rstrip('/')}/v1/{path}"

    def _storage(self, path: str) -> str:
        return f"{self.endpoints.storage.rstrip('/')}/{path}"

    def _wait(self, operation: Any) -> None:
        """Poll a long-running operation until it is done (bounded)."""
        for _ in range(OPERATION_POLLS):
            if not isinstance(operation, dict) or operation.get("done"):
                break
            self.sleep(OPERATION_POLL_INTERVAL_SECONDS)
            operation = self._call("GET", self._iam(operation["name"]))
        else:
            raise StepFailed(f"operation {operation.get('name')} did not finish in time")
        if isinstance(operation, dict) and operation.get("error"):
            raise StepFailed(str(operation["error"].get("message", operation["error"])))

    # -- steps ------------------------------------------------------------

    def _project_number(self, project: str) -> str:
        if project.isdigit():
            return project
        url = f"{self.endpoints.resource_manager.rstrip('/')}/v1/projects/{quote(project)}"
        found = self._call("GET", url, missing_ok=True)
        if not found or not found.get("projectNumber"):
            raise StepFailed(
                f"project {project!r} was not found or you cannot read it "
                "(needs resourcemanager.projects.get)"
            )
        return str(found["projectNumber"])

    def _ensure_bucket(self, project: str, bucket: str) -> None:
        resource = f"GCS bucket {bucket}"
        url = self._storage(f"storage/v1/b/{quote(bucket, safe='')}")
        try:
            existing = self._call("GET", url, missing_ok=True)
        except ApiError as exc:
            if exc.status == 403:
                raise StepFailed(
                    f"{resource} exists but you cannot use it (another project owns the "
                    "name, or you lack storage.buckets.get); choose another with --bucket"
                ) from None
            raise
        if existing is not None:
            self.progress.record(StepResult("unchanged", resource))
            return
        self._call(
            "POST",
            self._storage(f"storage/v1/b?project={quote(project)}"),
            {"name": bucket, "iamConfiguration": {"uniformBucketLevelAccess": {"enabled": True}}},
        )
        self.progress.record(
            StepResult("created", resource),
            removal=f"the GCS bucket {bucket} (with its objects)",
        )

    def _ensure_public_read(self, bucket: str) -> None:
        resource = f"public read of gs://{bucket}"
        url = self._storage(f"storage/v1/b/{quote(bucket, safe='')}/iam")
        policy = self._call("GET", url)
        if _add_member(policy, OBJECT_VIEWER, PUBLIC_MEMBER):
            try:
                self._call("PUT", url, policy)
            except ApiError as exc:
                if exc.status in (400, 412) and "public" in str(exc).lower():
                    raise StepFailed(
                        f"GCS refused public read on {bucket} ({exc}); public access "
                        "prevention on the bucket or the organisation forbids it"
                    ) from None
                raise
            self.progress.record(StepResult("created", resource, f"{PUBLIC_MEMBER}: objectViewer"))
        else:
            self.progress.record(StepResult("unchanged", resource))

    def _read_object(self, bucket: str, name: str) -> bytes | None:
        url = self._storage(
            f"storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}?alt=media"
        )
        response = self.session.request("GET", url, timeout=HTTP_TIMEOUT_SECONDS)
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise ApiError(response.status_code, _error_message(response))
        return response.content

    def _upload(self, bucket: str, name: str, body: bytes) -> None:
        boundary = "credctl-" + secrets.token_hex(12)
        metadata = json.dumps(
            {
                "name": name,
                "contentType": "application/json",
                "cacheControl": DOCUMENT_CACHE_CONTROL,
            }
        ).encode()
        payload = b"".join(
            [
                f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
                metadata,
                f"\r\n--{boundary}\r\nContent-Type: application/json\r\n\r\n".encode(),
                body,
                f"\r\n--{boundary}--\r\n".encode(),
            ]
        )
        self._call(
            "POST",
            self._storage(f"upload/storage/v1/b/{quote(bucket, safe='')}/o?uploadType=multipart"),
            data=payload,
            headers={"Content-Type": f"multipart/related; boundary={boundary}"},
        )

    def _ensure_documents(self, bucket: str, issuer_url: str, public_key_der: bytes) -> None:
        existing_jwks = self._read_object(bucket, JWKS_PATH)
        documents = {
            DISCOVERY_PATH: render_json(discovery_document(issuer_url)),
            JWKS_PATH: render_json(
                merge_jwks(
                    public_key_der,
                    parse_published_jwks(existing_jwks, f"gs://{bucket}/{JWKS_PATH}"),
                )
            ),
        }
        for name, body in documents.items():
            current = existing_jwks if name == JWKS_PATH else self._read_object(bucket, name)
            resource = f"{issuer_url}/{name}"
            if current == body:
                self.progress.record(StepResult("unchanged", resource))
                continue
            self._upload(bucket, name, body)
            self.progress.record(StepResult("created" if current is None else "updated", resource))

    def _ensure_pool(self, number: str, pool_id: str) -> None:
        resource = f"workload identity pool {pool_id}"
        parent = f"projects/{number}/locations/global/workloadIdentityPools"
        pool = self._call("GET", self._iam(f"{parent}/{pool_id}"), missing_ok=True)
        if pool is None:
            self._wait(
                self._call(
                    "POST",
                    self._iam(f"{parent}?workloadIdentityPoolId={quote(pool_id)}"),
                    {"displayName": "credctl devices", "description": "Created by credctl"},
                )
            )
            self.progress.record(
                StepResult("created", resource),
                removal=f"the workload identity pool {parent}/{pool_id}",
            )
        elif pool.get("state") == "DELETED":
            self._wait(self._call("POST", self._iam(f"{parent}/{pool_id}:undelete"), {}))
            self.progress.record(StepResult("updated", resource, "undeleted"))
        else:
            self.progress.record(StepResult("unchanged", resource))

    def _ensure_provider(
        self,
        number: str,
        pool_id: str,
        provider_id: str,
        issuer_url: str,
        audience: str,
        device_id: str,
    ) -> None:
        resource = f"OIDC provider {provider_id}"
        parent = f"projects/{number}/locations/global/workloadIdentityPools/{pool_id}/providers"
        wanted: dict[str, Any] = {
            "attributeMapping": SUBJECT_MAPPING,
            "attributeCondition": attribute_condition(device_id),
            "oidc": {"issuerUri": issuer_url, "allowedAudiences": [audience]},
        }
        provider = self._call("GET", self._iam(f"{parent}/{provider_id}"), missing_ok=True)
        if provider is None:
            body = {"displayName": "credctl device", **wanted}
            self._wait(
                self._call(
                    "POST",
                    self._iam(f"{parent}?workloadIdentityPoolProviderId={quote(provider_id)}"),
                    body,
                )
            )
            self.progress.record(
                StepResult("created", resource, f"issuer {issuer_url}, sub = {device_id}"),
                removal=f"the workload identity provider {parent}/{provider_id}",
            )
            return
        action: Action = "unchanged"
        if provider.get("state") == "DELETED":
            self._wait(self._call("POST", self._iam(f"{parent}/{provider_id}:undelete"), {}))
            action = "updated"
        differing = _differing_fields(provider, wanted)
        if differing:
            self._wait(
                self._call(
                    "PATCH",
                    self._iam(f"{parent}/{provider_id}?updateMask={','.join(differing)}"),
                    wanted,
                )
            )
            action = "updated"
        self.progress.record(
            StepResult(action, resource, f"changed {', '.join(differing)}" if differing else "")
        )

    def _ensure_binding(self, email: str, member: str) -> None:
        resource = f"{WORKLOAD_IDENTITY_USER} for this device on {email}"
        base = self._iam(f"projects/-/serviceAccounts/{quote(email, safe='@')}")
        policy = self._call("POST", f"{base}:getIamPolicy", {})
        if not _add_member(policy, WORKLOAD_IDENTITY_USER, member):
            self.progress.record(StepResult("unchanged", resource))
            return
        self._call("POST", f"{base}:setIamPolicy", {"policy": policy})
        self.progress.record(
            StepResult("created", resource, member),
            removal=f"the {WORKLOAD_IDENTITY_USER} binding of {member} on {email}",
        )


def _error_message(response: requests.Response) -> str:
    try:
        error = response.json().get("error")
    except ValueError:
        error = None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return response.reason or "error"


def _add_member(policy: dict[str, Any], role: str, member: str) -> bool:
    """Add ``member`` to ``role`` in an IAM policy in place; False if already there."""
    bindings = policy.setdefault("bindings", [])
    for binding in bindings:
        if binding.get("role") == role and not binding.get("condition"):
            if member in binding.get("members", []):
                return False
            binding.setdefault("members", []).append(member)
            return True
    bindings.append({"role": role, "members": [member]})
    return True


def _differing_fields(provider: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    fields = []
    if provider.get("attributeMapping") != wanted["attributeMapping"]:
        fields.append("attributeMapping")
    if provider.get("attributeCondition") != wanted["attributeCondition"]:
        fields.append("attributeCondition")
    oidc = provider.get("oidc") or {}
    if oidc.get("issuerUri") != wanted["oidc"]["issuerUri"]:
        fields.append("oidc.issuerUri")
    if oidc.get("allowedAudiences") != wanted["oidc"]["allowedAudiences"]:
        fields.append("oidc.allowedAudiences")
    return fields


CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# Environment overrides of the API base URLs, for private endpoints and tests.
ENDPOINT_VARIABLES = {
    "iam": "CREDCTL_GCP_IAM_ENDPOINT",
    "storage": "CREDCTL_GCP_STORAGE_ENDPOINT",
    "resource_manager": "CREDCTL_GCP_RESOURCE_MANAGER_ENDPOINT",
}


def endpoints_from_environment() -> GcpEndpoints:
    overrides = {}
    for name, variable in ENDPOINT_VARIABLES.items():
        value = os.environ.get(variable)
        if value:
            overrides[name] = check_url(value, variable).rstrip("/")
    return GcpEndpoints(**overrides)


def admin_session() -> requests.Session:
    """An AuthorizedSession over Application Default Credentials (the user's admin identity)."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError
    from google.auth.transport.requests import AuthorizedSession

    try:
        credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    except DefaultCredentialsError:
        raise CloudSetupError(
            "no Google credentials to create the workload identity resources with: run "
            "`gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS. "
            "Nothing was created or changed"
        ) from None
    return AuthorizedSession(credentials)  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class GcpSetupOptions:
    """What the user chose for `credctl setup gcp` without --project-number."""

    project: str
    service_account_email: str
    pool_id: str = DEFAULT_POOL_ID
    provider_id: str = DEFAULT_PROVIDER_ID
    bucket: str | None = None
    sts_endpoint: str | None = None
    iam_credentials_endpoint: str | None = None
    rerun_command: str = "credctl setup gcp"


def build_gcp_federation(
    home: Path,
    options: GcpSetupOptions,
    report: Reporter,
    session: requests.Session | None = None,
    endpoints: GcpEndpoints | None = None,
) -> GcpFederation:
    """Create or update the GCP side for the device in ``home`` and record it in config.json."""
    check_email(options.service_account_email, "--service-account")
    check_pool_id(options.pool_id, "--pool-id")
    check_pool_id(options.provider_id, "--provider-id")
    if not _PROJECT.match(options.project):
        raise UsageError(
            f"--project: {options.project!r} is not a project ID or number "
            "(6-30 lowercase letters, digits and hyphens, or the digits of the number)"
        )
    if options.bucket is not None and not _BUCKET.match(options.bucket):
        raise UsageError(
            f"--bucket: {options.bucket!r} is not a GCS bucket name "
            "(3-63 lowercase letters, digits, hyphens and underscores)"
        )
    for value, option in (
        (options.sts_endpoint, "--sts-endpoint"),
        (options.iam_credentials_endpoint, "--iam-credentials-endpoint"),
    ):
        if value is not None:
            check_url(value, option)
    config = load_config(home)
    request = GcpFederationRequest(
        device_id=config.device_id,
        public_key_der=load_device_public_key(config),
        project=options.project,
        service_account_email=options.service_account_email,
        pool_id=options.pool_id,
        provider_id=options.provider_id,
        bucket=options.bucket,
    )
    progress = SetupProgress(report, rerun_command=options.rerun_command)
    setup = GcpFederationSetup(
        session or admin_session(), progress, endpoints or endpoints_from_environment()
    )
    federation = setup.run(request)
    config.update_section(
        "gcp",
        {
            "project_number": federation.project_number,
            "workload_pool_id": federation.pool_id,
            "provider_id": federation.provider_id,
            "service_account_email": federation.service_account_email,
            "issuer_url": federation.issuer_url,
            "sts_endpoint": options.sts_endpoint,
            "iam_credentials_endpoint": options.iam_credentials_endpoint,
        },
    )
    config.save()
    return federation


_PROJECT = re.compile(r"^([a-z][a-z0-9-]{4,28}[a-z0-9]|\d{1,20})$")
# Dotted names need domain verification; the issuer URL is simpler without them.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]$")
