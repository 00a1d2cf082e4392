"""AWS IAM federation for the device: OIDC issuer in S3, IAM OIDC provider, IAM role.

Every step is create-or-update: it reads what exists and changes only what
differs, so re-running `credctl setup aws` after a failure resumes, and after
`credctl init --force` it points the role at the new device and publishes the
new key next to the old one.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from botocore.exceptions import ClientError

from credctl.cloud import Reporter, SetupProgress, StepFailed, StepResult
from credctl.cloud.publish import check_bucket_name, publish_to_s3, run_step
from credctl.config import DEFAULT_AWS_REGION, load_config
from credctl.errors import UsageError
from credctl.jwt import AWS_AUDIENCE, load_device_public_key
from credctl.validation import check_region, check_url

if TYPE_CHECKING:
    from boto3.session import Session
    from mypy_boto3_iam import IAMClient

DEFAULT_ROLE_NAME = "credctl-device-role"
TLS_TIMEOUT_SECONDS = 10.0


def tls_thumbprint(host: str, port: int = 443, context: ssl.SSLContext | None = None) -> str:
    """SHA-1 (lowercase hex) of the last certificate the TLS server at host:port presents.

    That is the top intermediate or root CA certificate of the chain, which is
    what IAM wants as an OIDC provider's thumbprint. The connection is verified
    (by ``context``, default: the system trust store) before anything is read.
    """
    context = context or ssl.create_default_context()
    try:
        with (
            socket.create_connection((host, port), timeout=TLS_TIMEOUT_SECONDS) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            chain = _presented_chain(tls)
    except ssl.SSLCertVerificationError as exc:
        raise StepFailed(
            f"the TLS certificate of {host}:{port} did not verify ({exc.verify_message})"
        ) from None
    except OSError as exc:
        raise StepFailed(
            f"cannot reach {host}:{port} over TLS to compute the thumbprint ({exc})"
        ) from None
    if not chain:
        raise StepFailed(f"{host}:{port} presented no TLS certificate")
    return hashlib.sha1(chain[-1], usedforsecurity=False).hexdigest()


def _presented_chain(tls: ssl.SSLSocket) -> list[bytes]:
    """The DER certificates the server sent, leaf first."""
    public = getattr(tls, "get_unverified_chain", None)  # Python 3.13+
    if public is not None:
        return [bytes(cert) for cert in public()]
    # Python 3.10-3.12 have the same call on the private _ssl object.
    certs = tls._sslobj.get_unverified_chain() or []  # type: ignore[attr-defined]
    return [cert.public_bytes(ssl._ssl.ENCODING_DER) for cert in certs]  # type: ignore[attr-defined]


def issuer_thumbprint(issuer_url: str, context: ssl.SSLContext | None = None) -> str:
    parts = urlsplit(issuer_url)
    if parts.scheme != "https" or not parts.hostname:
        raise StepFailed(f"the issuer {issuer_url} is not an https URL; IAM needs TLS")
    return tls_thumbprint(parts.hostname, parts.port or 443, context)


def provider_url(issuer_url: str) -> str:
    """The issuer without its scheme: IAM's name for the provider and its condition keys."""
    return issuer_url.split("://", 1)[1].rstrip("/")


def trust_policy(provider_arn: str, issuer_url: str, device_id: str) -> dict[str, Any]:
    """Admit AssumeRoleWithWebIdentity for exactly this device's tokens."""
    name = provider_url(issuer_url)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        f"{name}:sub": device_id,
                        f"{name}:aud": AWS_AUDIENCE,
                    }
                },
            }
        ],
    }


@dataclass(frozen=True)
class AwsFederationRequest:
    device_id: str
    public_key_der: bytes
    region: str = DEFAULT_AWS_REGION
    role_name: str = DEFAULT_ROLE_NAME
    bucket: str | None = None
    policy_arn: str | None = None
    s3_endpoint_url: str | None = None


@dataclass(frozen=True)
class AwsFederation:
    account_id: str
    bucket: str
    issuer_url: str
    provider_arn: str
    role_arn: str
    region: str


def _policy_document(value: Any) -> Any:
    # botocore decodes IAM policy documents; other servers may hand back the
    # URL-encoded JSON string.
    if isinstance(value, str):
        return json.loads(unquote(value))
    return value


class AwsFederationSetup:
    """Creates or updates the AWS side; boto3 clients come from ``session``.

    ``tls_context`` verifies the issuer's TLS server when computing the
    thumbprint (default: the system trust store).
    """

    def __init__(
        self,
        session: Session,
        progress: SetupProgress,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.session = session
        self.progress = progress
        self.tls_context = tls_context

    def run(self, request: AwsFederationRequest) -> AwsFederation:
        identity: dict[str, Any] = {}
        run_step(
            self.progress,
            "Looking up the AWS account",
            lambda: identity.update(
                self.session.client("sts", region_name=request.region).get_caller_identity()
            ),
        )
        account_id = str(identity["Account"])
        partition = str(identity["Arn"]).split(":")[1]
        bucket = request.bucket or f"credctl-oidc-{account_id}"
        s3 = self.session.client(
            "s3", region_name=request.region, endpoint_url=request.s3_endpoint_url
        )
        issuer_url = publish_to_s3(
            s3, bucket, request.region, request.public_key_der, self.progress
        )
        iam = self.session.client("iam", region_name=request.region)
        provider_arn = f"arn:{partition}:iam::{account_id}:oidc-provider/{provider_url(issuer_url)}"
        run_step(
            self.progress,
            "Creating the IAM OIDC provider",
            lambda: self._ensure_provider(iam, issuer_url, provider_arn),
        )
        role_arn: list[str] = []
        run_step(
            self.progress,
            "Creating the IAM role",
            lambda: role_arn.append(
                self._ensure_role(
                    iam, request, trust_policy(provider_arn, issuer_url, request.device_id)
                )
            ),
        )
        if request.policy_arn:
            policy_arn = request.policy_arn
            run_step(
                self.progress,
                "Attaching the policy",
                lambda: self._ensure_policy(iam, request.role_name, policy_arn),
            )
        return AwsFederation(
            account_id=account_id,
            bucket=bucket,
            issuer_url=issuer_url,
            provider_arn=provider_arn,
            role_arn=role_arn[0],
            region=request.region,
        )

    def _ensure_provider(self, iam: IAMClient, issuer_url: str, provider_arn: str) -> None:
        thumbprint = issuer_thumbprint(issuer_url, self.tls_context)
        resource = f"IAM OIDC provider {provider_arn}"
        try:
            current = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=provider_arn)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchEntity":
                raise
            iam.create_open_id_connect_provider(
                Url=issuer_url, ClientIDList=[AWS_AUDIENCE], ThumbprintList=[thumbprint]
            )
            self.progress.record(
                StepResult(
                    "created", resource, f"audience {AWS_AUDIENCE}, thumbprint {thumbprint}"
                ),
                removal=f"the IAM OIDC provider {provider_arn}",
            )
            return
        changes = []
        if AWS_AUDIENCE not in current.get("ClientIDList", []):
            iam.add_client_id_to_open_id_connect_provider(
                OpenIDConnectProviderArn=provider_arn, ClientID=AWS_AUDIENCE
            )
            changes.append(f"added audience {AWS_AUDIENCE}")
        if thumbprint not in current.get("ThumbprintList", []):
            iam.update_open_id_connect_provider_thumbprint(
                OpenIDConnectProviderArn=provider_arn, ThumbprintList=[thumbprint]
            )
            changes.append(f"thumbprint {thumbprint}")
        self.progress.record(
            StepResult("updated" if changes else "unchanged", resource, ", ".join(changes))
        )

    def _ensure_role(
        self, iam: IAMClient, request: AwsFederationRequest, policy: dict[str, Any]
    ) -> str:
        resource = f"IAM role {request.role_name}"
        try:
            role = iam.get_role(RoleName=request.role_name)["Role"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchEntity":
                raise
            created = iam.create_role(
                RoleName=request.role_name,
                AssumeRolePolicyDocument=json.dumps(policy),
                Description="credctl: short-lived credentials for one device key",
            )["Role"]
            self.progress.record(
                StepResult("created", resource, f"trust: sub = {request.device_id}"),
                removal=f"the IAM role {request.role_name} (detach its policies first)",
            )
            return created["Arn"]
        current = _policy_document(role.get("AssumeRolePolicyDocument"))
        if current == policy:
            self.progress.record(StepResult("unchanged", resource))
        else:
            iam.update_assume_role_policy(
                RoleName=request.role_name, PolicyDocument=json.dumps(policy)
            )
            self.progress.record(
                StepResult(
                    "updated", resource, f"trust policy now admits sub = {request.device_id}"
                )
            )
        return role["Arn"]

    def _ensure_policy(self, iam: IAMClient, role_name: str, policy_arn: str) -> None:
        resource = f"policy {policy_arn} on role {role_name}"
        attached: set[str] = set()
        paginator = iam.get_paginator("list_attached_role_policies")
        for page in paginator.paginate(RoleName=role_name):
            attached.update(p["PolicyArn"] for p in page["AttachedPolicies"])
        if policy_arn in attached:
            self.progress.record(StepResult("unchanged", resource))
            return
        iam.attach_role_policy(RoleName=role_name, PolicyArn=policy_arn)
        self.progress.record(
            StepResult("created", resource),
            removal=f"the attachment of {policy_arn} to {role_name}",
        )


def check_policy_arn(arn: str) -> str:
    if not arn.startswith("arn:") or ":policy/" not in arn:
        raise UsageError(
            f"--policy-arn: {arn!r} is not an IAM policy ARN "
            "(expected arn:aws:iam::aws:policy/NAME or arn:aws:iam::123456789012:policy/NAME)"
        )
    return arn


@dataclass(frozen=True)
class AwsSetupOptions:
    """What the user chose on the command line for `credctl setup aws` without --role-arn."""

    region: str | None = None  # default: the region recorded, else us-east-1
    role_name: str = DEFAULT_ROLE_NAME
    bucket: str | None = None
    policy_arn: str | None = None
    sts_endpoint: str | None = None
    rerun_command: str = "credctl setup aws"


_ROLE_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")


def check_role_name(name: str) -> str:
    if not _ROLE_NAME.match(name):
        raise UsageError(
            f"--role-name: {name!r} is not an IAM role name (1-64 of letters, digits and +=,.@_-)"
        )
    return name


def build_aws_federation(
    home: Path,
    request_options: AwsSetupOptions,
    report: Reporter,
) -> AwsFederation:
    """Create or update the AWS side for the device in ``home`` and record it in config.json.

    AWS credentials and endpoints come from boto3's usual chain (environment,
    AWS_PROFILE, ~/.aws, AWS_ENDPOINT_URL...): they are the user's admin
    credentials, not the device's.
    """
    import boto3

    options = request_options
    config = load_config(home)
    recorded = config.aws
    region = options.region or (recorded.region if recorded else DEFAULT_AWS_REGION)
    check_region(region, "--region")
    check_role_name(options.role_name)
    if options.policy_arn:
        check_policy_arn(options.policy_arn)
    if options.bucket:
        check_bucket_name(options.bucket)
    if options.sts_endpoint:
        check_url(options.sts_endpoint, "--sts-endpoint")
    request = AwsFederationRequest(
        device_id=config.device_id,
        public_key_der=load_device_public_key(config),
        region=region,
        role_name=options.role_name,
        bucket=options.bucket,
        policy_arn=options.policy_arn,
    )
    progress = SetupProgress(report, rerun_command=options.rerun_command)
    federation = AwsFederationSetup(boto3.session.Session(), progress).run(request)
    config.update_section(
        "aws",
        {
            "role_arn": federation.role_arn,
            "issuer_url": federation.issuer_url,
            "region": federation.region,
            "s3_bucket": federation.bucket,
            "sts_endpoint": options.sts_endpoint,
        },
    )
    config.save()
    return federation
