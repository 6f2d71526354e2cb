"""The constructor and the model object against ``keras.applications.MobileNetV2`` (Keras 3), which
the README says ours takes the arguments and meaning of: what Keras takes (``name``,
``input_tensor=None``, ``classifier_activation='linear'``, ``get_layer(index=i)``) ours takes, with
Keras's meaning; the README's ``MobileNetV2((320, 320, 3), top_pooling="7x7")`` builds; and a model
that cannot take the imagenet weights says so before any file is looked for or downloaded.

Keras is not a test extra: the tests that build a Keras model skip where it is absent, and each
builds its model after ``keras.backend.clear_session()`` (Keras's layer-name counters are global)."""
import warnings

import numpy as np
import pytest

from conftest import keras3, set_synthetic_weights
from mobilenetv2 import MobileNetV2
from mobilenetv2.errors import ArgumentError, DownloadError
from mobilenetv2.formats import registry


def _keras():
    return keras3("the Keras comparisons")


def _keras_model(**kwargs):
    keras = _keras()
    keras.backend.clear_session()  # Keras's own layer names, whatever models this process made before
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return keras.applications.MobileNetV2(**kwargs)


def _rand(shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def _lively(model, seed=0):
    """Weights that make every layer matter: batch norms with real statistics, not Keras's identity."""
    rng = np.random.default_rng(seed)
    arrays = []
    for layer in model.weighted_layers():
        for wname, shape in zip(layer.weight_names, layer.weight_shapes()):
            if wname in ("gamma", "moving_variance"):
                arrays.append(rng.uniform(0.5, 1.5, shape))
            elif wname == "kernel":
                fan_in = 9 if len(shape) == 4 and shape[3] == 1 else int(np.prod(shape[:-1]))
                arrays.append(rng.normal(0, 1 / np.sqrt(fan_in), shape))
            else:
                arrays.append(rng.normal(0, 0.1, shape))
    model.set_weights(arrays)
    return model


# -- classifier_activation='linear': Keras's name for no activation ------------------------------
def test_linear_classifier_activation_is_keras_s_logits():
    """classifier_activation='linear' (Keras: the same activation as None, taken with imagenet
    weights too) was refused: "classifier_activation must be 'softmax' or None"."""
    ours = _lively(MobileNetV2((64, 64, 3), alpha=0.35, weights=None, classes=5, classifier_activation="linear"))
    assert ours.classifier_activation is None and ours.get_layer("predictions").activation is None
    k = _keras_model(input_shape=(64, 64, 3), alpha=0.35, weights=None, classes=5, classifier_activation="linear")
    k.set_weights([w.astype(np.float32) for w in ours.get_weights()])
    x = _rand((2, 64, 64, 3))
    want = np.asarray(k.predict(x, verbose=0), np.float64)  # (numpy on every backend; torch's k(x) needs grad off)
    got = ours.predict(x)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    assert not np.allclose(want.sum(axis=1), 1.0)  # logits, not probabilities


def test_linear_classifier_activation_is_taken_with_imagenet_weights(monkeypatch):
    """Keras's validate_activation takes 'linear' with pretrained weights (it is activations.get(None))."""
    asked = []

    def resolve(alpha, rows, include_top):
        asked.append((alpha, rows, include_top))
        raise DownloadError("stop here: the arguments were taken")

    monkeypatch.setattr(registry, "resolve", resolve)
    with pytest.raises(DownloadError, match="stop here"):
        MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), classifier_activation="linear")
    assert asked == [(0.35, 96, True)]
    with pytest.raises(ArgumentError, match="classifier_activation"):
        MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), classifier_activation="sigmoid")


# -- name and input_tensor: Keras's arguments -------------------------------------------------------
def test_name_is_keras_s_model_name():
    """MobileNetV2(name='backbone') was a TypeError (an unexpected keyword argument)."""
    model = MobileNetV2((32, 32, 3), alpha=0.35, weights=None, name="backbone")
    assert model.name == "backbone"
    lines = []
    model.summary(print_fn=lines.append)
    assert lines[0].startswith('Model: "backbone"')
    assert MobileNetV2((32, 32, 3), alpha=0.35, weights=None).name == "mobilenetv2_0.35_32"  # Keras's default
    k = _keras_model(input_shape=(32, 32, 3), alpha=0.35, weights=None, name="backbone")
    assert k.name == "backbone"


@pytest.mark.parametrize("bad", ["a/b", 3, b"x", ["n"], np.zeros(2), "a\ud800b"])
def test_a_name_keras_refuses_is_an_argument_error(bad):
    """Keras: "Argument `name` must be a string and cannot contain character `/`" (and a lone
    surrogate, which the exporters cannot write into a file: UnicodeEncodeError)."""
    with pytest.raises(ArgumentError, match="name must be a string"):
        MobileNetV2((32, 32, 3), alpha=0.35, weights=None, name=bad)


def test_input_tensor_none_is_taken_in_keras_s_position():
    """Keras's fifth argument is input_tensor (pooling the sixth, classes the seventh): a call in
    Keras's order, or one naming input_tensor=None, was a TypeError or another model's error."""
    model = MobileNetV2((64, 48, 3), 0.35, False, None, None, "max")
    assert model.pooling == "max" and model.layers[-1].name == "global_max_pooling2d"
    model = MobileNetV2((64, 48, 3), 0.35, True, None, None, None, 7, None, "head7")
    assert (model.classes, model.classifier_activation, model.name) == (7, None, "head7")
    assert MobileNetV2((32, 32, 3), alpha=0.35, weights=None, input_tensor=None).input_shape == (32, 32, 3)
    k = _keras_model(**dict(zip(("input_shape", "alpha", "include_top", "weights", "input_tensor", "pooling",
                                 "classes", "classifier_activation", "name"),
                                ((64, 48, 3), 0.35, True, None, None, None, 7, None, "head7"))))
    assert [(layer.name, layer.count_params()) for layer in k.layers] == \
        [(layer.name, layer.count_params()) for layer in model.layers]


@pytest.mark.parametrize("tensor", [np.zeros((1, 32, 32, 3), np.float32), "input", 0])
def test_an_input_tensor_is_refused_saying_to_give_input_shape(tensor):
    with pytest.raises(ArgumentError, match="input_tensor.*input_shape"):
        MobileNetV2((32, 32, 3), alpha=0.35, weights=None, input_tensor=tensor)


# -- get_layer(index=...) -----------------------------------------------------------------------------
def test_get_layer_by_index_as_keras():
    """Keras's get_layer(name=None, index=None): get_layer(index=3) was a TypeError."""
    model = MobileNetV2((32, 32, 3), alpha=0.35, weights=None)
    k = _keras_model(input_shape=(32, 32, 3), alpha=0.35, weights=None)
    for i in (0, 1, 3, 17, len(k.layers) - 1, -1):
        assert model.get_layer(index=i).name == k.get_layer(index=i).name
    assert model.get_layer(index=np.int64(2)) is model.layers[2]
    assert model.get_layer(name="Conv1") is model.layers[1]


@pytest.mark.parametrize("kwargs, match", [
    (dict(index=156), r"index must be a whole number from -156 to 155"),
    (dict(index=-157), r"index must be a whole number from -156 to 155"),
    (dict(index=1.0), "index must be a whole number"),
    (dict(index=True), "index must be a whole number"),
    (dict(index="Conv1"), "index must be a whole number"),
    (dict(name="Conv1", index=1), "a layer's name or its index, not both"),
    (dict(), r"get_layer takes a layer's name .* or index"),
])
def test_get_layer_refuses_what_keras_refuses_with_an_argument_error(kwargs, match):
    model = MobileNetV2(alpha=0.35, weights=None)
    assert len(model.layers) == 156
    with pytest.raises(ArgumentError, match=match):
        model.get_layer(**kwargs)


# -- TF-slim's 7x7 head with the imagenet weights, as README shows it -----------------------------
@pytest.fixture
def imagenet_as_synthetic(tmp_path, monkeypatch):
    """registry.resolve answering with a weights file of the synthetic values (no network): the
    (alpha, rows, include_top) asked for are recorded."""
    asked = []
    source = set_synthetic_weights(MobileNetV2((224, 224, 3), alpha=0.35, weights=None))
    path = tmp_path / "synthetic_0.35_top.h5"
    source.save_weights(path)

    def resolve(alpha, rows, include_top):
        asked.append((alpha, rows, include_top))
        return str(path)

    monkeypatch.setattr(registry, "resolve", resolve)
    return asked, source


def _seven_by_seven_head(features, dense):
    """TF-slim's head by hand, in float64: a 7x7 average window (stride 1, VALID), the dense layer,
    softmax per cell."""
    n, h, w, c = features.shape
    kh, kw = min(7, h), min(7, w)
    grid = np.stack([np.stack([features[:, i:i + kh, j:j + kw].mean(axis=(1, 2)) for j in range(w - kw + 1)], 1)
                     for i in range(h - kh + 1)], 1)
    logits = grid @ dense[0].astype(np.float64) + dense[1]
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_the_readme_s_7x7_head_at_320_loads_the_224_imagenet_weights(imagenet_as_synthetic):
    """README: "Keras's model takes it too: MobileNetV2((320, 320, 3), top_pooling="7x7")", whose
    grid of scores is the point of the head; with the default weights='imagenet' it was refused
    ("input_shape must be one of (R, R, 3) for R in (96, ..., 224)")."""
    asked, source = imagenet_as_synthetic
    with pytest.warns(UserWarning, match="the weights for 224x224 are loaded"):
        model = MobileNetV2((320, 320, 3), alpha=0.35, top_pooling="7x7")
    assert asked == [(0.35, 224, True)]
    for a, b in zip(model.get_weights(), source.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = _rand((1, 320, 320, 3), seed=5)
    ref = MobileNetV2((320, 320, 3), alpha=0.35, include_top=False, weights=None, dtype="float64")
    ref.set_weights(source.get_weights()[:-2])
    want = _seven_by_seven_head(ref.predict(x.astype(np.float64)), source.get_layer("predictions").weights)
    got = model.predict(x)
    assert got.shape == want.shape == (1, 4, 4, 1000)
    assert np.abs(want[0, 0, 0] - want[0, 3, 3]).max() > 1e-3 * want.max()  # the cells see different windows
    # log-probabilities are the logits less one constant per cell: held to the README's 1e-4 for logits
    assert np.abs(np.log(got) - np.log(want)).max() <= 1e-4


def test_the_7x7_head_at_an_official_size_loads_that_size_s_file_quietly(imagenet_as_synthetic):
    asked, _ = imagenet_as_synthetic
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = MobileNetV2((160, 160, 3), alpha=0.35, top_pooling="7x7")
    assert asked == [(0.35, 160, True)] and model.name == "mobilenetv2_0.35_160"
    with pytest.raises(ArgumentError, match="static"):  # the head still needs a fixed size
        MobileNetV2((None, None, 3), alpha=0.35, top_pooling="7x7")
    with pytest.raises(ArgumentError, match="classes must be 1000"):
        MobileNetV2((320, 320, 3), alpha=0.35, top_pooling="7x7", classes=10)
    with pytest.raises(ArgumentError, match="input_shape must be one of.*top_pooling='7x7'"):
        MobileNetV2((320, 320, 3), alpha=0.35)  # Keras's rule for its own head stands
    assert len(asked) == 1


# -- load_weights('imagenet') checks the model first ----------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(classes=10), "1000 classes|classes must be 1000"),
    (dict(input_shape=(64, 64, 1), include_top=False), "3 input channels"),
    (dict(input_shape=(64, 64, 4)), "3 input channels"),
])
def test_load_imagenet_refuses_a_model_it_cannot_fit_before_looking_for_the_file(monkeypatch, kwargs, match):
    """model.load_weights('imagenet') on a model built with weights=None that the imagenet files
    cannot fit (10 classes, 1 input channel) found, or downloaded, the 14 MB file and then failed
    on a layer's shape; the constructor refuses the same model with weights='imagenet' at once."""
    def resolve(*args):
        raise AssertionError(f"looked for the imagenet file {args} for a model it cannot fit")

    monkeypatch.setattr(registry, "resolve", resolve)
    model = MobileNetV2(alpha=0.35, weights=None, **kwargs)
    before = model.get_weights()
    with pytest.raises(ArgumentError, match=match):
        model.load_weights("imagenet")
    with pytest.raises(ArgumentError, match=match):
        MobileNetV2(alpha=0.35, weights="imagenet", **kwargs)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


# -- pooling with the top: ignored, as Keras ignores it ----------------------------------------------
def test_pooling_with_the_top_is_not_the_model_s_pooling(tmp_path):
    """Keras ignores pooling= where include_top=True (the head averages), and so did the graph, but
    model.pooling kept the 'max' given: compare, given such a model as the weights ("its own pooling,
    whatever OTHER has"), then max-pooled its reference and reported a false divergence at
    global_max_pooling2d against an export of the very same backbone."""
    pytest.importorskip("onnx", reason="the compare check exports to ONNX (extra onnx)")
    pytest.importorskip("onnxruntime", reason="the compare check runs ONNX Runtime (extra onnx)")
    import mobilenetv2 as M
    k = _keras_model(input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=4, pooling="max")
    model = _lively(MobileNetV2((96, 96, 3), alpha=0.35, weights=None, classes=4, pooling="max"))
    assert model.pooling is None
    assert [layer.name for layer in model.layers] == [layer.name for layer in k.layers]  # no max pooling
    k.set_weights([w.astype(np.float32) for w in model.get_weights()])
    x = _rand((1, 96, 96, 3), seed=2)
    want = np.asarray(k.predict(x, verbose=0), np.float64)  # (numpy on every backend; torch's k(x) needs grad off)
    assert np.abs(model.predict(x) - want).max() <= 1e-5 * np.abs(want).max()
    backbone = MobileNetV2((96, 96, 3), alpha=0.35, weights=None, include_top=False, pooling="avg")
    backbone.set_weights(model.get_weights()[:-2])
    path = M.export_onnx(backbone, tmp_path / "backbone.onnx")
    report = M.compare(path, weights=model, random=1)
    assert report["agrees"], (report["first_divergent_layer"], report["diagnosis"])
