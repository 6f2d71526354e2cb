"""Instruction-set dispatch, and the promise that every ISA and thread count gives the same bits.

The C kernels run on the best ISA the CPU and OS support (CPUID + XGETBV), capped by
MNV2_FORCE_ISA; every per-output sequence of operations is fixed, so predict() on AVX-512, AVX2
and the scalar code must agree bit for bit, and with any number of threads.  On a CPU without
AVX-512 (or AVX2) those levels are absent from native.isas() and the tests cover the rest.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mobilenetv2 import MobileNetV2
from mobilenetv2.engines import native
from mobilenetv2.network.variants import VARIANTS, variant_name

pytestmark = pytest.mark.skipif(not native.available(), reason="the C extension is not built")


def cpu_flags():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def test_detected_isa_matches_the_kernel_s_cpu_flags():
    """/proc/cpuinfo lists what the kernel found and enabled (it hides AVX-512 where it does not
    save the zmm state): the independent truth for CPUID + XGETBV."""
    flags = cpu_flags()
    if flags is None or "fpu" not in flags:
        pytest.skip("no x86 /proc/cpuinfo flags to compare with")
    want = ["scalar"]
    if {"avx2", "fma", "avx"} <= flags:
        want.append("avx2")
        if {"avx512f", "avx512vl", "avx512bw", "avx512dq"} <= flags:
            want.append("avx512")
    assert native.isas() == want


def _backend_in_subprocess(**env):
    code = "import mobilenetv2; print(mobilenetv2.backend())"
    clean = {k: v for k, v in os.environ.items() if k not in ("MNV2_FORCE_ISA", "MNV2_FORCE_SCALAR")}
    done = subprocess.run([sys.executable, "-c", code], env=dict(clean, **env), capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


LABELS = {"scalar": "C scalar", "avx2": "C AVX2", "avx512": "C AVX-512"}


def test_force_isa_caps_the_level_and_backend_names_it():
    best = native.isas()[-1]
    assert _backend_in_subprocess() == LABELS[best]
    for name in ("scalar", "avx2", "avx512"):
        # never above what the machine has
        expected = name if name in native.isas() else best
        assert _backend_in_subprocess(MNV2_FORCE_ISA=name) == LABELS[expected]
    assert _backend_in_subprocess(MNV2_FORCE_SCALAR="1") == "C scalar"
    assert _backend_in_subprocess(MNV2_FORCE_SCALAR="1", MNV2_FORCE_ISA="avx512") == "C scalar"


def test_a_force_setting_the_dispatcher_ignores_is_said_not_silently_dropped():
    """MNV2_FORCE_ISA=avx2x (a typo) ran AVX-512 without a word: a benchmark meant for AVX2
    measured the wrong kernels.  The spellings the dispatcher reads stay silent."""
    assert native.unknown_force_settings({}) == []
    assert native.unknown_force_settings({"MNV2_FORCE_ISA": "avx2", "MNV2_FORCE_SCALAR": "0"}) == []
    assert "ignored" in native.unknown_force_settings({"MNV2_FORCE_ISA": "AVX2"})[0]
    assert "read as 1" in native.unknown_force_settings({"MNV2_FORCE_SCALAR": "1yes"})[0]
    code = "import warnings; warnings.simplefilter('error'); import mobilenetv2; print(mobilenetv2.backend())"
    clean = {k: v for k, v in os.environ.items() if k not in ("MNV2_FORCE_ISA", "MNV2_FORCE_SCALAR")}
    for env, said in [({"MNV2_FORCE_ISA": "avx2x"}, "MNV2_FORCE_ISA='avx2x' is not one of scalar, avx2, avx512"),
                      ({"MNV2_FORCE_SCALAR": "yes"}, "MNV2_FORCE_SCALAR='yes' is neither 1")]:
        done = subprocess.run([sys.executable, "-c", code], env=dict(clean, **env), capture_output=True,
                              text=True, cwd=Path(__file__).resolve().parent.parent)
        assert done.returncode != 0 and said in done.stderr, done.stderr
    assert _backend_in_subprocess(MNV2_FORCE_ISA="avx2x") == LABELS[native.isas()[-1]]  # still runs
    # shown at the module that reads the settings, not at importlib's frozen frames
    done = subprocess.run([sys.executable, "-c", "import warnings; warnings.simplefilter('always'); import mobilenetv2"],
                          env=dict(clean, MNV2_FORCE_ISA="avx2x"), capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)
    said = [line for line in done.stderr.splitlines() if "MNV2_FORCE_ISA='avx2x'" in line]
    assert done.returncode == 0 and len(said) == 1, done.stderr
    assert os.path.join("mobilenetv2", "engines", "native.py:") in said[0] and "RuntimeWarning" in said[0], said


def test_use_isa_switches_and_restores():
    before = native.isa()
    for name in native.isas():
        with native.use_isa(name):
            assert native.isa() == name and native.backend() == LABELS[name]
    assert native.isa() == before
    with pytest.raises(ValueError, match="not available"):
        with native.use_isa("avx1024"):
            pass


def _random_model(alpha, shape, **kw):
    model = MobileNetV2(shape, alpha=alpha, weights=None, threads=1, **kw)
    model.set_weights([w.astype(np.float32) for w in model.get_weights()])
    return model


def _predict_on_every_isa(model, x):
    outs = {}
    for name in native.isas():
        with native.use_isa(name):
            outs[name] = model.predict(x)
    return outs


def _assert_all_equal(outs, what):
    first = next(iter(outs))
    for name, y in outs.items():
        assert np.isfinite(y).all()
        np.testing.assert_array_equal(y, outs[first], err_msg=f"{what}: {name} differs from {first}")


@pytest.mark.parametrize("alpha,res", VARIANTS, ids=[variant_name(*v) for v in VARIANTS])
def test_every_variant_gives_the_same_bits_on_every_isa(alpha, res):
    if len(native.isas()) < 2:
        pytest.skip(f"this CPU runs only {native.isas()}: nothing to compare")
    model = _random_model(alpha, (res, res, 3), classifier_activation=None)
    x = np.random.default_rng(res).uniform(-1, 1, (1, res, res, 3)).astype(np.float32)
    _assert_all_equal(_predict_on_every_isa(model, x), variant_name(alpha, res))


@pytest.mark.parametrize("shape,alpha,batch,kw", [((97, 113, 3), 0.5, 2, {}), ((33, 35, 3), 1.4, 1, {}),
                                                  ((32, 45, 3), 0.35, 1, {}), ((150, 61, 3), 0.75, 3, {}),
                                                  ((300, 257, 3), 0.35, 2, {"top_pooling": "7x7"})])
def test_odd_sizes_give_the_same_bits_on_every_isa(shape, alpha, batch, kw):
    if len(native.isas()) < 2:
        pytest.skip(f"this CPU runs only {native.isas()}: nothing to compare")
    model = _random_model(alpha, shape, **kw)  # softmax head included (per cell of TF-slim's 7x7 grid)
    x = np.random.default_rng(batch).uniform(-1, 1, (batch,) + shape).astype(np.float32)
    _assert_all_equal(_predict_on_every_isa(model, x), f"{shape} alpha {alpha} batch {batch}")


def test_every_thread_count_1_to_16_gives_the_same_bits_on_every_isa():
    model = _random_model(1.0, (96, 96, 3))
    x1 = np.random.default_rng(1).uniform(-1, 1, (1, 96, 96, 3)).astype(np.float32)
    x5 = np.random.default_rng(5).uniform(-1, 1, (5, 96, 96, 3)).astype(np.float32)
    for name in native.isas():
        with native.use_isa(name):
            want1, want5 = model.predict(x1), model.predict(x5)
            for threads in range(2, 17):
                model.threads = threads
                np.testing.assert_array_equal(model.predict(x1), want1, err_msg=f"{name}, {threads} threads")
                np.testing.assert_array_equal(model.predict(x5), want5, err_msg=f"{name}, {threads} threads")
            model.threads = 1
            if name == native.isas()[0]:
                reference = (want1, want5)
            np.testing.assert_array_equal(want1, reference[0])
            np.testing.assert_array_equal(want5, reference[1])


@pytest.mark.parametrize("checkpoint", ["mobilenet_v2_1.0_224", "mobilenet_v2_0.35_96",
                                        "deeplabv3_mobilenet_v2_1.0_513"])
def test_hugging_face_models_give_the_same_bits_on_every_isa_and_thread_count(checkpoint):
    """transformers' checkpoints lower through the same plan (TF padding, the 1001-class head,
    DeepLabV3's dilated tail, ASPP and upsampling): an odd size and batch 2, 1 and 3 threads."""
    if len(native.isas()) < 2:
        pytest.skip(f"this CPU runs only {native.isas()}: nothing to compare")
    from conftest import require_shared
    from mobilenetv2 import from_pretrained
    model = from_pretrained(require_shared("hf", checkpoint))
    x = np.random.default_rng(11).uniform(-1, 1, (2, 97, 131, 3)).astype(np.float32)
    outs = {}
    for name in native.isas():
        with native.use_isa(name):
            for threads in (1, 3):
                model.threads = threads
                outs[f"{name}, {threads} threads"] = model.predict(x)
    _assert_all_equal(outs, checkpoint)
