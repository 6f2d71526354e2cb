"""engine= (which engine runs predict), thread counts from the environment, and every public way
of changing weights reaching both engines."""
import gc
import os

import numpy as np
import pytest

from mobilenetv2 import EngineUnavailable, MobileNetV2
from mobilenetv2.engines import native
from mobilenetv2.engines import pool as threadpool

needs_c = pytest.mark.skipif(not native.available(), reason="the C extension is not built")


def rand(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def both_engines(model, x):
    """(C engine output, NumPy engine output) of one model on x."""
    model.engine = "c"
    c = model.predict(x)
    model.engine = "numpy"
    n = model.predict(x)
    model.engine = "auto"
    return c, n


# -- engine= ---------------------------------------------------------------------------------
def test_engine_numpy_runs_the_layers_and_builds_no_plan():
    model = MobileNetV2((64, 64, 3), alpha=0.35, weights=None, engine="numpy")
    assert model.engine == "numpy"
    x = rand(2, 64, 64, 3)
    y = model.predict(x)
    assert model._plans == {} and model._pool is None
    # the NumPy engine is the layers run one by one: the same bits as trace()'s last output
    np.testing.assert_array_equal(y, model.trace(x)["predictions"])


@needs_c
def test_engine_c_and_auto_run_the_plan_and_agree_with_numpy():
    model = MobileNetV2((64, 64, 3), alpha=0.35, weights=None, engine="c")
    x = rand(2, 64, 64, 3)
    c, n = both_engines(model, x)
    assert len(model._plans) == 1
    assert rel_l2(c, n) <= 1e-5 and not np.array_equal(c, n)  # two engines, two roundings


@pytest.mark.parametrize("engine", ["numpy", pytest.param("c", marks=needs_c)])
@pytest.mark.parametrize("kw", [{}, {"include_top": False}, {"include_top": False, "pooling": "avg"}])
def test_predict_returns_an_array_of_its_own(engine, kw):
    """predict's output (one chunk: no concatenation) shares no memory with the input or with
    another call's output, and writing to it changes neither the next call's output nor the input."""
    model = MobileNetV2((32, 32, 3), alpha=0.35, weights=None, engine=engine, **kw)
    x = rand(1, 32, 32, 3)
    kept = x.copy()
    first, second = model.predict(x), model.predict(x)
    assert not np.may_share_memory(first, x) and not np.may_share_memory(first, second)
    assert first.flags.c_contiguous and first.flags.writeable and first.flags.owndata
    want = second.copy()
    first[...] = -1.0
    np.testing.assert_array_equal(model.predict(x), want)
    np.testing.assert_array_equal(x, kept)


@pytest.mark.parametrize("bad", ["C", "cpu", None, 1])
def test_engine_must_be_one_of_three(bad):
    with pytest.raises(ValueError, match="engine must be one of"):
        MobileNetV2((64, 64, 3), alpha=0.35, weights=None, engine=bad)
    model = MobileNetV2((64, 64, 3), alpha=0.35, weights=None)
    with pytest.raises(ValueError, match="engine must be one of"):
        model.engine = bad
    assert model.engine == "auto"


@needs_c
@pytest.mark.parametrize("kwargs,why", [
    (dict(dtype="float64"), "computes in float32 and this model is float64"),
    (dict(input_shape=(64, 64, 1), include_top=False), "3 input channels and this model has 1"),
])
def test_engine_c_refuses_what_it_cannot_run(kwargs, why):
    kwargs.setdefault("input_shape", (64, 64, 3))
    with pytest.raises(EngineUnavailable, match=why):
        MobileNetV2(alpha=0.35, weights=None, engine="c", **kwargs)
    model = MobileNetV2(alpha=0.35, weights=None, **kwargs)  # auto: the NumPy engine runs it
    with pytest.raises(EngineUnavailable, match="engine='c' cannot run MobileNetV2 alpha=0.35"):
        model.engine = "c"
    assert model.engine == "auto"
    x = rand(1, *model.input_shape)
    np.testing.assert_array_equal(model.predict(x), model.trace(x)[model.layers[-1].name])
    assert issubclass(EngineUnavailable, RuntimeError)


def test_engine_c_without_the_extension_says_so(monkeypatch):
    monkeypatch.setattr(native, "lib", None)
    monkeypatch.setattr(native, "IMPORT_ERROR", ImportError("no _mnv2"))
    monkeypatch.setattr(native, "_warned", True)
    # (where the extension file is there, Python's error says why it does not load; where it is
    # not, as in .ci/no-ext, that it was never built)
    with pytest.raises(EngineUnavailable, match=r"the C extension is not built \((.*no _mnv2|no compiled module _mnv2 .*)\)"):
        MobileNetV2((64, 64, 3), alpha=0.35, weights=None, engine="c")
    model = MobileNetV2((64, 64, 3), alpha=0.35, weights=None)
    x = rand(1, 64, 64, 3)
    np.testing.assert_array_equal(model.predict(x), model.trace(x)["predictions"])


def test_a_missing_extension_is_named_as_such(monkeypatch, tmp_path):
    """Python's error for a module file that is absent reads 'cannot import name '_mnv2' from
    partially initialized module ... (most likely due to a circular import)': the warning and
    EngineUnavailable quoted it, pointing at a bug that is not there."""
    circular = ImportError("cannot import name '_mnv2' from partially initialized module 'mobilenetv2' "
                           "(most likely due to a circular import)")
    monkeypatch.setattr(native, "IMPORT_ERROR", circular)
    monkeypatch.setattr(native, "__file__", str(tmp_path / "engines" / "native.py"))  # a package without it
    why = native.missing_reason()
    assert "circular" not in why and "not built at install time" in why and str(tmp_path) in why
    (tmp_path / "_mnv2.abi3.so").write_bytes(b"")  # there, but it does not load: Python's words say why
    assert native.missing_reason() == f"_mnv2.abi3.so does not load: {circular}"


# -- threads from the environment ------------------------------------------------------------
def _threads_env(monkeypatch, mnv2=None, omp=None):
    for name, value in (("MNV2_NUM_THREADS", mnv2), ("OMP_NUM_THREADS", omp)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


def os_threads():
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("Threads:")).split()[1])


@needs_c
def test_omp_num_threads_1_gives_a_pool_of_one_thread(monkeypatch):
    _threads_env(monkeypatch, omp="1")
    model = MobileNetV2((64, 64, 3), alpha=0.35, weights=None)
    assert model.threads == 1
    gc.collect()  # earlier tests' pools join their workers now, not during the count below
    before = os_threads()
    model(rand(2, 64, 64, 3))
    assert native.lib.mnv2_pool_threads(model._pool.handle) == 1
    assert os_threads() <= before  # no worker thread started


@needs_c
def test_threads_order_mnv2_then_omp_then_affinity(monkeypatch):
    _threads_env(monkeypatch, mnv2="3", omp="1")
    model = MobileNetV2((64, 64, 3), alpha=0.35, weights=None)
    assert model.threads == 3
    model(rand(1, 64, 64, 3))
    assert model._pool.threads == 3
    _threads_env(monkeypatch, omp="4,2")  # a nested OpenMP list: the outer level
    model.threads = None
    assert model.threads == 4
    _threads_env(monkeypatch)
    model.threads = None
    assert model.threads == len(os.sched_getaffinity(0))
    model.threads = 2  # an explicit count wins over everything
    _threads_env(monkeypatch, mnv2="1")
    assert model.threads == 2


@pytest.mark.parametrize("name", ["MNV2_NUM_THREADS", "OMP_NUM_THREADS"])
@pytest.mark.parametrize("value,why", [("abc", "not a positive integer"), ("0", "whole number from 1 to"),
                                       ("-2", "not a positive integer"), ("1.5", "not a positive integer"),
                                       ("100000", "is more than the")])
def test_bad_thread_variables_name_the_variable(monkeypatch, name, value, why):
    _threads_env(monkeypatch)
    monkeypatch.setenv(name, value)
    with pytest.raises(threadpool.ThreadsError, match=f"{name}.*{why}"):
        MobileNetV2((64, 64, 3), alpha=0.35, weights=None)
    MobileNetV2((64, 64, 3), alpha=0.35, weights=None, threads=1)  # an explicit count needs no variable


def test_thread_variables_are_read_as_decimal_numbers():
    """"10" is ten threads and "a" is no number (hex, or any base past 10, would read both)."""
    assert threadpool.default_threads({"MNV2_NUM_THREADS": "10"}) == 10
    assert threadpool.default_threads({"OMP_NUM_THREADS": " 12 ,3"}) == 12
    assert threadpool.default_threads({"MNV2_NUM_THREADS": "", "OMP_NUM_THREADS": "7"}) == 7
    for raw in ("a", "0x10", "1e1", "1_0", "\u0663"):  # int() took "1_0" as 10 and Arabic-Indic 3 as 3
        with pytest.raises(threadpool.ThreadsError, match="not a positive integer"):
            threadpool.default_threads({"MNV2_NUM_THREADS": raw})
    with pytest.raises(threadpool.ThreadsError, match="^environment variable OMP_NUM_THREADS must be a whole"):
        threadpool.default_threads({"OMP_NUM_THREADS": "0"})  # (was "must be None or ...": it cannot be None)


def test_thread_count_bound(monkeypatch):
    _threads_env(monkeypatch)
    limit = threadpool.max_threads()
    model = MobileNetV2((64, 64, 3), alpha=0.35, weights=None, threads=limit)
    assert model.threads == limit
    with pytest.raises(ValueError, match=f"more than the {limit} threads"):
        model.threads = limit + 1
    with pytest.raises(ValueError, match=f"more than the {limit} threads"):
        MobileNetV2((64, 64, 3), alpha=0.35, weights=None, threads=10 ** 30)
    assert model.threads == limit


@needs_c
def test_the_plan_cache_keeps_shapes_in_least_recently_used_order():
    """Within its bounds the cache keeps every shape's plan (the same object on each call) and,
    past plan_cache_shapes, forgets the one used longest ago, not all but the newest."""
    model = MobileNetV2(None, alpha=0.35, include_top=False, pooling="avg", weights=None, threads=1)
    model.plan_cache_shapes = 2
    a, b, c = rand(1, 32, 32, 3), rand(1, 40, 32, 3), rand(2, 32, 32, 3)
    model(a)
    model(b)
    assert list(model._plans) == [a.shape, b.shape]
    plan_a = model._plans[a.shape]
    model(a)  # a hit: the same plan, now the most recently used
    assert model._plans[a.shape] is plan_a and list(model._plans) == [b.shape, a.shape]
    model(c)
    assert list(model._plans) == [a.shape, c.shape] and model._plans[a.shape] is plan_a
    model.plan_cache_bytes = 0  # the newest plan stays whatever its size
    model(b)
    assert list(model._plans) == [b.shape]


# -- weights: every public way of changing them reaches both engines ---------------------------
def _changes(tmp_path):
    def model_set_weights(m):
        m.set_weights([w * 0.9 for w in m.get_weights()])

    def layer_set_weights(m):
        layer = m.get_layer("block_5_project_BN")
        gamma, beta, mean, var = layer.get_weights()
        layer.set_weights([gamma * 2, beta + 0.5, mean, var])

    def weights_property(m):
        layer = m.get_layer("Conv1")
        layer.weights = [-layer.weights[0]]

    def dense_layer(m):
        layer = m.get_layer("predictions")
        layer.set_weights([layer.weights[0] * 3, layer.weights[1] - 1])

    def load_weights(m):
        other = MobileNetV2((64, 64, 3), alpha=0.35, weights=None)
        other.set_weights([w * 1.1 + 0.01 for w in other.get_weights()])
        m.load_weights(other.save_weights(tmp_path / "other.h5"))

    return [model_set_weights, layer_set_weights, weights_property, dense_layer, load_weights]


@needs_c
def test_both_engines_follow_every_public_weight_change(tmp_path):
    model = MobileNetV2((64, 64, 3), alpha=0.35, weights=None, classifier_activation=None, threads=2)
    x = rand(2, 64, 64, 3)
    c, n = both_engines(model, x)
    for change in _changes(tmp_path):
        change(model)
        c2, n2 = both_engines(model, x)
        assert rel_l2(c2, n2) <= 1e-5, change.__name__
        assert rel_l2(c2, c) > 1e-3, change.__name__  # the change did reach the C engine
        c = c2


def test_weights_cannot_be_edited_in_place_or_through_the_callers_array():
    model = MobileNetV2((64, 64, 3), alpha=0.35, weights=None)
    for layer in model.weighted_layers():
        assert isinstance(layer.weights, tuple)
        for w in layer.weights:
            with pytest.raises(ValueError, match="read-only"):
                w[...] = 0
    with pytest.raises(TypeError):
        model.get_layer("Conv1").weights[0] = np.zeros((3, 3, 3, 16))
    x = rand(1, 64, 64, 3)
    y = model.predict(x)
    arrays = model.get_weights()
    model.set_weights(arrays)
    for a in arrays:  # the caller's arrays (and get_weights' copies) are no longer the model's
        a *= 2
    layer = model.get_layer("predictions")
    bias = np.ones(1000, np.float32)
    layer.set_weights([layer.weights[0], bias])
    bias[:] = 5
    np.testing.assert_array_equal(layer.weights[1], 1)
    layer.set_weights([layer.weights[0], np.zeros(1000)])
    np.testing.assert_array_equal(model.predict(x), y)


def test_layer_set_weights_keeps_the_models_dtype():
    model = MobileNetV2((64, 64, 3), alpha=0.35, weights=None, dtype="float64")
    layer = model.get_layer("Conv1")
    layer.set_weights([np.ones((3, 3, 3, 16), np.float32)])
    assert layer.weights[0].dtype == np.float64
    layer.weights = [np.zeros((3, 3, 3, 16), np.float32)]
    assert layer.weights[0].dtype == np.float64
    with pytest.raises(ValueError, match=r"'Conv1' weight 'kernel': expected shape"):
        layer.weights = [np.zeros((3, 3, 3, 8))]
