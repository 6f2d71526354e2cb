"""The C plan (model.predict / model(x) for float32) against the NumPy layer path."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from mobilenetv2 import MobileNetV2
from mobilenetv2.engines import native

pytestmark = pytest.mark.skipif(not native.available(), reason="the C extension is not built")


def rand(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def numpy_engine(model, x):
    """The NumPy engine's output for ``x`` on ``model`` (same weights)."""
    engine = model.engine
    model.engine = "numpy"
    try:
        return model.predict(x)
    finally:
        model.engine = engine


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize("alpha,shape,kw,batch", [
    (0.35, (96, 96, 3), dict(classifier_activation=None), 1),
    (0.35, (96, 96, 3), dict(), 3),
    (0.5, (97, 113, 3), dict(include_top=False, pooling="avg"), 2),
    (1.0, (32, 32, 3), dict(include_top=False, pooling="max"), 1),
    (1.4, (64, 64, 3), dict(include_top=False), 1),
    (0.75, (33, 47, 3), dict(include_top=False, classes=10), 1),
    (1.0, (96, 96, 3), dict(), 3),
    (1.4, (32, 32, 3), dict(include_top=False, pooling="avg"), 3),
    (1.0, (97, 113, 3), dict(include_top=False, pooling="max"), 1),
])
def test_plan_matches_numpy_layers(alpha, shape, kw, batch):
    model = MobileNetV2(shape, alpha=alpha, weights=None, **kw)
    x = rand(batch, *shape)
    got = model.predict(x)
    want = numpy_engine(model, x)
    assert got.shape == want.shape and got.dtype == np.float32
    assert rel_l2(got, want) <= 1e-5
    if got.ndim == 2:
        assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
    np.testing.assert_array_equal(model.predict(x), got)  # the reused arena gives the same bits


def test_plan_follows_weight_changes():
    model = MobileNetV2((96, 96, 3), alpha=0.35, weights=None, classifier_activation=None)
    x = rand(1, 96, 96, 3)
    before = model.predict(x)
    model.set_weights([w * 0.9 for w in model.get_weights()])
    after = model.predict(x)
    assert not np.allclose(before, after)
    assert rel_l2(after, numpy_engine(model, x)) <= 1e-5
    layer = model.get_layer("predictions")  # a layer changed directly, not through the model
    layer.set_weights([layer.weights[0], layer.weights[1] + 1.0])
    np.testing.assert_allclose(model.predict(x), after + 1.0, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("alpha,shape,batch", [
    (0.35, (96, 96, 3), 1), (0.5, (97, 113, 3), 2), (1.0, (33, 47, 3), 3), (0.75, (64, 65, 3), 1)])
def test_fused_blocks_give_the_same_bits_as_separate_ops(monkeypatch, alpha, shape, batch):
    """Every block fused (ring of expanded rows, bands of output rows, odd sizes, stride 2 with
    Keras's asymmetric padding, several images) against no block fused, for 1 to 4 threads: each
    output is computed by the same operations either way, so the bits must agree."""
    from mobilenetv2.engines import plan as P
    x = rand(batch, *shape)
    monkeypatch.setattr(P, "FUSE_MIN_BYTES", float("inf"))
    monkeypatch.setattr(P, "FUSE_SMALL_MIN_BYTES", float("inf"))
    monkeypatch.setattr(P, "STEM_FUSE_MIN_BYTES", float("inf"))  # nor the stem into the first
    separate = MobileNetV2(shape, alpha=alpha, weights=None, classifier_activation=None, threads=1)
    want = separate.predict(x)
    assert all(op["kind"] != 6 for plan in separate._plans.values() for op in plan.ops)
    monkeypatch.setattr(P, "FUSE_MIN_BYTES", 0)
    monkeypatch.setattr(P, "FUSE_MIN_ROWS", 1)
    monkeypatch.setattr(P, "FUSE_MAX_WEIGHT_BYTES", float("inf"))
    monkeypatch.setattr(P, "_by_panels", lambda *args: 0)  # small maps too
    # bands of 1 row ... 4 rows (the plan's cap), and past the cap as plan_ab.py --set MAX_BAND sets it:
    # 8 (the depthwise rows kernel's full group, DW_GROUP) and 11 (a group and 3 rows)
    for band_bytes, max_band in ((10 ** 9, 1), (64 * 1024, 4), (10 ** 9, 4), (10 ** 9, 8), (10 ** 9, 11)):
        monkeypatch.setattr(P, "BAND_SCRATCH_BYTES", band_bytes)
        monkeypatch.setattr(P, "MAX_BAND", max_band)
        fused = MobileNetV2(shape, alpha=alpha, weights=None, classifier_activation=None, threads=1)
        fused.set_weights(separate.get_weights())
        for threads in (1, 2, 3, 4):
            fused.threads = threads
            np.testing.assert_array_equal(fused.predict(x), want)
        kinds = [op["kind"] for plan in fused._plans.values() for op in plan.ops]
        assert kinds.count(6) == 17  # every inverted residual block


@pytest.mark.parametrize("isa", [i for i in native.isas() if i != "scalar"] or ["scalar"])
def test_prefetching_the_next_ops_weights_changes_no_bit(isa):
    """Each pointwise op prefetches the start of the next pointwise op's packed weights
    (plan._mark_prefetch); the same plan with those marks cleared gives the same bits."""
    model = MobileNetV2((96, 96, 3), alpha=0.5, weights=None, threads=1)
    x = rand(2, 96, 96, 3)
    with native.use_isa(isa):
        with_prefetch = model(x)
        plan = model._plan(x)
        lib, ffi = native.lib, native.ffi
        pointwise = [i for i, op in enumerate(plan.ops) if op["kind"] == lib.MNV2_OP_POINTWISE]
        for i, j in zip(pointwise, pointwise[1:]):  # the next pointwise op's weights, all of them
            assert plan.c_ops[i].after == plan.c_ops[j].w
            assert plan.c_ops[i].after_floats == lib.f32_pointwise_packed_floats(plan.ops[j]["c"],
                                                                                  plan.ops[j]["cout"])
        assert plan.c_ops[pointwise[-1]].after == ffi.NULL
        for i in pointwise:
            plan.c_ops[i].after = ffi.NULL
        without = model(x)
    np.testing.assert_array_equal(with_prefetch, without)
    assert rel_l2(with_prefetch, numpy_engine(model, x)) < 1e-5


def test_profile_names_every_op_and_counts_the_models_macs(monkeypatch):
    from mobilenetv2.network import arch
    from mobilenetv2.engines import plan as P
    monkeypatch.setattr(P, "STEM_FUSE_MIN_BYTES", float("inf"))  # (tests/test_plan_stem_fused.py: fused)
    monkeypatch.setattr(P, "FUSE_SMALL_MIN_BYTES", float("inf"))  # nor the first block
    model = MobileNetV2((96, 96, 3), alpha=0.35, weights=None, threads=2)
    rows = model.profile(rand(1, 96, 96, 3), runs=3)
    names = {layer.name for layer in model.layers}
    assert [r["layer"] for r in rows][:3] == ["Conv1", "expanded_conv_depthwise", "expanded_conv_project"]
    assert all(r["layer"] in names and r["seconds"] > 0 for r in rows)
    assert sum(r["macs"] for r in rows) == sum(arch.layer_macs(model.layers, (96, 96, 3)).values())
    assert [r["kind"] for r in rows][-3:] == ["avgpool", "pointwise", "softmax"]
    # A model the C core does not run: the package's EngineUnavailable saying why (it was a bare
    # RuntimeError, missed by `except mobilenetv2.Error`, that named neither reason).
    for kwargs, why in ((dict(dtype="float64"), "computes in float32 and this model is float64"),
                        (dict(engine="numpy"), "its engine is 'numpy'"),
                        (dict(input_shape=(96, 96, 1)), "takes 3 input channels and this model has 1")):
        other = MobileNetV2(**{"input_shape": (96, 96, 3), "alpha": 0.35, "weights": None, **kwargs})
        with pytest.raises(native.EngineUnavailable, match=f"profile.. times the C plan, which cannot run "
                                                                f"MobileNetV2 alpha=0.35 with top .*{why}"):
            other.profile(rand(1, 96, 96, other.input_shape[2]))


@pytest.mark.parametrize("threads", [2, 16])
def test_profile_times_every_op_whichever_thread_ran_it(threads):
    """With more threads than cores, the OS can hold the calling thread back while the others run
    a stage or the whole run: the profile timed only the caller's shares, so every op of such a
    stage got 0 seconds (5 of 20 one-run profiles at 16 threads on 2 cores, some with all 49 ops
    at 0).  Each stage's wall time is now shared among its ops by every thread's time in each:
    every op gets a positive time and a run's ops sum to no more than the call around them."""
    import time
    model = MobileNetV2((96, 96, 3), alpha=0.35, weights=None, threads=threads)
    x = rand(1, 96, 96, 3)
    model.profile(x, runs=1)
    for _ in range(60):
        start = time.perf_counter()
        rows = model.profile(x, runs=1)
        took = time.perf_counter() - start
        assert all(r["seconds"] > 0 for r in rows), [r["layer"] for r in rows if r["seconds"] <= 0]
        assert sum(r["seconds"] for r in rows) <= took


def test_plan_reads_the_callers_array_in_place_and_leaves_it_alone():
    model = MobileNetV2((96, 96, 3), alpha=0.35, weights=None, classifier_activation=None)
    x = rand(2, 96, 96, 3)
    want = numpy_engine(model, x)
    kept = x.copy()
    x.setflags(write=False)  # a read-only batch is fine: the plan only reads it
    got = model(x)
    np.testing.assert_array_equal(x, kept)
    assert rel_l2(got, want) <= 1e-5
    np.testing.assert_array_equal(model(rand(2, 96, 96, 3, seed=1)), model(rand(2, 96, 96, 3, seed=1)))
    np.testing.assert_array_equal(model(kept), got)  # a new array for the same plan


def at_odd_address(a):
    """A C-contiguous copy of ``a`` one byte past an aligned address (np.frombuffer at an offset,
    a field of a packed record): NumPy calls it unaligned."""
    out = np.frombuffer(b"\0" + a.tobytes(), a.dtype, offset=1).reshape(a.shape)
    assert out.flags.c_contiguous and not out.flags.aligned
    return out


def floats_aligned_pointer(monkeypatch):
    """Make every array given to C as a float * prove it is aligned for floats: a misaligned one
    is undefined behaviour in the kernels (UBSan: 'load of misaligned address')."""
    as_float_ptr = native.as_float_ptr

    def checked(a):
        assert a.flags.aligned and a.ctypes.data % 4 == 0, "a misaligned array went to C"
        return as_float_ptr(a)
    monkeypatch.setattr(native, "as_float_ptr", checked)


@pytest.mark.parametrize("isa", native.isas() or ["scalar"])
def test_a_batch_at_an_odd_address_is_copied_before_c_reads_it(monkeypatch, isa):
    model = MobileNetV2((None, None, 3), alpha=0.35, include_top=False, weights=None, threads=1)
    x = rand(2, 40, 45, 3)
    want = model.predict(x)
    floats_aligned_pointer(monkeypatch)
    with native.use_isa(isa):
        np.testing.assert_array_equal(model.predict(at_odd_address(x)), want)
        np.testing.assert_array_equal(model(at_odd_address(x)), want)
        np.testing.assert_array_equal(model.predict(at_odd_address(x), batch_size=1), want)


@pytest.mark.parametrize("index", [0, 1234, -1])
def test_plan_input_copy_finds_a_nan_anywhere(index):
    """The C copy checks 8 values a vector and the rest one by one: 1 x 33 x 35 x 3 = 3465 values."""
    model = MobileNetV2((33, 35, 3), alpha=0.35, weights=None, include_top=False)
    x = rand(1, 33, 35, 3)
    model(x)
    x.reshape(-1)[index] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        model(x)


def test_plan_survives_other_models_and_is_rebuilt_for_its_own_changes():
    x = rand(1, 96, 96, 3)
    a = MobileNetV2((96, 96, 3), alpha=0.35, weights=None)
    a(x)
    plan = a._plans[x.shape]
    b = MobileNetV2((96, 96, 3), alpha=0.35, weights=None)  # sets its own layers' weights
    b.set_weights(a.get_weights())
    a(x)
    assert a._plans[x.shape] is plan
    a.get_layer("Conv1").set_weights(a.get_layer("Conv1").get_weights())
    a(x)
    assert a._plans[x.shape] is not plan


def test_float64_models_do_not_use_the_plan():
    model = MobileNetV2((96, 96, 3), alpha=0.35, weights=None, dtype="float64")
    model.predict(rand(1, 96, 96, 3))
    assert model._plans == {}


def test_concurrent_predict_from_python_threads():
    model = MobileNetV2((96, 96, 3), alpha=0.35, weights=None)
    inputs = [rand(2, 96, 96, 3, seed=i) for i in range(4)]
    want = [model.predict(x) for x in inputs]
    got = [None] * 4

    def work(i):
        for _ in range(5):
            got[i] = model.predict(inputs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_forced_scalar_path():
    code = ("import numpy as np, mobilenetv2 as m; print(m.backend()); "
            "model = m.MobileNetV2((96, 96, 3), alpha=0.35, weights=None, classifier_activation=None); "
            "x = np.random.default_rng(0).uniform(-1, 1, (1, 96, 96, 3)).astype(np.float32); "
            "a = model.predict(x); model.engine = 'numpy'; b = model.predict(x); "
            "print(np.linalg.norm(a - b) / np.linalg.norm(b))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, MNV2_FORCE_SCALAR="1"))
    assert run.returncode == 0, run.stderr
    backend, err = run.stdout.strip().splitlines()
    assert backend == "C scalar" and float(err) <= 1e-5


def test_bit_identical_for_every_thread_count():
    model = MobileNetV2((97, 113, 3), alpha=0.5, weights=None, include_top=False, pooling="avg", threads=1)
    x = rand(2, 97, 113, 3)
    one = model.predict(x)
    for threads in (2, 3, 4, 1):
        model.threads = threads
        np.testing.assert_array_equal(model.predict(x), one)
    model.threads = 2  # repeated runs: a missing barrier would show as a run that differs
    for _ in range(20):
        np.testing.assert_array_equal(model.predict(x), one)
    x4 = rand(4, 97, 113, 3)  # 4 images: 2 or 4 threads take whole images each, 3 split rows
    model.threads = 1
    one4 = model.predict(x4)
    for threads in (2, 3, 4):
        model.threads = threads
        np.testing.assert_array_equal(model.predict(x4), one4)
    head = MobileNetV2((64, 64, 3), alpha=0.35, weights=None, threads=1)  # dense head + softmax
    x4 = rand(4, 64, 64, 3)
    want = head.predict(x4)
    assert rel_l2(want, numpy_engine(head, x4)) <= 1e-5
    for threads in (2, 4, 3):
        head.threads = threads
        for _ in range(5):
            np.testing.assert_array_equal(head.predict(x4), want)
    model = MobileNetV2((96, 96, 3), alpha=0.35, weights=None, threads=3)
    assert model.threads == 3
    y3 = model.predict(rand(1, 96, 96, 3))
    model.threads = 1
    np.testing.assert_array_equal(model.predict(rand(1, 96, 96, 3)), y3)


def test_pooling_after_a_channel_split_conv_skips_the_barrier():
    """A global pooling op splits its channels as the pointwise conv before it splits its output
    panels, so each thread pools the channels it computed and no barrier comes between them; after
    a conv split by rows, or by other channel groups, or with a clash on a buffer, the barrier
    stays (mobilenetv2/engines/plan.py's _mark_syncs, on hand-made ops)."""
    from mobilenetv2.engines.plan import _mark_syncs
    lib = native.lib

    def pw(split_panels, cout, reads, writes):
        return dict(kind=lib.MNV2_OP_POINTWISE, n=1, split_rows=7, split_panels=split_panels, cout=cout,
                    reads=[reads], writes=writes)

    def pool(c, reads, writes):
        return dict(kind=lib.MNV2_OP_AVGPOOL, n=1, split_rows=0, split_panels=1, c=c, reads=[reads], writes=writes)

    a, b, c = (0, 100), (100, 200), (200, 300)
    cases = [([pw(1, 1280, a, b), pool(1280, b, c)], 0),   # Conv_1 by panels, then its pooling
             ([pw(0, 1280, a, b), pool(1280, b, c)], 1),   # Conv_1 by rows: every thread wrote some of each channel
             ([pw(1, 1296, a, b), pool(1280, b, c)], 1),   # other 16-channel groups
             ([pw(1, 1280, a, b), pool(1280, b, a)], 1)]   # the pooling writes over what Conv_1 read
    for ops, sync in cases:
        _mark_syncs(ops)
        assert ops[1]["sync"] == sync, ops
    # in a real plan: the classifier's pooling follows Conv_1 without a barrier where Conv_1 shares
    # its panels, and every thread count gives the same bits, run after run
    model = MobileNetV2((96, 96, 3), alpha=0.35, weights=None, threads=1)
    x = rand(2, 96, 96, 3)
    want = model.predict(x[:1])
    plan = model._plan(x[:1])
    i = next(i for i, op in enumerate(plan.ops) if op["kind"] == lib.MNV2_OP_AVGPOOL)
    assert plan.ops[i]["sync"] == (0 if plan.ops[i - 1].get("split_panels") else 1)
    for threads in (2, 3, 5, 8, 16):
        model.threads = threads
        for _ in range(5):
            np.testing.assert_array_equal(model.predict(x[:1]), want)


def test_depthwise_chains_split_pixels_and_7x7_panels_split_pixels_too(monkeypatch):
    """A plain depthwise conv shares each image's pixels among the threads, not its rows, and so do
    the pointwise convs after it on its output (project, next expand), with no barrier between
    them; a pointwise conv after a fused block keeps that block's rows.  A pointwise conv split by
    output panels that ends its stage may cut its panels' pixels too (panel_pixels), but not
    Conv_1, whose pooling reads by its channel split.  On threads that cut a 13- or 7-row map
    inside rows, or 7x7 panels into pixel chunks (3, 5, 8, 16), the bits are those of one thread
    (on every ISA: tests/test_isa.py), and near the NumPy engine's.  The plan as on 16 cores with
    a 1 MB L2."""
    from mobilenetv2.engines import plan as P
    lib = native.lib
    monkeypatch.setattr(P.machine, "CORES", 16)
    monkeypatch.setattr(P, "BALANCE_THREADS", 16)
    monkeypatch.setattr(P, "FUSE_MIN_BYTES", 1024 * 1024)
    model = MobileNetV2((200, 200, 3), alpha=1.0, weights=None, threads=1)
    x = rand(2, 200, 200, 3)
    want1, want2 = model.predict(x[:1]), model.predict(x)
    ops = model._plan(x[:1]).ops
    chains = 0
    for i, op in enumerate(ops):
        if op["kind"] == lib.MNV2_OP_DWCONV:
            assert op.get("split_pixels") == 1 and op["sync"] == 1
            chains += 1
            follow = ops[i + 1]
            if follow["kind"] == lib.MNV2_OP_POINTWISE and not follow.get("split_panels"):
                assert follow.get("split_pixels") == 1 and follow["sync"] == 0, follow
        if op["kind"] == lib.MNV2_OP_BLOCK and ops[i + 1]["kind"] == lib.MNV2_OP_POINTWISE:
            assert not ops[i + 1].get("split_pixels")
        if op["kind"] == lib.MNV2_OP_POINTWISE and op.get("split_panels") and not op.get("batch_rows"):
            assert op.get("panel_pixels", 0) == ops[i + 1]["sync"], (i, op)
    assert chains >= 5
    assert sum(op.get("panel_pixels", 0) for op in ops) >= 4  # the 7x7 projects and expands
    assert rel_l2(want2, numpy_engine(model, x)) <= 1e-5
    for threads in (3, 5, 8, 16):
        model.threads = threads
        for _ in range(3):
            np.testing.assert_array_equal(model.predict(x[:1]), want1, err_msg=f"{threads} threads")
            np.testing.assert_array_equal(model.predict(x), want2, err_msg=f"{threads} threads, batch 2")


def test_any_thread_count_on_any_shape_and_core_count_gives_one_thread_s_bits(monkeypatch):
    """Hypothesis: a random input size, width, batch and head, the plan as built on 2, 4 or 16
    cores (which moves the row, pixel, panel and fusion choices), and three thread counts in 2-16:
    the bits of one thread."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    from mobilenetv2.engines import plan as P

    @hypothesis.settings(max_examples=25, deadline=None)
    @hypothesis.given(cores=st.sampled_from([2, 4, 16]), h=st.integers(32, 200), w=st.integers(32, 200),
                      alpha=st.sampled_from([0.35, 0.5, 0.75, 1.0]), batch=st.integers(1, 3),
                      top=st.booleans(), threads=st.lists(st.integers(2, 16), min_size=3, max_size=3, unique=True))
    def check(cores, h, w, alpha, batch, top, threads):
        monkeypatch.setattr(P.machine, "CORES", cores)
        monkeypatch.setattr(P, "BALANCE_THREADS", cores)
        model = MobileNetV2((h, w, 3), alpha=alpha, weights=None, include_top=top, pooling="avg", threads=1)
        x = rand(batch, h, w, 3, seed=h * w)
        want = model.predict(x)
        for t in threads:
            model.threads = t
            np.testing.assert_array_equal(model.predict(x), want, err_msg=f"{t} threads")
    check()


@pytest.mark.parametrize("alpha,shape,batch", [
    (0.35, (96, 96, 3), 1), (0.35, (96, 96, 3), 8), (1.0, (64, 64, 3), 2), (0.5, (97, 113, 3), 1)])
def test_arena_puts_every_tensors_two_thread_split_at_its_buffers_middle(monkeypatch, alpha, shape, batch):
    """Where two threads (or two groups of threads) split an op's output, the first float of the
    second share lies in the cache line that ends at the middle of the arena buffer holding it,
    for every tensor the buffer holds: so each thread writes the same lines op after op, never
    lines the other thread wrote last.  The split is the C plan's (csrc/plan.c), worked out here
    from the op: half the images of an even batch, else half the pixels (split_pixels) or half the
    rows (split_rows; an odd row count is placed by pixels, so those ops are not checked)."""
    from mobilenetv2.engines import plan as P
    made = []
    take = P._Buffers.take

    def recording(self, shp):
        buf, view = take(self, shp)
        if all(b is not buf for b in made):
            made.append(buf)
        return buf, view

    monkeypatch.setattr(P._Buffers, "take", recording)
    model = MobileNetV2(shape, alpha=alpha, weights=None, threads=2)
    x = rand(batch, *shape)
    plan = model._plan(x)
    # what the memory check and the plan cache count: every buffer the arena made, to the byte
    assert plan.nbytes == sum(b.data.nbytes for b in made) > 0
    middles = [(b.data.ctypes.data, b.data.ctypes.data + b.data.nbytes, b.data.ctypes.data + 4 * b.lo) for b in made]
    checked = 0
    for op in plan.ops:
        if op.get("split_panels") or op.get("batch_rows") or not op.get("split_rows"):
            continue
        n, oh, ow = op["n"], op["oh"], op["ow"]
        channels = op.get("cout") or op["c"]
        if n % 2 == 0:
            first = n // 2 * oh * ow * channels
        elif n > 1:
            continue  # an odd batch: every image's rows split, no one point
        elif op.get("split_pixels"):
            first = oh * ow // 2 * channels
        elif op["split_rows"] % 2 == 0:
            first = op["split_rows"] // 2 * ow * channels
        else:
            continue
        y = int(native.ffi.cast("uintptr_t", op["y"]))
        (middle,) = [m for lo, hi, m in middles if lo <= y < hi]
        assert -64 < y + 4 * first - middle <= 0, (op["kind"], n, oh, ow, channels)
        checked += 1
    assert checked >= 15
    want = model.predict(x)
    model.threads = 1
    np.testing.assert_array_equal(model.predict(x), want)


@pytest.mark.parametrize("np_,pixels,threads,chunks", [
    (10, 49, 8, 4),    # a 7x7 project of 160 channels: 2 panels against 1.25 a thread; 40 cells, 5 each
    (20, 49, 8, 2),    # 320 channels: 3 panels against 2.5; 40 cells, 5 each
    (16, 49, 8, 1),    # 2 panels each: even already
    (60, 49, 16, 4),   # 960 channels: 4 against 3.75 (6.7 % over); 2 and 3 chunks no better; 240 cells, 15 each
    (10, 9, 16, 1),    # a 3x3 map: chunks of 8 pixels or more only
    (3, 1000, 16, 5),  # never within 5 %: the most even, 15 cells of 1 (2 of 18, 21 or 24 is worse)
    (5, 100, 1, 1),    # one thread
])
def test_panel_chunks_worked_by_hand(np_, pixels, threads, chunks):
    assert native.lib.mnv2_panel_chunks(np_, pixels, threads) == chunks


@pytest.mark.parametrize("cores,by_panels", [(1, 0), (2, 1), (4, 0), (16, 0)])
def test_row_or_panel_choice_balances_for_the_cores_it_is_told(monkeypatch, cores, by_panels):
    """A 3-row map with 32 output channels (2 panels of 16), worked by hand.  Busiest share,
    panels against rows: 1 thread 1 against 1 (rows: no gain); 2 threads 1/2 against 2/3 (panels);
    4 and 16 threads 1/2 against 1/3 (rows).  The choice follows BALANCE_THREADS as set at the
    call (benchmarks/balance.py --cores sets it), not its value when the module was imported."""
    from mobilenetv2.engines import plan as P
    monkeypatch.setattr(P, "BALANCE_THREADS", cores)
    assert P._by_panels(3, 3, 8, 32) == by_panels


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_bad_thread_counts(bad):
    with pytest.raises(ValueError, match="threads"):
        MobileNetV2((96, 96, 3), alpha=0.35, weights=None, threads=bad)
    model = MobileNetV2((96, 96, 3), alpha=0.35, weights=None, threads=2)
    with pytest.raises(ValueError, match="threads"):
        model.threads = bad
    assert model.threads == 2


def test_input_channels_the_stem_kernel_does_not_cover_run_on_numpy():
    """The C stem reads 3 channels; a 1-channel model must not go through it."""
    model = MobileNetV2((64, 64, 1), alpha=0.35, include_top=False, weights=None)
    x = rand(1, 64, 64, 1)
    np.testing.assert_array_equal(model.predict(x), numpy_engine(model, x))
    assert model._plans == {}


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity (Linux)")
def test_threads_sharing_one_cpu_take_each_others_shares():
    """All threads of the pool on one CPU (the process pinned to it before the pool starts): most
    shares of each stage are done by whichever thread runs while the others wait for the CPU, in an
    order that changes from run to run.  The results stay bit-identical to one thread, for single
    images (stages) and batches (groups), run after run."""
    model = MobileNetV2((97, 113, 3), alpha=0.5, weights=None, threads=1)
    model.set_weights([w * 1.5 for w in model.get_weights()])
    xs = {n: rand(n, 97, 113, 3, seed=n) for n in (1, 2, 3)}
    want = {n: model.predict(x) for n, x in xs.items()}
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(saved)})
    try:
        pinned = MobileNetV2((97, 113, 3), alpha=0.5, weights=None, threads=1)
        pinned.set_weights(model.get_weights())
        for threads in (2, 3, 8):
            pinned.threads = threads  # a new pool, its threads pinned with the process
            for _ in range(5):
                for n, x in xs.items():
                    np.testing.assert_array_equal(pinned.predict(x), want[n], err_msg=f"{threads} threads, batch {n}")
        del pinned
    finally:
        os.sched_setaffinity(0, saved)


def test_stress_every_thread_count_and_batch_gives_the_same_bits():
    """1..16 threads (more than this machine's cores), batches smaller than, equal to and twice
    the thread count and odd ones, each run several times on one pool: bit-identical to one
    thread.  Batches equal to a multiple of the thread count take the by-images schedule, whose
    dense head is still shared by output panels: a barrier missing before or after it shows as a
    softmax over half-written logits."""
    model = MobileNetV2((32, 32, 3), alpha=0.35, weights=None, threads=1)
    model.set_weights([w * 1.5 for w in model.get_weights()])  # logits far from uniform
    xs = {n: rand(n, 32, 32, 3, seed=n) for n in range(1, 34)}
    want = {n: model.predict(x) for n, x in xs.items()}
    for threads in range(2, 17):
        model.threads = threads
        for n in sorted({1, 3, threads - 1, threads, 2 * threads, 2 * threads + 1} - {0}):
            for _ in range(3):
                np.testing.assert_array_equal(model.predict(xs[n]), want[n], err_msg=f"{threads} threads, batch {n}")
    assert model._pool.threads == 16


@pytest.mark.parametrize("batch,threads,groups", [
    (1, 1, 1), (1, 16, 1), (7, 16, 1), (3, 2, 1),    # one group: every thread on every image
    (2, 2, 2), (16, 16, 16), (32, 16, 16),           # one thread per group
    (2, 16, 2), (8, 16, 8), (2, 4, 2), (4, 6, 2),    # batch < threads: groups of 8, 2, 2, 3
    (6, 4, 2), (9, 6, 3), (12, 8, 4),                # batch > threads, not a multiple
])
def test_threads_form_groups_of_whole_images(batch, threads, groups):
    """The schedule's groups are gcd(batch, threads), worked out by hand: a batch of 2 on 16
    threads is 2 groups of 8, a batch prime to the thread count one group of all of them."""
    model = MobileNetV2((32, 32, 3), alpha=0.35, weights=None, threads=1)
    model(rand(batch, 32, 32, 3))
    plan = model._plans[(batch, 32, 32, 3)]
    assert native.lib.mnv2_plan_groups(plan.handle, threads) == groups


@pytest.mark.parametrize("batch,threads,shares", [
    (1, 1, 1), (1, 16, 16), (7, 16, 16), (3, 2, 2),  # one group: a row range of every image each
    (2, 2, 2), (16, 16, 16), (3, 3, 3),              # one or two images a thread: a unit each
    (32, 16, 32),                                    # two images a thread: one image a unit
    (8, 2, 4), (6, 2, 4), (16, 2, 8), (32, 2, 8),    # 3+ images a thread: units of about 2, at most 4
    (2, 16, 16), (6, 4, 8), (12, 8, 16), (9, 6, 12),  # groups of S threads: units times S
])
def test_images_form_units_so_a_thread_has_shares_to_hand_over(batch, threads, shares):
    """A thread with three or more images has two or more shares (units of about two images, at
    most four per thread), so a free thread can take a busy one's second unit; worked out by hand:
    a batch of 8 on 2 threads is 4 shares of 2 images, 6 on 2 units of 1, 2, 1, 2 images, 32 on 2
    still 8 shares (4 a thread), 12 on 8 (4 groups of 2 threads, 3 images each) 2 units a group
    times 2 threads."""
    model = MobileNetV2((32, 32, 3), alpha=0.35, weights=None, threads=1)
    model(rand(batch, 32, 32, 3))
    plan = model._plans[(batch, 32, 32, 3)]
    assert native.lib.mnv2_plan_shares(plan.handle, threads) == shares


@pytest.mark.parametrize("alpha,shape,kw", [
    (0.35, (32, 32, 3), dict()),                      # dense head shared by panels + softmax
    (0.5, (97, 113, 3), dict(include_top=False, pooling="avg")),  # fused blocks, odd rows
    (1.0, (64, 48, 3), dict(include_top=False)),
])
def test_thread_groups_give_the_same_bits(alpha, shape, kw):
    """Groups of 2..8 threads each taking whole images (batch 2 on 4, 8 and 16 threads, 4 on 6,
    6 on 4, 9 on 6, 8 on 12, 12 on 8) and single threads with units of 1-2 images (8, 6 and 16
    on 2): bit-identical to one thread, run after run on one pool, and within
    float32 rounding of the NumPy engine.  A missing group or whole-pool barrier shows as a run
    that differs."""
    model = MobileNetV2(shape, alpha=alpha, weights=None, threads=1, **kw)
    model.set_weights([w * 1.5 for w in model.get_weights()])
    cases = [(2, 4), (2, 8), (2, 16), (4, 6), (6, 4), (9, 6), (8, 12), (8, 2), (6, 2), (16, 2), (12, 8)]
    xs = {n: rand(n, *shape, seed=n) for n in {n for n, _ in cases}}
    want = {n: model.predict(x) for n, x in xs.items()}
    for n, x in xs.items():
        assert rel_l2(want[n], numpy_engine(model, x)) < 1e-4
    for n, threads in cases:
        model.threads = threads
        for _ in range(3):
            np.testing.assert_array_equal(model.predict(xs[n]), want[n], err_msg=f"{threads} threads, batch {n}")
        plan = model._plans[(n,) + shape]
        groups = native.lib.mnv2_plan_groups(plan.handle, threads)
        assert groups > 1  # and groups of several threads, or threads with several units:
        assert groups < threads or native.lib.mnv2_plan_shares(plan.handle, threads) > threads


def _two_op_schedule(x, packed, cout, threads, runs):
    """A plan of a dense layer shared by output panels (as the head is) then an out-of-place
    softmax that marks no barrier of its own, run ``runs`` times on ``threads`` threads with the
    logits poisoned before each run: the probabilities of every run."""
    from mobilenetv2.engines.pool import Pool
    lib, ffi, ptr = native.lib, native.ffi, native.as_float_ptr
    n, cin = x.shape
    logits, probs = np.zeros((n, cout), np.float32), np.zeros((n, cout), np.float32)
    ops = ffi.new("struct mnv2_op[]", 2)
    head, soft = ops[0], ops[1]
    head.kind, head.x, head.w, head.y = lib.MNV2_OP_POINTWISE, ptr(x), ptr(packed), ptr(logits)
    head.n, head.h, head.w_, head.c, head.cout, head.oh, head.ow = 1, 1, 1, cin, cout, n, 1
    head.split_rows, head.split_panels, head.batch_rows, head.sync = n, 1, 1, 1
    soft.kind, soft.x, soft.y = lib.MNV2_OP_SOFTMAX, ptr(logits), ptr(probs)
    soft.n, soft.h, soft.w_, soft.c, soft.oh, soft.ow, soft.sync = n, 1, 1, cout, 1, 1, 1
    plan = ffi.gc(lib.mnv2_plan_create(ops, 2), lib.mnv2_plan_destroy)
    pool = Pool(threads)
    out = []
    for _ in range(runs):
        logits[...] = np.nan
        assert lib.mnv2_plan_run(plan, pool.handle) == 0
        out.append(probs.copy())
    return out


def test_by_images_schedule_waits_after_a_panel_shared_op():
    """Where each thread takes whole images, an op after the panel-shared dense head reads logits
    every thread wrote: the C schedule itself must put a barrier there (the model's own softmax
    also asks for one, being in place, which hid a missing one from every model test)."""
    from mobilenetv2.engines.plan import _Slab, _pack
    rng = np.random.default_rng(0)
    cin, cout = 1280, 1000
    w = rng.uniform(-0.1, 0.1, (cin, cout)).astype(np.float32)
    b = rng.uniform(-1, 1, cout).astype(np.float32)
    packed = _pack(w, b, _Slab(None))
    # batch = threads: one thread per group; 2 on 4 and 8, 4 on 6: groups of 2, 4 and 3 threads
    for threads, batch in ((2, 2), (3, 3), (4, 4), (8, 8), (4, 2), (8, 2), (6, 4)):
        x = rng.uniform(-1, 1, (batch, cin)).astype(np.float32)
        logits = x.astype(np.float64) @ w + b
        want = np.exp(logits - logits.max(axis=1, keepdims=True))
        want /= want.sum(axis=1, keepdims=True)
        one = _two_op_schedule(x, packed, cout, 1, 1)[0]
        np.testing.assert_allclose(one, want, rtol=1e-4, atol=1e-7)
        for probs in _two_op_schedule(x, packed, cout, threads, 20):
            np.testing.assert_array_equal(probs, one, err_msg=f"{threads} threads")


def test_a_fused_blocks_band_is_the_most_rows_whose_scratch_fits(monkeypatch):
    """Hand-computed: a band of b output rows at stride s and dilation d reads (b - 1) s + 2 d + 1
    expanded rows (the ring, input width w_) and writes b rows of width ow, c channels, 4 bytes
    each; the band is the most rows up to MAX_BAND whose ring and output fit BAND_SCRATCH_BYTES,
    and MAX_BAND where not even one row fits (the ring lives in L3 then whatever the band)."""
    from mobilenetv2.engines import plan as P
    monkeypatch.setattr(P, "MAX_BAND", 4)
    s2 = dict(stride=2, w_=10, ow=5, c=1)  # 4 ((2b + 1) 10 + 5b) = 100b + 40: 140, 240, 340, 440 bytes
    s1d2 = dict(stride=1, dilation=2, w_=10, ow=10, c=1)  # 4 ((b + 4) 10 + 10b) = 80b + 160: 240, 320, 400, 480
    for dw, budget, band in ((s2, 140, 1), (s2, 239, 1), (s2, 240, 2), (s2, 360, 3), (s2, 440, 4), (s2, 10 ** 6, 4),
                             (s2, 139, 4), (s1d2, 400, 3), (s1d2, 479, 3), (s1d2, 480, 4), (s1d2, 320, 2)):
        monkeypatch.setattr(P, "BAND_SCRATCH_BYTES", budget)
        assert P._band(dw) == band, (dw, budget)


def test_the_stem_fuses_where_its_whole_batchs_output_passes_l1d(monkeypatch):
    """The stem's output for the batch (4 n h w c bytes) against STEM_FUSE_MIN_BYTES: 10x10x16
    floats are 6,400 bytes an image, so a batch of 8 (51,200) passes 48 KiB and one image does not;
    a later op reading the stem's output keeps it separate."""
    from mobilenetv2.engines import plan as P
    monkeypatch.setattr(P, "STEM_FUSE_MIN_BYTES", 48 * 1024)
    span = (0, 4 * 8 * 10 * 10 * 16)

    def fusable(n, later=()):
        stem = dict(kind=native.lib.MNV2_OP_STEM, writes=span, n=n)
        return P._fusable_stem(stem, dict(reads=[span], n=n, h=10, w_=10, c=16), list(later))
    assert fusable(8) and not fusable(1) and not fusable(7)  # 7 images: 44,800 bytes
    assert not fusable(8, [dict(reads=[span], writes=(10 ** 6, 10 ** 6 + 4))])


def test_a_stem_fused_block_checks_the_image_only_where_its_depthwise_reads_every_stem_row():
    """Hand-computed: the last stem row a fused block's depthwise conv reads is (oh - 1) s + 2 d -
    pad_top; the block checks the image for NaN and inf as it runs only where that reaches the
    stem's last row h - 1 (else a separate check must).  A separate stem always checks."""
    from mobilenetv2.engines import plan as P
    lib = native.lib

    def checks(**op):
        return P._checks_its_input(dict(kind=lib.MNV2_OP_BLOCK, stem_w=object(), **op))
    assert checks(oh=112, stride=1, pad_top=1, h=112)           # 111 + 2 - 1 = 112 >= 111
    assert checks(oh=56, stride=2, pad_top=0, h=112)            # 110 + 2 = 112
    assert checks(oh=4, stride=2, pad_top=1, h=8)               # 6 + 2 - 1 = 7 = h - 1
    assert not checks(oh=3, stride=2, pad_top=1, h=8)           # 4 + 2 - 1 = 5 < 7
    assert not checks(oh=4, stride=2, pad_top=0, dilation=1, h=10)  # 8 < 9
    assert checks(oh=4, stride=1, pad_top=0, dilation=3, h=9)   # 3 + 6 = 9 >= 8
    assert P._checks_its_input(dict(kind=lib.MNV2_OP_STEM))
    assert not P._checks_its_input(dict(kind=lib.MNV2_OP_BLOCK, stem_w=None, oh=1, stride=1, pad_top=0, h=1))
