"""A hostile user's walk through ``compare``: each case is a healthy OTHER (a dump of our own
float64 engine, the package's ONNX and TFLite exports of a small lively model) with one thing
changed here whose place and size are known, and the truth is what a careful user expects: the
package's own error naming what to do, or a report that names the changed layer.  Each failed
before its fix (the failure in the test's text)."""
import json
import os
import warnings

import numpy as np
import pytest

from conftest import tflite_edit
from mobilenetv2 import InsufficientMemory, MobileNetV2
from mobilenetv2.cli import main
from mobilenetv2.tools.compare import CompareError, compare
from onnx_graphs import lively_weights

# the code under test runs the same with or without the C extension: .ci/no-ext leaves it out
pytestmark = pytest.mark.engine_independent

SHAPE = (32, 32, 3)


@pytest.fixture(scope="module")
def backbone():
    return lively_weights(MobileNetV2(SHAPE, alpha=0.35, include_top=False, weights=None))


@pytest.fixture(scope="module")
def weights(backbone, tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "backbone.h5"
    backbone.save_weights(path)
    return str(path)


@pytest.fixture(scope="module")
def dump(backbone):
    """Every layer of our float64 engine on one seeded image, named as Keras names them: the
    truth itself, as a dump (``mobilenetv2 dump`` writes the same)."""
    ref = MobileNetV2(SHAPE, alpha=0.35, include_top=False, weights=None, dtype="float64")
    ref.set_weights(backbone.get_weights())
    x = np.random.default_rng(3).uniform(-1, 1, (1,) + SHAPE)
    arrays = {k: np.asarray(v, np.float32) for k, v in ref.trace(x).items() if k != ref.layers[0].name}
    return dict(arrays, input=x.astype(np.float32))


def _npz(path, arrays, **changes):
    arrays = dict(arrays)
    for k, v in changes.items():
        arrays.pop(k) if v is None else arrays.__setitem__(k, v)
    np.savez(path, **arrays)
    return str(path)


@pytest.fixture(scope="module")
def onnx_path(backbone, tmp_path_factory):
    pytest.importorskip("onnx", reason="compare reads ONNX files with the onnx extra")
    pytest.importorskip("onnxruntime", reason="compare runs ONNX files with the onnx extra")
    from mobilenetv2.tools.onnx_export import export_onnx
    return str(export_onnx(backbone, tmp_path_factory.mktemp("onnx") / "bb.onnx", batch=1))


def test_the_clean_dump_agrees(dump, weights, tmp_path):
    """The baseline the cases below change one thing of."""
    report = compare(_npz(tmp_path / "clean.npz", dump), weights=weights)
    assert report["agrees"] and len(report["layers"]) == len(dump) - 1


# -- a graph none of whose ops compare reads ---------------------------------------------------------
def test_an_onnx_graph_without_operations_is_no_mobilenet_not_a_dump(onnx_path, weights, tmp_path, capsys):
    """A graph of no nodes (its output its input) read as a tensor dump: without --weights 'is a
    tensor dump and carries no weights', with them an internal TypeError ('NoneType' object is not
    iterable), exit 3."""
    import onnx
    m = onnx.load(onnx_path)
    del m.graph.node[:]
    m.graph.output[0].name = m.graph.input[0].name
    path = tmp_path / "empty.onnx"
    onnx.save(m, str(path))
    for w in (None, weights):
        with pytest.raises(CompareError, match=r"'.*empty.onnx' \(onnx\) runs no operation .* no MobileNetV2"):
            compare(str(path), weights=w)
    assert main(["compare", str(path), "--weights", weights, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "runs no operation" in err and "dump" not in err, err


def test_a_tflite_file_without_operators_is_no_mobilenet(backbone, tmp_path):
    pytest.importorskip("ai_edge_litert", reason="compare runs .tflite files with the litert extra")
    from mobilenetv2.tools.tflite_export import export_tflite
    src = export_tflite(backbone, tmp_path / "bb.tflite", batch=1)

    def no_ops(m, g, s):
        g.operators, g.outputs = [], list(g.inputs)
    path = tmp_path / "no_ops.tflite"
    path.write_bytes(tflite_edit(open(src, "rb").read(), no_ops))
    with pytest.raises(CompareError, match=r"\(tflite\) runs no operation"):
        compare(str(path))


# -- a TFLite op reading a tensor no earlier op wrote (a cycle) -------------------------------------------
def test_a_tflite_op_reading_a_later_op_s_output_is_refused(backbone, tmp_path):
    """Op 0 reading op 3's output: LiteRT ran it on memory nothing had written, and compare
    reported what came of it (DIVERGES, unexplained) as OTHER's computation."""
    pytest.importorskip("ai_edge_litert", reason="compare runs .tflite files with the litert extra")
    from mobilenetv2.tools.tflite_export import export_tflite
    src = export_tflite(backbone, tmp_path / "bb.tflite", batch=1)

    def cycle(m, g, s):
        g.operators[0].inputs = [g.operators[3].outputs[0]] + list(g.operators[0].inputs[1:])
    path = tmp_path / "cycle.tflite"
    path.write_bytes(tflite_edit(open(src, "rb").read(), cycle))
    with pytest.raises(CompareError, match=r"cycle.tflite': op 0 \(CONV_2D\) reads tensor .* before any op writes it"):
        compare(str(path))
    assert compare(src)["agrees"]  # the healthy file, every op reading what an earlier one wrote


# -- input values ----------------------------------------------------------------------------------
def test_an_input_batch_beyond_float32_s_range_is_refused_by_name(onnx_path, capfd):
    """A float64 batch of values past 3.4e38 passed the NaN/inf check, became inf once cast to
    float32, and failed deep inside: 'SVD did not converge in Linear Least Squares' after
    LAPACK's own '** On entry to DLASCL parameter number 4 had an illegal value' lines."""
    x = np.random.default_rng(0).uniform(-1, 1, (1,) + SHAPE) * 1e39
    with pytest.raises(CompareError, match=r"input batch holds values beyond float32's range \(up to 1e\+39"):
        compare(onnx_path, batch=x)
    x[:] = 1e30  # float32 values, however large: fed as they are
    assert compare(onnx_path, batch=x)["input"]["shape"] == [1, 32, 32, 3]
    capfd.readouterr()


# -- shapes that differ, and the mapping -----------------------------------------------------------------
@pytest.mark.parametrize("cut", [slice(0, 5), slice(0, 0)])
def test_a_batch_norm_output_of_other_channels_diverges_with_a_note(dump, weights, tmp_path, cut):
    """A dump whose block_3_expand_BN has 5 channels (or none) where the reference has 48: the
    diagnosis fitted an epsilon on it and failed, 'operands could not be broadcast together with
    shapes (1,8,8,5) (48,)', an error (exit 2) instead of the verdict."""
    a = dump["block_3_expand_BN"][..., cut]
    report = compare(_npz(tmp_path / "cut.npz", dump, block_3_expand_BN=a), weights=weights)
    row = next(r for r in report["layers"] if r["layer"] == "block_3_expand_BN")
    assert not report["agrees"] and report["first_divergent_layer"] == "block_3_expand_BN"
    assert row["ratio"] is None and row["note"] == f"shape {list(a.shape)} where the reference has [1, 8, 8, 48]"


def test_a_feature_map_given_as_predictions_is_a_shape_divergence(dump, tmp_path):
    """A 4-d tensor compared as the classifier's 2-d output (a mapping naming the wrong tensor):
    IndexError: tuple index out of range, an internal error (exit 3)."""
    top = lively_weights(MobileNetV2(SHAPE, alpha=0.35, include_top=True, weights=None, classes=10))
    weights = tmp_path / "top.h5"
    top.save_weights(weights)
    ref = MobileNetV2(SHAPE, alpha=0.35, include_top=True, weights=None, classes=10, dtype="float64")
    ref.set_weights(top.get_weights())
    x = dump["input"]
    arrays = {k: np.asarray(v, np.float32) for k, v in ref.trace(x.astype(np.float64)).items() if k != "input_1"}
    arrays = {k: v for k, v in arrays.items() if k in ("Conv1", "block_1_expand", "predictions")}
    path = _npz(tmp_path / "pred.npz", dict(arrays, input=x), predictions=arrays["Conv1"])
    report = compare(path, weights=str(weights))
    row = next(r for r in report["layers"] if r["layer"] == "predictions")
    assert report["first_divergent_layer"] == "predictions" and row["note"].startswith("shape [1, 16, 16, 16]")
    assert [r["agrees"] for r in report["layers"]] == [True, True, False]


def test_an_empty_mapping_file_is_refused_not_an_agreement(onnx_path, tmp_path, capsys):
    """A mapping of no tensors compared nothing and agreed (exit 0 from the API's report); the
    table then failed on it, 'max() arg is an empty sequence'."""
    mapping = tmp_path / "m.json"
    mapping.write_text('{"tensors": {}}')
    with pytest.raises(CompareError, match="maps none of OTHER's tensors to a Keras layer"):
        compare(onnx_path, mapping=str(mapping))
    assert main(["compare", onnx_path, "--mapping", str(mapping), "--quiet"]) == 2
    assert "nothing to compare" in capsys.readouterr().err


# -- dumps -------------------------------------------------------------------------------------------------
def test_an_integer_array_named_as_a_layer_is_refused_not_left_out(dump, weights, tmp_path):
    """An int8 runtime's dump of block_3_expand_relu (integers, no scale): the array was dropped
    without a word and the other 154 layers AGREED; an integer array named otherwise is no layer."""
    q = np.round(dump["block_3_expand_relu"] / 6 * 127).astype(np.int8)
    with pytest.raises(CompareError, match=r"array 'block_3_expand_relu' is int8; compare compares float tensors"):
        compare(_npz(tmp_path / "int.npz", dump, block_3_expand_relu=q), weights=weights)
    report = compare(_npz(tmp_path / "labels.npz", dump, top5=np.arange(5)), weights=weights)
    assert report["agrees"] and len(report["layers"]) == len(dump) - 1


def test_an_unexplained_diagnosis_has_every_key_of_the_schema(dump, weights, tmp_path):
    """The README's schema gives every diagnosis "equivalent", "scope" and "after_fix" (only
    deployed_kernels is said to have none): an unexplained one had none of them (KeyError)."""
    a = dump["block_3_expand_relu"].copy()
    a.flat[7] = np.nan
    report = compare(_npz(tmp_path / "nan.npz", dump, block_3_expand_relu=a), weights=weights)
    d = report["diagnosis"]
    assert (report["first_divergent_layer"], d["cause"]) == ("block_3_expand_relu", "unexplained")
    assert (d["equivalent"], d["scope"], d["after_fix"]) == ([], None, None)
    from mobilenetv2.tools.compare.report import format_table, write_json
    assert "cause: unexplained" in format_table(report)
    back = json.loads(open(write_json(report, tmp_path / "r.json")).read())
    assert back["diagnosis"]["after_fix"] is None and back["layers"][0]["layer"] == "Conv1"


def test_an_inf_in_other_is_said_in_the_report_not_by_numpy(dump, weights, tmp_path, capsys):
    """OTHER's out_relu all inf: the verdict was right, but NumPy's 'invalid value encountered in
    matmul' and '... in scalar divide' came first on stderr as the command's warnings."""
    a = np.full_like(dump["out_relu"], np.inf)
    path = _npz(tmp_path / "inf.npz", dump, out_relu=a)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = compare(path, weights=weights)
    assert report["first_divergent_layer"] == "out_relu" and report["layers"][-1]["rel_l2"] == np.inf
    assert main(["compare", path, "--weights", weights, "--quiet"]) == 1
    assert capsys.readouterr().err == ""


# -- memory --------------------------------------------------------------------------------------------
def test_a_comparison_this_machine_cannot_hold_is_refused_before_other_runs(onnx_path, monkeypatch, capsys):
    """Every layer of both sides is kept: an IR declaring a 4096x4096 input (a size the README
    allows) was killed by the kernel past 24 GB, no word said.  Now the float64 and float32
    traces' size (12 bytes per value of every layer, worked out here from the engine's own
    trace) is checked against the memory available before anything runs."""
    from mobilenetv2.engines import machine
    from mobilenetv2.tools.compare import onnx_reader
    values = sum(v.size for v in MobileNetV2(SHAPE, alpha=0.35, include_top=False, weights=None, dtype="float64")
                 .trace(np.zeros((1,) + SHAPE)).values())
    ran = []
    real = onnx_reader.read_onnx

    def spy(path):
        o = real(path)
        inner = o.runner
        o.runner = lambda x: ran.append(x.shape) or inner(x)
        return o
    monkeypatch.setattr("mobilenetv2.tools.compare.onnx_reader.read_onnx", spy)
    monkeypatch.setattr(machine, "available_memory", lambda: 3 * values * 12 - 1)
    with pytest.raises(InsufficientMemory, match=r"comparing 3 image\(s\) at 32x32") as info:
        compare(onnx_path, random=3)
    assert f"at least {3 * values * 12 / 2**30:.1f} GiB" in str(info.value) and ran == []
    assert main(["compare", onnx_path, "--random", "3", "--quiet"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert compare(onnx_path, random=2)["agrees"] and ran == [(2, 32, 32, 3)]


# -- heads of another class count ------------------------------------------------------------------------
def test_a_conv_of_other_weights_is_found_where_the_class_counts_differ_too(tmp_path):
    """OTHER (10 classes) with block_5_project's kernel changed in one output channel, against
    weights of 11 classes (a background class 0, TF-slim's) and every conv OTHER's: the classes'
    differing shapes dropped every layer's weight comparison, and block_5_project was
    'unexplained: no candidate reduced the error'."""
    onnx = pytest.importorskip("onnx", reason="compare reads ONNX files with the onnx extra")
    pytest.importorskip("onnxruntime", reason="compare runs ONNX files with the onnx extra")
    from onnx import numpy_helper
    from mobilenetv2.tools.onnx_export import export_onnx
    other = lively_weights(MobileNetV2(SHAPE, alpha=0.35, include_top=True, weights=None, classes=10))
    m = onnx.load(export_onnx(other, tmp_path / "top.onnx", batch=None))
    t = next(t for t in m.graph.initializer if t.name == "block_5_project/W")
    w = numpy_helper.to_array(t).copy()
    w[3] *= 1.05
    t.CopyFrom(numpy_helper.from_array(w, t.name))
    onnx.save(m, str(tmp_path / "changed.onnx"))
    eleven = MobileNetV2(SHAPE, alpha=0.35, include_top=True, weights=None, classes=11)
    ws = other.get_weights()
    ws[-2] = np.concatenate([np.zeros((ws[-2].shape[0], 1), ws[-2].dtype), ws[-2]], axis=1)
    ws[-1] = np.concatenate([np.zeros(1, ws[-1].dtype), ws[-1]])
    eleven.set_weights(ws)
    eleven.save_weights(tmp_path / "eleven.h5")
    report = compare(str(tmp_path / "changed.onnx"), weights=str(tmp_path / "eleven.h5"), random=2)
    d = report["diagnosis"]
    assert (report["first_divergent_layer"], d["cause"]) == ("block_5_project_BN", "different_weights"), d
    assert [x["layer"] for x in d["evidence"][0]["detail"]["layers"]] == ["block_5_project"]
    assert [(f["layer"], f["cause"]) for f in d["further"]] == [("predictions", "class_offset")]
    assert d["further"][0]["after_fix"]["agrees"]


# -- a graph of a fixed batch size ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["onnx", "openvino"])
def test_a_graph_of_a_fixed_batch_of_2_runs_2_images_by_default(backbone, tmp_path, kind):
    """torch.onnx.export with a dummy batch of 2 fixes the graph's batch at 2: compare's default
    input (one random image) failed in the runtime's words ('Got: 1 Expected: 2'), and so did
    --random 3."""
    pytest.importorskip("onnx", reason="compare reads ONNX files with the onnx extra")
    pytest.importorskip("onnxruntime", reason="compare runs ONNX files with the onnx extra")
    from mobilenetv2.tools.onnx_export import export_onnx
    path = str(export_onnx(backbone, tmp_path / "b2.onnx", batch=2))
    if kind == "openvino":
        ov = pytest.importorskip("openvino", reason="compare runs IRs with the openvino extra")
        ov.save_model(ov.convert_model(path), str(tmp_path / "b2.xml"), compress_to_fp16=False)
        path = str(tmp_path / "b2.xml")
    report = compare(path)
    assert report["agrees"] and report["input"]["shape"] == [2, 32, 32, 3]
    assert report["input"]["source"].startswith("2 random image(s)")
    assert compare(path, random=4)["input"]["shape"] == [4, 32, 32, 3]
    with pytest.raises(CompareError, match=rf"{os.path.basename(path)}' takes batches of 2 images .* holds 3: give a "
                                           r"multiple of 2 \(--random 2"):
        compare(path, random=3)


# -- Python arguments ----------------------------------------------------------------------------------
def test_python_arguments_of_another_type_get_the_package_s_error(onnx_path):
    """images=123: TypeError 'expected str, bytes or os.PathLike object, not int'; a mapping given
    as the dict a mapping file holds: the same TypeError.  The dict is now read as the file is."""
    with pytest.raises(CompareError, match=r"images must be paths of image files or folders, got int"):
        compare(onnx_path, images=123)
    with pytest.raises(CompareError, match=r"mapping must be the path of a JSON mapping file .* got int"):
        compare(onnx_path, mapping=7)
    with pytest.raises(CompareError, match=r"the mapping given must be a JSON object"):
        compare(onnx_path, mapping={"tensors": {"Conv1_relu": 5}})
    report = compare(onnx_path, mapping={"bn_Conv1": "bn_Conv1", "block_1_expand_relu": "block_1_expand_relu"})
    assert [(r["layer"], r["how"], r["agrees"]) for r in report["layers"]] == [
        ("bn_Conv1", "mapping file", True), ("block_1_expand_relu", "mapping file", True)]


# -- torch modules of another float type or device ---------------------------------------------------------
def test_a_torch_module_is_fed_in_its_own_float_type_and_device(backbone):
    """A module made .double() (or .half()) was fed float32 images: torch's RuntimeError 'Input
    type (torch.FloatTensor) and weight type (torch.DoubleTensor) should be the same', no
    report; one on the meta device (weights never loaded): TypeError "can't convert meta device
    type tensor to numpy".  A module in float64 computes as the reference does: far below the
    float32 floor at every layer."""
    pytest.importorskip("torch", reason="compare runs torch modules with the torch extra")
    from test_compare_torch import KerasOrderNet
    x = np.random.default_rng(5).uniform(-1, 1, (2,) + SHAPE).astype(np.float32)
    report = compare(KerasOrderNet(backbone).double(), batch=x)
    assert report["agrees"] and max(r["ratio"] for r in report["layers"]) < 1e-3
    report = compare(KerasOrderNet(backbone).half(), batch=x)  # float16 arithmetic: a verdict, whatever it is
    assert report["first_divergent_layer"] == "Conv1"
    with pytest.raises(CompareError, match=r"'KerasOrderNet' has its parameters on the 'meta' device"):
        compare(KerasOrderNet(backbone).to("meta"))


    class TwoChannels(KerasOrderNet):  # a forward of its own that torch refuses to run
        def forward(self, x):
            return super().forward(x[:, :2])
    with pytest.raises(CompareError, match=r"torch module 'TwoChannels' failed running on input \[2, 3, 32, 32\] "
                                           r"\(torch.float32\): RuntimeError"):
        compare(TwoChannels(backbone), batch=x)


def test_a_keras_model_of_two_inputs_is_refused_by_name():
    """A Keras model of two image inputs: TypeError "'<=' not supported between instances of 'int'
    and 'tuple'" (its input_shape a list of shapes, read as one)."""
    from conftest import keras3
    keras = keras3("comparing a Keras model")
    a, b = keras.Input((32, 32, 3)), keras.Input((32, 32, 3))
    two = keras.Model([a, b], keras.layers.Add()([a, b]), name="two")
    with pytest.raises(CompareError, match=r"Keras model 'two' takes input of shape \[\(None, 32, 32, 3\), \(None, 32, "
                                           r"32, 3\)\]; a MobileNetV2 takes one image batch"):
        compare(two)


# -- the report's files ---------------------------------------------------------------------------------
def test_the_report_is_never_written_over_a_file_compare_read(onnx_path, weights, tmp_path, capsys):
    """--json model.onnx (a slip of the hand) replaced the model with the report, --plot
    weights.h5 the weights with a PNG: as segment's --out over its input image, refused."""
    import shutil
    model, w = tmp_path / "model.onnx", tmp_path / "weights.h5"
    shutil.copy(onnx_path, model)
    shutil.copy(weights, w)
    before = model.read_bytes(), w.read_bytes()
    assert main(["compare", str(model), "--json", str(model), "--quiet"]) == 2
    out, err = capsys.readouterr()
    assert "--json" in err and model.read_bytes() == before[0]
    assert out == ""  # refused before the comparison ran (its table was printed, then the refusal)
    pytest.importorskip("matplotlib", reason="--plot draws with matplotlib")
    assert main(["compare", str(model), "--weights", str(w), "--plot", str(tmp_path / "." / "weights.h5"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file compare read" in err and w.read_bytes() == before[1], err
    assert main(["compare", str(model), "--json", str(tmp_path / "r.json"), "--quiet"]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["agrees"]


def test_a_model_of_any_input_size_takes_a_batch_of_its_own_size(backbone, tmp_path):
    """A torch module (no declared input size) given one (H, W, 3) image: 'input batch has shape
    (1, 32, 32, 3); OTHER takes (N, 32, 3, 3)' (its sides read from the wrong axes); given a
    (3, H, W) one: IndexError; given an .npy batch of 32x32: '... OTHER takes (N, 224, 224, 3)'."""
    pytest.importorskip("torch", reason="compare runs torch modules with the torch extra")
    from test_compare_torch import KerasOrderNet
    net = KerasOrderNet(backbone)
    image = np.random.default_rng(9).uniform(-1, 1, SHAPE).astype(np.float32)
    np.save(tmp_path / "x.npy", image[None])
    for batch in (image, image.transpose(2, 0, 1), str(tmp_path / "x.npy")):
        report = compare(net, batch=batch)
        assert report["agrees"] and report["input"]["shape"] == [1, 32, 32, 3], report["input"]
    with pytest.raises(CompareError, match=r"input batch has shape \(1, 16, 32, 3\); a MobileNetV2 takes sides from 32"):
        compare(net, batch=image[:16])
