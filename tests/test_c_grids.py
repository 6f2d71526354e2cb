"""Deterministic grids that close what a mutation pass over csrc/ let through (benchmarks/mutation.py
--c; the survivors and why each is killed or equivalent are in benchmarks/README.md): paths that the
random draws of test_c_kernels.py reach only by chance (the row-blocked pointwise path for weights
past the cached-weights limit, on every ISA and every panel group), each checked against its float64
NumPy twin and across ISAs bit for bit."""
import numpy as np
import pytest

from mobilenetv2.engines import native
from mobilenetv2.engines import numpy_kernels as K

pytestmark = pytest.mark.skipif(not native.available(), reason="the C extension is not built")
if native.available():
    from mobilenetv2.engines import c_kernels as C

ISAS = native.isas()


def rnd(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def close(got, want):
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6 * scale)


def same_on_every_isa(call):
    outs = {isa: call(isa) for isa in [True] + ISAS}
    for isa, got in outs.items():
        np.testing.assert_array_equal(got, outs[True], err_msg=f"ISA {isa} differs from the scalar twin")
    return outs[True]


def twin_pointwise(x, w, b, relu6, r):
    return K.pointwise(x.astype(np.float64)[None, None], w.astype(np.float64), bias=b, relu6=relu6,
                       residual=None if r is None else r.astype(np.float64)[None, None])[0, 0]


@pytest.mark.parametrize("cout", [65, 72, 81, 97, 129, 152])
def test_pointwise_row_blocked_path_every_panel_group(cout):
    """cin = 960: 16 x 961 floats a panel, so 5+ panels are past the AVX2 kernel's 256 KiB
    cached-weights limit and the AVX-512 kernel's L2 budget: rows go in blocks, panels in groups of
    four (5..10 panels: one, two or three groups, a last group of 1..4, an 8-wide last panel or
    not).  The rows cross the row blocks, whose size comes from L2 (on a 1 MB L2: 66 rows on AVX2,
    48 on AVX-512), with and without a short last block joining the one before it (49, 59 and 140
    rows: joined; 70 and 150: not)."""
    rng = np.random.default_rng(cout)
    cin = 960
    w, b = rnd(rng, cin, cout) * np.float32(0.1), rnd(rng, cout)
    packed = C.pack_pointwise(w, b)
    for m in (1, 7, 31, 49, 59, 70, 140, 150):
        x, r = rnd(rng, m, cin), rnd(rng, m, cout)
        for relu6, res in ((False, None), (True, r)):
            got = same_on_every_isa(lambda isa: C.pointwise(x, packed, cin, cout, relu6, res, scalar=isa))
            close(got, twin_pointwise(x, w, b, relu6, res))


def test_no_kernel_reads_outside_its_inputs():
    """tests/guard_pages.py in a child: every kernel on every ISA over inputs that end (and start) at
    an inaccessible page; a read one float too far is a SIGSEGV there, not a silent neighbour read
    (e.g. the AVX-512 depthwise block loading one pixel past its last column)."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    import mobilenetv2
    script = Path(__file__).with_name("guard_pages.py")
    # the child imports the package under test (this one), not whichever the interpreter finds first
    root = str(Path(mobilenetv2.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, f"exit {done.returncode} (negative: a signal)\n{done.stderr[-2000:]}"
    assert "no read outside an input" in done.stdout


@pytest.mark.parametrize("dilation,stride", [(4, 1), (4, 2), (8, 1)])
def test_dilated_depthwise_wide_left_padding(dilation, stride):
    """Left padding up to 2 * dilation (the wrapper's limit): the first interior column j0 reaches
    8 and more, so the 8-pixel interior blocks start past the row's first block; every ISA bit for
    bit the scalar twin and within float32 rounding of the float64 engine."""
    rng = np.random.default_rng(dilation * 10 + stride)
    for c in (1, 9, 16, 17, 33):
        k, b = rnd(rng, 3, 3, c), rnd(rng, c)
        for w in range(2 * dilation + 1, 2 * dilation + 1 + 20 * stride, 3):
            x = rnd(rng, 1, 2 * dilation + 2, w, c)
            for pads in ((2 * dilation, 0, 2 * dilation, 0), (dilation, dilation, 2 * dilation, 1)):
                got = same_on_every_isa(lambda isa: C.dwconv3x3_dilated(x, k, b, stride, dilation, pads, True,
                                                                        scalar=isa))
                want = K.depthwise3x3(x.astype(np.float64), k.astype(np.float64), stride, pads,
                                      bias=b.astype(np.float64), relu6=True, dilation=dilation)
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cin", [16, 96, 144])
def test_pointwise_24_channels_in_row_pairs(cin):
    """cout = 24 (MobileNetV2's block_1/block_2 projects): the AVX-512 kernel computes all 24
    channels of two rows in three registers, 8, 4, 2 or 1 pairs at a time, then a last odd row; cin
    144 is a blocked sum (64 + 64 + 16).  Every remainder of 16 rows, row ranges starting on an odd
    row, ReLU6 and residual: the float64 twin, and bit for bit every ISA and every split."""
    rng = np.random.default_rng(cin)
    cout = 24
    w, b = rnd(rng, cin, cout) * np.float32(0.3), rnd(rng, cout)
    packed = C.pack_pointwise(w, b)
    for m in list(range(1, 34)) + [57]:
        x, r = rnd(rng, m, cin), rnd(rng, m, cout)
        for relu6, res in ((False, None), (True, r)):
            got = same_on_every_isa(lambda isa: C.pointwise(x, packed, cin, cout, relu6, res, scalar=isa))
            close(got, twin_pointwise(x, w, b, relu6, res))
            a = m // 2 | 1 if m > 1 else 0  # an odd first row for the second part
            for isa in ISAS:
                split = C.pointwise(x, packed, cin, cout, relu6, res, rows=(0, a), scalar=isa) + \
                    C.pointwise(x, packed, cin, cout, relu6, res, rows=(a, m), scalar=isa)
                np.testing.assert_array_equal(split, got, err_msg=f"ISA {isa}, rows split at {a}")
