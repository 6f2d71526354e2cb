"""``mobilenetv2 compare`` on a .tflite that maps its own input (its MUL/SUB/ADD/DIV by constants,
as a converter bakes ``(x - 127.5) / 127.5`` or a mean/std into the model): the map is read from the
graph (``input_affine``) as the ONNX and OpenVINO readers read theirs, named in the diagnosis, and
a RESIZE_BILINEAR behind it is the reference's start with the map undone on it.  The files are our
own export of the lively 0.35 model with the ops edited in (conftest.tflite_edit)."""
import numpy as np
import pytest

pytest.importorskip("onnx", reason="the lively model the compare tests break comes from onnx_graphs")
pytest.importorskip("ai_edge_litert.interpreter", reason="the .tflite cases need LiteRT (ai-edge-litert)")

from conftest import tflite_edit  # noqa: E402
from mobilenetv2 import export_tflite  # noqa: E402
from mobilenetv2.tools.compare import compare  # noqa: E402
from mobilenetv2.tools.compare.report import format_table  # noqa: E402
from mobilenetv2.tools.compare.tflite_reader import read_tflite  # noqa: E402
from onnx_graphs import lively_model  # noqa: E402

# the code under test runs the same with or without the C extension: .ci/no-ext leaves it out
pytestmark = pytest.mark.engine_independent

SHAPE = (96, 96, 3)
MEAN255, STD255 = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])  # torchvision's, on [0, 255]


@pytest.fixture(scope="module")
def model():
    return lively_model(SHAPE)


@pytest.fixture(scope="module")
def clean(model, tmp_path_factory):
    return open(export_tflite(model, tmp_path_factory.mktemp("clean") / "clean.tflite"), "rb").read()


def _pixels(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n,) + SHAPE).astype(np.float32)


def _ahead(steps, at=None):
    """An edit for ``tflite_edit``: ``steps`` computed on the tensor named ``at`` before the ops that
    read it (on the graph's input where None: a new input "image" then), each (op, constant): "SUB",
    "MUL", "ADD" or "DIV" of the tensor by a float32 constant (per channel where it has 3 values;
    ("SUB", c, "first") for c - x; ("MUL", c, "RELU") with a fused ReLU), or ("RESIZE_BILINEAR",
    (h, w)): the tensor before it is an (h, w) image, half-pixel centers."""
    def edit(m, g, s):
        def tensor(name, shape, kind=s.TensorType.FLOAT32, data=None):
            t = s.TensorT()
            t.name, t.shape, t.type, t.buffer = name.encode(), list(shape), kind, 0
            if data is not None:
                b = s.BufferT()
                b.data = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
                m.buffers.append(b)
                t.buffer = len(m.buffers) - 1
            g.tensors.append(t)
            return len(g.tensors) - 1

        def code(op, version):
            c = s.OperatorCodeT()
            c.builtinCode = c.deprecatedBuiltinCode = getattr(s.BuiltinOperator, op)
            c.version = version
            m.operatorCodes.append(c)
            return len(m.operatorCodes) - 1

        target = g.inputs[0] if at is None else next(i for i, t in enumerate(g.tensors) if t.name.decode() == at)
        shape = list(g.tensors[target].shape)
        sizes = [shape] * len(steps)
        for k in range(len(steps) - 1, 0, -1):  # each step's input shape, from the last one back
            sizes[k - 1] = [1, *steps[k][1], 3] if steps[k][0] == "RESIZE_BILINEAR" else sizes[k]
        start = [1, *steps[0][1], 3] if steps[0][0] == "RESIZE_BILINEAR" else sizes[0]
        if at is None:
            src = raw = tensor("image", start)
        else:  # the op that wrote ``at`` writes a fresh tensor; the steps map it onto ``at``
            src = raw = tensor(at + "_raw", shape)
            next(op for op in g.operators if target in op.outputs).outputs = [raw]
        ops = []
        for k, (op, value, *how) in enumerate(steps):
            dst = target if k == len(steps) - 1 else tensor(f"step{k}", sizes[k])
            new = s.OperatorT()
            new.outputs = [dst]
            if op == "RESIZE_BILINEAR":
                new.opcodeIndex = code(op, 3)
                new.inputs = [src, tensor(f"size{k}", [2], s.TensorType.INT32, np.array(sizes[k][1:3], np.int32))]
                new.builtinOptionsType = s.BuiltinOptions.ResizeBilinearOptions
                new.builtinOptions = s.ResizeBilinearOptionsT()
                new.builtinOptions.halfPixelCenters = True
            else:
                c = np.asarray(value, np.float32).reshape(-1)
                const = tensor(f"const{k}", [c.size], data=c)
                new.opcodeIndex = code(op, 1)
                new.inputs = [const, src] if "first" in how else [src, const]
                name = op.capitalize() + "Options"
                new.builtinOptionsType, new.builtinOptions = getattr(s.BuiltinOptions, name), getattr(s, name + "T")()
                if "RELU" in how:
                    new.builtinOptions.fusedActivationFunction = s.ActivationFunctionType.RELU
            ops.append(new)
            src = dst
        if at is None:
            for sig in m.signatureDefs or ():
                for t in sig.inputs or ():
                    t.tensorIndex = raw if t.tensorIndex == target else t.tensorIndex
            g.inputs = [raw]
            g.operators[:0] = ops
        else:
            after = next(k for k, op in enumerate(g.operators) if raw in op.outputs)
            g.operators[after + 1:after + 1] = ops
    return edit


def _write(clean, path, steps, at=None):
    path.write_bytes(tflite_edit(clean, _ahead(steps, at)))
    return str(path)


OWN_MAPS = {  # name: steps, each mapping [0, 255] pixels by torchvision's mean/std
    "sub_div": [("SUB", MEAN255), ("DIV", STD255)],
    "add_mul": [("ADD", -MEAN255), ("MUL", 1 / STD255)],
    "constant_first": [("SUB", MEAN255, "first"), ("MUL", -1 / STD255)],  # (mean - x) * -1/std
}


@pytest.mark.parametrize("case", sorted(OWN_MAPS))
def test_a_tflite_graphs_own_mean_std_is_read_and_named(model, clean, tmp_path, case):
    """A .tflite taking [0, 255] RGB with the ImageNet mean/std baked in (SUB then DIV, ADD then
    MUL, a constant minus the input), against Keras's weights: the map is read from the graph,
    exactly, as the preprocessing candidate (the reader kept no constants of its arithmetic)."""
    path = _write(clean, tmp_path / f"{case}.tflite", OWN_MAPS[case])
    a, b = read_tflite(path).input_affine
    assert np.broadcast_to(a, 3) == pytest.approx(1 / STD255, rel=1e-6)
    assert b == pytest.approx(-MEAN255 / STD255, rel=1e-6)
    report = compare(path, weights=model, batch=_pixels(2, 3))
    d = report["diagnosis"]
    assert (report["first_divergent_layer"], d["cause"], d["also"], d["after_fix"]["agrees"]) == \
        ("Conv1_relu", "preprocessing", [], True), format_table(report)
    ev = d["evidence"][0]
    assert "read from its graph" in ev["applied"]
    assert ev["detail"]["scale"] == pytest.approx(1 / STD255, rel=1e-6)
    assert ev["detail"]["offset"] == pytest.approx(-MEAN255 / STD255, rel=1e-6)
    assert ev["detail"]["expects_range"] == [pytest.approx(MEAN255 - STD255, abs=0.12),
                                             pytest.approx(MEAN255 + STD255, abs=0.12)]


@pytest.mark.parametrize("steps,scale,named", [
    ([("SUB", 127.5), ("DIV", 127.5)], 1 / 127.5, True),    # (x - 127.5) / 127.5: Keras's own on [0, 255]
    ([("SUB", 128.0), ("DIV", 128.0)], 1 / 128, False),     # (x - 128) / 128: close to Keras's, not it
])
def test_a_tflite_graphs_own_scalar_map(model, clean, tmp_path, steps, scale, named):
    """A scalar map on [0, 255] pixels is read from the graph; Keras's own is found as the [0, 255]
    scaling, one a little off it is the graph's own, exact; either way every layer agrees once the
    pixels are mapped."""
    path = _write(clean, tmp_path / "scalar.tflite", steps)
    a, b = read_tflite(path).input_affine
    assert (a, b) == (pytest.approx([scale]), pytest.approx([-1.0]))
    report = compare(path, weights=model, batch=_pixels(2, 5))
    d = report["diagnosis"]
    assert (d["cause"], d["after_fix"]["agrees"]) == ("preprocessing", True), format_table(report)
    ev = d["evidence"][0]
    assert ev["detail"]["scale"] == pytest.approx([scale] * 3, rel=1e-6)
    assert ev["detail"]["offset"] == pytest.approx([-1.0] * 3, rel=1e-6)
    assert ("expects input in [0, 255]" in ev["applied"]) == named
    assert ("read from its graph" in ev["applied"]) != named


def test_a_map_then_a_resize_on_the_tflite_input(clean, tmp_path):
    """A map, then a RESIZE_BILINEAR, then a map, ahead of the first conv: the reference starts from
    the resized tensor with the map before the resize undone on it.  Maps that cancel ([-1, 1] to
    [0, 255] and back) agree; a [0, 255] scaling alone before the resize, fed [-1, 1], is
    preprocessing with its scale and offset (the reader used to leave the resize behind arithmetic
    untaken, and the reference started from OTHER's input, of the wrong size)."""
    right = _write(clean, tmp_path / "right.tflite", [("MUL", 127.5), ("ADD", 127.5), ("RESIZE_BILINEAR", (128, 128)),
                                                      ("SUB", 127.5), ("DIV", 127.5)])
    report = compare(right, random=1)
    assert report["agrees"] and report["diagnosis"] is None, format_table(report)
    assert report["input"]["shape"] == [1, 128, 128, 3]
    assert "resizes it to 96x96 before its first conv (a TFLite RESIZE_BILINEAR)" in report["input"]["source"]
    assert "its mean/scale ahead of the resize undone on it" in report["input"]["source"]

    wrong = _write(clean, tmp_path / "wrong.tflite", [("SUB", 127.5), ("DIV", 127.5), ("RESIZE_BILINEAR", (80, 72))])
    report = compare(wrong, random=1)
    d = report["diagnosis"]
    assert (report["first_divergent_layer"], d["cause"], d["after_fix"]["agrees"]) == \
        ("Conv1_relu", "preprocessing", True), format_table(report)
    assert d["evidence"][0]["detail"]["scale"] == pytest.approx([1 / 127.5] * 3)
    assert d["evidence"][0]["detail"]["offset"] == pytest.approx([-1.0] * 3)


def test_arithmetic_elsewhere_is_no_input_map(clean, tmp_path):
    """A MUL and a DIV by constants that cancel on the first conv's output are the network's, not
    OTHER's input map (the layers still map and agree); a MUL with a fused ReLU on the input is no
    affine map either."""
    name = _first_conv_output(clean)
    after = _write(clean, tmp_path / "after.tflite", [("MUL", 4.0), ("DIV", 4.0)], at=name)
    assert read_tflite(after).input_affine is None
    assert compare(after, random=1)["agrees"]
    fused = _write(clean, tmp_path / "fused.tflite", [("MUL", 1.0, "RELU")])
    other = read_tflite(fused)
    assert other.input_affine is None and [n.op for n in other.nodes[:1]] == ["other"]


def _first_conv_output(data):
    """The name of the first conv's output tensor in the .tflite ``data``."""
    from ai_edge_litert import schema_py_generated as schema
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    g = m.subgraphs[0]
    conv = next(op for op in g.operators
                if m.operatorCodes[op.opcodeIndex].builtinCode == schema.BuiltinOperator.CONV_2D)
    return g.tensors[conv.outputs[0]].name.decode()


def test_a_tensor_grid_of_two_channels_is_per_channel():
    """Two scales (and zero points) are a grid per channel, as any other count above one: the
    second channel's values dequantize with the second scale, not the first's."""
    from mobilenetv2.tools.compare.tflite_reader import _grid
    t = {"name": "w", "dtype": np.int8, "quantization_parameters": {
        "scales": [0.5, 0.25], "zero_points": [0, 3], "quantized_dimension": 0}}
    grid = _grid(t)
    assert grid.scale.tolist() == [0.5, 0.25] and grid.zero_point.tolist() == [0, 3]
    assert grid.dequantize(np.array([[4, 4], [7, 7]], np.int8)).tolist() == [[2.0, 2.0], [1.0, 1.0]]
    one = _grid(dict(t, quantization_parameters={"scales": [0.5], "zero_points": [1]}))
    assert np.ndim(one.scale) == 0 and one.dequantize(np.array([3], np.int8)).tolist() == [1.0]
