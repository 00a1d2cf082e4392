"""GCP federation setup against a local fake of the admin REST APIs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import google.oauth2.credentials
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fake_gcp_admin import ACCESS_TOKEN, FakeGcpAdmin
from google.auth.transport.requests import AuthorizedSession

from credctl.cloud import CloudSetupError, SetupProgress, StepResult
from credctl.cloud.gcp_federation import (
    GcpEndpoints,
    GcpFederationRequest,
    GcpFederationSetup,
    attribute_condition,
)
from credctl.keys import device_id, key_id

PROJECT = "my-project"
NUMBER = "123456789012"
SA = "deployer@my-project.iam.gserviceaccount.com"
POOL = f"projects/{NUMBER}/locations/global/workloadIdentityPools/credctl-pool"
PROVIDER = f"{POOL}/providers/credctl-provider"
AUDIENCE = f"//iam.googleapis.com/{PROVIDER}"


@pytest.fixture
def fake() -> Iterator[FakeGcpAdmin]:
    server = FakeGcpAdmin().start()
    server.add_project(PROJECT, NUMBER)
    server.add_service_account(SA)
    yield server
    server.stop()


def new_public_key() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def run_setup(fake: FakeGcpAdmin, public_key: bytes) -> tuple[list[StepResult], object]:
    results: list[StepResult] = []
    progress = SetupProgress(report=results.append, rerun_command="credctl setup gcp ...")
    session = AuthorizedSession(google.oauth2.credentials.Credentials(token=ACCESS_TOKEN))
    endpoints = GcpEndpoints(iam=fake.url, storage=fake.url, resource_manager=fake.url)
    setup = GcpFederationSetup(session, progress, endpoints, sleep=lambda _: None)
    request = GcpFederationRequest(
        device_id=device_id(public_key),
        public_key_der=public_key,
        project=PROJECT,
        service_account_email=SA,
    )
    return results, setup.run(request)


def test_setup_creates_every_resource_with_the_right_bodies(fake: FakeGcpAdmin) -> None:
    public_key = new_public_key()
    results, federation = run_setup(fake, public_key)

    assert [r.action for r in results] == ["created"] * 7
    bucket = f"credctl-oidc-{NUMBER}"
    issuer = f"{fake.url}/{bucket}"
    assert federation.issuer_url == issuer  # type: ignore[attr-defined]
    assert federation.audience == AUDIENCE  # type: ignore[attr-defined]
    assert all(r.authorization == f"Bearer {ACCESS_TOKEN}" for r in fake.requests)

    [create_bucket] = [r for r in fake.requests if r.path == "/storage/v1/b"]
    assert create_bucket.query == {"project": [PROJECT]}
    assert create_bucket.body["name"] == bucket
    assert create_bucket.body["iamConfiguration"]["uniformBucketLevelAccess"]["enabled"]

    # Public read, checked the way an STS would: an anonymous GET of each document.
    discovery = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=10)
    assert discovery.headers["Content-Type"] == "application/json"
    assert discovery.json()["issuer"] == issuer
    assert discovery.json()["jwks_uri"] == f"{issuer}/keys.json"
    jwks = requests.get(f"{issuer}/keys.json", timeout=10).json()
    assert [k["kid"] for k in jwks["keys"]] == [key_id(public_key)]
    metadata = fake.state.objects[(bucket, "keys.json")][1]
    assert metadata["contentType"] == "application/json"

    [create_pool] = [r for r in fake.requests if r.path.endswith("/workloadIdentityPools")]
    assert create_pool.method == "POST"
    assert create_pool.query == {"workloadIdentityPoolId": ["credctl-pool"]}

    [create_provider] = [r for r in fake.requests if r.path.endswith("/providers")]
    assert create_provider.query == {"workloadIdentityPoolProviderId": ["credctl-provider"]}
    body = create_provider.body
    assert body["attributeMapping"] == {"google.subject": "assertion.sub"}
    assert body["attributeCondition"] == f'assertion.sub == "{device_id(public_key)}"'
    assert body["oidc"] == {"issuerUri": issuer, "allowedAudiences": [AUDIENCE]}

    [set_policy] = [r for r in fake.requests if r.path.endswith(":setIamPolicy")]
    assert set_policy.path == f"/v1/projects/-/serviceAccounts/{SA}:setIamPolicy"
    assert set_policy.body["policy"]["etag"] == "BwAAAA=="  # read-modify-write with the etag
    assert set_policy.body["policy"]["bindings"] == [
        {
            "role": "roles/iam.workloadIdentityUser",
            "members": [f"principal://iam.googleapis.com/{POOL}/subject/{device_id(public_key)}"],
        }
    ]


def test_rerun_changes_nothing(fake: FakeGcpAdmin) -> None:
    public_key = new_public_key()
    run_setup(fake, public_key)
    before = len(fake.mutations())

    results, _ = run_setup(fake, public_key)

    assert [r.action for r in results] == ["unchanged"] * 7
    assert len(fake.mutations()) == before


def test_new_key_keeps_old_key_published_and_moves_the_condition(fake: FakeGcpAdmin) -> None:
    old_key, new_key = new_public_key(), new_public_key()
    run_setup(fake, old_key)

    results, _ = run_setup(fake, new_key)

    actions = {r.resource.rsplit("/", 1)[-1]: r.action for r in results}
    assert actions["keys.json"] == "updated"
    assert actions["openid-configuration"] == "unchanged"
    jwks = json.loads(fake.state.objects[(f"credctl-oidc-{NUMBER}", "keys.json")][0])
    assert [k["kid"] for k in jwks["keys"]] == [key_id(old_key), key_id(new_key)]
    [patch] = [r for r in fake.requests if r.method == "PATCH"]
    assert patch.query == {"updateMask": ["attributeCondition"]}
    provider = fake.state.providers[PROVIDER]
    assert provider["attributeCondition"] == attribute_condition(device_id(new_key))
    members = fake.state.sa_policies[SA]["bindings"][0]["members"]
    assert members[-1].endswith(f"/subject/{device_id(new_key)}")


def test_existing_provider_with_other_settings_is_patched(fake: FakeGcpAdmin) -> None:
    public_key = new_public_key()
    run_setup(fake, public_key)
    provider = fake.state.providers[PROVIDER]
    provider["oidc"] = {"issuerUri": "https://elsewhere.example.com"}
    provider["attributeMapping"] = {"google.subject": "assertion.email"}

    results, _ = run_setup(fake, public_key)

    [patch] = [r for r in fake.requests if r.method == "PATCH"]
    assert patch.query == {"updateMask": ["attributeMapping,oidc.issuerUri,oidc.allowedAudiences"]}
    assert provider["attributeMapping"] == {"google.subject": "assertion.sub"}
    assert provider["oidc"]["allowedAudiences"] == [AUDIENCE]
    assert [r.action for r in results].count("updated") == 1


def test_failure_part_way_says_what_exists_and_rerun_resumes(fake: FakeGcpAdmin) -> None:
    public_key = new_public_key()
    fake.fail(
        "POST", "/providers", 403, "Permission 'iam.workloadIdentityPoolProviders.create' denied"
    )

    with pytest.raises(CloudSetupError) as caught:
        run_setup(fake, public_key)

    message = str(caught.value)
    assert message.startswith("Creating the OIDC provider failed: HTTP 403: Permission")
    assert f"GCS bucket credctl-oidc-{NUMBER}" in message
    assert "workload identity pool credctl-pool" in message
    assert "re-run `credctl setup gcp ...` to resume" in message
    assert f"the workload identity pool {POOL}" in message
    assert "\n" not in message
    assert fake.state.providers == {}

    results, _ = run_setup(fake, public_key)

    assert [(r.resource.split()[0], r.action) for r in results][-2:] == [
        ("OIDC", "created"),
        ("roles/iam.workloadIdentityUser", "created"),
    ]
    assert [r.action for r in results][:5] == ["unchanged"] * 5


def test_unknown_project_is_a_clear_error(fake: FakeGcpAdmin) -> None:
    results: list[StepResult] = []
    progress = SetupProgress(report=results.append, rerun_command="credctl setup gcp")
    session = AuthorizedSession(google.oauth2.credentials.Credentials(token=ACCESS_TOKEN))
    endpoints = GcpEndpoints(iam=fake.url, storage=fake.url, resource_manager=fake.url)
    request = GcpFederationRequest(device_id(new_public_key()), new_public_key(), "nope", SA)

    with pytest.raises(CloudSetupError, match="Nothing was created or changed"):
        GcpFederationSetup(session, progress, endpoints).run(request)
    assert results == []


def test_refuses_to_overwrite_a_broken_jwks(fake: FakeGcpAdmin, tmp_path: Path) -> None:
    public_key = new_public_key()
    run_setup(fake, public_key)
    bucket = f"credctl-oidc-{NUMBER}"
    metadata = fake.state.objects[(bucket, "keys.json")][1]
    fake.state.objects[(bucket, "keys.json")] = (b"not json", metadata)

    with pytest.raises(CloudSetupError, match="is not a JWKS; credctl will not overwrite it"):
        run_setup(fake, public_key)
    assert fake.state.objects[(bucket, "keys.json")][0] == b"not json"
