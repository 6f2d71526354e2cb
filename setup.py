"""Build of mobilenetv2: metadata lives in pyproject.toml; this file adds the cffi C extension.

The extension is optional: where it cannot be compiled the package installs anyway and runs on
its NumPy engine (``mobilenetv2.backend()`` says which path runs).  Set MNV2_REQUIRE_EXT=1 to make
a failed compile an error instead (CI does).
"""
import os

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # compiler missing or failing: fall back to the NumPy engine
            if os.environ.get("MNV2_REQUIRE_EXT") == "1":
                raise
            print(f"WARNING: the C extension {ext.name} was not built ({exc}); "
                  "mobilenetv2 will run on its NumPy engine.")


setup(
    cffi_modules=["csrc/build_ffi.py:ffibuilder"],
    cmdclass={"build_ext": OptionalBuildExt},
    package_dir={"mobilenetv2": "mobilenetv2", "mobilenetv2._registry": "weights"},
    packages=find_packages(include=["mobilenetv2", "mobilenetv2.*"]) + ["mobilenetv2._registry"],
    package_data={"mobilenetv2": ["data/*"], "mobilenetv2._registry": ["*.json"]},
)
