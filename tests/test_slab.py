"""The packed weights carved from mappings on huge pages (plan._Slab):
aligned, disjoint, in the order asked for, and the same bits as separate allocations."""
import mmap
import os
import re

import numpy as np
import pytest

from mobilenetv2 import MobileNetV2
from mobilenetv2.engines import machine, native, plan

PAGE = 64 * 1024  # a small stand-in for the huge page: several mappings at test sizes


def addr(a):
    return a.__array_interface__["data"][0]


@pytest.mark.skipif(not hasattr(mmap, "MADV_HUGEPAGE"), reason="no madvise(MADV_HUGEPAGE) on this platform")
def test_arrays_are_aligned_disjoint_and_in_order():
    slab = plan._Slab(PAGE, expect_bytes=5 * PAGE)
    sizes = [1, 15, 16, 17, 1000, PAGE // 4, 7, PAGE, 64]  # floats
    arrays = [slab.empty(n) for n in sizes]
    for a, n in zip(arrays, sizes):
        assert a.dtype == np.float32 and a.size == n and a.flags.c_contiguous and a.flags.writeable
        assert addr(a) % plan.ALIGN == 0
    for i, a in enumerate(arrays):  # write each with its index: no array overwrites another
        a[...] = i
    for i, a in enumerate(arrays):
        assert (a == i).all()
    # the first mapping is the expected size (5 pages, 327,680 bytes): the first seven arrays
    # (69,952 bytes, each rounded up to ALIGN) fit in it one after another; the eighth (262,144
    # bytes) does not and fills a second mapping of CHUNK_PAGES pages; the ninth starts a third
    def step(n):
        return -(-n * 4 // plan.ALIGN) * plan.ALIGN
    for i in range(6):
        assert addr(arrays[i + 1]) - addr(arrays[i]) == step(sizes[i])
    assert plan._Slab.CHUNK_PAGES * PAGE == sizes[7] * 4
    assert slab.mappings == 3
    assert all(addr(arrays[i]) % PAGE == 0 for i in (0, 7, 8))


@pytest.mark.skipif(not hasattr(mmap, "MADV_HUGEPAGE"), reason="no madvise(MADV_HUGEPAGE) on this platform")
def test_a_request_bigger_than_a_chunk_gets_a_mapping_of_its_own():
    slab = plan._Slab(PAGE)
    small = slab.empty(10)
    big = slab.empty(5 * plan._Slab.CHUNK_PAGES * PAGE // 4)  # five chunks' worth of floats
    assert slab.mappings == 2 and addr(big) % PAGE == 0
    big[...] = 2.0
    small[...] = 1.0
    assert (big == 2.0).all() and (small == 1.0).all()


def test_without_huge_pages_each_array_is_its_own_allocation():
    slab = plan._Slab(None)
    a, b = slab.empty(100), slab.copy(np.arange(12, dtype=np.float32).reshape(3, 4))
    assert slab.mappings == 0 and addr(a) % plan.ALIGN == 0 and addr(b) % plan.ALIGN == 0
    assert b.shape == (3, 4) and (b.ravel() == np.arange(12)).all()


@pytest.mark.skipif(not hasattr(mmap, "MADV_HUGEPAGE"), reason="no madvise(MADV_HUGEPAGE) on this platform")
def test_a_refused_mapping_falls_back_to_plain_arrays(monkeypatch):
    slab = plan._Slab(PAGE)
    first = slab.empty(10)

    def refuse(*args, **kwargs):
        raise OSError(12, "Cannot allocate memory")
    monkeypatch.setattr(plan.mmap, "mmap", refuse)
    big = slab.empty(plan._Slab.CHUNK_PAGES * PAGE)  # needs a new mapping, which is refused
    assert slab.huge_page is None and slab.mappings == 1
    assert big.size == plan._Slab.CHUNK_PAGES * PAGE and addr(big) % plan.ALIGN == 0
    big[...] = 3.0
    first[...] = 1.0
    assert (big == 3.0).all() and (first == 1.0).all()


@pytest.mark.parametrize("value,on", [("0", False), ("off", False), ("1", True), ("", True)])
def test_the_environment_turns_huge_pages_off(monkeypatch, value, on):
    monkeypatch.setenv("MNV2_HUGE_PAGES", value)
    want = machine.HUGE_PAGE if hasattr(mmap, "MADV_HUGEPAGE") else None
    assert plan.huge_pages() == (want if on else None)


@pytest.mark.skipif(not native.available(), reason="the C extension is not built")
@pytest.mark.parametrize("alpha,shape,kw,batch", [
    (0.35, (96, 96, 3), dict(), 2),
    (1.0, (97, 113, 3), dict(include_top=False, pooling="avg"), 1),
])
def test_the_same_bits_with_and_without_huge_pages(monkeypatch, alpha, shape, kw, batch):
    x = np.random.default_rng(3).uniform(-1, 1, (batch,) + shape).astype(np.float32)
    outs = []
    for value in ("0", "1"):
        monkeypatch.setenv("MNV2_HUGE_PAGES", value)
        model = MobileNetV2(shape, alpha=alpha, weights=None, **kw)
        outs.append(model.predict(x))
        if value == "1" and plan.huge_pages():
            assert model._packed._slab.mappings == 1  # every packed weight in one mapping
    np.testing.assert_array_equal(outs[0], outs[1])


def _vm_flags(address):
    """The VmFlags of the mapping of this process that holds ``address``."""
    text = open("/proc/self/smaps").read()
    for block in re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", text):
        lo, hi = (int(v, 16) for v in block.split()[0].split("-"))
        if lo <= address < hi:
            return re.search(r"VmFlags:(.*)", block).group(1).split()
    raise AssertionError(f"no mapping holds {address:#x}")


@pytest.mark.skipif(not native.available(), reason="the C extension is not built")
@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="no /proc/self/smaps to read the flags from")
def test_the_packed_weights_are_advised_as_huge_pages(monkeypatch):
    monkeypatch.delenv("MNV2_HUGE_PAGES", raising=False)
    if plan.huge_pages() is None:
        pytest.skip("this kernel offers no transparent huge pages (sysfs THP mode 'never' or absent)")
    model = MobileNetV2((96, 96, 3), alpha=0.35, weights=None)
    model.predict(np.zeros((1, 96, 96, 3), np.float32))
    packed = model._packed._arrays
    weights = [addr(a) for arrays in packed.values() for a in arrays.values()]
    for a in weights:
        assert "hg" in _vm_flags(a)  # madvise(MADV_HUGEPAGE) took
    assert min(weights) % plan.ALIGN == 0
    assert max(weights) - min(weights) < 4 * model.count_params() + machine.HUGE_PAGE
