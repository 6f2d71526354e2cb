"""``mobilenetv2 compare`` on a graph that resizes its own input before its first conv (an ONNX
Resize, as an OpenVINO PrePostProcessor's Interpolate): the reference starts from OTHER's resized
tensor, the report names the op, and a per-channel mean/scale before the resize, after it or on
both sides is checked as without a resize.  The graphs are our own export of the lively 0.35
model with a Resize (and Mul/Add maps) edited in (onnx_graphs.with_input_resize)."""
import numpy as np
import pytest

pytest.importorskip("onnx", reason="compare's ONNX tests need the onnx extra (pip install 'mobilenetv2[onnx]')")
pytest.importorskip("onnxruntime", reason="compare runs ONNX files in onnxruntime (pip install 'mobilenetv2[onnx]')")

from mobilenetv2 import export_onnx  # noqa: E402
from mobilenetv2.tools.compare import compare  # noqa: E402
from mobilenetv2.tools.compare.onnx_reader import read_onnx  # noqa: E402
from mobilenetv2.tools.compare.report import format_table  # noqa: E402
from onnx_graphs import lively_model, with_input_resize  # noqa: E402

# the code under test runs the same with or without the C extension: .ci/no-ext leaves it out
pytestmark = pytest.mark.engine_independent

SHAPE = (96, 96, 3)
TO_PIXELS = ([127.5] * 3, [127.5] * 3)            # [-1, 1] -> [0, 255]
FROM_PIXELS = ([1 / 127.5] * 3, [-1.0] * 3)       # [0, 255] -> [-1, 1]
MEAN, STD = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])


@pytest.fixture(scope="module")
def model():
    return lively_model(SHAPE)


@pytest.fixture(scope="module")
def exports(model, tmp_path_factory):
    """The model exported with a dynamic batch (for Resize by scales) and a static one (by sizes)."""
    folder = tmp_path_factory.mktemp("resize")
    return {"scales": export_onnx(model, folder / "dynamic.onnx", batch=None),
            "sizes": export_onnx(model, folder / "static.onnx")}


def _causes(report):
    d = report["diagnosis"]
    return [] if d is None else [d["cause"]] + [f["cause"] for f in d["further"]]


def test_an_input_resize_to_a_non_square_model(tmp_path):
    """The resized tensor OTHER writes (NCHW) read as NHWC by its own sides: a model at 80x112
    fed 64x64 images agrees at every layer."""
    path = with_input_resize(export_onnx(lively_model((80, 112, 3)), tmp_path / "wide.onnx"), tmp_path / "r.onnx",
                             (64, 64), mode="linear", by="sizes")
    report = compare(path, random=1, seed=3)
    assert report["agrees"] and report["input"]["shape"] == [1, 64, 64, 3], format_table(report)
    assert "resizes it to 80x112 before its first conv" in report["input"]["source"]


@pytest.mark.parametrize("hw,mode,by", [((64, 64), "linear", "scales"),      # upsampling
                                        ((48, 72), "nearest", "scales"),     # upsampling, other sides
                                        ((128, 160), "linear", "sizes"),     # downsampling
                                        ((192, 192), "cubic", "sizes")])     # downsampling
def test_an_input_resize_is_where_the_reference_starts(exports, tmp_path, hw, mode, by):
    """An ONNX Resize of the input (any mode, by scales or sizes, up or down) made the reference
    run at the input's size, not the stem's (every layer's shape differed from OTHER's: nothing
    agreed).  The reference now starts from OTHER's resized tensor, every layer agrees, and the
    report says it was an ONNX Resize, not an OpenVINO Interpolate."""
    path = with_input_resize(exports[by], tmp_path / "r.onnx", hw, mode=mode, by=by)
    report = compare(path, random=2, seed=1)
    assert report["agrees"] and report["diagnosis"] is None, format_table(report)
    assert len(report["layers"]) > 50 and all(r["agrees"] for r in report["layers"])
    assert report["input"]["shape"] == [2, *hw, 3]
    source = report["input"]["source"]
    assert f"resizes it to 96x96 before its first conv (an ONNX Resize, mode {mode})" in source
    assert "'input_resized'" in source and "Interpolate" not in source
    assert "OTHER's own resize of its input (an ONNX Resize" in report["weights"]["cannot_detect"]


def test_a_wrong_mean_scale_after_the_resize_is_preprocessing(exports, tmp_path):
    """A graph that maps [0, 255] to [-1, 1] after its resize, fed [-1, 1]: the divergence at the
    stem is its input scaling (preprocessing, the map read from the graph), not the resize."""
    path = with_input_resize(exports["scales"], tmp_path / "r.onnx", (128, 128), after=FROM_PIXELS)
    report = compare(path, random=1)
    d = report["diagnosis"]
    assert (report["first_divergent_layer"], d["cause"], d["after_fix"]["agrees"]) == \
        ("bn_Conv1", "preprocessing", True), format_table(report)
    assert d["evidence"][0]["detail"]["scale"] == pytest.approx([1 / 127.5] * 3)
    assert d["evidence"][0]["detail"]["offset"] == pytest.approx([-1.0] * 3)
    assert _causes(report) == ["preprocessing"]


def test_mean_scale_on_both_sides_of_the_resize(exports, tmp_path):
    """A map before the resize and one after it: only one was used (OpenVINO's reader took the one
    after and let the reference start from the resized tensor with the one before still in it), so
    a graph whose two maps cancel was 'preprocessing: expects [0, 255]'.  The map before is now
    undone on the resized tensor and the two are checked together: cancelling maps agree, maps
    that do not are preprocessing with the whole map (a2 a1, a2 b1 + b2)."""
    right = with_input_resize(exports["scales"], tmp_path / "right.onnx", (128, 128), before=TO_PIXELS,
                              after=FROM_PIXELS)
    report = compare(right, random=1)
    assert report["agrees"] and report["diagnosis"] is None, format_table(report)
    assert "its mean/scale ahead of the resize undone on it" in report["input"]["source"]
    assert "together with OTHER's map after the resize" in report["input"]["source"]

    wrong = with_input_resize(exports["scales"], tmp_path / "wrong.onnx", (128, 128), mode="nearest",
                              before=TO_PIXELS, after=(1 / STD, -MEAN / STD))
    report = compare(wrong, random=1)
    d = report["diagnosis"]
    assert (report["first_divergent_layer"], d["cause"], d["after_fix"]["agrees"]) == \
        ("bn_Conv1", "preprocessing", True), format_table(report)
    assert d["evidence"][0]["detail"]["scale"] == pytest.approx(127.5 / STD, rel=1e-5)
    assert d["evidence"][0]["detail"]["offset"] == pytest.approx((127.5 - MEAN) / STD, rel=1e-5)


@pytest.mark.parametrize("roi", [[0, 0, 0.1, 0.05, 1, 1, 0.9, 1.0],      # a crop inside the image
                                 [0, 0, -0.1, -0.1, 1, 1, 1.1, 1.1]])    # past it: extrapolated pixels
def test_a_crop_and_resize_with_maps_on_both_sides(exports, tmp_path, roi):
    """An ONNX Resize in tf_crop_and_resize mode, with a map to [0, 255] before it and back after it:
    where its region of interest reaches past the image it writes its extrapolation value (0, in
    the mapped domain), which is no weighted sum of the input.  The reference still starts from
    OTHER's resized tensor with the map before undone on it, extrapolated pixels included, and the
    whole map then gives exactly OTHER's tensor after the resize: every layer agrees, inside the
    image or past it; a wrong map after the resize is still the preprocessing."""
    path = with_input_resize(exports["sizes"], tmp_path / "crop.onnx", (128, 128), by="sizes", before=TO_PIXELS,
                             after=FROM_PIXELS, roi=roi)
    report = compare(path, random=2, seed=3)
    assert report["agrees"] and report["diagnosis"] is None, format_table(report)
    assert len(report["layers"]) > 50 and all(r["agrees"] for r in report["layers"])
    assert "its mean/scale ahead of the resize undone on it" in report["input"]["source"]
    wrong = with_input_resize(exports["sizes"], tmp_path / "wrong.onnx", (128, 128), by="sizes", before=TO_PIXELS,
                              after=(1 / STD, -MEAN / STD), roi=roi)
    report = compare(wrong, random=1)
    d = report["diagnosis"]
    assert (report["first_divergent_layer"], d["cause"], d["after_fix"]["agrees"]) == \
        ("bn_Conv1", "preprocessing", True), format_table(report)


def test_mean_scale_on_both_sides_of_a_pre_post_processor_resize(exports):
    """The same in an OpenVINO model: a PrePostProcessor's mean/scale to [0, 255] before its resize
    and back to [-1, 1] after it agree (the reader used to take the one after alone)."""
    ov = pytest.importorskip("openvino", reason="the OpenVINO case needs the openvino extra")
    from openvino.preprocess import PrePostProcessor, ResizeAlgorithm
    ppp = PrePostProcessor(ov.convert_model(exports["scales"]))
    ppp.input().tensor().set_spatial_static_shape(128, 128)
    ppp.input().model().set_layout(ov.Layout("NHWC"))
    ppp.input().preprocess().mean(-1.0).scale(1 / 127.5).resize(ResizeAlgorithm.RESIZE_LINEAR) \
        .mean(127.5).scale(127.5)
    report = compare(ppp.build(), random=1)
    assert report["agrees"] and report["diagnosis"] is None, format_table(report)
    assert "(an OpenVINO Interpolate" in report["input"]["source"]


def test_a_resize_after_the_stem_is_not_the_input_resize(exports, tmp_path):
    """A Resize that reads the stem's output is a layer of OTHER's, not its input's resize: the
    reference is not started from it (an input resize before it still is).  Here it resizes to
    the same size (an identity), so the graph agrees either way it is read but one."""
    mid = with_input_resize(exports["scales"], tmp_path / "mid.onnx", SHAPE[:2], at="stem")
    assert read_onnx(mid).input_resize is None
    report = compare(mid, random=1)
    assert report["agrees"] and "resizes it" not in report["input"]["source"], format_table(report)

    both = with_input_resize(mid, tmp_path / "both.onnx", (64, 64), after=FROM_PIXELS)
    other = read_onnx(both)
    assert (other.input_resize, other.input_resize_op) == ("input_resized", "an ONNX Resize, mode linear")
    report = compare(both, random=1)
    d = report["diagnosis"]
    assert (d["cause"], d["after_fix"]["agrees"]) == ("preprocessing", True), format_table(report)
    assert "'input_resized'" in report["input"]["source"] and "'stem_resized'" not in report["input"]["source"]


def _resize_input(hw, size, op):
    """An edit for ``tflite_edit``: the graph takes ``hw`` images and resizes them (``op``: a TFLite
    RESIZE_BILINEAR or RESIZE_NEAREST_NEIGHBOR, half-pixel centers) to ``size``, its old input."""
    def edit(m, g, s):
        code = s.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = getattr(s.BuiltinOperator, op)
        code.version = 3  # (half_pixel_centers)
        m.operatorCodes.append(code)
        sizes = s.BufferT()
        sizes.data = np.array(size, np.int32).view(np.uint8)
        m.buffers.append(sizes)
        image, target = s.TensorT(), s.TensorT()
        image.name, image.shape, image.type, image.buffer = b"image", [1, *hw, 3], s.TensorType.FLOAT32, 0
        target.name, target.shape, target.type, target.buffer = b"size", [2], s.TensorType.INT32, len(m.buffers) - 1
        g.tensors += [image, target]
        resize = s.OperatorT()
        resize.opcodeIndex, resize.inputs, resize.outputs = len(m.operatorCodes) - 1, [len(g.tensors) - 2,
                                                                                      len(g.tensors) - 1], [g.inputs[0]]
        options = s.ResizeBilinearOptionsT() if op == "RESIZE_BILINEAR" else s.ResizeNearestNeighborOptionsT()
        options.halfPixelCenters = True
        resize.builtinOptionsType = getattr(s.BuiltinOptions, "ResizeBilinearOptions" if op == "RESIZE_BILINEAR"
                                            else "ResizeNearestNeighborOptions")
        resize.builtinOptions = options
        for sig in m.signatureDefs or ():
            for t in sig.inputs or ():
                t.tensorIndex = len(g.tensors) - 2 if t.tensorIndex == g.inputs[0] else t.tensorIndex
        g.inputs = [len(g.tensors) - 2]
        g.operators.insert(0, resize)
    return edit


@pytest.mark.parametrize("hw,op", [((64, 64), "RESIZE_BILINEAR"), ((128, 112), "RESIZE_NEAREST_NEIGHBOR")])
def test_a_tflite_input_resize_is_where_the_reference_starts(model, tmp_path, hw, op):
    """A .tflite that resizes its own input (a RESIZE_* op ahead of its first conv): the reference
    runs from its resized tensor and every layer agrees, the report naming the TFLite op."""
    pytest.importorskip("ai_edge_litert.interpreter", reason="the .tflite case needs LiteRT (ai-edge-litert)")
    from conftest import tflite_edit
    from mobilenetv2 import export_tflite
    src = export_tflite(model, tmp_path / "clean.tflite")
    path = tmp_path / "resized.tflite"
    path.write_bytes(tflite_edit(open(src, "rb").read(), _resize_input(hw, SHAPE[:2], op)))
    report = compare(str(path), random=1)
    assert report["agrees"] and report["diagnosis"] is None, format_table(report)
    assert report["input"]["shape"] == [1, *hw, 3]
    assert f"resizes it to 96x96 before its first conv (a TFLite {op})" in report["input"]["source"]
