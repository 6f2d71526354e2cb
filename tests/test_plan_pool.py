"""What the mutation pass over mobilenetv2/engines/plan.py and pool.py let through (benchmarks/mutation.py;
survivors and verdicts in benchmarks/README.md): the MAC count of fused blocks in profile(), the
weight-size limit on fusing a block, the thread limit on a big machine, and the pool's own
refusals (pickling, a forgotten pool, threads that cannot start)."""
import pickle
import types

import numpy as np
import pytest

from mobilenetv2 import MobileNetV2
from mobilenetv2.engines import native

pytestmark = pytest.mark.skipif(not native.available(), reason="the C extension is not built")


def rand(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def force_fusion(monkeypatch, max_weight_bytes=float("inf")):
    from mobilenetv2.engines import plan as P
    monkeypatch.setattr(P, "FUSE_MIN_BYTES", 0)
    monkeypatch.setattr(P, "FUSE_MIN_ROWS", 1)
    monkeypatch.setattr(P, "FUSE_MAX_WEIGHT_BYTES", max_weight_bytes)
    monkeypatch.setattr(P, "_by_panels", lambda *args: 0)


def test_profile_counts_the_macs_of_fused_blocks(monkeypatch):
    """Every block fused (expansion included): profile()'s MACs still add up to the model's, as
    arch.layer_macs counts them layer by layer."""
    from mobilenetv2.network import arch
    force_fusion(monkeypatch)
    model = MobileNetV2((64, 64, 3), alpha=0.35, weights=None, threads=1)
    rows = model.profile(rand(1, 64, 64, 3), runs=1)
    assert sum(r["kind"] == "block" for r in rows) == 17
    assert sum(r["macs"] for r in rows) == sum(arch.layer_macs(model.layers, (64, 64, 3)).values())


def test_blocks_whose_weights_pass_the_limit_are_not_fused(monkeypatch):
    """A block fuses where its expand + project weights (4 bytes each) are within
    FUSE_MAX_WEIGHT_BYTES, or no more than the 4 passes over one band's expanded rows (band x ow x
    ce floats) that fusing saves; a block too heavy with its expansion still fuses its depthwise
    and project where those pass. Checked at a limit of 0 (only the band rule) and at one between
    the smallest and the largest block's weights."""
    x = rand(1, 64, 64, 3)
    force_fusion(monkeypatch)
    everything = MobileNetV2((64, 64, 3), alpha=0.35, weights=None, threads=1)
    everything.predict(x)
    blocks = [(op["w"] != native.ffi.NULL, op["c"], op["ce"], op["cout"], op["band"], op["ow"])
              for p in everything._plans.values() for op in p.ops if op["kind"] == native.lib.MNV2_OP_BLOCK]
    assert len(blocks) == 17

    def pays(weight_bytes, band, ow, ce, limit):
        return weight_bytes <= limit or weight_bytes <= 16 * band * ow * ce

    whole = sorted(4 * (c * ce + ce * cout) for e, c, ce, cout, band, ow in blocks if e)
    for limit in (0, whole[len(whole) // 2]):
        force_fusion(monkeypatch, max_weight_bytes=limit)
        some = MobileNetV2((64, 64, 3), alpha=0.35, weights=None, threads=1)
        some.predict(x)
        fused = [op for p in some._plans.values() for op in p.ops if op["kind"] == native.lib.MNV2_OP_BLOCK]
        with_e = sum(e and pays(4 * (c * ce + ce * cout), band, ow, ce, limit)
                     for e, c, ce, cout, band, ow in blocks)
        assert sum(op["w"] != native.ffi.NULL for op in fused) == with_e < sum(e for e, *_ in blocks)
        assert len(fused) == sum(pays(4 * (c * ce + ce * cout), band, ow, ce, limit) if e else False
                                 or pays(4 * ce * cout, band, ow, ce, limit)
                                 for e, c, ce, cout, band, ow in blocks) < 17
        for op in fused:
            weights = op["ce"] * op["cout"] + (op["c"] * op["ce"] if op["w"] != native.ffi.NULL else 0)
            assert pays(4 * weights, op["band"], op["ow"], op["ce"], limit)


def test_thread_limit_is_four_per_usable_core_and_at_least_64(monkeypatch):
    from mobilenetv2.engines import pool
    monkeypatch.setattr(pool, "usable_cores", lambda: 40)
    assert pool.max_threads() == 160
    monkeypatch.setattr(pool, "usable_cores", lambda: 3)
    assert pool.max_threads() == 64


def test_a_pool_refuses_pickling_and_is_unusable_once_forgotten():
    from mobilenetv2.engines import pool
    p = pool.Pool(2)
    assert p.usable() and p.threads == 2
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(p)
    p.forget()
    assert not p.usable()


def test_threads_that_cannot_start_are_a_clear_error(monkeypatch):
    """mnv2_pool_create returns NULL where pthread_create fails (a process or memory limit)."""
    from mobilenetv2.engines import pool
    fake = types.SimpleNamespace(ffi=native.ffi, lib=types.SimpleNamespace(mnv2_pool_create=lambda n: native.ffi.NULL))
    monkeypatch.setattr(pool, "native", fake)
    with pytest.raises(RuntimeError, match="could not start 3 threads"):
        pool.Pool(3)
