"""``mobilenetv2 compare`` on OpenVINO IR (``model.xml`` + ``model.bin``) and ``openvino.Model``
objects.  The IRs are made here as OpenVINO users make them (``openvino.convert_model`` +
``openvino.save_model``, with and without its default float16 compression) from the ONNX graphs
of test_compare.py (our export and the torch-style graph, each defect built in on purpose) and
from the LiteRT peer in ../shared/peers: a healthy IR agrees at every layer, each defect is named
with the cause the ONNX path names, hostile files are refused in one line."""
import json
import os
import shutil

import numpy as np
import pytest

ov = pytest.importorskip("openvino", reason="compare's OpenVINO tests need the openvino extra "
                         "(pip install 'mobilenetv2[openvino]')")
# test_compare's module: its skips (the IRs are converted from ONNX graphs; the ONNX path is what
# each diagnosis is checked against), its input shape, and its lively 0.35 model as fixtures
from test_compare import (EXPORT_DEFECTS, SHAPE, TORCH_STYLE_DEFECTS, clean, model,  # noqa: E402,F401 (fixtures)
                          n_keras_outputs, weights_file)
from test_compare_regressions import _edit, _no_block_2_add  # noqa: E402
from test_untrusted_hf_compare import _fifo, _in_thread  # noqa: E402

from conftest import require_shared, set_synthetic_weights  # noqa: E402
from mobilenetv2 import MobileNetV2  # noqa: E402
from mobilenetv2.cli import main  # noqa: E402
from mobilenetv2.tools.compare import CompareError, MissingExtra, compare  # noqa: E402
from mobilenetv2.tools.compare.metrics import rel_l2  # noqa: E402
from mobilenetv2.tools.compare.report import format_table  # noqa: E402
from mobilenetv2.tools.compare.openvino_reader import read_model, read_openvino  # noqa: E402
from onnx_graphs import edit_export, lively_weights, torch_style  # noqa: E402
from openvino_graphs import int8_ir  # noqa: E402

# the code under test runs the same with or without the C extension: .ci/no-ext leaves it out
pytestmark = pytest.mark.engine_independent


def ir(source, xml, compress=False):
    """``source`` (.onnx or .tflite) converted by OpenVINO and saved as the IR ``xml`` (+ .bin)."""
    ov.save_model(ov.convert_model(str(source)), str(xml), compress_to_fp16=compress)
    return str(xml)


@pytest.fixture(scope="module")
def clean_ir(clean, tmp_path_factory):
    return ir(clean, tmp_path_factory.mktemp("ir") / "clean.xml")


def _conv_weights(path):
    return [n.attrs["weight"] for n in read_openvino(path).nodes if n.op == "conv"]


# -- healthy IR agrees --------------------------------------------------------------------------
def test_healthy_ir_agrees_at_every_layer(model, clean_ir, weights_file, tmp_path, capsys):
    """Run in float32 (this machine's CPU plugin computes in bfloat16 unless told, ~4e-2 off)."""
    out = tmp_path / "r.json"
    assert main(["compare", clean_ir, "--weights", weights_file, "--random", "2", "--seed", "5",
                 "--json", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert "AGREES" in text and "runs on OpenVINO" in text
    assert report["other"]["kind"] == "openvino" and report["other"]["input_layout"] == "NHWC"
    assert "inference precision f32" in report["other"]["runtime"] and "1 stream" in report["other"]["runtime"]
    assert report["agrees"] and report["unmapped"] == []
    assert len(report["layers"]) == n_keras_outputs(model)  # every conv+BN, ReLU6, Add, pooling, head
    # the IR compiled as it is (its own outputs only) gives the same logits, to its floor
    dep = report["deployed"]
    assert (dep["layer"], dep["agrees"]) == ("predictions", True) and "deployed: predictions" in text
    assert dep["instrumented"]["agrees"] and dep["instrumented"]["rel_l2"] <= dep["floor_rel_l2"]
    for row in report["layers"]:
        assert row["agrees"] and row["cosine"] > 0.999999
    # our export names each op of the backbone as its Keras layer and OpenVINO keeps the names:
    # the topology mapped every tensor to the layer it is
    backbone = report["layers"][:-2]  # (the pooling and the head are named otherwise)
    assert [r["tensor"] for r in backbone] == [r["layer"] for r in backbone]


def test_a_static_batch_runs_the_images_that_many_at_a_time(model, clean, tmp_path):
    """An IR whose batch size is fixed (1, as IRs reshaped for deployment often are) takes
    compare's 3 images one at a time, in order: every layer agrees, and the deployed logits are
    the reference model's for each image."""
    static = ov.convert_model(str(clean))
    static.reshape([1, *SHAPE])
    ov.save_model(static, str(tmp_path / "b1.xml"), compress_to_fp16=False)
    x = np.random.default_rng(6).uniform(-1, 1, (3, *SHAPE)).astype(np.float32)
    report = compare(str(tmp_path / "b1.xml"), weights=model, batch=x)
    assert report["agrees"] and report["unmapped"] == [] and report["deployed"]["agrees"]
    assert len(report["layers"]) == n_keras_outputs(model)


@pytest.mark.parametrize("compress", [False, True])
def test_weights_read_from_the_ir(clean, clean_ir, tmp_path, compress):
    """Weights read from the IR's Constants (float16 ones with compress_to_fp16, the default)
    agree, and the report says what they cannot show, as for the ONNX file they came from."""
    path = ir(clean, tmp_path / "m.xml", compress) if compress else clean_ir
    report = compare(path, random=1, seed=2)
    assert report["agrees"], [r for r in report["layers"] if not r["agrees"]][:1]
    assert report["weights"]["source"].startswith("read from OTHER (openvino): MobileNetV2 alpha=0.35, "
                                                  "52 convolutions, 52 with the batch norm folded in")
    assert report["weights"]["cannot_detect"] == compare(clean, random=1)["weights"]["cannot_detect"]
    assert "float16" in report["weights"]["cannot_detect"]
    assert ("weights stored as float16" in report["other"]["runtime"]) == compress
    # the values read are the IR's: on the float16 grid exactly when compressed
    on_f16 = [np.array_equal(w.astype(np.float16).astype(np.float64), w) for w in _conv_weights(path)]
    assert all(on_f16) if compress else not any(on_f16)


def test_float16_ir_against_exact_weights_is_precision(model, clean, tmp_path):
    """ov.save_model's default float16 compression, against the float32 weights it was made
    from: precision (batch norms folded, then rounded), as ONNX's float16 initializers are."""
    report = compare(ir(clean, tmp_path / "f16.xml", compress=True), weights=model, random=1, seed=7)
    d = report["diagnosis"]
    assert (report["first_divergent_layer"], d["cause"]) == EXPORT_DEFECTS["float16_weights"][1:]
    assert d["evidence"][0]["detail"] == {"weights": "float16", "folded": True} and d["after_fix"]["agrees"]


# -- each defect: the layer and cause the ONNX path names (test_compare's tables) -----------------
DEFECTS = {
    # torch-style: TF's "same" pads as explicit Pad ops, the stem's conv padded 1 all round
    "stem_symmetric_pads": (lambda m, c, p, kw: torch_style(m, p, **kw), TORCH_STYLE_DEFECTS),
    "eps_one_layer": (lambda m, c, p, kw: torch_style(m, p, **kw), TORCH_STYLE_DEFECTS),
    # our export, a depthwise conv's pads_begin / pads_end made symmetric, a Clamp made a ReLU
    "depthwise_symmetric_pads": (lambda m, c, p, kw: edit_export(c, p, **kw), EXPORT_DEFECTS),
    "relu_for_relu6": (lambda m, c, p, kw: edit_export(c, p, **kw), EXPORT_DEFECTS),
    # block_2's residual Add made an Identity (test_compare_regressions' case)
    "missing_residual": (lambda m, c, p, kw: _edit(c, p, _no_block_2_add),
                         {"missing_residual": (None, "block_3_expand_BN", "missing_layer")}),
}


@pytest.mark.parametrize("case", sorted(DEFECTS))
def test_defect_found_as_in_onnx(model, clean, tmp_path, case):
    build, table = DEFECTS[case]
    kw, layer, cause = table[case][:3]
    path = ir(build(model, clean, tmp_path / f"{case}.onnx", kw), tmp_path / f"{case}.xml")
    report = compare(path, weights=model, random=1, seed=7)
    d = report["diagnosis"]
    assert (report["first_divergent_layer"], d["cause"], d["also"]) == (layer, cause, []), d["evidence"]
    assert d["evidence"][0]["after"]["ratio"] <= report["factor"] < d["evidence"][0]["before"]["ratio"]
    assert d["after_fix"]["agrees"]
    if case == "missing_residual":
        assert [u["layer"] for u in report["unmapped"]] == ["block_2_add"]


# -- int8 IR -------------------------------------------------------------------------------------
def test_int8_ir_is_precision_at_int8_level(model, clean, tmp_path):
    """An int8 IR (FakeQuantize on the activations; weights i8 and biases i32, each a Convert
    then a Multiply by its scales), as OpenVINO converts onnxruntime's QDQ graph and as
    nncf.quantize writes it: every layer mapped through its FakeQuantize and precision at int8
    confirmed with the IR's own grids, as for the QDQ graph.  It was refused without --weights
    ('weights computed at run time'), and with them 'unexplained' with ten residual Adds called
    missing.  The input is 8-bit pixels: each sits on a rounding tie of the input's grid, which
    the reference breaks as the CPU plugin's FakeQuantize does."""
    quant = pytest.importorskip("test_compare_quant", reason="int8 graphs are made by onnxruntime.quantization")
    path = ir(quant.quantize(clean, tmp_path / "int8.onnx"), tmp_path / "int8.xml")
    x = quant.pixels(2, 7)
    reports = [compare(path, weights=weights, batch=x) for weights in (model, None)]
    assert "the run above leaves this floor too" in format_table(reports[0])  # the deployed line: not judged
    for report in reports:
        d = report["diagnosis"]
        assert report["other"]["kind"] == "openvino (int8)" and report["unmapped"] == []
        assert len(report["layers"]) == 64  # every layer, through its FakeQuantize
        assert (report["first_divergent_layer"], d["cause"], d["also"]) == ("Conv1_relu", "precision", [])
        ev = d["evidence"][0]
        assert ev["detail"]["weights"] == "int8" and ev["detail"]["grid"] == "OTHER's own, per channel"
        assert ev["detail"]["input"] and "biases onto their int32 grids" in ev["applied"]
        assert ev["after"]["ratio"] <= 1 and d["after_fix"]["agrees"], d["after_fix"]
        assert "deployed_kernels" not in [f["cause"] for f in d["further"]]  # the run compared diverges too
    # the deployed row: the IR as OpenVINO runs it without compare's outputs (its u8 convolutions),
    # checked against that run made here, and a measured step away from the run compared layer by layer
    dep = reports[0]["deployed"]  # (against the float weights given: the logits model.predict gives)
    plain = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]
    assert dep["rel_l2"] == pytest.approx(rel_l2(plain, model.predict(x)), rel=1e-3)
    assert not dep["agrees"] and not dep["instrumented"]["bit_equal"]
    assert 0 < dep["instrumented"]["rel_l2"] < dep["rel_l2"], dep


# -- an int8 IR against the float weights it was quantized from: the two weight sets compared -----
CALIBRATION = np.random.default_rng(0).uniform(-1, 1, (4,) + SHAPE).astype(np.float32)


def _weight_layers(d):
    return sorted(x["layer"] for x in d["evidence"][0]["detail"]["layers"])


def _folded_max_bias(model, name):
    """max |bias| of a layer once its batch norm is folded in (beta - mean * gamma / sqrt(var + eps):
    the convs have no bias of their own), or of the dense layer."""
    if name == "predictions":
        return float(np.max(np.abs(model.get_layer(name).weights[1])))
    bn = model.get_layer("bn_Conv1" if name == "Conv1" else name + "_BN")
    gamma, beta, mean, var = (np.asarray(w, np.float64) for w in bn.weights)
    return float(np.max(np.abs(beta - mean * gamma / np.sqrt(var + bn.epsilon))))


@pytest.mark.parametrize("shift", [{"block_3_project": 0.05, "block_8_expand": -0.03},
                                   {"Conv1": 0.02, "block_16_project": -0.01, "predictions": 0.04}])
def test_int8_ir_with_moved_biases_is_bias_correction(model, shift):
    """NNCF's quantize corrects biases by default: its IR against the float weights stayed
    'unexplained' (the IR agreed with its own weights).  Here an NNCF-like int8 IR (built op by op)
    has the biases of some layers moved by known amounts: the cause is bias_correction, naming
    exactly those layers with their shift, in units of each layer's bias scale (input scale x
    kernel scale) too; with them applied every layer agrees.  Its own weights: precision alone.
    Moved at the first conv, the cause is found there; else after precision, which it leads."""
    ir_model, scales = int8_ir(model, CALIBRATION, bias_shift=shift)
    report = compare(ir_model, weights=model, random=1, seed=3)
    d = report["diagnosis"]
    assert (d["cause"], d["after_fix"]["agrees"]) == ("bias_correction", True), format_table(report)
    assert d["also"] == ([] if "Conv1" in shift else ["precision"])
    assert _weight_layers(d) == sorted(shift)
    for x in d["evidence"][0]["detail"]["layers"]:
        delta = abs(shift[x["layer"]])
        assert x["kernel_values_off"] == 0 and x["max_bias_shift"] == pytest.approx(delta, abs=1e-6)
        assert x["max_bias_shift_in_bias_scales"] == pytest.approx(delta / scales[x["layer"]].min(), rel=1e-4)
        assert x["max_bias_shift_of_max_bias"] == pytest.approx(delta / _folded_max_bias(model, x["layer"]), rel=1e-4)
    text = format_table(report)
    assert "bias correction, as NNCF's quantize applies by default; compare without --weights" in text
    assert f"    {sorted(shift)[0]}: " in text and "x its bias scale" in text
    own = compare(ir_model, random=1, seed=3)["diagnosis"]
    assert (own["cause"], own["also"], own["after_fix"]["agrees"]) == ("precision", [], True)
    unshifted = compare(int8_ir(model, CALIBRATION)[0], weights=model, random=1, seed=3)["diagnosis"]
    assert (unshifted["cause"], unshifted["after_fix"]["agrees"]) == ("precision", True)


def test_int8_ir_with_another_kernel_is_different_weights(model):
    """One conv's kernel not the float weights' (another draw): different_weights, that layer alone."""
    other = lively_weights(MobileNetV2(SHAPE, alpha=0.35, weights=None, classifier_activation=None), seed=11)
    kernel = np.asarray(other.get_layer("block_5_expand").weights[0], np.float64)
    kernel = kernel * np.abs(np.asarray(model.get_layer("block_5_expand").weights[0])).max() / np.abs(kernel).max()
    report = compare(int8_ir(model, CALIBRATION, kernels={"block_5_expand": kernel})[0], weights=model, random=1)
    d = report["diagnosis"]
    assert (d["cause"], d["after_fix"]["agrees"]) == ("different_weights", True), format_table(report)
    assert _weight_layers(d) == ["block_5_expand"]
    assert d["evidence"][0]["detail"]["layers"][0]["kernel_values_off"] > 0


def test_float_ir_against_other_weights_is_different_weights(clean_ir):
    """A float IR compared with weights it was not made from (another draw): every conv and the
    dense layer differ, named as different_weights; with OTHER's own weights every layer agrees."""
    other = lively_weights(MobileNetV2(SHAPE, alpha=0.35, weights=None, classifier_activation=None), seed=11)
    report = compare(clean_ir, weights=other, random=1)
    d = report["diagnosis"]
    assert (report["first_divergent_layer"], d["cause"], d["after_fix"]["agrees"]) == \
        ("bn_Conv1", "different_weights", True)
    assert len(d["evidence"][0]["detail"]["layers"]) == 53  # 52 convolutions and the dense layer


def test_deployed_output_that_leaves_its_floor_diverges(clean_ir, weights_file, tmp_path, capsys, monkeypatch):
    """The IR compiled as it is computes otherwise than the copy compare reads every op's output
    of (faked: its logits 1 % larger): the layers all agree, the deployed output does not, and
    the verdict is DIVERGES with the cause deployed_kernels."""
    from mobilenetv2.tools.compare import CAUSES, openvino_reader
    runner = openvino_reader.deployed_runner

    def off_by_one_percent(*args):
        run = runner(*args)
        return lambda x: {k: v * np.float32(1.01) for k, v in run(x).items()}
    monkeypatch.setattr(openvino_reader, "deployed_runner", off_by_one_percent)
    out = tmp_path / "r.json"
    assert main(["compare", clean_ir, "--weights", weights_file, "--random", "1", "--json", str(out),
                 "--quiet"]) == 1
    text = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert all(r["agrees"] for r in report["layers"]) and "deployed_kernels" in CAUSES
    assert (report["agrees"], report["first_divergent_layer"]) == (False, "predictions")
    d, dep = report["diagnosis"], report["deployed"]
    assert (d["cause"], d["layer"], d["further"]) == ("deployed_kernels", "predictions", [])
    assert dep["instrumented"]["rel_l2"] == pytest.approx(0.01, rel=1e-4)  # 1.01 x the run compared
    assert dep["instrumented"]["agrees"] and dep["ratio"] > report["factor"] and not dep["agrees"]
    assert "DIVERGES at predictions as deployed" in text and "cause: deployed_kernels" in text


def test_deployed_output_of_a_backbone_is_out_relu_through_its_transpose(tmp_path):
    """A backbone's output is out_relu through a Transpose to NHWC (our export's): the deployed
    row is that layer, read as it is laid out (it was left out: no compared tensor is an output)."""
    from mobilenetv2 import export_onnx
    backbone = MobileNetV2(SHAPE, alpha=0.35, include_top=False, weights=None)
    path = ir(export_onnx(backbone, tmp_path / "bb.onnx"), tmp_path / "bb.xml")
    report = compare(path, random=1)
    dep = report["deployed"]
    assert report["agrees"] and report["layers"][-1]["layer"] == "out_relu"
    assert (dep["layer"], dep["layout"], dep["agrees"]) == ("out_relu", "NHWC", True)
    assert dep["tensor"] != report["layers"][-1]["tensor"]  # the Transpose after it


# -- the LiteRT peer, converted by OpenVINO ------------------------------------------------------
def test_tflite_peer_converted_to_ir(tmp_path):
    """OpenVINO reads .tflite: the ../shared peer as an IR agrees with the synthetic weights it
    was made with (its softmax head compared as probabilities) and with its own weights."""
    path = ir(require_shared("peers", "mobilenet_v2_0.35_96_synthetic.tflite"), tmp_path / "peer.xml")
    weights = set_synthetic_weights(MobileNetV2(SHAPE, alpha=0.35, weights=None))
    for w in (weights, None):
        report = compare(path, weights=w, random=1, seed=1)
        assert report["agrees"] and report["head"] == "softmax" and report["unmapped"] == []
        assert len(report["layers"]) == n_keras_outputs(weights)


# -- an openvino.Model object ------------------------------------------------------------------
def test_openvino_model_object(model, clean_ir):
    other = ov.Core().read_model(clean_ir)
    n_outputs = len(other.outputs)
    report = compare(other, weights=model, random=1)
    assert report["agrees"] and len(report["layers"]) == n_keras_outputs(model)
    assert report["other"]["source"].startswith("openvino.Model")
    assert len(other.outputs) == n_outputs  # the user's model is left as it was (a copy is run)


# -- hostile files: CompareError naming the file, exit 2 with one line ------------------------------
def _hostile(clean, clean_ir, folder):
    """{name: (path, what the error says)} of broken IRs."""
    xml, bin_ = open(clean_ir, "rb").read(), open(clean_ir[:-4] + ".bin", "rb").read()
    cases = {}

    def write(name, data, weights=None, says=None):
        (folder / f"{name}.xml").write_bytes(data)
        if weights is not None:
            (folder / f"{name}.bin").write_bytes(weights)
        cases[name] = (str(folder / f"{name}.xml"), says or f"{name}.xml")

    write("no_bin", xml, says="no_bin.bin")
    write("short_bin", xml, bin_[:len(bin_) // 2], says="short_bin.bin")
    write("empty_bin", xml, b"", says="empty_bin.bin")
    write("html", b"<html><body>not a model</body></html>", b"", says="not an OpenVINO IR")
    # an ONNX file named .xml: OpenVINO would read it (as ONNX), not what the name says
    write("onnx_renamed", open(clean, "rb").read(), b"", says="not an OpenVINO IR")
    write("truncated_xml", xml[:len(xml) // 2], bin_, says="truncated_xml.xml")
    os.mkdir(folder / "dir.xml")
    cases["dir"] = (str(folder / "dir.xml"), "dir.xml")
    shutil.copy(clean_ir, folder / "fifo_bin.xml")
    _fifo(folder, "fifo_bin.bin")
    cases["fifo_bin"] = (str(folder / "fifo_bin.xml"), "FIFO")
    cases["fifo_xml"] = (str(_fifo(folder, "fifo.xml")), "FIFO")
    # a .bin that is a link to a file outside the IR's folder (the file given is the .xml)
    elsewhere = folder.parent / f"{folder.name}_elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret").write_bytes(bin_)
    write("linked_bin", xml)
    os.symlink(elsewhere / "secret", folder / "linked_bin.bin")
    cases["linked_bin"] = (str(folder / "linked_bin.xml"), "outside")
    return cases


def test_hostile_ir_files_exit_2_with_one_line(clean, clean_ir, tmp_path, capsys):
    for name, (path, says) in _hostile(clean, clean_ir, tmp_path).items():
        box = _in_thread(main, ["compare", path, "--quiet"])
        assert box.get("value") == 2, (name, box)
        err = capsys.readouterr().err.strip()
        assert err.startswith("mobilenetv2 compare: error:") and "\n" not in err and says in err, (name, err)
        box = _in_thread(compare, path)
        assert isinstance(box.get("error"), CompareError) and says in str(box["error"]), (name, box)


def test_missing_extra_is_named(monkeypatch, clean_ir):
    import sys
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    with pytest.raises(MissingExtra, match=r'pip install "mobilenetv2\[openvino\]"'):
        compare(clean_ir)


@pytest.mark.parametrize("opset", ["opset1", "opset5"])
def test_batch_norm_inference_read_in_either_input_order(opset):
    """opset1's BatchNormInference takes (gamma, beta, data, mean, variance), opset5's (data, gamma,
    ...); statistics the reader cannot compute are None (a computed one made the reader unpack three
    values into four names: a bare ValueError); arithmetic on Constants is computed."""
    import importlib
    ops = importlib.import_module(f"openvino.{opset}")
    x = ops.parameter([1, 3, 32, 32], np.float32, name="x")

    def c(v):
        return ops.constant(np.full(3, v, np.float32))
    unknown = ops.convert(ops.constant(np.full(3, 2.0, np.float32), dtype=ov.Type.u4), ov.Type.f32)
    for gamma, want in ((c(2.0), 2.0), (ops.multiply(c(1.0), c(2.0)), 2.0), (unknown, None)):
        bn = ops.batch_norm_inference(x, gamma, c(0.5), c(0.25), c(4.0), 1e-3)
        (node,) = [n for n in read_model(ov.Model([bn], [x], "bn")).nodes if n.op == "bn"]
        assert node.inputs == ["x"] and node.attrs["eps"] == pytest.approx(1e-3)
        stats = [node.attrs[k] for k in ("gamma", "beta", "mean", "var")]
        assert [None if v is None else float(v[0]) for v in stats] == [want, 0.5, 0.25, 4.0]


def test_packed_constants_are_not_read_as_weights():
    """OpenVINO hands a u4 / i4 / nf4 Constant to NumPy as its packed bytes (half as many values,
    another shape) and an f8 one as raw bytes: such weights (NNCF's compression) were read as those
    bytes; they are unknown to the reader, as computed weights are."""
    from openvino import opset13 as ops
    x = ops.parameter([1, 3, 32, 32], np.float32, name="x")
    rng = np.random.default_rng(0)
    for t in (ov.Type.u4, ov.Type.i4, ov.Type.nf4, ov.Type.f8e4m3, ov.Type.f16):
        w = ops.convert(ops.constant(rng.integers(0, 4, (16, 3, 3, 3)).astype(np.float32), dtype=t), ov.Type.f32)
        conv = ops.convolution(x, w, [2, 2], [0, 0], [1, 1], [1, 1])
        (node,) = [n for n in read_model(ov.Model([conv], [x], "m")).nodes if n.op == "conv"]
        if t == ov.Type.f16:  # a type NumPy holds: the values themselves
            w = node.attrs["weight"]
            assert w.shape == (16, 3, 3, 3) and set(np.unique(w)) <= {0, 1, 2, 3}
        else:
            assert node.attrs["weight"] is None, t


def test_bfloat16_and_transposed_constant_weights_are_read_as_their_values():
    """A bfloat16 Constant (get_data gives its bits in a float16 array: widened to float32 by a
    16-bit shift) and a weight stored HWIO behind a constant Transpose to OIHW are the values the
    convolution uses: here chosen exactly representable in bfloat16 and all different."""
    from openvino import opset13 as ops
    x = ops.parameter([1, 3, 32, 32], np.float32, name="x")
    w = np.arange(16 * 3 * 3 * 3, dtype=np.float32).reshape(16, 3, 3, 3) / 64 - 3.140625
    w.flat[:3] = [3.140625, -0.0078125, 448.0]
    bf16 = ops.convert(ops.constant(w, dtype=ov.Type.bf16), ov.Type.f32)
    hwio = ops.transpose(ops.constant(np.ascontiguousarray(w.transpose(2, 3, 1, 0))),
                         ops.constant(np.array([3, 2, 0, 1], np.int64)))
    for weight in (bf16, hwio):
        conv = ops.convolution(x, weight, [1, 1], [0, 0], [0, 0], [1, 1])
        (node,) = [n for n in read_model(ov.Model([conv], [x], "m")).nodes if n.op == "conv"]
        assert node.attrs["weight"].shape == w.shape
        np.testing.assert_array_equal(node.attrs["weight"], w)


def test_ops_of_one_name_are_named_apart_in_linear_time():
    """Each op's tensor is named by its friendly name, '#2', '#3', ... where names repeat: the reader
    scanned every name given so far for each op (a set of them built per op, then the numbers from
    #2 up), so a stranger's IR of 40000 ops read for minutes before OpenVINO compiled it.  Counted
    here in look-ups, not timed: 3000 ops of one name take at most 3 each."""
    from openvino import opset13 as ops
    from mobilenetv2.tools.compare import openvino_reader

    class Counted(dict):
        lookups = 0

        def __contains__(self, key):
            Counted.lookups += 1
            return super().__contains__(key)

    taken = Counted()
    assert [openvino_reader._unique(n, taken) for n in ["r", "r#3", "r", "r", "r", "s"]] == \
        ["r", "r#3", "r#2", "r#4", "r#5", "s"]
    taken, Counted.lookups = Counted(), 0
    assert len({openvino_reader._unique("r", taken) for _ in range(3000)}) == 3000
    assert Counted.lookups <= 3 * 3000
    x = ops.parameter([1, 3, 32, 32], np.float32, name="x")
    y = x
    for _ in range(3):
        y = ops.relu(y, name="r")
    assert [n.output for n in read_model(ov.Model([y], [x], "m")).nodes] == ["r", "r#2", "r#3"]


def test_channel_swap_folded_into_the_stem_is_named_as_unseen(model, clean_ir):
    """A PrePostProcessor's BGR -> RGB conversion is folded by OpenVINO into the first conv's
    weights: against weights read from OTHER it AGREES, and the report said nothing of it;
    against the float weights it is the input layout."""
    from openvino.preprocess import ColorFormat, PrePostProcessor
    ppp = PrePostProcessor(ov.Core().read_model(clean_ir))
    ppp.input().tensor().set_color_format(ColorFormat.BGR)
    ppp.input().preprocess().convert_color(ColorFormat.RGB)
    bgr = ppp.build()
    report = compare(bgr, random=1)
    assert report["agrees"] and "channel order (BGR) folded into the first conv" in report["weights"]["cannot_detect"]
    report = compare(bgr, weights=model, random=1)
    assert (report["first_divergent_layer"], report["diagnosis"]["cause"]) == ("bn_Conv1", "layout")


@pytest.mark.parametrize("etype", ["u8", "f16"])
def test_input_not_float32_from_pre_post_processor_is_refused(clean_ir, etype):
    """A deployment's PrePostProcessor often makes the input u8 (then converts and scales it), or
    f16: OpenVINO cast the float32 images compare fed to u8 (or rounded them to f16) without a
    word, and the report said the stem diverged, 'unexplained'."""
    from openvino.preprocess import PrePostProcessor
    ppp = PrePostProcessor(ov.Core().read_model(clean_ir))
    ppp.input().tensor().set_element_type(getattr(ov.Type, etype))
    ppp.input().preprocess().convert_element_type(ov.Type.f32).mean(127.5).scale(127.5)
    with pytest.raises(CompareError, match=rf"input 'input' is {etype}, not float32 .*set_element_type"):
        compare(ppp.build(), random=1)


@pytest.mark.parametrize("mean,scale", [(127.5, 127.5), ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375])])
def test_pre_post_processor_mean_scale_on_an_int8_ir_is_preprocessing(model, mean, scale):
    """A PrePostProcessor's mean/scale on an int8 IR (a Subtract and a Multiply before the input's
    FakeQuantize) was 'unexplained': the input rounding was not found behind them, and the map
    fitted on the stem's output (rounded to int8) was off.  The map is now read from the IR
    itself and confirmed with the int8 rounding behind it, as a float IR's is (preprocessing)."""
    from openvino.preprocess import PrePostProcessor
    ppp = PrePostProcessor(int8_ir(model, CALIBRATION)[0])
    ppp.input().model().set_layout(ov.Layout("NHWC"))
    ppp.input().preprocess().mean(mean).scale(scale)
    bgr = ppp.build()
    pixels = np.random.default_rng(7).integers(0, 256, (2,) + SHAPE).astype(np.float32)
    for weights in (model, None):
        report = compare(bgr, weights=weights, batch=pixels)
        d = report["diagnosis"]
        assert (report["first_divergent_layer"], d["cause"], d["also"], d["after_fix"]["agrees"]) == \
            ("bn_Conv1", "preprocessing", ["precision"], True), format_table(report)
        detail = d["evidence"][0]["detail"]
        assert detail["scale"] == pytest.approx(1 / np.broadcast_to(scale, 3), rel=1e-6)
        assert detail["offset"] == pytest.approx(-np.broadcast_to(mean, 3) / np.broadcast_to(scale, 3), rel=1e-6)
        assert detail["weights"] == "int8" and detail["input"]  # the input rounded behind the map


@pytest.mark.parametrize("size", [(128, 128), None])
def test_pre_post_processor_resize_is_named_and_the_reference_starts_after_it(model, clean_ir, size):
    """A PrePostProcessor's resize (an Interpolate before the first conv) made the reference run
    at OTHER's input size: every layer's shape differed, 'unexplained'.  The reference now starts
    from OTHER's resized tensor, and the report says so (the resize itself is not checked): the
    float IR agrees, an int8 IR against the float weights is precision, as without the resize."""
    from openvino.preprocess import PrePostProcessor, ResizeAlgorithm

    def resized(m):
        ppp = PrePostProcessor(m)
        if size:
            ppp.input().tensor().set_spatial_static_shape(*size)
        else:
            ppp.input().tensor().set_spatial_dynamic_shape()
        ppp.input().model().set_layout(ov.Layout("NHWC"))
        ppp.input().preprocess().resize(ResizeAlgorithm.RESIZE_LINEAR)
        return ppp.build()
    report = compare(resized(ov.Core().read_model(clean_ir)), random=1)
    assert report["agrees"], format_table(report)
    assert report["input"]["shape"] == [1, *(size or (224, 224)), 3]
    assert "resizes it to 96x96 before its first conv" in report["input"]["source"]
    assert "OTHER's own resize of its input" in report["weights"]["cannot_detect"]
    if size:
        report = compare(resized(int8_ir(model, CALIBRATION)[0]), weights=model, random=1, seed=3)
        d = report["diagnosis"]
        assert (d["cause"], d["also"], d["after_fix"]["agrees"]) == ("precision", [], True), format_table(report)


@pytest.mark.parametrize("mean,scale", [(127.5, 127.5), ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375])])
def test_pre_post_processor_mean_scale_before_its_resize_is_checked(model, clean_ir, mean, scale):
    """A PrePostProcessor's mean/scale applied before its resize: the reference started from
    OTHER's resized tensor, the mean/scale already in it, and the IR (taking [0, 255] pixels)
    agreed at every layer on images in [-1, 1].  The map, read from the IR ahead of the
    Interpolate, is undone on the resized tensor (a per-channel map and a resize commute), so the
    reference is given the resized image and the map is preprocessing, as without a resize."""
    from openvino.preprocess import PrePostProcessor, ResizeAlgorithm
    ppp = PrePostProcessor(ov.Core().read_model(clean_ir))
    ppp.input().tensor().set_spatial_static_shape(128, 128)
    ppp.input().model().set_layout(ov.Layout("NHWC"))
    ppp.input().preprocess().mean(mean).scale(scale).resize(ResizeAlgorithm.RESIZE_LINEAR)
    scaled = ppp.build()
    for weights in (model, None):
        report = compare(scaled, weights=weights, random=1)
        d = report["diagnosis"]
        assert (report["first_divergent_layer"], d["cause"], d["after_fix"]["agrees"]) == \
            ("bn_Conv1", "preprocessing", True), format_table(report)
        detail = d["evidence"][0]["detail"]
        assert detail["scale"] == pytest.approx(1 / np.broadcast_to(scale, 3), rel=1e-6)
        assert detail["offset"] == pytest.approx(-np.broadcast_to(mean, 3) / np.broadcast_to(scale, 3), rel=1e-6)
        assert "its mean/scale ahead of the resize undone" in report["input"]["source"]

