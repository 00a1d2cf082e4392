"""The miss path in this process, against moto on 127.0.0.1: signing, exchange, the rest.

- sign: build, sign and verify the device JWT (issue_device_jwt);
- exchange: AssumeRoleWithWebIdentity on a reused boto3 client;
- exchange as credctl calls it: credctl.providers.aws, a client per call;
- issue: the whole issue_credential(), what a daemon miss or `--no-daemon` runs.
Overhead (issue - sign - exchange) is in the session summary.
"""

from __future__ import annotations

from typing import Any

import harness
import pytest
from summary import report

MEDIANS_MS: dict[str, float] = {}


@pytest.fixture(scope="module")
def pipeline(bench_env: harness.BenchEnv) -> dict[str, Any]:
    boto3 = pytest.importorskip("boto3")
    from botocore import UNSIGNED
    from botocore.config import Config as BotoConfig

    from credctl.config import load_config
    from credctl.jwt import AWS_AUDIENCE, AWS_TOKEN_LIFETIME_SECONDS, issue_device_jwt
    from credctl.keys import key_id
    from credctl.signers import open_signer

    home = bench_env.home
    config = load_config(home)
    settings = config.aws
    assert settings is not None
    signer = open_signer(config.backend, home, config.key_tag)

    def sign() -> str:
        return issue_device_jwt(
            config, signer, settings.issuer_url, AWS_AUDIENCE, AWS_TOKEN_LIFETIME_SECONDS, "bench"
        )

    client = boto3.session.Session().client(
        "sts",
        region_name=settings.region,
        endpoint_url=settings.sts_endpoint,
        config=BotoConfig(signature_version=UNSIGNED),
    )
    return {
        "home": home,
        "settings": settings,
        "sign": sign,
        "client": client,
        "kid": key_id(signer.public_key_der()),
    }


def record(name: str, benchmark) -> None:
    MEDIANS_MS[name] = benchmark.stats.stats.median * 1e3
    section = "miss path (medians, this session)"
    report(section, name, f"{name}: {MEDIANS_MS[name]:.2f} ms")
    if {"sign", "exchange", "issue"} <= MEDIANS_MS.keys():
        overhead = MEDIANS_MS["issue"] - MEDIANS_MS["sign"] - MEDIANS_MS["exchange"]
        report(section, "overhead", f"overhead (issue - sign - exchange): {overhead:.2f} ms")


def test_sign(benchmark, pipeline: dict[str, Any]) -> None:
    benchmark.group = "miss path"
    benchmark(pipeline["sign"])
    record("sign", benchmark)


def test_exchange(benchmark, pipeline: dict[str, Any]) -> None:
    from credctl.providers import aws

    settings = pipeline["settings"]
    token = pipeline["sign"]()

    def exchange() -> None:
        pipeline["client"].assume_role_with_web_identity(
            RoleArn=settings.role_arn,
            RoleSessionName=aws.role_session_name(pipeline["kid"]),
            WebIdentityToken=token,
            DurationSeconds=settings.duration_seconds,
        )

    benchmark.group = "miss path"
    benchmark.pedantic(exchange, rounds=30, warmup_rounds=2)
    record("exchange", benchmark)


def test_exchange_as_credctl_calls_it(benchmark, pipeline: dict[str, Any]) -> None:
    from credctl.providers import aws

    settings = pipeline["settings"]
    token = pipeline["sign"]()

    def exchange() -> None:
        aws.assume_role_with_web_identity(
            settings, token, aws.role_session_name(pipeline["kid"]), lambda message: None
        )

    benchmark.group = "miss path"
    benchmark.pedantic(exchange, rounds=20, warmup_rounds=2)
    record("exchange as credctl calls it", benchmark)


def test_issue_credential(benchmark, pipeline: dict[str, Any]) -> None:
    from credctl.issue import issue_credential

    benchmark.group = "miss path"
    benchmark.pedantic(
        issue_credential,
        args=("aws", "credential_process"),
        kwargs={"home": pipeline["home"]},
        rounds=20,
        warmup_rounds=2,
    )
    record("issue", benchmark)
