"""``compare`` on defects a converter makes that the other compare tests do not build: ReLU6
written as Relu then Min (a correct graph), a ReLU6 clipped at other bounds (Clip(0, 4), a Clip
with no lower bound, a Keras ``ReLU(max_value=4)``), and a Keras model whose weights differ from
the ones given.  Each graph is our own export edited by hand, so where the defect is and what it
is are known; the report's numbers are checked against NumPy."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="compare's ONNX tests need the onnx extra (pip install 'mobilenetv2[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="compare runs ONNX files in onnxruntime (pip install 'mobilenetv2[onnx]')")
from onnx import helper, numpy_helper  # noqa: E402

from conftest import keras3  # noqa: E402
from mobilenetv2.tools.compare import compare  # noqa: E402
from onnx_graphs import lively_model  # noqa: E402
from test_compare import SHAPE, clean, model  # noqa: E402,F401  (the lively model and its clean export)

# the code under test runs the same with or without the C extension: .ci/no-ext leaves it out
pytestmark = pytest.mark.engine_independent


def _node(g, output):
    return next(n for n in g.node if n.output[0] == output)


def _edited(clean, out, edit):
    m = onnx.load(str(clean))
    edit(m.graph)
    onnx.checker.check_model(m)
    onnx.save(m, str(out))
    return str(out)


def _const(g, name, value):
    g.initializer.append(numpy_helper.from_array(np.array(value, np.float32), name))
    return name


def _relu_then_min(g, layer, cap):
    """``layer``'s Clip(0, 6) replaced by Relu then Min(cap), as TensorFlow's tf.minimum(tf.nn.relu(x), 6)
    converts."""
    clip = _node(g, layer)
    i = list(g.node).index(clip)
    g.node.remove(clip)
    g.node.insert(i, helper.make_node("Min", [layer + "/relu", _const(g, layer + "/cap", cap)], [layer]))
    g.node.insert(i, helper.make_node("Relu", [clip.input[0]], [layer + "/relu"]))


def test_relu6_as_relu_then_min_agrees(model, clean, tmp_path):
    """A correct ReLU6 written as Relu then Min(6) was mapped to the Relu's output (no cap): a correct
    graph diverged at block_3_expand_relu, diagnosed 'ReLU (no cap at 6) instead of ReLU6', and the
    next layer unexplained; it is one ReLU6, as Max(0) then Min(6) already was."""
    path = _edited(clean, tmp_path / "relu_min.onnx", lambda g: _relu_then_min(g, "block_3_expand_relu", 6.0))
    report = compare(path, weights=model, random=1, seed=2)
    assert report["agrees"], (report["first_divergent_layer"], report["diagnosis"])
    row = next(r for r in report["layers"] if r["layer"] == "block_3_expand_relu")
    assert row["tensor"] == "block_3_expand_relu"   # the Min's output, not the Relu's


def test_relu_then_min_at_another_cap_is_an_activation_at_that_layer(model, clean, tmp_path):
    path = _edited(clean, tmp_path / "relu_min4.onnx", lambda g: _relu_then_min(g, "block_3_expand_relu", 4.0))
    d = compare(path, weights=model, random=1, seed=2)["diagnosis"]
    assert (d["layer"], d["cause"]) == ("block_3_expand_relu", "activation"), d["evidence"]
    assert (d["evidence"][0]["detail"]["min"], d["evidence"][0]["detail"]["max"]) == (0.0, 4.0)
    assert d["after_fix"]["agrees"]


def _clip_bounds(g, layer, lo, hi):
    clip = _node(g, layer)
    clip.input[1] = "" if lo is None else _const(g, layer + "/lo", lo)
    clip.input[2] = _const(g, layer + "/hi", hi)


@pytest.mark.parametrize("lo, hi", [(0.0, 4.0), (None, 6.0), (-6.0, 6.0)])
def test_a_clip_with_other_bounds_is_an_activation_with_those_bounds(model, clean, tmp_path, lo, hi):
    """A Clip with bounds other than (0, 6) was 'unexplained' (no candidate, or ReLU as the closest):
    the activation is now also tried with the bounds OTHER's output is pinned at, and confirmed by the
    float64 reference clipped there (checked here with NumPy on OTHER's own tensors)."""
    path = _edited(clean, tmp_path / "clip.onnx", lambda g: _clip_bounds(g, "block_3_expand_relu", lo, hi))
    report = compare(path, weights=model, random=1, seed=2)
    d = report["diagnosis"]
    assert report["first_divergent_layer"] == "block_3_expand_relu"
    assert (d["layer"], d["cause"]) == ("block_3_expand_relu", "activation"), d["evidence"]
    ev = d["evidence"][0]
    assert ev["detail"]["max"] == hi
    # where no value reaches the lower bound it reads as none; where some do, it is that bound
    assert ev["detail"]["min"] in ((lo, None) if lo is not None and lo < 0 else (lo,))
    assert ev["after"]["ratio"] <= report["factor"] < ev["before"]["ratio"] and d["after_fix"]["agrees"]
    # NumPy: OTHER's tensor is the BN's clipped at those bounds (the BN agrees, so a clip explains it)
    m = onnx.load(path)
    del m.graph.output[:]
    m.graph.output.extend([helper.make_empty_tensor_value_info(n) for n in ("block_3_expand_BN", "block_3_expand_relu")])
    x = np.random.default_rng(0).uniform(-1, 1, (1,) + SHAPE).astype(np.float32)
    bn, act = ort.InferenceSession(m.SerializeToString()).run(None, {"input": x})
    assert np.array_equal(act, np.clip(bn, -np.inf if lo is None else lo, hi))


def test_a_keras_relu_with_another_max_value_is_an_activation():
    keras = _keras()
    k = _keras_model(keras)
    k.get_layer("block_3_expand_relu").max_value = 4.0
    x = np.random.default_rng(11).uniform(-1, 1, (1,) + SHAPE).astype(np.float32)
    d = compare(k, batch=x)["diagnosis"]
    assert (d["layer"], d["cause"]) == ("block_3_expand_relu", "activation"), d["evidence"]
    assert d["evidence"][0]["detail"]["max"] == 4.0 and d["after_fix"]["agrees"]


# -- a Keras model against the weights given --------------------------------------------------
def _keras():
    return keras3("a Keras model as OTHER")


def _keras_model(keras, model=None):
    model = model or lively_model(SHAPE)
    keras.backend.clear_session()  # Keras's own layer names, whatever models this process made before
    k = keras.applications.MobileNetV2(input_shape=SHAPE, alpha=0.35, weights=None, classifier_activation=None)
    for layer in model.weighted_layers():
        k.get_layer(layer.name).set_weights([np.asarray(w, np.float32) for w in layer.weights])
    return k


@pytest.mark.parametrize("layer, index, scale, conv", [("block_5_project", 0, 1.01, "block_5_project"),
                                                        ("block_5_project_BN", 0, 1.05, "block_5_project")])
def test_a_keras_model_whose_weights_differ_from_the_given_ones_is_different_weights(model, layer, index, scale, conv):
    """--weights given and a Keras model storing its own: the README's last candidate, OTHER's weights
    in the layers where they differ, was never tried for a Keras model ('unexplained'); a kernel 1 %
    off or a gamma 5 % off is now different_weights naming that conv."""
    keras = _keras()
    k = _keras_model(keras, model)
    w = k.get_layer(layer).get_weights()
    w[index] = w[index] * scale
    k.get_layer(layer).set_weights(w)
    x = np.random.default_rng(11).uniform(-1, 1, (1,) + SHAPE).astype(np.float32)
    report = compare(k, weights=model, batch=x)
    assert report["first_divergent_layer"] == layer
    d = report["diagnosis"]
    assert (d["layer"], d["cause"]) == (layer, "different_weights"), d["evidence"]
    assert [x["layer"] for x in d["evidence"][0]["detail"]["layers"]] == [conv]
    assert d["after_fix"]["agrees"]


def test_onnx_batch_norm_nodes_whose_conv_kernel_differs_is_different_weights(model, tmp_path):
    """The same in an ONNX graph keeping each batch norm as a BatchNormalization node (torch.onnx
    without constant folding): the conv's output is compared before its batch norm, and the patch of
    OTHER's weights folded the batch norm into the conv, so it never matched there ('unexplained')."""
    from onnx_graphs import torch_style
    m = onnx.load(torch_style(model, tmp_path / "bn.onnx", bn_nodes=1e-3))
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    conv = convs[16]                      # block_5_depthwise: stem 1, expanded_conv 2, blocks 1-4 3 each
    w = next(t for t in m.graph.initializer if t.name == conv.input[1])
    w.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(w) * 1.01).astype(np.float32), w.name))
    onnx.save(m, str(tmp_path / "bn_k.onnx"))
    report = compare(str(tmp_path / "bn_k.onnx"), weights=model, random=1, seed=2)
    d = report["diagnosis"]
    assert report["first_divergent_layer"] == "block_5_depthwise"
    assert (d["layer"], d["cause"]) == ("block_5_depthwise", "different_weights"), d["evidence"]
    assert [x["layer"] for x in d["evidence"][0]["detail"]["layers"]] == ["block_5_depthwise"]
    assert d["evidence"][0]["before"]["rel_l2"] == pytest.approx(0.01, rel=1e-3)   # every value 1 % off
    assert d["after_fix"]["agrees"]
