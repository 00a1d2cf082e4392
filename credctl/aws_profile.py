"""Add or replace one profile in the AWS shared config file, touching nothing else.

configparser would drop comments and reflow the file, so the file is edited as
lines: every line outside the profile's own section is written back as it was.
Sections are recognised the way botocore reads them (``[profile NAME]``, or
``[default]``), so the profile written is the one the AWS tools load.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from credctl.errors import ConfigError, UsageError
from credctl.home import write_private_file

DEFAULT_PROFILE = "credctl"
# botocore's section pattern (configparser's SECTCRE), applied to the stripped line.
_SECTION = re.compile(r"\[(?P<header>.+)\]")
_PROFILE_NAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")
_COMMENT_OR_BLANK = re.compile(r"^\s*([#;].*)?$")


@dataclass(frozen=True)
class ProfileResult:
    path: Path
    header: str  # e.g. "[profile credctl]"
    action: str  # "added", "replaced" or "kept"


def aws_config_path() -> Path:
    """``$AWS_CONFIG_FILE`` if set, else ``~/.aws/config``."""
    configured = os.environ.get("AWS_CONFIG_FILE")
    return Path(configured).expanduser() if configured else Path.home() / ".aws" / "config"


def check_profile_name(profile: str) -> str:
    if not _PROFILE_NAME.match(profile):
        raise UsageError(
            f"--profile: {profile!r} is not a usable profile name "
            "(letters, digits and _ . @ + -, up to 64 characters)"
        )
    return profile


def _profile_of(line: str) -> str | None:
    """The profile a section header line opens, None for other lines/sections."""
    match = _SECTION.match(line.strip())
    if not match:
        return None
    header = match.group("header")
    if header == "default":
        return "default"
    try:
        parts = shlex.split(header)
    except ValueError:
        return None
    if len(parts) == 2 and parts[0] == "profile":
        return parts[1]
    return None


def _is_section(line: str) -> bool:
    # An indented line continues the previous value in configparser.
    return not line[:1].isspace() and bool(_SECTION.match(line.strip()))


def render_section(profile: str, values: Sequence[tuple[str, str]], newline: str) -> list[str]:
    header = "[default]" if profile == "default" else f"[profile {profile}]"
    return [header + newline] + [f"{key} = {value}{newline}" for key, value in values]


def write_profile(
    path: Path,
    profile: str,
    values: Sequence[tuple[str, str]],
    force: bool = False,
) -> ProfileResult:
    """Add ``[profile NAME]`` with ``values`` to the config file at ``path``.

    An existing section for the profile is kept as it is unless ``force``; with
    ``force`` its settings are replaced and the comments that follow it (which
    usually introduce the next section) stay. A symlinked file is edited where
    it points, so dotfile managers keep their link.
    """
    check_profile_name(profile)
    target = path.resolve() if path.is_symlink() else path
    try:
        text = target.read_bytes().decode("utf-8")
        mode: int | None = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        text, mode = "", None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc}); credctl did not change it") from None
    lines = text.splitlines(keepends=True)
    newline = "\r\n" if any(line.endswith("\r\n") for line in lines) else "\n"
    section = render_section(profile, values, newline)
    header = section[0].strip()

    start = next(
        (i for i, line in enumerate(lines) if _is_section(line) and _profile_of(line) == profile),
        None,
    )
    if start is not None and not force:
        return ProfileResult(path, header, "kept")
    if start is None:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += newline
        if lines and lines[-1].strip():
            lines.append(newline)
        lines.extend(section)
        action = "added"
    else:
        end = next((i for i in range(start + 1, len(lines)) if _is_section(lines[i])), len(lines))
        # Blank lines and comments right before the next section belong to it.
        body_end = end
        while body_end > start + 1 and _COMMENT_OR_BLANK.match(lines[body_end - 1]):
            body_end -= 1
        lines[start:body_end] = section
        action = "replaced"

    if not target.parent.exists():
        target.parent.mkdir(mode=0o700, parents=True)
    write_private_file(target, "".join(lines).encode("utf-8"))
    if mode is not None:
        os.chmod(target, mode)
    return ProfileResult(path, header, action)


def install_profile(home: Path, command: str, profile: str, force: bool) -> ProfileResult:
    """Write the profile whose credential_process is ``command auth``, with the AWS region."""
    from credctl.config import load_config
    from credctl.errors import NotConfiguredError

    check_profile_name(profile)
    settings = load_config(home).aws
    if settings is None:
        raise NotConfiguredError("aws")
    values = [("credential_process", f"{command} auth"), ("region", settings.region)]
    return write_profile(aws_config_path(), profile, values, force)
