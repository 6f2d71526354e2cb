"""``compare`` with a live Keras 3 model as OTHER (the reader runs a model that outputs every layer,
matched by Keras's layer names, and reads the weights by name): ``keras.applications.MobileNetV2``
given our weights agrees; with one ReLU6 made a ReLU, or one batch norm's epsilon set to 1e-5, it is
caught at that layer with that cause; the real 1.0_224 backbone loaded into Keras from
../shared/weights (checked against Keras's recorded features of real photos) agrees, and with one
batch norm's epsilon at 1e-5 is caught there.  Keras is not a test extra; CI installs Keras 3 with
JAX (.ci/run), and where Keras 3 or a backend for it is absent these tests skip saying so.  With no
KERAS_BACKEND set, the first backend installed of torch, JAX and TensorFlow is used."""
import importlib.util
import os

import numpy as np
import pytest

# the code under test runs the same with or without the C extension: .ci/no-ext leaves it out
pytestmark = pytest.mark.engine_independent


def _unavailable(reason):
    """Skip this module saying why; where Keras was installed on purpose (.ci/run sets
    MOBILENETV2_REQUIRE_KERAS=1) a skip would hide these tests, so fail instead."""
    if os.environ.get("MOBILENETV2_REQUIRE_KERAS") == "1":
        pytest.fail(f"MOBILENETV2_REQUIRE_KERAS=1: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


if "KERAS_BACKEND" not in os.environ:
    _backend = next((b for b in ("torch", "jax", "tensorflow") if importlib.util.find_spec(b) is not None), None)
    if _backend is None:
        _unavailable("the Keras reader's tests need a Keras backend: none of torch, jax and tensorflow is installed "
                     "(pip install keras jax to run them)")
    os.environ["KERAS_BACKEND"] = _backend
try:
    import keras
except ImportError as e:
    _unavailable(f"the Keras reader's tests need Keras 3, which is not a test extra (pip install keras jax to run "
                 f"them): {e}")
if int(keras.__version__.split(".")[0]) < 3:
    _unavailable(f"the Keras reader's tests need Keras 3, found {keras.__version__}")

from conftest import keras_reference, require_shared  # noqa: E402
from mobilenetv2 import MobileNetV2  # noqa: E402
from mobilenetv2.tools.compare import compare  # noqa: E402
from onnx_graphs import lively_weights  # noqa: E402

SHAPE = (96, 96, 3)


@pytest.fixture(scope="module")
def model():
    return lively_weights(MobileNetV2(SHAPE, alpha=0.35, weights=None, classifier_activation=None), seed=3)


@pytest.fixture(scope="module")
def kmodel(model):
    keras.backend.clear_session()  # Keras's layer names without the _N other tests' models leave in this process
    k = keras.applications.MobileNetV2(input_shape=SHAPE, alpha=0.35, weights=None, classifier_activation=None)
    for layer in model.weighted_layers():  # Keras's layer names are ours
        k.get_layer(layer.name).set_weights([np.asarray(w, np.float32) for w in layer.weights])
    return k


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(11).uniform(-1, 1, (2,) + SHAPE).astype(np.float32)


def test_keras_model_with_our_weights_agrees(model, kmodel, x):
    # independent of compare: Keras computes what the float64 engine does, to float32 rounding
    assert np.allclose(kmodel.predict(x, verbose=0), model.predict(x.astype(np.float64)), rtol=1e-4, atol=1e-4)
    report = compare(kmodel, batch=x)
    assert report["other"]["kind"] == "keras"
    assert report["weights"]["source"] == "read from the Keras model by layer name (alpha=0.35)"
    assert report["agrees"] and report["first_divergent_layer"] is None and report["diagnosis"] is None
    assert all(r["agrees"] for r in report["layers"])
    names = [r["layer"] for r in report["layers"]]
    assert names == [layer.name for layer in model.layers[1:]]  # every layer but the input, by name


def test_keras_model_input_size_from_the_model_or_the_batch_and_dynamic_pads(model, kmodel, x):
    """With no input given, compare draws one at the Keras model's own 96x96 (not its 224 default);
    a Keras model of any input size (no head) takes the batch's size.  Built with input size None,
    Keras pads every stride-2 conv as for an even side (its correct_pad cannot see the side): at
    64x80, block_13's input is 4x5 and Keras pads its width (0, 1) where a model built at 64x80
    pads (1, 1); compare names that pad and its fix."""
    report = compare(kmodel, random=1, seed=0)
    assert report["input"]["shape"] == [1, 96, 96, 3] and report["agrees"]
    k = keras.applications.MobileNetV2(input_shape=(None, None, 3), alpha=0.35, include_top=False, weights=None)
    for layer in model.weighted_layers():
        if layer.name != "predictions":
            k.get_layer(layer.name).set_weights([np.asarray(w, np.float32) for w in layer.weights])
    report = compare(k, batch=x[:1, :64, :64])  # every stride-2 conv's input even: the same pads
    assert report["input"]["shape"] == [1, 64, 64, 3] and report["agrees"]
    assert report["layers"][-1]["layer"] == "out_relu"
    nchw = compare(k, batch=np.ascontiguousarray(x[:1, :64, :64].transpose(0, 3, 1, 2)))  # read by its 3 channels
    assert nchw["input"]["shape"] == [1, 64, 64, 3] and nchw["agrees"]
    report = compare(k, batch=x[:1, :64, :80])
    assert report["first_divergent_layer"] == "block_13_pad"
    row = next(r for r in report["layers"] if r["layer"] == "block_13_pad")
    assert row["note"] == "shape [1, 5, 6, 192] where the reference has [1, 5, 7, 192]"
    d = report["diagnosis"]
    assert d["cause"] == "padding" and d["also"] == [] and d["after_fix"]["agrees"]
    assert d["evidence"][0]["detail"] == {"layer": "block_13_depthwise", "pads": [0, 1, 0, 1],
                                          "reference_pads": [0, 1, 1, 1]}
    assert "input size None" in d["evidence"][0]["applied"]


def _set(layer, attr, value):
    old = getattr(layer, attr)
    setattr(layer, attr, value)
    return old


@pytest.mark.parametrize("layer,attr,value,cause", [
    ("block_3_expand_relu", "max_value", None, "activation"),   # ReLU6 -> ReLU
    ("block_5_depthwise_BN", "epsilon", 1e-5, "bn_epsilon"),    # PyTorch's default epsilon
])
def test_keras_model_defect_found(kmodel, x, layer, attr, value, cause):
    target = kmodel.get_layer(layer)
    old = _set(target, attr, value)
    try:
        report = compare(kmodel, batch=x)  # weights read by name; the epsilon stays Keras's 1e-3
    finally:
        _set(target, attr, old)
    d = report["diagnosis"]
    assert not report["agrees"]
    assert (report["first_divergent_layer"], d["cause"], d["also"]) == (layer, cause, [])
    assert d["evidence"][0]["after"]["ratio"] <= report["factor"] < d["evidence"][0]["before"]["ratio"]
    assert d["after_fix"]["agrees"]
    if cause == "bn_epsilon":
        assert d["evidence"][0]["detail"]["epsilon"] == 1e-5


def test_real_backbone_in_keras_agrees_and_epsilon_defect_found():
    path = require_shared("weights", "mobilenet_v2_1.0_224_no_top.keras3-names.h5")
    ref = keras_reference("real_backbone_1.0_224.npz")
    photos = ref["inputs_uint8"][:2].astype(np.float32) / 127.5 - 1
    k = keras.applications.MobileNetV2(input_shape=(224, 224, 3), include_top=False, weights=str(path))
    # independent of compare: this Keras model computes Keras's recorded features of these photos
    pooled = k.predict(photos, verbose=0).mean(axis=(1, 2))
    assert np.linalg.norm(pooled - ref["pooled"][:2]) <= 1e-5 * np.linalg.norm(ref["pooled"][:2])
    report = compare(k, batch=photos)
    assert report["weights"]["source"] == "read from the Keras model by layer name (alpha=1)"
    assert report["agrees"], (report["first_divergent_layer"], report["diagnosis"])
    assert report["layers"][-1]["layer"] == "out_relu" and len(report["layers"]) >= 150
    k.get_layer("block_12_project_BN").epsilon = 1e-5
    report = compare(k, batch=photos)
    d = report["diagnosis"]
    assert (report["first_divergent_layer"], d["cause"], d["also"]) == ("block_12_project_BN", "bn_epsilon", [])
    assert d["evidence"][0]["detail"]["epsilon"] == 1e-5 and d["after_fix"]["agrees"]


@pytest.mark.parametrize("shape, alpha, include_top", [((96, 96, 3), 0.35, True), (None, 1.0, True),
                                                       (None, 1.3, False), ((100, 120, 3), 0.75, False)])
def test_the_models_name_is_keras_s(shape, alpha, include_top):
    """``name`` (what summary() prints) is Keras's: the alpha with two decimals and the input's
    rows, None where any ('mobilenetv2_1_224' it was, for Keras's 'mobilenetv2_1.00_224')."""
    k = keras.applications.MobileNetV2(input_shape=shape, alpha=alpha, include_top=include_top, weights=None)
    keras.backend.clear_session()  # Keras names a later model's layers apart from these otherwise
    assert MobileNetV2(shape, alpha=alpha, include_top=include_top, weights=None).name == k.name
