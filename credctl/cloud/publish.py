"""Hosting the OIDC issuer documents in an S3 bucket.

The bucket keeps S3's default of no ACLs; public read comes from a bucket
policy that grants s3:GetObject on exactly the two documents, which needs the
bucket's Block Public Access settings for policies turned off (ACLs stay
blocked). keys.json is merged with the one already in the bucket, so a key
rotated out by `credctl init --force` stays published until the user removes it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from credctl.cloud import Action, SetupProgress, StepFailed, StepResult, parse_published_jwks
from credctl.errors import UsageError
from credctl.oidc import DISCOVERY_PATH, JWKS_PATH, discovery_document, merge_jwks, render_json

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

JSON_CONTENT_TYPE = "application/json"
# Short enough that a rotated key is seen soon, long enough to spare the bucket.
DOCUMENT_CACHE_CONTROL = "public, max-age=300"
_PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": False,
    "RestrictPublicBuckets": False,
}


def aws_error(exc: Exception) -> str:
    """What AWS answered, without request ids or anything from the credentials."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "Error")
        message = error.get("Message", "")
        return f"{code}: {message}" if message else str(code)
    return str(exc)


def check_bucket_name(bucket: str) -> str:
    # Dots break TLS for virtual-hosted URLs (the wildcard certificate covers
    # one label), and the issuer URL must serve TLS.
    if "." in bucket:
        raise UsageError(f"--bucket: {bucket!r} contains a dot; use a bucket name without dots")
    return bucket


def s3_issuer_url(s3: S3Client, bucket: str, region: str) -> str:
    """The issuer URL the bucket's objects are served from.

    On AWS that is the virtual-hosted regional URL; on any other endpoint (an
    S3-compatible store, a local test server) it is path-style under it.
    """
    endpoint = s3.meta.endpoint_url.rstrip("/")
    host = urlsplit(endpoint).hostname or ""
    if host == "amazonaws.com" or host.endswith(".amazonaws.com"):
        return f"https://{bucket}.s3.{region}.amazonaws.com"
    return f"{endpoint}/{bucket}"


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def ensure_bucket(s3: S3Client, bucket: str, region: str, progress: SetupProgress) -> None:
    resource = f"S3 bucket {bucket}"
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if _error_code(exc) in ("403", "AccessDenied", "Forbidden"):
            raise StepFailed(
                f"{resource} exists but this account cannot use it "
                "(it belongs to another account, or you lack s3:ListBucket); "
                "choose another name with --bucket"
            ) from None
        if _error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise
    else:
        progress.record(StepResult("unchanged", resource))
        return
    if region == "us-east-1":
        s3.create_bucket(Bucket=bucket)
    else:
        s3.create_bucket(
            Bucket=bucket,
            CreateBucketConfiguration={"LocationConstraint": region},  # type: ignore[typeddict-item]
        )
    progress.record(
        StepResult("created", resource, region),
        removal=f"the S3 bucket {bucket} (empty it first)",
    )


def ensure_public_read(s3: S3Client, bucket: str, progress: SetupProgress) -> None:
    resource = f"public read of the OIDC documents in {bucket}"
    try:
        current = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    except ClientError as exc:
        if _error_code(exc) != "NoSuchPublicAccessBlockConfiguration":
            raise
        current = {}
    action: Action = "unchanged"
    if dict(current) != _PUBLIC_ACCESS_BLOCK:
        action = "updated"
        s3.put_public_access_block(
            Bucket=bucket,
            PublicAccessBlockConfiguration=_PUBLIC_ACCESS_BLOCK,  # type: ignore[arg-type]
        )
    wanted = _public_read_policy(s3, bucket)
    try:
        existing: Any = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    except ClientError as exc:
        if _error_code(exc) != "NoSuchBucketPolicy":
            raise
        existing = None
    if existing != wanted:
        if existing is not None and not _is_credctl_policy(existing):
            raise StepFailed(
                f"S3 bucket {bucket} already has a bucket policy that credctl did not write; "
                "use a bucket of its own with --bucket"
            )
        try:
            s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(wanted))
        except ClientError as exc:
            if _error_code(exc) == "AccessDenied":
                raise StepFailed(
                    f"S3 refused the public-read bucket policy on {bucket} ({aws_error(exc)}); "
                    "the account-level S3 Block Public Access setting may forbid public "
                    "bucket policies"
                ) from None
            raise
        action = "created" if existing is None else "updated"
    progress.record(StepResult(action, resource, "bucket policy, GetObject"))


def _public_read_policy(s3: S3Client, bucket: str) -> dict[str, Any]:
    partition = "aws-cn" if s3.meta.region_name.startswith("cn-") else "aws"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "CredctlPublicOidcDocuments",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": [
                    f"arn:{partition}:s3:::{bucket}/{DISCOVERY_PATH}",
                    f"arn:{partition}:s3:::{bucket}/{JWKS_PATH}",
                ],
            }
        ],
    }


def _is_credctl_policy(policy: Any) -> bool:
    statements = policy.get("Statement", []) if isinstance(policy, dict) else []
    return bool(statements) and all(
        isinstance(s, dict) and s.get("Sid") == "CredctlPublicOidcDocuments" for s in statements
    )


def _read_object(s3: S3Client, bucket: str, key: str) -> bytes | None:
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if _error_code(exc) in ("NoSuchKey", "404"):
            return None
        raise


def ensure_documents(
    s3: S3Client,
    bucket: str,
    issuer_url: str,
    public_key_der: bytes,
    progress: SetupProgress,
) -> None:
    existing_jwks = _read_object(s3, bucket, JWKS_PATH)
    documents = {
        DISCOVERY_PATH: render_json(discovery_document(issuer_url)),
        JWKS_PATH: render_json(
            merge_jwks(
                public_key_der, parse_published_jwks(existing_jwks, f"s3://{bucket}/{JWKS_PATH}")
            )
        ),
    }
    for key, body in documents.items():
        current = existing_jwks if key == JWKS_PATH else _read_object(s3, bucket, key)
        resource = f"{issuer_url}/{key}"
        if current == body:
            progress.record(StepResult("unchanged", resource))
            continue
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=body,
            ContentType=JSON_CONTENT_TYPE,
            CacheControl=DOCUMENT_CACHE_CONTROL,
        )
        progress.record(StepResult("created" if current is None else "updated", resource))


def publish_to_s3(
    s3: S3Client,
    bucket: str,
    region: str,
    public_key_der: bytes,
    progress: SetupProgress,
) -> str:
    """Create or update the bucket, its public-read policy and both documents.

    Returns the issuer URL. Raises CloudSetupError naming what exists when a
    step fails.
    """
    check_bucket_name(bucket)
    issuer_url = s3_issuer_url(s3, bucket, region)
    steps = (
        ("Creating the S3 bucket", lambda: ensure_bucket(s3, bucket, region, progress)),
        ("Allowing public read", lambda: ensure_public_read(s3, bucket, progress)),
        (
            "Uploading the OIDC documents",
            lambda: ensure_documents(s3, bucket, issuer_url, public_key_der, progress),
        ),
    )
    for name, step in steps:
        run_step(progress, name, step)
    return issuer_url


def run_step(progress: SetupProgress, name: str, step: Any) -> None:
    """Run one AWS step, turning any failure into the resumable-setup error."""
    try:
        step()
    except StepFailed as exc:
        raise progress.failure(name, exc) from None
    except (ClientError, BotoCoreError) as exc:
        raise progress.failure(name, StepFailed(aws_error(exc))) from None
