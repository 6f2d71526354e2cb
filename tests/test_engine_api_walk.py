"""A walk of the model object at run time (engines, plan cache, threads, copies, memory): the
defects it found, each held by a test that failed before its fix.

Memory refusals are tested with ``machine.available_memory`` patched to a small figure, and what
a call allocates before its refusal is read from tracemalloc (NumPy reports its arrays' data to it).
"""
import tracemalloc

import numpy as np
import pytest

from mobilenetv2 import InsufficientMemory, MobileNetV2
from mobilenetv2.engines import machine, native


def rand(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def small(**kwargs):
    return MobileNetV2((96, 96, 3), alpha=0.35, weights=None, **kwargs)


def needs_c():
    if not native.available():
        pytest.skip("the C extension is not built: this tests the C plan's memory check")


def allocated_before_refusal(call):
    """The bytes traced at the peak of ``call``, which must raise InsufficientMemory."""
    tracemalloc.start()
    try:
        with pytest.raises(InsufficientMemory):
            call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("engine", ["auto", "numpy"])
def test_a_batch_that_cannot_run_is_refused_before_its_values_are_read(monkeypatch, engine):
    """features(), trace() (any engine) and the NumPy engine's predict()/model(x) checked the whole
    batch for NaN (np.isfinite(x).all(): a bool temporary a quarter of a float32 batch's size, and
    a read of all of it, of a memory-mapped file too) before the memory check refused the batch: a
    20 GB memory-mapped batch took 15 GB of RSS and a 5.5 GB temporary on the way to its refusal,
    and a 103 GB one raised NumPy's own MemoryError ('Unable to allocate 25.7 GiB for an array with
    shape (1000000, 96, 96, 3) and data type bool'), not InsufficientMemory."""
    model = small(engine=engine)
    x = rand(64, 96, 96, 3)  # float32, C-contiguous: no copy is made
    monkeypatch.setattr(machine, "available_memory", lambda: 1 << 20)
    calls = [lambda: model.features(x, ["Conv1"]), lambda: model.trace(x)]
    if engine == "numpy":
        calls += [lambda: model(x), lambda: model.predict(x), lambda: model.predict(x, batch_size=64)]
    for call in calls:
        assert allocated_before_refusal(call) < x.size // 16  # the bool temporary was x.size bytes


@pytest.mark.parametrize("model_dtype,input_dtype", [("float32", np.float64), ("float64", np.float32)])
def test_no_copy_of_the_input_is_made_for_a_batch_that_cannot_run(monkeypatch, model_dtype, input_dtype):
    """An input in another dtype is copied in the model's dtype; the copy was made (and written)
    first and the run refused after it, where the copy fit and the run did not: a 6 GB float64
    batch was converted to 3 GB of float32 only to be refused."""
    model = small(engine="numpy", dtype=model_dtype)
    x = rand(64, 96, 96, 3).astype(input_dtype)
    copy_bytes = x.size * model.dtype.itemsize
    monkeypatch.setattr(machine, "available_memory", lambda: copy_bytes + (1 << 20))  # the copy fits, not the run
    for call in (lambda: model(x), lambda: model.predict(x), lambda: model.features(x, "block_1_project"),
                 lambda: model.trace(x)):
        assert allocated_before_refusal(call) < copy_bytes // 4


def test_the_c_plan_and_the_input_copy_are_counted_together(monkeypatch):
    """A float64 input to the C engine is copied as float32, and a new plan's buffers allocated.
    The plan is now checked before the copy is made (the tests above), so it must count the copy
    it is about to take: each checked alone against the memory available, a batch needing both
    would run where either fit.  (Before, the copy was made first and the plan checked after it,
    against what the copy left, where available_memory reads it again.)"""
    needs_c()
    x32 = rand(8, 96, 96, 3)
    x64 = x32.astype(np.float64)
    probe = small(threads=1)
    want = probe(x32)
    plan_bytes = probe._plans[x32.shape].nbytes
    copy_bytes = x32.nbytes
    for call in (lambda model: model(x64), lambda model: model.predict(x64), lambda model: model.profile(x64, runs=1)):
        monkeypatch.setattr(machine, "available_memory", lambda: plan_bytes + copy_bytes - 1)
        model = small(threads=1)
        with pytest.raises(InsufficientMemory, match=r"its activation buffers and a float32 copy of it take"):
            call(model)
        monkeypatch.setattr(machine, "available_memory", lambda: plan_bytes + copy_bytes)
        got = call(small(threads=1))
        if isinstance(got, np.ndarray):
            np.testing.assert_array_equal(got, want)


def test_the_nan_check_takes_no_temporary_the_size_of_the_batch():
    """model.profile(x) (and features(), trace(), the NumPy engine) checked the input for NaN with
    np.isfinite(x).all(): a bool array of the whole batch, a quarter of a float32 batch's size."""
    needs_c()
    model = MobileNetV2((None, None, 3), alpha=0.35, include_top=False, weights=None, threads=1)
    x = rand(1, 512, 512, 3)
    model(x)  # the plan is built (and kept) before tracing
    tracemalloc.start()
    try:
        model.profile(x, runs=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < x.size // 4  # the bool temporary was x.size bytes
    y = x.copy()
    y[0, 511, 511, 2] = np.nan  # the last value of the last chunk
    with pytest.raises(ValueError, match="NaN or inf"):
        model.profile(y, runs=1)
    with pytest.raises(ValueError, match="NaN or inf"):
        MobileNetV2((None, None, 3), alpha=0.35, include_top=False, weights=None, engine="numpy")(y)


def test_a_plan_too_large_to_allocate_is_refused_saying_how_much_it_needs(monkeypatch):
    """Where the plan's buffers could not even be allocated (more than Linux lends: a batch of a
    million images), the refusal said no size ('out of memory for a batch of 1000000 at 96x96; use
    a smaller batch'), where the README says it says how much the batch needs."""
    needs_c()
    from mobilenetv2.engines import plan as plan_module
    model = small(threads=1)
    one = model.predict(rand(1, 96, 96, 3))
    real_plan = plan_module.Plan
    one_bytes = real_plan(model, (1, 96, 96, 3), model._packed).nbytes

    def plan(model_, shape, packed, *args):
        if shape[0] > 1:  # as Linux refuses the arena of a huge batch
            raise MemoryError("cannot allocate")
        return real_plan(model_, shape, packed, *args)
    monkeypatch.setattr("mobilenetv2.model.Plan", plan)
    monkeypatch.setattr(machine, "available_memory", lambda: 50 << 20)
    x = np.broadcast_to(rand(1, 96, 96, 3), (100, 96, 96, 3))  # float32, not contiguous: copied
    with pytest.raises(InsufficientMemory) as info:
        model(np.ascontiguousarray(x))
    assert f"its activation buffers take about {100 * one_bytes / 2**30:.1f} GiB, 0.0 GiB is available" \
        in str(info.value)
    with pytest.raises(InsufficientMemory, match=r"its activation buffers and a float32 copy of it take about "):
        model(x)
    np.testing.assert_array_equal(model(x[:1]), one)  # a batch of one still runs


@pytest.mark.parametrize("engine", ["auto", "numpy"])
def test_a_refused_call_leaves_no_reference_cycle(monkeypatch, engine):
    """The README: a model holds no reference cycle, so dropping it stops its threads and frees
    its plans at once with the cycle collector off.  A refusal held in a local of a frame its
    traceback keeps is such a cycle (an early form of the fixes above had one)."""
    import gc
    import weakref
    x = rand(4, 96, 96, 3)
    model = small(engine=engine, threads=2)
    model.predict(x[:1])  # threads started, a plan kept (the batches below have plans of their own)
    monkeypatch.setattr(machine, "available_memory", lambda: 1 << 20)
    for call in (lambda m: m(x), lambda m: m(x.astype(np.float64)), lambda m: m.predict(x, batch_size=2),
                 lambda m: m.features(x, "Conv1"), lambda m: m.trace(x)):
        try:
            call(model)
        except InsufficientMemory:
            pass
        else:
            raise AssertionError("not refused")
    ref = weakref.ref(model)
    enabled = gc.isenabled()
    gc.disable()
    try:
        del model
        assert ref() is None
    finally:
        if enabled:
            gc.enable()
