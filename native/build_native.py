"""The cffi builder for ``credctl._native`` (out-of-line API mode).

The C surface is declared once, in ``credctl_native.h``; this file picks the
parts and the sources each platform builds. setup.py also takes from here
the sources of the ``credctl-fast`` launcher and the check that names a
missing compiler or header.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import sysconfig
from pathlib import Path

from cffi import FFI

NATIVE = Path(__file__).resolve().parent
HEADER = NATIVE / "credctl_native.h"
DARWIN = sys.platform == "darwin"

# Relative to the project root, where setup.py runs, as setuptools wants sources.
_NATIVE_REL = "native"
PORTABLE_SOURCES = [
    os.path.join(_NATIVE_REL, "daemon_client.c"),
    os.path.join(_NATIVE_REL, "fast_auth.c"),
]
LAUNCHER_SOURCES = [*PORTABLE_SOURCES, os.path.join(_NATIVE_REL, "launcher.c")]
DARWIN_SOURCES = [os.path.join(_NATIVE_REL, "secure_enclave.m")]
ALL_SOURCE_FILES = sorted(
    os.path.join(_NATIVE_REL, path.name)
    for path in NATIVE.iterdir()
    if path.suffix in {".c", ".h", ".m", ".py"}
)
DARWIN_FRAMEWORKS = ["Security", "LocalAuthentication", "Foundation"]


def _declarations(section: str) -> str:
    """The header's text between the CFFI-<section>-BEGIN/END markers."""
    text = HEADER.read_text()
    begin = f"/* CFFI-{section}-BEGIN */"
    end = f"/* CFFI-{section}-END */"
    return text[text.index(begin) + len(begin) : text.index(end)]


def missing_build_tools() -> str | None:
    """A message naming what is missing to compile the native code, or None."""
    compiler = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    program = shlex.split(compiler)[0]
    if shutil.which(program) is None:
        hint = "xcode-select --install" if DARWIN else "apt-get install gcc"
        return (
            f"credctl needs a C compiler to build its native module, and `{program}` "
            f"was not found: install one (e.g. `{hint}`) or set CC to one"
        )
    include = sysconfig.get_paths()["include"]
    if not Path(include, "Python.h").is_file():
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        return (
            f"credctl needs the Python {version} development headers to build its native "
            f"module, and Python.h is not in {include}: install them "
            f"(e.g. apt-get install python{version}-dev)"
        )
    return None


ffibuilder = FFI()
ffibuilder.cdef(_declarations("PORTABLE") + (_declarations("DARWIN") if DARWIN else ""))
ffibuilder.set_source(
    "credctl._native",
    '#include "credctl_native.h"',
    sources=PORTABLE_SOURCES + (DARWIN_SOURCES if DARWIN else []),
    include_dirs=[_NATIVE_REL],
    extra_compile_args=["-fobjc-arc"] if DARWIN else [],
    extra_link_args=[arg for name in DARWIN_FRAMEWORKS for arg in ("-framework", name)]
    if DARWIN
    else [],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
