"""setup aws | aws-profile | gcp | gcp-cred-file: validation, config.json, the files written."""

from __future__ import annotations

import importlib
import json
import os
import shlex
import stat
import sys
from pathlib import Path

import pytest
from botocore.compat import compat_shell_split

# credctl.cli re-exports the click group as `setup`, hiding the module.
setup_cli = importlib.import_module("credctl.cli.setup")

ROLE_ARN = "arn:aws:iam::123456789012:role/credctl-device-role"
ISSUER = "https://issuer.example.com"


@pytest.fixture
def aws_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "aws" / "config"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(path))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return path


@pytest.fixture
def aws_home(initialised_home: Path, run_cli) -> Path:
    result = run_cli("setup", "aws", "--role-arn", ROLE_ARN, "--issuer-url", ISSUER,
                     "--region", "eu-west-1")  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    return initialised_home


def read_config(home: Path) -> dict:
    return json.loads((home / "config.json").read_text())


# --- setup aws / setup gcp ----------------------------------------------------


def test_setup_aws_records_and_keeps_other_keys(initialised_home: Path, run_cli) -> None:
    document = read_config(initialised_home)
    document["custom_key"] = {"kept": True}
    document["aws"] = {"role_arn": ROLE_ARN, "issuer_url": ISSUER, "s3_bucket": "my-bucket",
                       "duration_seconds": 900, "future_field": 1}  # fmt: skip
    (initialised_home / "config.json").write_text(json.dumps(document))

    result = run_cli("setup", "aws", "--role-arn", ROLE_ARN.replace("credctl-device", "other"),
                     "--issuer-url", ISSUER + "/", "--region", "eu-central-1")  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    saved = read_config(initialised_home)
    assert saved["custom_key"] == {"kept": True}
    assert saved["aws"] == {
        "role_arn": "arn:aws:iam::123456789012:role/other-role",
        "issuer_url": ISSUER,
        "s3_bucket": "my-bucket",
        "duration_seconds": 900,
        "future_field": 1,
        "region": "eu-central-1",
    }
    assert stat.S_IMODE((initialised_home / "config.json").stat().st_mode) == 0o600

    # A later run without --region keeps the recorded one.
    assert run_cli("setup", "aws", "--role-arn", ROLE_ARN, "--issuer-url", ISSUER).returncode == 0
    assert read_config(initialised_home)["aws"]["region"] == "eu-central-1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--role-arn", "arn:aws:iam::123:role/x", "--issuer-url", ISSUER], "--role-arn"),
        (["--role-arn", ROLE_ARN, "--issuer-url", "http://issuer.example.com"], "must use https"),
        (["--role-arn", ROLE_ARN, "--issuer-url", "issuer.example.com"], "is not a URL"),
        (["--role-arn", ROLE_ARN, "--issuer-url", ISSUER, "--region", "Mars"], "AWS region"),
        (["--role-arn", ROLE_ARN, "--issuer-url", ISSUER, "--sts-endpoint", "ftp://x"],
         "--sts-endpoint"),
    ],
)  # fmt: skip
def test_setup_aws_validates(
    initialised_home: Path, run_cli, args: list[str], message: str
) -> None:
    before = (initialised_home / "config.json").read_bytes()
    result = run_cli("setup", "aws", *args)
    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert stderr.startswith("credctl: ") and message in stderr
    assert (initialised_home / "config.json").read_bytes() == before


def test_setup_aws_accepts_loopback_http(initialised_home: Path, run_cli) -> None:
    result = run_cli("setup", "aws", "--role-arn", ROLE_ARN, "--issuer-url", ISSUER,
                     "--sts-endpoint", "http://127.0.0.1:4566")  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert read_config(initialised_home)["aws"]["sts_endpoint"] == "http://127.0.0.1:4566"


GCP_ARGS = [
    "--project-number", "123456789012", "--pool-id", "credctl-pool",
    "--provider-id", "credctl-provider",
    "--service-account", "sa@demo.iam.gserviceaccount.com", "--issuer-url", ISSUER,
]  # fmt: skip


def test_setup_gcp_records(initialised_home: Path, run_cli) -> None:
    result = run_cli("setup", "gcp", *GCP_ARGS)
    assert result.returncode == 0, result.stderr.decode()
    assert (
        "//iam.googleapis.com/projects/123456789012/locations/global/"
        "workloadIdentityPools/credctl-pool/providers/credctl-provider"
    ) in result.stdout.decode()
    assert read_config(initialised_home)["gcp"] == {
        "project_number": "123456789012",
        "workload_pool_id": "credctl-pool",
        "provider_id": "credctl-provider",
        "service_account_email": "sa@demo.iam.gserviceaccount.com",
        "issuer_url": ISSUER,
    }


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--project-number", "my-project"),
        ("--pool-id", "Credctl_Pool"),
        ("--provider-id", "p"),
        ("--service-account", "not-an-email"),
        ("--issuer-url", "http://example.com"),
    ],
)
def test_setup_gcp_validates(initialised_home: Path, run_cli, option: str, value: str) -> None:
    args = list(GCP_ARGS)
    args[args.index(option) + 1] = value
    result = run_cli("setup", "gcp", *args)
    assert result.returncode == 2
    assert result.stderr.decode().startswith(f"credctl: {option}: ")
    assert "gcp" not in read_config(initialised_home)


def test_gcp_cred_file_output_option(initialised_home: Path, run_cli, tmp_path: Path) -> None:
    result = run_cli("setup", "gcp-cred-file")
    assert result.returncode == 1
    assert result.stderr == b"credctl: GCP not configured: run `credctl setup gcp` first\n"

    assert run_cli("setup", "gcp", *GCP_ARGS).returncode == 0
    target = tmp_path / "dir with space" / "creds.json"
    result = run_cli("setup", "gcp-cred-file", "--output", str(target))
    assert result.returncode == 2 and b"does not exist" in result.stderr

    target.parent.mkdir()
    result = run_cli("setup", "gcp-cred-file", "--output", str(target))
    assert result.returncode == 0, result.stderr.decode()
    document = json.loads(target.read_text())
    assert document["token_url"] == "https://sts.googleapis.com/v1/token"
    assert document["service_account_impersonation_url"] == (
        "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/"
        "sa@demo.iam.gserviceaccount.com:generateAccessToken"
    )
    command = shlex.split(document["credential_source"]["executable"]["command"])
    assert command[-5:] == ["auth", "--provider", "gcp", "--format", "executable"]
    assert read_config(initialised_home)["gcp"]["credential_file_path"] == str(target)


# --- setup aws-profile --------------------------------------------------------

EXISTING = (
    "# my AWS config; keep this comment\n"
    "[default]\n"
    "region = us-east-2\n"
    "output=json   \n"
    "\n"
    "[profile work]   ; trailing comment\n"
    "role_arn = arn:aws:iam::111111111111:role/admin\n"
    "source_profile = default\n"
    "s3 =\n"
    "    max_concurrent_requests = 20\n"
    "[sso-session corp]\n"
    "sso_region = us-east-1"
)  # no newline at the end, on purpose


def test_aws_profile_is_appended_and_everything_else_kept(
    aws_home: Path, run_cli, aws_config: Path
) -> None:
    aws_config.parent.mkdir()
    aws_config.write_text(EXISTING)
    os.chmod(aws_config, 0o644)

    result = run_cli("setup", "aws-profile")
    assert result.returncode == 0, result.stderr.decode()
    assert f"Added [profile credctl] in {aws_config}" in result.stdout.decode()
    text = aws_config.read_text()
    assert text.startswith(EXISTING + "\n\n[profile credctl]\ncredential_process = ")
    added = text[len(EXISTING) + 2 :].splitlines()
    assert added[0] == "[profile credctl]"
    assert added[2] == "region = eu-west-1"
    assert stat.S_IMODE(aws_config.stat().st_mode) == 0o644

    # botocore reads the profile, and splits the command the way credctl wrote it.
    import botocore.session

    profile = botocore.session.Session(profile="credctl").get_scoped_config()
    assert profile["region"] == "eu-west-1"
    command = compat_shell_split(profile["credential_process"])
    assert command[-1] == "auth"
    assert Path(command[0]).is_absolute()
    assert botocore.session.Session(profile="work").get_scoped_config()["source_profile"] == (
        "default"
    )


def test_existing_profile_is_left_alone_without_force(
    aws_home: Path, run_cli, aws_config: Path
) -> None:
    aws_config.parent.mkdir()
    original = "[profile credctl]\ncredential_process = /old/credctl auth\n"
    aws_config.write_text(original)
    result = run_cli("setup", "aws-profile")
    assert result.returncode == 0
    assert "already exists" in result.stdout.decode() and "--force" in result.stdout.decode()
    assert aws_config.read_text() == original


def test_force_replaces_only_that_profile(aws_home: Path, run_cli, aws_config: Path) -> None:
    aws_config.parent.mkdir()
    before = "# top\n[default]\nregion = us-east-2\n\n"
    old_section = (
        "[profile  credctl]\ncredential_process = /old/credctl auth\naws_access_key_id = AKIA\n"
    )
    after = "\n# the work profile\n[profile work]\nregion = eu-north-1\n"
    aws_config.write_text(before + old_section + after)

    result = run_cli("setup", "aws-profile", "--force")
    assert result.returncode == 0, result.stderr.decode()
    assert "Replaced [profile credctl]" in result.stdout.decode()
    text = aws_config.read_text()
    assert text.startswith(before + "[profile credctl]\ncredential_process = ")
    assert text.endswith("auth\nregion = eu-west-1\n" + after)
    assert "/old/credctl" not in text and "AKIA" not in text


def test_crlf_files_stay_crlf_and_default_profile(
    aws_home: Path, run_cli, aws_config: Path
) -> None:
    aws_config.parent.mkdir()
    aws_config.write_bytes(b"[profile work]\r\nregion = us-east-2\r\n")
    result = run_cli("setup", "aws-profile", "--profile", "default")
    assert result.returncode == 0, result.stderr.decode()
    data = aws_config.read_bytes()
    assert data.startswith(b"[profile work]\r\nregion = us-east-2\r\n\r\n[default]\r\n")
    assert data.count(b"\n") == data.count(b"\r\n")


def test_a_symlinked_config_keeps_its_link(
    aws_home: Path, run_cli, aws_config: Path, tmp_path: Path
) -> None:
    real = tmp_path / "dotfiles" / "aws-config"
    real.parent.mkdir()
    real.write_text("[default]\nregion = us-east-2\n")
    aws_config.parent.mkdir()
    aws_config.symlink_to(real)
    assert run_cli("setup", "aws-profile").returncode == 0
    assert aws_config.is_symlink()
    assert "[profile credctl]" in real.read_text()


def test_a_new_config_file_and_directory(aws_home: Path, run_cli, aws_config: Path) -> None:
    assert run_cli("setup", "aws-profile", "--profile", "dev").returncode == 0
    assert aws_config.read_text().startswith("[profile dev]\ncredential_process = ")


def test_profile_needs_aws_settings_and_a_sane_name(
    initialised_home: Path, run_cli, aws_config: Path
) -> None:
    result = run_cli("setup", "aws-profile")
    assert result.returncode == 1
    assert result.stderr == b"credctl: AWS not configured: run `credctl setup aws` first\n"
    result = run_cli("setup", "aws-profile", "--profile", "bad]name")
    assert result.returncode == 2
    assert not aws_config.exists()


# --- the command written into both files --------------------------------------


def test_command_prefers_credctl_fast_beside_the_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "my tools" / "bin"
    bin_dir.mkdir(parents=True)
    script = bin_dir / "credctl"
    script.write_text("#!/bin/sh\n")
    monkeypatch.setattr(sys, "argv", [str(script), "setup", "aws-profile"])

    assert shlex.split(setup_cli.credctl_command()) == [str(script)]
    (bin_dir / "credctl-fast").write_text("")
    assert shlex.split(setup_cli.credctl_command()) == [str(bin_dir / "credctl-fast")]
    assert compat_shell_split(setup_cli.credctl_command() + " auth") == [
        str(bin_dir / "credctl-fast"), "auth"
    ]  # fmt: skip

    # A symlinked script (pipx) is followed to its real directory.
    link = tmp_path / "credctl"
    link.symlink_to(script)
    monkeypatch.setattr(sys, "argv", [str(link)])
    assert shlex.split(setup_cli.credctl_command()) == [str(bin_dir / "credctl-fast")]


def test_command_under_python_dash_m(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", [str(Path(setup_cli.__file__).parent.parent / "__main__.py")])
    assert shlex.split(setup_cli.credctl_command()) == [sys.executable, "-m", "credctl"]
