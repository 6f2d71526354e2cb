"""The C extension, if it was built, and the one place that says which engine runs.

``backend()`` returns ``"C AVX-512"``, ``"C AVX2"``, ``"C scalar"`` or ``"NumPy"``.  When the
extension is missing the NumPy engine runs and a single warning says why.  The instruction set
is the best the CPU and OS support (CPUID and XGETBV, in csrc/dispatch.c), capped by
``MNV2_FORCE_ISA=scalar|avx2|avx512`` (or ``MNV2_FORCE_SCALAR=1``); every level gives the same bits.
"""
import contextlib
import os
import warnings

from mobilenetv2.errors import ArgumentError, Error

try:
    from mobilenetv2 import _mnv2
    ffi, lib = _mnv2.ffi, _mnv2.lib
    IMPORT_ERROR = None
except ImportError as exc:  # not compiled (no compiler at install time) or removed
    ffi = lib = None
    IMPORT_ERROR = exc


def missing_reason():
    """Why the C extension is not there, as a user can act on it: Python's own words for a
    module file that is absent ('cannot import name ... (most likely due to a circular
    import)') point at a bug that is not there."""
    import glob
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the package folder
    built = glob.glob(os.path.join(here, "_mnv2*.so")) + glob.glob(os.path.join(here, "_mnv2*.pyd"))
    if not built:
        return (f"no compiled module _mnv2 in {here}, not built at install time: was a C compiler "
                "there? `pip install -v` shows the build's output")
    return f"{os.path.basename(built[0])} does not load: {IMPORT_ERROR}"

ISA_NAMES = ("scalar", "avx2", "avx512")  # index = the C level (MNV2_ISA_*)
_LABELS = {"scalar": "C scalar", "avx2": "C AVX2", "avx512": "C AVX-512"}

_warned = False


def unknown_force_settings(environ):
    """What the C dispatcher ignores of $MNV2_FORCE_ISA and $MNV2_FORCE_SCALAR (csrc/dispatch.c
    reads them): a list of lines, empty when both are unset or spelled as it reads them."""
    lines = []
    force = environ.get("MNV2_FORCE_ISA", "")
    if force and force not in ISA_NAMES:
        lines.append(f"MNV2_FORCE_ISA={force!r} is not one of {', '.join(ISA_NAMES)}: ignored")
    scalar = environ.get("MNV2_FORCE_SCALAR", "")
    if scalar and scalar not in ("0", "1"):
        lines.append(f"MNV2_FORCE_SCALAR={scalar!r} is neither 1 (scalar kernels) nor 0: "
                     + ("read as 1" if scalar.startswith("1") else "ignored"))
    return lines


class EngineUnavailable(Error, RuntimeError):
    """``engine="c"`` was asked for a model the C core cannot run (the message says why)."""


def available():
    return lib is not None


if lib is not None:
    for _line in unknown_force_settings(os.environ):  # a typo must not pass for the ISA asked for
        warnings.warn(f"mobilenetv2: {_line} (the C kernels run {ISA_NAMES[lib.mnv2_simd_level()]})",
                      RuntimeWarning, stacklevel=1)  # at import: the module that reads them


def warn_if_missing():
    """Say once, clearly, that the NumPy engine is running instead of the C core."""
    global _warned
    if lib is None and not _warned:
        _warned = True
        warnings.warn(f"mobilenetv2: the C extension is not available ({missing_reason()}); "
                      "running on the NumPy engine, which is correct but slower.",
                      RuntimeWarning, stacklevel=3)


def isa():
    """The instruction set the C kernels use now ('scalar', 'avx2', 'avx512'), None without C."""
    return None if lib is None else ISA_NAMES[lib.mnv2_simd_level()]


def isas():
    """Every instruction set this CPU and OS can run, lowest first ([] without the C extension)."""
    return [] if lib is None else list(ISA_NAMES[:lib.mnv2_isa_detected() + 1])


def hide_avx512():
    """Hide AVX-512 (and AMX, AVX-VNNI) from everything in this process that asks CPUID from now
    on, our kernels included, which then run AVX2: an AVX2-only CPU emulated on this one, for
    benchmarks (``mobilenetv2 bench --hide-avx512``).  Threads started earlier keep seeing the
    real CPU, and libraries that chose their kernels already keep them: call it first.  Needs
    Linux's CPUID faulting (``cpuid_fault`` in /proc/cpuinfo); ArgumentError where that or
    AVX-512 is missing.  Not undone for the life of the process."""
    if lib is None:
        raise ArgumentError(f"hiding AVX-512 needs the C extension, which is not available ({missing_reason()})")
    if lib.mnv2_avx512_hidden():
        return
    if "avx512" not in isas():
        raise ArgumentError("this CPU (or its OS) has no AVX-512 to hide: it runs AVX2 code already")
    if lib.mnv2_hide_avx512() != 0:
        raise ArgumentError("this kernel or CPU cannot trap CPUID (no 'cpuid_fault' in /proc/cpuinfo), "
                            "so AVX-512 cannot be hidden from the other engines; measure on an "
                            "AVX2-only CPU instead")


def avx512_hidden():
    """Whether hide_avx512() hid AVX-512 in this process."""
    return lib is not None and bool(lib.mnv2_avx512_hidden())


def backend():
    """Which path runs: 'C AVX-512', 'C AVX2', 'C scalar' or 'NumPy'."""
    return "NumPy" if lib is None else _LABELS[isa()]


@contextlib.contextmanager
def use_isa(name):
    """Run the C kernels on instruction set ``name`` inside the block (it must be in isas());
    the level before is restored after.  Not while another thread runs a kernel or plan."""
    if name not in isas():
        raise ArgumentError(f"instruction set {name!r} is not available here (have {isas()})")
    before = lib.mnv2_simd_level()
    lib.mnv2_set_isa(ISA_NAMES.index(name))
    try:
        yield
    finally:
        lib.mnv2_set_isa(before)


def as_float_ptr(a):
    """A ``float *`` to a C-contiguous float32 array (the caller keeps ``a`` alive)."""
    return ffi.cast("float *", ffi.from_buffer(a))
