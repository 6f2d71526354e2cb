"""Pickling a model (Ray, Dask, multiprocessing): the weights and settings travel, the compiled
plans, packed weights and threads do not, and the copy computes the same bits."""
import pickle

import numpy as np
import pytest

from mobilenetv2 import MobileNetV2
from mobilenetv2.engines import native


def rand(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def weights_nbytes(model):
    return sum(w.nbytes for w in model.get_weights())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads", [1, 2])
def test_pickle_before_and_after_a_run_gives_the_same_outputs(dtype, threads):
    model = MobileNetV2((64, 64, 3), alpha=0.35, weights=None, dtype=dtype, threads=threads)
    model.set_weights([w * 1.01 for w in model.get_weights()])  # not the random init a new model has
    x = rand(3, 64, 64, 3)
    before = pickle.loads(pickle.dumps(model))
    want = model.predict(x)
    after_blob = pickle.dumps(model)
    after = pickle.loads(after_blob)
    assert after.threads == before.threads == threads and after.dtype == model.dtype
    for copy in (before, after):
        np.testing.assert_array_equal(copy.predict(x), want)
        for a, b in zip(copy.get_weights(), model.get_weights()):
            np.testing.assert_array_equal(a, b)
    # the weights, the layer objects and a few settings: no plan, no packed copy of the weights
    assert weights_nbytes(model) < len(after_blob) < 1.05 * weights_nbytes(model) + 200_000
    copy = pickle.loads(after_blob)  # its weights are as read-only as the original's
    with pytest.raises(ValueError, match="read-only"):
        copy.get_layer("Conv1").weights[0][...] = 0


def test_unpickled_copy_follows_its_own_weight_changes():
    model = MobileNetV2((64, 64, 3), alpha=0.35, weights=None, classifier_activation=None, threads=2)
    x = rand(1, 64, 64, 3)
    y = model.predict(x)
    copy = pickle.loads(pickle.dumps(model))
    layer = copy.get_layer("predictions")
    layer.set_weights([layer.weights[0], layer.weights[1] + 1.0])
    np.testing.assert_allclose(copy.predict(x), y + 1.0, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(model.predict(x), y)  # the original is unchanged


def test_default_threads_are_resolved_again_where_the_copy_is_loaded(monkeypatch):
    monkeypatch.delenv("MNV2_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    model = MobileNetV2((64, 64, 3), alpha=0.35, weights=None)
    explicit = MobileNetV2((64, 64, 3), alpha=0.35, weights=None, threads=2)
    assert model.threads == 2
    blob, blob_explicit = pickle.dumps(model), pickle.dumps(explicit)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a worker given one CPU
    assert pickle.loads(blob).threads == 1
    assert pickle.loads(blob_explicit).threads == 2


@pytest.mark.skipif(not native.available(), reason="the C extension is not built")
def test_c_handles_refuse_to_be_pickled_with_a_reason_and_deepcopy_works():
    import copy
    from mobilenetv2.engines.pool import Pool
    with pytest.raises(TypeError, match="pool cannot be pickled"):
        pickle.dumps(Pool(1))
    model = MobileNetV2((64, 64, 3), alpha=0.35, weights=None, threads=2)
    x = rand(1, 64, 64, 3)
    y = model(x)
    with pytest.raises(TypeError, match="plan cannot be pickled"):
        pickle.dumps(next(iter(model._plans.values())))
    twin = copy.deepcopy(model)
    assert twin._plans == {} and twin._pool is None
    np.testing.assert_array_equal(twin(x), y)
    assert not twin.get_layer("Conv1").weights[0].flags.writeable


@pytest.mark.skipif(not native.available(), reason="the C extension is not built")
def test_an_engine_c_model_loaded_where_the_extension_is_not_built_says_so(monkeypatch):
    """A model pickled with engine='c' (on a machine with the C extension) and loaded where it is
    not built ran predict on NumPy without a word, where MobileNetV2(engine='c') there raises
    EngineUnavailable: it raises it too, and engine='auto' then runs the NumPy engine."""
    from mobilenetv2 import EngineUnavailable
    blob = pickle.dumps(MobileNetV2((32, 32, 3), alpha=0.35, weights=None, engine="c"))
    monkeypatch.setattr(native, "lib", None)  # as in a process without the extension (.ci/no-ext)
    monkeypatch.setattr(native, "IMPORT_ERROR", ImportError("no _mnv2"))
    monkeypatch.setattr(native, "_warned", True)
    model = pickle.loads(blob)
    x = rand(1, 32, 32, 3)
    with pytest.raises(EngineUnavailable, match=r"engine='c' cannot run .* the C extension is not built \(.*no _mnv2\)"):
        model.predict(x)
    with pytest.raises(EngineUnavailable, match="the C extension is not built"):
        model(x)
    model.engine = "auto"
    np.testing.assert_array_equal(model.predict(x), model.trace(x)["predictions"])
