"""The miss path in one fresh process, split into its parts; prints one JSON object.

Run by run_all.py with the credctl script's interpreter and CREDCTL_HOME set
to a home whose `aws.sts_endpoint` is moto on loopback:

    python benchmarks/miss_probe.py ROUNDS

- ``cold_first_issue_ms``: the first issue_credential() in the process: what a
  daemon pays on its first miss (boto3 import, STS client, sign, exchange).
- per round, warm (medians over ROUNDS):
  - ``config_and_signer_ms``: load config.json, open the software key;
  - ``sign_ms``: build, sign and verify the device JWT (issue_device_jwt);
  - ``exchange_ms``: AssumeRoleWithWebIdentity on a reused boto3 client: the
    HTTP round trip to moto plus botocore's request and response handling;
  - ``exchange_as_called_ms``: credctl's own providers.aws call, as issue does it;
  - ``issue_ms``: the whole issue_credential();
  - ``overhead_ms`` = issue - sign - exchange: everything that is neither
    signing nor the STS round trip (client setup, config, rendering).
"""

from __future__ import annotations

import json
import statistics
import sys
import time


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    started = time.perf_counter()
    from credctl.config import load_config
    from credctl.home import credctl_home
    from credctl.issue import issue_credential
    from credctl.jwt import AWS_AUDIENCE, AWS_TOKEN_LIFETIME_SECONDS, issue_device_jwt
    from credctl.keys import key_id
    from credctl.signers import open_signer

    import_ms = (time.perf_counter() - started) * 1e3

    started = time.perf_counter()
    issue_credential("aws", "credential_process")
    cold_ms = (time.perf_counter() - started) * 1e3

    from credctl.providers import aws

    home = credctl_home()
    config = load_config(home)
    settings = config.aws
    assert settings is not None
    signer = open_signer(config.backend, home, config.key_tag)
    kid = key_id(signer.public_key_der())

    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config as BotoConfig

    client = boto3.session.Session().client(
        "sts",
        region_name=settings.region,
        endpoint_url=settings.sts_endpoint,
        config=BotoConfig(signature_version=UNSIGNED),
    )

    samples: dict[str, list[float]] = {
        "config_and_signer_ms": [],
        "sign_ms": [],
        "exchange_ms": [],
        "exchange_as_called_ms": [],
        "issue_ms": [],
    }

    def jwt() -> str:
        return issue_device_jwt(
            config,
            signer,
            settings.issuer_url,
            AWS_AUDIENCE,
            AWS_TOKEN_LIFETIME_SECONDS,
            "benchmark",
        )

    for _ in range(rounds):
        t0 = time.perf_counter()
        load_config(home)
        open_signer(config.backend, home, config.key_tag)
        t1 = time.perf_counter()
        token = jwt()
        t2 = time.perf_counter()
        client.assume_role_with_web_identity(
            RoleArn=settings.role_arn,
            RoleSessionName=aws.role_session_name(kid),
            WebIdentityToken=token,
            DurationSeconds=settings.duration_seconds,
        )
        t3 = time.perf_counter()
        second_token = jwt()
        t4 = time.perf_counter()
        aws.assume_role_with_web_identity(
            settings, second_token, aws.role_session_name(kid), lambda message: None
        )
        t5 = time.perf_counter()
        issue_credential("aws", "credential_process")
        t6 = time.perf_counter()
        samples["config_and_signer_ms"].append(t1 - t0)
        samples["sign_ms"].append(t2 - t1)
        samples["exchange_ms"].append(t3 - t2)
        samples["exchange_as_called_ms"].append(t5 - t4)
        samples["issue_ms"].append(t6 - t5)

    report: dict[str, float | int] = {
        "rounds": rounds,
        "import_credctl_issue_ms": import_ms,
        "cold_first_issue_ms": cold_ms,
    }
    report.update({name: _median_ms(values) for name, values in samples.items()})
    report["overhead_ms"] = report["issue_ms"] - report["sign_ms"] - report["exchange_ms"]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
