"""Which engine runs, and the promise that a missing C extension is said once and costs nothing else."""
import os
import warnings

import numpy as np
import pytest

import mobilenetv2
from mobilenetv2.engines import native


def test_backend_names_the_engine():
    assert mobilenetv2.backend() in ("C AVX-512", "C AVX2", "C scalar", "NumPy")
    expected = os.environ.get("MOBILENETV2_EXPECT_BACKEND")
    if expected:  # CI builds the extension and must run it
        assert mobilenetv2.backend().startswith(expected), native.IMPORT_ERROR


@pytest.mark.skipif(not native.available(), reason="the C extension is not built")
def test_c_relu6_against_numpy_twin():
    from mobilenetv2.engines.numpy_kernels import relu6
    x = np.random.default_rng(0).uniform(-3, 9, 1001).astype(np.float32)
    for fn in (native.lib.f32_relu6, native.lib.f32_relu6_scalar):
        y = np.empty_like(x)
        fn(native.as_float_ptr(x), native.as_float_ptr(y), x.size)
        np.testing.assert_array_equal(y, relu6(x))


def test_missing_extension_warns_once(monkeypatch):
    monkeypatch.setattr(native, "lib", None)
    monkeypatch.setattr(native, "_warned", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        native.warn_if_missing()
        native.warn_if_missing()
    assert len(caught) == 1 and "NumPy engine" in str(caught[0].message)
    assert native.backend() == "NumPy"


def test_the_c_kernel_wrappers_say_when_the_extension_is_missing(monkeypatch):
    """c_kernels (the NumPy twins' tests call the C kernels through it) checks its arguments, then
    says the extension is not built: on any machine, with or without it."""
    from mobilenetv2.engines import c_kernels
    monkeypatch.setattr(native, "lib", None)
    with pytest.raises(RuntimeError, match="the C extension is not built"):
        c_kernels.softmax(np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="no classes"):  # the arguments first
        c_kernels.softmax(np.zeros((1, 0), np.float32))
