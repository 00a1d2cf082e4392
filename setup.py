import os
import sys

from setuptools import Distribution, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.sdist import sdist

# Everything else is in pyproject.toml. This file names the cffi builder and
# builds the credctl-fast launcher beside the native module.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "native"))
import build_native

# A fixed path, so data_files can name it before it is built; "bin" installs it
# into the scripts directory, next to the `credctl` console script.
LAUNCHER_DIR = os.path.join("build", "launcher")
LAUNCHER = os.path.join(LAUNCHER_DIR, "credctl-fast")


class BuildExtWithLauncher(build_ext):
    def run(self) -> None:
        missing = build_native.missing_build_tools()
        if missing:
            sys.exit(f"error: {missing}")
        super().run()
        objects = self.compiler.compile(
            build_native.LAUNCHER_SOURCES,
            output_dir=os.path.join(self.build_temp, "launcher"),
            include_dirs=["native"],
        )
        self.compiler.link_executable(objects, "credctl-fast", output_dir=LAUNCHER_DIR)


class SdistWithNativeSources(sdist):
    """The sdist carries every native source and the builder, not only the
    sources setuptools knows of (those of the extension on this platform)."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        extra = [path for path in build_native.ALL_SOURCE_FILES if path not in files]
        super().make_release_tree(base_dir, [*files, *extra])


class DistributionWithEditableData(Distribution):
    """Editable installs get the launcher too: setuptools' editable_wheel installs
    data files only when the distribution answers `has_data` (its other commands
    ask `has_data_files`)."""

    def has_data(self) -> bool:
        return bool(self.has_data_files())


setup(
    distclass=DistributionWithEditableData,
    cffi_modules=["native/build_native.py:ffibuilder"],
    cmdclass={"build_ext": BuildExtWithLauncher, "sdist": SdistWithNativeSources},
    data_files=[("bin", [LAUNCHER])],
)
