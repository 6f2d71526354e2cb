"""Build of mobilenetv2: metadata lives in pyproject.toml; this file adds the cffi C extension.

The extension is optional: where it cannot be compiled the package installs anyway and runs on
its NumPy engine (``mobilenetv2.backend()`` says which path runs).  Set MNV2_REQUIRE_EXT=1 to make
a failed compile an error instead (CI does).
"""
import os
from concurrent.futures import ThreadPoolExecutor

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext


def _usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _compile_in_parallel(compiler, jobs):
    """``compiler.compile`` running one compiler process per source, ``jobs`` at a time (distutils
    compiles an extension's sources one after another: 17 kernels, over 2 minutes for the
    sanitizer builds CI makes).  The first source compiles alone, so the object folders exist
    before the others start; each call is distutils' own compile of one source."""
    serial = compiler.compile
    if getattr(serial, "in_parallel", False):
        return

    def compile(sources, *args, **kwargs):
        sources = list(sources)
        if jobs < 2 or len(sources) < 2:
            return serial(sources, *args, **kwargs)
        objects = serial(sources[:1], *args, **kwargs)
        with ThreadPoolExecutor(jobs) as pool:  # threads wait on the compiler processes
            for part in pool.map(lambda src: serial([src], *args, **kwargs), sources[1:]):
                objects += part
        return objects

    compile.in_parallel = True
    compiler.compile = compile


class OptionalBuildExt(build_ext):
    def build_extension(self, ext):
        try:
            _compile_in_parallel(self.compiler, _usable_cores())
            super().build_extension(ext)
        except Exception as exc:  # compiler missing or failing: fall back to the NumPy engine
            if os.environ.get("MNV2_REQUIRE_EXT") == "1":
                raise
            # setuptools then skips the module's copy into the package (--inplace, pip install -e),
            # which failed the install ("can't copy ... _mnv2.abi3.so") where a source did not compile
            ext.optional = True
            print(f"WARNING: the C extension {ext.name} was not built ({exc}); "
                  "mobilenetv2 will run on its NumPy engine.")


setup(
    cffi_modules=["csrc/build_ffi.py:ffibuilder"],
    cmdclass={"build_ext": OptionalBuildExt},
    package_dir={"mobilenetv2": "mobilenetv2", "mobilenetv2._registry": "weights"},
    packages=find_packages(include=["mobilenetv2", "mobilenetv2.*"]) + ["mobilenetv2._registry"],
    package_data={"mobilenetv2": ["data/*"], "mobilenetv2._registry": ["*.json"]},
)
