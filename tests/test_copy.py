"""copy.copy and copy.deepcopy of a model: each gives a model of its own (layers, lock, plans,
caches, threads), which runs beside the original from other threads, and whose weight changes are
never the original's (nor the original's its).  copy.copy shares the read-only weight arrays and
their packed C form; copy.deepcopy copies the weights."""
import copy
import gc
import pickle
import threading
import weakref

import numpy as np
import pytest

from conftest import require_shared
from mobilenetv2 import MobileNetV2
from mobilenetv2.engines import native

needs_c = pytest.mark.skipif(not native.available(), reason="the C extension is not built")
ENGINES = [pytest.param("c", marks=needs_c), "numpy"]
COPIES = [copy.copy, copy.deepcopy]


def rand(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def small(engine, **kw):
    """A 0.35 model at 64x64 whose weights are not a new model's (those are the same for every model)."""
    model = MobileNetV2((64, 64, 3), alpha=0.35, weights=None, classes=10, classifier_activation=None,
                        engine=engine, threads=2, **kw)
    rng = np.random.default_rng(1)
    model.set_weights([w * rng.uniform(0.9, 1.1, w.shape) for w in model.get_weights()])
    return model


def scaled(weights, f):
    """The kernels scaled by f (a weight set that gives other outputs), the vectors kept."""
    return [w * np.float32(f) if w.ndim > 1 else w for w in weights]


@pytest.mark.parametrize("make_copy", COPIES)
@pytest.mark.parametrize("engine", ENGINES)
def test_a_copy_computes_what_the_original_did(engine, make_copy):
    model = small(engine)
    x = rand(3, 64, 64, 3)
    want = model.predict(x)  # before the copy: the C engine has its plan and packed weights
    twin = make_copy(model)
    assert type(twin) is MobileNetV2 and twin.engine == engine and twin.threads == 2
    np.testing.assert_array_equal(twin.predict(x), want)
    np.testing.assert_array_equal(model.predict(x), want)
    # and what the float64 engine computes with the same weights
    m64 = MobileNetV2((64, 64, 3), alpha=0.35, weights=None, classes=10, classifier_activation=None,
                      dtype="float64")
    m64.set_weights(model.get_weights())
    np.testing.assert_allclose(twin.predict(x), m64.predict(x.astype(np.float64)), rtol=1e-4, atol=1e-5)
    for layer in twin.layers:  # a layer of its own, weights as read-only as the original's
        assert layer is not model.get_layer(layer.name) and twin.get_layer(layer.name) is layer
        for w, v in zip(layer.weights, model.get_layer(layer.name).weights):
            assert not w.flags.writeable
            assert (w is v) == (make_copy is copy.copy)  # a shallow copy shares the arrays, a deep one not
            np.testing.assert_array_equal(w, v)


@needs_c
def test_a_shallow_copy_packs_no_weights_again():
    model = small("c")
    x = rand(1, 64, 64, 3)
    want = model(x)
    twin = copy.copy(model)
    np.testing.assert_array_equal(twin(x), want)
    assert twin._packed is not model._packed and twin._plans.keys() == model._plans.keys()
    assert all(twin._plans[k] is not model._plans[k] for k in model._plans)  # its own buffers
    for name, arrays in model._packed._arrays.items():
        assert all(twin._packed._arrays[name][k] is a for k, a in arrays.items())
    deep = copy.deepcopy(model)
    np.testing.assert_array_equal(deep(x), want)
    assert not any(np.shares_memory(deep._packed._arrays[name]["w"], arrays["w"])
                   for name, arrays in model._packed._arrays.items())
    x2 = rand(2, 64, 64, 3, seed=1)
    want2 = model(x2)
    gone = weakref.ref(model)
    del model, deep  # the packed arrays' memory lives as long as the copy reads it
    gc.collect()
    assert gone() is None
    np.testing.assert_array_equal(twin(x), want)
    np.testing.assert_array_equal(twin(x2), want2)  # a plan built after the original is gone


def _change(model, how, weights, tmp_path):
    """Give ``model`` ``weights`` by one of the public ways."""
    if how == "set_weights":
        model.set_weights(weights)
    elif how == "load_weights":
        source = small("numpy")
        source.set_weights(weights)
        path = tmp_path / "w.h5"
        source.save_weights(path)
        model.load_weights(path)
    else:  # one layer's set_weights, each layer in turn
        i = 0
        for layer in model.weighted_layers():
            n = len(layer.weight_shapes())
            layer.set_weights(weights[i:i + n])
            i += n


@pytest.mark.parametrize("how", ["set_weights", "load_weights", "layer.set_weights"])
@pytest.mark.parametrize("make_copy", COPIES)
@pytest.mark.parametrize("engine", ENGINES)
def test_a_weight_change_to_either_model_is_never_the_others(engine, make_copy, how, tmp_path):
    """copy.copy shared the layers: a change through either model changed both (and a copy
    swapping weights under its own lock raced the original's runs)."""
    model = small(engine)
    x = rand(2, 64, 64, 3)
    y0 = model.predict(x)
    twin = make_copy(model)
    new = scaled(model.get_weights(), 0.9)
    truth = MobileNetV2((64, 64, 3), alpha=0.35, weights=None, classes=10, classifier_activation=None,
                        engine=engine)  # a model made with the new weights
    truth.set_weights(new)
    y1 = truth.predict(x)
    assert not np.array_equal(y0, y1)
    _change(twin, how, new, tmp_path)
    np.testing.assert_array_equal(twin.predict(x), y1)
    np.testing.assert_array_equal(model.predict(x), y0)
    _change(model, how, scaled(new, 1 / 0.9 ** 2), tmp_path)  # the original changed: the copy stays
    np.testing.assert_array_equal(twin.predict(x), y1)
    assert not np.array_equal(model.predict(x), y0)
    twin.threads = 1  # a copy's settings are its own too
    assert model.threads == 2


@pytest.mark.parametrize("engine", ENGINES)
def test_the_original_and_its_copies_run_at_once_in_threads(engine):
    """Each model predicting in threads of its own while another thread swaps a copy's weights
    between two sets: the original and the deep copy give their own outputs every time, the
    swapped copy its one or its other, never a mix.  (Before, a copy's swaps reached the
    original's layers without the original's lock: in 60 swaps at 96x96, 7 of the original's 30
    C outputs and 4 of its 5 NumPy ones matched neither weight set.)"""
    model = small(engine)
    x = rand(1, 64, 64, 3)
    a = model.get_weights()
    b = scaled(a, 0.9)
    want = model.predict(x)
    twin, deep = copy.copy(model), copy.deepcopy(model)
    twin.set_weights(b)
    want_b = twin.predict(x)
    assert not np.array_equal(want, want_b)
    seen = {name: [] for name in ("model", "deep", "twin")}
    stop, start = threading.Event(), threading.Barrier(4)

    def run(name, m):
        start.wait()
        while not stop.is_set():
            y = m.predict(x)
            seen[name].append("a" if np.array_equal(y, want) else "b" if np.array_equal(y, want_b) else "mix")

    workers = [threading.Thread(target=run, args=args) for args in
               (("model", model), ("deep", deep), ("twin", twin))]
    for w in workers:
        w.start()
    start.wait()
    swaps = 0
    while (swaps < 40 or min(map(len, seen.values())) < 10) and all(w.is_alive() for w in workers):
        twin.set_weights(a if swaps % 2 == 0 else b)
        swaps += 1
    stop.set()
    for w in workers:
        w.join(120)
    assert min(map(len, seen.values())) >= 10, seen  # (a thread that raised stopped short)
    assert set(seen["model"]) == set(seen["deep"]) == {"a"}, seen
    assert "mix" not in seen["twin"], seen


@pytest.mark.parametrize("how", ["copy", "deepcopy", "pickle"])
def test_a_copy_taken_while_the_weights_are_swapped_has_one_set_or_the_other(how):
    """The layers are copied under the model's lock: a copy (or a pickle) made while another thread
    swapped the weights could take some layers' old arrays and others' new ones."""
    model = small("numpy")
    x = rand(1, 64, 64, 3)
    a = model.get_weights()
    b = scaled(a, 0.9)
    want = [model.predict(x)]
    model.set_weights(b)
    want.append(model.predict(x))
    take = {"copy": copy.copy, "deepcopy": copy.deepcopy, "pickle": lambda m: pickle.loads(pickle.dumps(m))}[how]
    stop, copies = threading.Event(), []

    def swap():
        i = 0
        while not stop.is_set():
            model.set_weights(a if i % 2 == 0 else b)
            i += 1

    swapper = threading.Thread(target=swap)
    swapper.start()
    try:
        for _ in range(30):
            copies.append(take(model))
    finally:
        stop.set()
        swapper.join(60)
    got = [c.predict(x) for c in copies]
    assert all(any(np.array_equal(y, w) for w in want) for y in got)


# -- transformers' checkpoints: a classifier and DeepLabV3 ------------------------------------------
@pytest.mark.parametrize("make_copy", COPIES)
@pytest.mark.parametrize("name, shape", [("mobilenet_v2_0.35_96", (2, 96, 96, 3)),
                                         ("deeplabv3_mobilenet_v2_1.0_513", (1, 65, 97, 3))])
def test_copies_of_transformers_models_are_their_own(name, shape, make_copy):
    from mobilenetv2.hf import HFMobileNetV2, from_pretrained
    model = from_pretrained(require_shared("hf", name), threads=2)
    x = rand(*shape)
    want = model.predict(x)
    hidden = model.features(x, "mobilenet_v2.layer.5")["mobilenet_v2.layer.5"]
    twin = make_copy(model)
    assert type(twin) is HFMobileNetV2 and twin.name == model.name and twin.hf_names == model.hf_names
    np.testing.assert_array_equal(twin.predict(x), want)
    np.testing.assert_array_equal(twin.features(x, "mobilenet_v2.layer.5")["mobilenet_v2.layer.5"], hidden)
    assert twin.get_layer("mobilenet_v2.layer.5.expand_1x1") is not model.get_layer("mobilenet_v2.layer.5.expand_1x1")
    twin.id2label[0] = twin.hf_names["conv_stem"] = "changed"  # its dictionaries are its own
    assert model.id2label.get(0) != "changed" and model.hf_names["conv_stem"] != "changed"
    truth = from_pretrained(require_shared("hf", name))  # the copy's new weights, in a model of their own
    truth.set_weights(scaled(truth.get_weights(), 0.9))
    twin.set_weights(truth.get_weights())
    np.testing.assert_array_equal(twin.predict(x), truth.predict(x))
    np.testing.assert_array_equal(model.predict(x), want)


def test_a_deep_copy_of_a_float64_transformers_model_runs_alone():
    from mobilenetv2.hf import from_pretrained
    model = from_pretrained(require_shared("hf", "mobilenet_v2_0.35_96"), dtype="float64")
    x = rand(1, 96, 96, 3).astype(np.float64)
    want = model.predict(x)
    twin = copy.deepcopy(model)
    model.set_weights(scaled(model.get_weights(), 0.5))
    np.testing.assert_array_equal(twin.predict(x), want)
    assert twin.dtype == np.float64 and twin._plans == {}
