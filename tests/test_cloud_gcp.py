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
from servers import FakeGcpServer, gcp_server  # noqa: F401 (a fixture used by name)

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

    with pytest.raises(CloudSetupError, match="credctl will not overwrite it"):
        run_setup(fake, public_key)
    assert fake.state.objects[(bucket, "keys.json")][0] == b"not json"


# -- the CLI, end to end --------------------------------------------------------


@pytest.fixture
def gcp_admin_env(
    fake: FakeGcpAdmin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> FakeGcpAdmin:
    """Application Default Credentials that need no network, every admin API at the fake."""
    adc = tmp_path / "adc.json"
    adc.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "test-client",
                "client_secret": "test-secret",
                "refresh_token": "test-refresh",
                # google-auth always refreshes at Google's token URL; a token
                # that is still valid means it never has to.
                "token": ACCESS_TOKEN,
                "expiry": "2999-01-01T00:00:00Z",
            }
        )
    )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    monkeypatch.setenv("CREDCTL_GCP_IAM_ENDPOINT", fake.url)
    monkeypatch.setenv("CREDCTL_GCP_STORAGE_ENDPOINT", fake.url)
    monkeypatch.setenv("CREDCTL_GCP_RESOURCE_MANAGER_ENDPOINT", fake.url)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    return fake


def test_setup_gcp_from_nothing_to_credentials(
    initialised_home: Path,
    run_cli,
    gcp_admin_env: FakeGcpAdmin,
    gcp_server: FakeGcpServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    fake = gcp_admin_env
    result = run_cli(
        "setup",
        "gcp",
        "--project",
        PROJECT,
        "--service-account",
        SA,
        "--sts-endpoint",
        gcp_server.sts_endpoint,
        "--iam-credentials-endpoint",
        gcp_server.iam_credentials_endpoint,
    )

    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    assert out.count("Created: ") == 7
    config = json.loads((initialised_home / "config.json").read_text())
    issuer = f"{fake.url}/credctl-oidc-{NUMBER}"
    credential_file = initialised_home / "gcp-credentials.json"
    assert config["gcp"] == {
        "project_number": NUMBER,
        "workload_pool_id": "credctl-pool",
        "provider_id": "credctl-provider",
        "service_account_email": SA,
        "issuer_url": issuer,
        "sts_endpoint": gcp_server.sts_endpoint,
        "iam_credentials_endpoint": gcp_server.iam_credentials_endpoint,
        "credential_file_path": str(credential_file),
    }
    assert json.loads(credential_file.read_text())["audience"] == AUDIENCE

    # Google's side as setup left it: the STS fake trusts exactly what the
    # provider was told (issuer, audience, subject) and the JWKS setup published.
    provider = fake.state.providers[PROVIDER]
    published = tmp_path / "published-keys.json"
    published.write_bytes(requests.get(f"{issuer}/keys.json", timeout=10).content)
    gcp_server.expect.jwks_path = published
    gcp_server.expect.issuer = provider["oidc"]["issuerUri"]
    gcp_server.expect.audience = provider["oidc"]["allowedAudiences"][0]
    gcp_server.expect.subject = config["device_id"]
    gcp_server.expect.service_account_email = SA
    assert provider["attributeCondition"] == attribute_condition(config["device_id"])

    auth = run_cli("auth", "--provider", "gcp", "--format", "env", "--no-daemon")

    assert auth.returncode == 0, auth.stderr.decode()
    assert f"export CLOUDSDK_AUTH_ACCESS_TOKEN={gcp_server.access_token}" in auth.stdout.decode()
    assert gcp_server.failures == []


def test_setup_gcp_cli_rerun_is_idempotent(
    initialised_home: Path, run_cli, gcp_admin_env: FakeGcpAdmin
) -> None:
    args = ("setup", "gcp", "--project", PROJECT, "--service-account", SA)
    assert run_cli(*args).returncode == 0
    config_before = (initialised_home / "config.json").read_text()
    mutations_before = len(gcp_admin_env.mutations())

    again = run_cli(*args)

    assert again.returncode == 0, again.stderr.decode()
    assert again.stdout.decode().count("Unchanged: ") == 7
    assert "Created: " not in again.stdout.decode()
    assert len(gcp_admin_env.mutations()) == mutations_before
    assert (initialised_home / "config.json").read_text() == config_before


def test_setup_gcp_cli_failure_is_one_line_and_resumable(
    initialised_home: Path, run_cli, gcp_admin_env: FakeGcpAdmin
) -> None:
    gcp_admin_env.fail(
        "POST", ":setIamPolicy", 403, "Permission 'iam.serviceAccounts.setIamPolicy' denied"
    )
    args = ("setup", "gcp", "--project", PROJECT, "--service-account", SA)

    failed = run_cli(*args)

    assert failed.returncode == 1
    [line] = failed.stderr.decode().splitlines()
    assert line.startswith("credctl: Granting the service account failed: HTTP 403: Permission")
    assert "OIDC provider credctl-provider" in line
    assert f"re-run `credctl setup gcp --project {PROJECT} --service-account {SA}`" in line
    assert "gcp" not in json.loads((initialised_home / "config.json").read_text())

    resumed = run_cli(*args)

    assert resumed.returncode == 0, resumed.stderr.decode()
    assert resumed.stdout.decode().count("Created: ") == 1


def test_setup_gcp_usage_errors(initialised_home: Path, run_cli) -> None:
    neither = run_cli("setup", "gcp", "--service-account", SA)
    assert neither.returncode == 2
    assert "give --project to create the federation" in neither.stderr.decode()
    mixed = run_cli(
        "setup", "gcp", "--project", PROJECT, "--service-account", SA, "--issuer-url", "https://x"
    )
    assert mixed.returncode == 2
    assert "--issuer-url goes with --project-number" in mixed.stderr.decode()
