"""The C extension, if it was built, and the one place that says which engine runs.

``backend()`` returns ``"C AVX2"``, ``"C scalar"`` or ``"NumPy"``.  When the extension is missing
the NumPy engine runs and a single warning says why.
"""
import warnings

try:
    from mobilenetv2 import _mnv2
    ffi, lib = _mnv2.ffi, _mnv2.lib
    IMPORT_ERROR = None
except ImportError as exc:  # not compiled (no compiler at install time) or removed
    ffi = lib = None
    IMPORT_ERROR = exc

_warned = False


class EngineUnavailable(RuntimeError):
    """``engine="c"`` was asked for a model the C core cannot run (the message says why)."""


def available():
    return lib is not None


def warn_if_missing():
    """Say once, clearly, that the NumPy engine is running instead of the C core."""
    global _warned
    if lib is None and not _warned:
        _warned = True
        warnings.warn(f"mobilenetv2: the C extension is not available ({IMPORT_ERROR}); "
                      "running on the NumPy engine, which is correct but slower.",
                      RuntimeWarning, stacklevel=3)


def backend():
    """Which path runs: 'C AVX2', 'C scalar' or 'NumPy'."""
    if lib is None:
        return "NumPy"
    return "C AVX2" if lib.mnv2_simd_level() >= 1 else "C scalar"


def as_float_ptr(a):
    """A ``float *`` to a C-contiguous float32 array (the caller keeps ``a`` alive)."""
    return ffi.cast("float *", ffi.from_buffer(a))
