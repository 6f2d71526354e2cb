"""cffi build script (out-of-line API mode) for the extension ``mobilenetv2._mnv2``.

The cdef is read from the marked section of ``mobilenetv2.h``, so each C signature is declared
once.  Every ``*.c`` in this folder is compiled.  The default flags target any x86-64; the
AVX2+FMA and AVX-512 kernels carry their own target attributes and are chosen at run time.
``-ffp-contract=off``: the compiler never fuses a multiply and an add on its own, so each kernel
does exactly the operations it writes (fmaf / _mm*_fmadd_ps where it means a fused one), the same
on every ISA.
Environment: ``MNV2_CFLAGS`` adds compiler flags (e.g. ``-march=native`` or the sanitizers),
``MNV2_LDFLAGS`` adds linker flags.
"""
import os
import shlex
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
HEADER = HERE / "mobilenetv2.h"


def cdef_source(header_text):
    begin = header_text.index("/* cdef-begin */") + len("/* cdef-begin */")
    end = header_text.index("/* cdef-end */")
    return header_text[begin:end]


def _sources():
    # Relative to the project root (setup.py's folder), as setuptools wants them.
    root = HERE.parent
    return sorted(str(p.relative_to(root)) for p in HERE.glob("*.c"))


ffibuilder = FFI()
ffibuilder.cdef(cdef_source(HEADER.read_text()))
ffibuilder.set_source(
    "mobilenetv2._mnv2",
    '#include "mobilenetv2.h"',
    sources=_sources(),
    # a changed header (simd.h's block sizes, the op struct) rebuilds every source
    depends=sorted(str(p.relative_to(HERE.parent)) for p in HERE.glob("*.h")),
    include_dirs=[str(HERE.relative_to(HERE.parent))],
    # a call to an undeclared function is an error (as GCC 14 and clang 16 make it), not a module
    # built with an undefined symbol that then fails to load
    extra_compile_args=["-O3", "-std=c11", "-fno-math-errno", "-ffp-contract=off", "-pthread",
                        "-Werror=implicit-function-declaration"]
    + shlex.split(os.environ.get("MNV2_CFLAGS", "")),
    extra_link_args=["-pthread"] + shlex.split(os.environ.get("MNV2_LDFLAGS", "")),
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
