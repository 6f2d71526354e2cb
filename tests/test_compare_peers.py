"""``compare`` against real peers: the LiteRT .tflite files of ../shared/peers, the Hugging Face
hidden states of ../shared/reference/hf (through the .npz path, transformers' tf_padding=False
dumps being a real padding mismatch), and the real ImageNet backbone of ../shared/weights."""
import json

import numpy as np
import pytest

from conftest import require_shared, set_synthetic_weights, tflite_edit, tflite_float16
from mobilenetv2 import MobileNetV2, export_onnx
from mobilenetv2.cli import main
from mobilenetv2.tools.compare import compare

# the code under test runs the same with or without the C extension: .ci/no-ext leaves it out
pytestmark = pytest.mark.engine_independent


# -- LiteRT ------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["0.35_96", "0.5_160"])
def test_tflite_peer_agrees(variant, tmp_path, capsys):
    pytest.importorskip("ai_edge_litert", reason="LiteRT is an optional extra (pip install 'mobilenetv2[litert]')")
    path = require_shared("peers", f"mobilenet_v2_{variant}_synthetic.tflite")
    out = tmp_path / "r.json"
    assert main(["compare", str(path), "--random", "1", "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert report["other"]["kind"] == "tflite" and report["agrees"]
    assert "read from OTHER" in report["weights"]["source"]
    assert {"Conv1_relu", "block_16_project_BN", "predictions"} <= {r["layer"] for r in report["layers"]}
    # with the reference weights named instead (the synthetic weights the file was made with)
    alpha, rows = variant.split("_")
    m = set_synthetic_weights(MobileNetV2((int(rows), int(rows), 3), alpha=float(alpha), weights=None))
    weights = tmp_path / "w.h5"
    m.save_weights(weights)
    assert main(["compare", str(path), "--weights", str(weights), "--random", "1", "--json", str(out),
                 "--quiet"]) == 0
    assert json.loads(out.read_text())["weights"]["source"].startswith("Keras weights file")


@pytest.mark.parametrize("which, stored", [
    (lambda k: True, "; weights stored as float16"),
    (lambda k: k % 2 == 1, "the weights of 26 of its 53 convolution and dense layers stored as float16")])
def test_a_float16_tflite_peer_is_read_through_its_dequantize_ops(which, stored, tmp_path):
    """TensorFlow's float16 quantization (the 0.35_96 peer's weights and biases, every layer's or
    every other one's, as FLOAT16 constants each DEQUANTIZEd to the float32 tensor the op reads):
    those tensors hold nothing before LiteRT runs, so such a file was refused without --weights.
    Its weights are the float16 constants' values: with them it agrees (float16 weights, float32
    arithmetic); against the float weights it was made from, the rounding is found at its first
    float16 layer, and once applied every layer agrees."""
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT is an optional extra")
    src = require_shared("peers", "mobilenet_v2_0.35_96_synthetic.tflite")
    path = tmp_path / "fp16.tflite"
    path.write_bytes(tflite_edit(src.read_bytes(), tflite_float16(which)))
    x = np.random.default_rng(3).uniform(-1, 1, (1, 96, 96, 3)).astype(np.float32)
    probs = []
    for f in (src, path):  # LiteRT runs the file, to within float16 weights of the float one
        it = litert.Interpreter(model_path=str(f))
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        probs.append(it.get_tensor(it.get_output_details()[0]["index"]))
    assert 0 < np.abs(probs[1] - probs[0]).max() < 1e-2, np.abs(probs[1] - probs[0]).max()

    report = compare(str(path), random=1)
    assert report["agrees"] and report["other"]["kind"] == "tflite" and len(report["layers"]) == 64, report
    assert report["other"]["runtime"].endswith(f"{stored} in the model, dequantized to float32"), report["other"]
    m = set_synthetic_weights(MobileNetV2((96, 96, 3), alpha=0.35, weights=None))
    weights = tmp_path / "w.h5"
    m.save_weights(weights)
    report = compare(str(path), weights=str(weights), random=1)
    d = report["diagnosis"]
    first = "Conv1_relu" if which(0) else "expanded_conv_depthwise_relu"
    assert report["first_divergent_layer"] == first and d["cause"] == "precision", d
    assert d["evidence"][0]["detail"]["weights"] == "float16" and d["evidence"][0]["after"]["ratio"] < 2, d
    assert d["after_fix"]["agrees"], d


# -- Hugging Face hidden states through the .npz path -------------------------------------------
HF_BLOCK_OUTPUT = ["block_1_project_BN", "block_2_add", "block_3_project_BN", "block_4_add", "block_5_add",
                   "block_6_project_BN", "block_7_add", "block_8_add", "block_9_add", "block_10_project_BN",
                   "block_11_add", "block_12_add", "block_13_project_BN", "block_14_add", "block_15_add",
                   "block_16_project_BN"]


def _hf_dump(tmp_path, case, x_nchw, suffix=""):
    """An .npz of one case's hidden states (+ its input) and the mapping file for it."""
    ref = np.load(require_shared("reference", "hf", "mobilenet_v2_0.35_96.npz"))
    arrays = {"pixel_values": x_nchw}
    names = {}
    for i, layer in enumerate(HF_BLOCK_OUTPUT):
        arrays[f"hidden_states/{i:02d}"] = ref[f"{case}/hidden_states/{i:02d}{suffix}"]
        names[f"hidden_states/{i:02d}"] = layer
    arrays["last_hidden_state"] = ref[f"{case}/last_hidden_state{suffix}"]
    names["last_hidden_state"] = "out_relu"
    np.savez(tmp_path / "dump.npz", **arrays)
    (tmp_path / "map.json").write_text(json.dumps({"input": "pixel_values", "layout": "NCHW", "tensors": names}))
    return str(tmp_path / "dump.npz"), str(tmp_path / "map.json")


def _random_input(h, w):
    x = np.random.default_rng(h * 1000 + w).uniform(-1, 1, (1, h, w, 3)).astype(np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@pytest.mark.parametrize("suffix", ["", "_f64"])
def test_hf_hidden_states_agree(tmp_path, suffix):
    folder = require_shared("hf", "mobilenet_v2_0.35_96")
    ref = np.load(require_shared("reference", "hf", "mobilenet_v2_0.35_96.npz"))
    dump, mapping = _hf_dump(tmp_path, "panda", ref["panda/pixel_values"], suffix)
    out = tmp_path / "r.json"
    assert main(["compare", dump, "--weights", str(folder), "--mapping", mapping, "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert len(report["layers"]) == 17 and report["agrees"]


@pytest.mark.parametrize("case,first", [("random_33x40", "block_1_project_BN"),
                                        ("random_81x49", "block_13_project_BN")])
def test_hf_tf_padding_false_is_a_padding_mismatch(tmp_path, case, first):
    folder = require_shared("hf", "mobilenet_v2_0.35_96")
    h, w = (int(v) for v in case.split("_")[1].split("x"))
    x = _random_input(h, w)
    ref = np.load(require_shared("reference", "hf", "mobilenet_v2_0.35_96.npz"))
    check = ref[f"{case}/input_check"]
    assert np.allclose([x.astype(np.float64).sum(), (x.astype(np.float64) ** 2).sum()], check[:2])
    dump, mapping = _hf_dump(tmp_path, "tf_padding_false/" + case, x)
    report = compare(dump, weights=str(folder), mapping=mapping)
    assert report["first_divergent_layer"] == first  # the first layer the dump shows that differs
    assert report["diagnosis"]["cause"] == "padding"
    # ... and the same case with tf_padding=True agrees
    dump, mapping = _hf_dump(tmp_path, case, x)
    assert compare(dump, weights=str(folder), mapping=mapping)["agrees"]


def _copy_checkpoint(tmp_path, name, **config):
    """A copy of a shared checkpoint folder with some config.json fields changed."""
    folder = tmp_path / name
    folder.mkdir()
    for f in ("model.safetensors", "preprocessor_config.json"):
        (folder / f).write_bytes(require_shared("hf", name, f).read_bytes())
    obj = json.loads(require_shared("hf", name, "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(obj, **config)))
    return str(folder)


def test_the_reference_is_the_checkpoints_own_graph(tmp_path):
    """A checkpoint whose config.json says tf_padding=false is its model: transformers' own
    hidden states for it agree (the reference was Keras's graph with its weights: 'padding')."""
    folder = _copy_checkpoint(tmp_path, "mobilenet_v2_0.35_96", tf_padding=False)
    dump, mapping = _hf_dump(tmp_path, "tf_padding_false/random_33x40", _random_input(33, 40))
    report = compare(dump, weights=folder, mapping=mapping)
    assert report["agrees"], report["diagnosis"]


def _deeplab_dump(tmp_path, logits_key):
    """transformers' DeepLabV3 hidden states and logits at 64x48 (+ the input) and their mapping."""
    ref = np.load(require_shared("reference", "hf", "deeplabv3_mobilenet_v2_1.0_513.npz"))
    x = _random_input(64, 48)
    check = ref["random_64x48/input_check"]
    assert np.allclose([x.astype(np.float64).sum(), (x.astype(np.float64) ** 2).sum()], check[:2])
    arrays = {"pixel_values": x, "logits": ref[logits_key]}
    names = {"logits": "logits"}
    for i, layer in enumerate(HF_BLOCK_OUTPUT):
        arrays[f"hidden_states/{i:02d}"] = ref[f"random_64x48/hidden_states/{i:02d}"]
        names[f"hidden_states/{i:02d}"] = layer
    np.savez(tmp_path / "seg.npz", **arrays)
    (tmp_path / "seg.json").write_text(json.dumps({"input": "pixel_values", "layout": "NCHW", "tensors": names}))
    return str(tmp_path / "seg.npz"), str(tmp_path / "seg.json")


def test_deeplabv3_against_its_checkpoint(tmp_path):
    """The segmentation checkpoint as reference weights (it has no Keras graph: 'no layer
    Conv_1'): transformers' outputs agree, and its tf_padding=False logits (block outputs as
    with tf_padding=True: 64x48 meets an even side first in the stem) are diagnosed as padding."""
    folder = str(require_shared("hf", "deeplabv3_mobilenet_v2_1.0_513"))
    dump, mapping = _deeplab_dump(tmp_path, "random_64x48/logits")
    out = tmp_path / "r.json"
    assert main(["compare", dump, "--weights", folder, "--mapping", mapping, "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert report["agrees"] and [r["layer"] for r in report["layers"]][-2:] == ["block_16_project_BN", "logits"]
    arrays = dict(np.load(dump))
    mapping_logits = tmp_path / "logits.json"
    mapping_logits.write_text(json.dumps({"input": "pixel_values", "layout": "NCHW", "tensors": {"logits": "logits"}}))
    ref = np.load(require_shared("reference", "hf", "deeplabv3_mobilenet_v2_1.0_513.npz"))
    np.savez(tmp_path / "bad.npz", pixel_values=arrays["pixel_values"], logits=ref["tf_padding_false/random_64x48/logits"])
    report = compare(str(tmp_path / "bad.npz"), weights=folder, mapping=str(mapping_logits))
    assert report["first_divergent_layer"] == "logits" and report["diagnosis"]["cause"] == "padding"
    assert report["diagnosis"]["after_fix"]["agrees"]


def test_deeplabv3_onnx_mapped_by_topology(tmp_path):
    """An ONNX DeepLabV3 (our export) against its checkpoint: the head's convs map by topology
    (the classifier conv has a bias and no batch norm), clean agrees through the logits, and a
    stem padded symmetrically is found (the mapping read every conv as conv + batch norm and the
    DeepLabV3 graph failed on a bare ValueError)."""
    pytest.importorskip("onnxruntime", reason="compare runs ONNX files in onnxruntime (pip install 'mobilenetv2[onnx]')")
    pytest.importorskip("onnx", reason="the defective peer is made with onnx (pip install 'mobilenetv2[onnx]')")
    from onnx_graphs import edit_export
    from mobilenetv2 import from_pretrained
    folder = str(require_shared("hf", "deeplabv3_mobilenet_v2_1.0_513"))
    path = export_onnx(from_pretrained(folder), tmp_path / "seg.onnx", batch=1, input_size=(64, 48))
    x = np.random.default_rng(0).uniform(-1, 1, (1, 64, 48, 3)).astype(np.float32)
    report = compare(path, weights=folder, batch=x)
    assert report["agrees"] and report["layers"][-1]["layer"] == "logits" and not report["unmapped"]
    assert {"aspp_pool_conv_relu", "aspp_conv_relu", "aspp_projection_relu"} <= {r["layer"] for r in report["layers"]}
    bad = edit_export(path, tmp_path / "pads.onnx", conv_pads={"bn_Conv1": [1, 1, 1, 1]})
    d = compare(bad, weights=folder, batch=x)["diagnosis"]
    assert (d["layer"], d["cause"], d["after_fix"]["agrees"]) == ("bn_Conv1", "padding", True)
    # the ASPP's plain ReLU capped at 6 (a port that writes ReLU6 everywhere): it was unexplained
    import onnx
    from onnx import numpy_helper
    m = onnx.load(path)
    relu = next(n for n in m.graph.node if n.output[0] == "aspp_conv_relu")
    assert relu.op_type == "Relu"
    relu.op_type = "Clip"
    m.graph.initializer.extend([numpy_helper.from_array(np.array(v, np.float32), name)
                                for v, name in ((0.0, "cap_lo"), (6.0, "cap_hi"))])
    relu.input.extend(["cap_lo", "cap_hi"])
    onnx.save(m, str(tmp_path / "relu6.onnx"))
    report = compare(str(tmp_path / "relu6.onnx"), weights=folder, batch=x * 8)
    d = report["diagnosis"]
    assert (d["layer"], d["cause"], d["after_fix"]["agrees"]) == ("aspp_conv_relu", "activation", True)
    assert d["evidence"][0]["detail"]["activation"] == "relu6"


# -- the real backbone, converted ------------------------------------------------------------------
def test_real_backbone_export_agrees(tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="compare runs ONNX files in onnxruntime (pip install 'mobilenetv2[onnx]')")
    weights = require_shared("weights", "mobilenet_v2_1.0_224_no_top.keras3-names.h5")
    model = MobileNetV2((224, 224, 3), alpha=1.0, include_top=False, weights=str(weights), pooling="avg")
    path = export_onnx(model, tmp_path / "real.onnx", batch=None)
    images = require_shared("images", "panda.jpg")
    out = tmp_path / "r.json"
    code = main(["compare", path, "--weights", str(weights), "--images", str(images), "--json", str(out), "--quiet"])
    report = json.loads(out.read_text())
    assert code == 0 and report["agrees"], [r for r in report["layers"] if not r["agrees"]][:1]
    assert report["layers"][-1]["layer"] == "global_average_pooling2d"


def test_real_backbone_in_float16_is_precision_only(tmp_path):
    """A healthy float16 model: the real backbone exported (batch norms folded in float32, as
    exporters do), then every initializer rounded to float16.  Folding in float64 and rounding
    puts ~100 weights one float16 step from the graph's; taking the graph's side there (as the
    int8 path does at a tie) leaves precision the only cause, every later layer agreeing."""
    pytest.importorskip("onnxruntime", reason="compare runs ONNX files in onnxruntime (pip install 'mobilenetv2[onnx]')")
    pytest.importorskip("onnx", reason="the float16 peer is made with onnx (pip install 'mobilenetv2[onnx]')")
    from onnx_graphs import edit_export
    weights = require_shared("weights", "mobilenet_v2_1.0_224_no_top.keras3-names.h5")
    images = [str(require_shared("images", name)) for name in ("panda.jpg", "cat.png")]
    model = MobileNetV2((224, 224, 3), alpha=1.0, include_top=False, weights=str(weights))
    path = edit_export(export_onnx(model, tmp_path / "real.onnx", batch=None), tmp_path / "real_f16.onnx",
                       round_f16=True)
    report = compare(path, weights=str(weights), images=images)
    d = report["diagnosis"]
    assert (report["first_divergent_layer"], d["cause"], d["also"]) == ("bn_Conv1", "precision", [])
    assert d["evidence"][0]["detail"] == {"weights": "float16", "folded": True}
    assert d["after_fix"]["agrees"], d["after_fix"]
    assert d["further"] == []
