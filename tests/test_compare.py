"""``mobilenetv2 compare``: clean conversions agree, injected defects are found at the right layer
with the right cause (each confirmed by the float64 reference re-run with that defect), bad input
exits 2 with one line.  OTHER here is ONNX (our export, or a torch-style graph built with
onnx.helper); see test_compare_peers.py for LiteRT, Hugging Face dumps and the real backbone."""
import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="compare's ONNX tests need the onnx extra (pip install 'mobilenetv2[onnx]')")
pytest.importorskip("onnxruntime", reason="compare runs ONNX files in onnxruntime (pip install 'mobilenetv2[onnx]')")

from mobilenetv2 import MobileNetV2, export_onnx  # noqa: E402
from mobilenetv2.cli import main  # noqa: E402
from mobilenetv2.tools.compare import CAUSES, CompareError, compare  # noqa: E402
from onnx_graphs import edit_export, lively_model, lively_weights, tf_style, torch_style  # noqa: E402

# the code under test runs the same with or without the C extension: .ci/no-ext leaves it out
pytestmark = pytest.mark.engine_independent

SHAPE = (96, 96, 3)


@pytest.fixture(scope="module")
def model():
    return lively_model(SHAPE)


@pytest.fixture(scope="module")
def clean(model, tmp_path_factory):
    """The model exported as it is (a dynamic batch): the healthy peer others are edited from."""
    return export_onnx(model, tmp_path_factory.mktemp("clean") / "clean.onnx", batch=None)


@pytest.fixture(scope="module")
def weights_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "lively_0.35_96.h5"
    model.save_weights(path)
    return str(path)


def _model_with_eps(model, eps):
    m = MobileNetV2(SHAPE, alpha=0.35, weights=None, classifier_activation=None)
    m.set_weights(model.get_weights())
    for layer in m.layers:
        if layer.name in eps:
            layer.epsilon = eps[layer.name]
    return m


def n_keras_outputs(model):
    """Layers a fused ONNX graph shows: every BN (conv+BN), ReLU6, Add, the pooling and the head."""
    from mobilenetv2.network import layers as L
    return sum(isinstance(x, (L.BatchNormalization, L.ReLU, L.Add, L.GlobalAveragePooling2D, L.Dense))
               for x in model.layers)


# -- clean conversions agree ------------------------------------------------------------------
def test_own_export_agrees_every_layer(model, weights_file, tmp_path, capsys):
    path = export_onnx(model, tmp_path / "clean.onnx", batch=None)
    out = tmp_path / "r.json"
    code = main(["compare", path, "--weights", weights_file, "--random", "2", "--seed", "5",
                 "--json", str(out), "--quiet"])
    assert code == 0
    text = capsys.readouterr().out
    assert "AGREES" in text
    report = json.loads(out.read_text())
    assert report["agrees"] is True and report["first_divergent_layer"] is None and report["diagnosis"] is None
    assert len(report["layers"]) == n_keras_outputs(model)  # every layer of the graph mapped
    for row in report["layers"]:
        assert row["ratio"] <= report["factor"] and 0 < row["floor_rel_l2"] < 1e-4
        assert row["cosine"] > 0.999999 and row["how"]
    assert report["layers"][0]["layer"] == "bn_Conv1" and "folded" in report["layers"][0]["how"]
    assert report["layers"][-1]["layer"] == "predictions"


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_own_export_of_a_pooled_backbone_compares_its_pooling(tmp_path, pooling):
    """The pooled output of our export is compared with the reference's pooling: a GlobalMaxPool
    (REDUCE_MAX in a .tflite) was no pooling node to compare, so compare built a reference without
    one, and reported AGREES on the layers before it, never looking at the file's output."""
    from onnx_graphs import our_exports
    backbone = lively_weights(MobileNetV2(SHAPE, alpha=0.35, include_top=False, pooling=pooling, weights=None))
    pooled = "global_max_pooling2d" if pooling == "max" else "global_average_pooling2d"
    for path in our_exports(backbone, tmp_path, "m"):
        report = compare(path, random=1, seed=3)
        assert report["agrees"] and report["unmapped"] == []
        assert report["layers"][-1]["layer"] == pooled, path
        assert report["layers"][-1]["how"].startswith(f"global {'max' if pooling == 'max' else 'average'} pooling")


def test_weights_read_from_other_agree_and_say_what_they_hide(model, tmp_path):
    path = torch_style(model, tmp_path / "clean.onnx")
    report = compare(path, random=1, seed=2)
    assert report["agrees"], [r for r in report["layers"] if not r["agrees"]][:1]
    assert "52 with the batch norm folded in" in report["weights"]["source"]
    assert "epsilon" in report["weights"]["cannot_detect"]
    # ... and indeed: epsilon 1e-5 folded into every layer is invisible with OTHER's own weights
    eps = {x.name: 1e-5 for x in model.layers if type(x).__name__ == "BatchNormalization"}
    assert compare(torch_style(model, tmp_path / "eps.onnx", eps=eps), random=1)["agrees"]


def test_separate_batchnorm_nodes(model, tmp_path):
    """Batch norms left as BatchNormalization nodes: the conv and the BN each map to their Keras
    layer, and with weights read from OTHER a wrong epsilon in the node is visible."""
    report = compare(torch_style(model, tmp_path / "bn.onnx", bn_nodes=1e-3))
    assert report["agrees"] and "0 with the batch norm folded in" in report["weights"]["source"]
    assert [r["layer"] for r in report["layers"][:3]] == ["Conv1", "bn_Conv1", "Conv1_relu"]
    report = compare(torch_style(model, tmp_path / "bn_eps.onnx", bn_nodes=1e-5))
    assert report["first_divergent_layer"] == "bn_Conv1"
    assert report["diagnosis"]["cause"] == "bn_epsilon" and report["diagnosis"]["scope"] == "every batch norm"


# -- injected defects: the right layer, the right cause, confirmed -----------------------------
TORCH_STYLE_DEFECTS = {
    "stem_symmetric_pads": (dict(sym_pads={"Conv1"}), "bn_Conv1", "padding", []),
    "depthwise_symmetric_pads": (dict(sym_pads={"block_6_depthwise"}), "block_6_depthwise_BN", "padding", []),
    "eps_one_layer": (dict(eps={"block_4_expand_BN": 1e-5}), "block_4_expand_BN", "bn_epsilon", []),
    "eps_all": ("all", "bn_Conv1", "bn_epsilon", []),
    "relu_for_relu6": (dict(relu={"block_2_expand_relu"}), "block_2_expand_relu", "activation", []),
    "input_in_0_1": (dict(input_map="unit"), "bn_Conv1", "preprocessing", []),
    "bgr": (dict(input_map="bgr"), "bn_Conv1", "layout", []),
    "nhwc_as_nchw": (dict(input_map="nhwc_as_nchw"), "bn_Conv1", "layout", []),
    "float16_weights": (dict(weights_dtype=np.float16), "bn_Conv1", "precision", []),
    "head_1001": (dict(classes_1001=True), "predictions", "class_offset", []),
    "padding_and_eps": (dict(sym_pads={"Conv1"}, eps={"bn_Conv1": 1e-5}), "bn_Conv1", "padding", ["bn_epsilon"]),
}


@pytest.mark.parametrize("case", sorted(TORCH_STYLE_DEFECTS))
def test_torch_style_defect_found(model, tmp_path, case):
    kw, layer, cause, also = TORCH_STYLE_DEFECTS[case]
    if kw == "all":
        kw = dict(eps={x.name: 1e-5 for x in model.layers if type(x).__name__ == "BatchNormalization"})
    path = torch_style(model, tmp_path / f"{case}.onnx", **kw)
    report = compare(path, weights=model, random=1, seed=7)
    assert not report["agrees"]
    assert report["first_divergent_layer"] == layer
    d = report["diagnosis"]
    assert (d["cause"], d["also"]) == (cause, also), d["evidence"]
    ev = d["evidence"][0]
    assert ev["before"]["ratio"] > 10 * report["factor"]       # far off before
    assert ev["after"]["ratio"] <= report["factor"]            # at its floor with the defect applied
    assert d["after_fix"]["agrees"] is True                      # and so is every later layer
    assert cause in CAUSES


def test_found_details(model, tmp_path):
    """The evidence names the values: pads, fitted epsilon, the input map, the channel order."""
    d = compare(torch_style(model, tmp_path / "a.onnx", sym_pads={"Conv1"}), weights=model)["diagnosis"]
    assert d["evidence"][0]["detail"]["pads"] == [1, 1, 1, 1]
    assert d["evidence"][0]["detail"]["reference_pads"] == [0, 1, 0, 1]
    d = compare(torch_style(model, tmp_path / "b.onnx", eps={"block_4_expand_BN": 1e-5}), weights=model)["diagnosis"]
    assert d["evidence"][0]["detail"]["epsilon"] == 1e-5
    assert d["evidence"][0]["detail"]["fitted"]["median"] == pytest.approx(1e-5, rel=0.05)
    d = compare(torch_style(model, tmp_path / "c.onnx", input_map="unit"), weights=model)["diagnosis"]
    assert d["evidence"][0]["detail"]["scale"] == pytest.approx([2, 2, 2])
    assert d["evidence"][0]["detail"]["offset"] == pytest.approx([-1, -1, -1])
    assert "[0, 1]" in d["evidence"][0]["applied"]
    d = compare(torch_style(model, tmp_path / "d.onnx", input_map="bgr"), weights=model)["diagnosis"]
    assert d["evidence"][0]["detail"]["channels"] == "BGR"
    d = compare(torch_style(model, tmp_path / "e.onnx", eps={x.name: 1e-5 for x in model.layers
                                                            if type(x).__name__ == "BatchNormalization"}), weights=model)["diagnosis"]
    assert d["scope"] == "every batch norm"


def test_two_defects_at_two_layers_each_diagnosed_the_second_on_top_of_the_first(model, tmp_path):
    """A graph with epsilon 1e-5 in block_4_expand_BN and ReLU for ReLU6 at block_10_depthwise_relu:
    the first divergent layer gets bn_epsilon; compare applies it and looks again, and the second
    layer is diagnosed with the first defect kept applied (``further``): activation, after which
    every layer agrees."""
    path = torch_style(model, tmp_path / "two.onnx", eps={"block_4_expand_BN": 1e-5}, relu=("block_10_depthwise_relu",))
    d = compare(path, weights=model)["diagnosis"]
    assert (d["layer"], d["cause"], d["also"]) == ("block_4_expand_BN", "bn_epsilon", [])
    assert not d["after_fix"]["agrees"] and d["after_fix"]["first_divergent_layer"] == "block_10_depthwise_relu"
    assert [(f["layer"], f["cause"], f["also"]) for f in d["further"]] == [("block_10_depthwise_relu", "activation", [])]
    f = d["further"][0]
    assert f["after_fix"]["agrees"] and f["evidence"][0]["after"]["ratio"] <= 30 < f["evidence"][0]["before"]["ratio"]


EXPORT_DEFECTS = {
    "stem_symmetric_pads": (dict(conv_pads={"bn_Conv1": [1, 1, 1, 1]}), "bn_Conv1", "padding"),
    "depthwise_symmetric_pads": (dict(conv_pads={"block_3_depthwise_BN": [1, 1, 1, 1]}), "block_3_depthwise_BN", "padding"),
    "relu_for_relu6": (dict(clip_to_relu="block_5_depthwise_relu"), "block_5_depthwise_relu", "activation"),
    "float16_weights": (dict(round_f16=True), "bn_Conv1", "precision"),
    "input_in_0_1": (dict(input_unit=True), "bn_Conv1", "preprocessing"),
}


@pytest.mark.parametrize("case", sorted(EXPORT_DEFECTS))
def test_export_defect_found_by_the_cli(model, weights_file, tmp_path, capsys, case):
    kw, layer, cause = EXPORT_DEFECTS[case]
    clean = export_onnx(model, tmp_path / "clean.onnx")
    path = edit_export(clean, tmp_path / f"{case}.onnx", **kw)
    out = tmp_path / "r.json"
    assert main(["compare", path, "--weights", weights_file, "--json", str(out), "--quiet"]) == 1
    text = capsys.readouterr().out
    assert f">> {layer}" in text and f"cause: {cause}" in text and "before:" in text
    report = json.loads(out.read_text())
    assert report["first_divergent_layer"] == layer and report["diagnosis"]["cause"] == cause


def test_export_with_a_wrong_epsilon(model, tmp_path):
    bad = _model_with_eps(model, {"block_8_project_BN": 1e-5})
    path = export_onnx(bad, tmp_path / "eps.onnx")  # a static batch of 1: run an image at a time
    report = compare(path, weights=model, random=3)
    assert report["input"]["shape"] == [3, 96, 96, 3]
    assert report["first_divergent_layer"] == "block_8_project_BN"
    assert report["diagnosis"]["cause"] == "bn_epsilon"


def test_an_epsilon_behind_a_fused_relu6_is_fitted_on_the_unclipped_values(model, tmp_path):
    """Our .tflite export fuses each batch norm and its ReLU6 into the conv, so a wrong epsilon in
    block_4_expand_BN first shows at block_4_expand_relu; the fit of the epsilon leaves out the
    values the ReLU6 clipped (0 and 6) and finds the file's 1e-5 to 0.5 %."""
    pytest.importorskip("ai_edge_litert.interpreter", reason="running a .tflite needs LiteRT (ai-edge-litert)")
    from mobilenetv2 import export_tflite
    path = export_tflite(_model_with_eps(model, {"block_4_expand_BN": 1e-5}), tmp_path / "eps.tflite")
    report = compare(path, weights=model, random=3)
    d = report["diagnosis"]
    assert (report["first_divergent_layer"], d["cause"]) == ("block_4_expand_relu", "bn_epsilon")
    assert d["evidence"][0]["detail"]["fitted"]["median"] == pytest.approx(1e-5, rel=0.005)


def test_padding_seen_only_after_the_layers_that_caused_it(tmp_path, capsys):
    """A dump with block outputs only (as transformers' hidden states), from a graph padding every
    stride-2 conv symmetrically at 33x40 (an even side): the first layer compare can see is
    block_1_project_BN, three convs after the stem, and the cause named there is padding."""
    from mobilenetv2.tools.compare.onnx_reader import read_onnx
    m = lively_weights(MobileNetV2((33, 40, 3), alpha=0.35, include_top=False, weights=None), seed=4)
    s2 = {x.name for x in m.layers if getattr(x, "stride", 1) == 2}
    path = torch_style(m, tmp_path / "sym.onnx", sym_pads=s2)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 33, 40, 3)).astype(np.float32)
    tensors = read_onnx(path).run(x)
    arrays, names = {"pixel_values": x.transpose(0, 3, 1, 2)}, {}
    for b in range(1, 17):
        add = [k for k in tensors if k == f"/features/features.{3 * b + 1}/conv/Add_output_0"]
        proj = [k for k in tensors if f"conv.block_{b}_project/" in k]
        key = f"hidden_states/{b - 1:02d}"
        arrays[key] = tensors[(add or proj)[0]]
        names[key] = f"block_{b}_add" if add else f"block_{b}_project_BN"
    dump = tmp_path / "dump.npz"
    np.savez(dump, **arrays)
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"input": "pixel_values", "layout": "NCHW", "tensors": names}))
    report = compare(str(dump), weights=m, mapping=str(mapping), progress=True)
    assert report["first_divergent_layer"] == "block_1_project_BN"
    assert report["diagnosis"]["cause"] == "padding"
    assert report["diagnosis"]["after_fix"]["agrees"]
    # what the report says was applied and how many candidates were tried: the progress bar
    # names each candidate as it is run
    assert report["diagnosis"]["evidence"][0]["detail"] == {"layers": "all stride-2", "pads": [1, 1, 1, 1]}
    tried = capsys.readouterr().err.count("diagnosing block_1_project_BN: ")
    assert report["diagnosis"]["tried"] == tried > 1
    # the same dump of the clean graph agrees
    clean = read_onnx(torch_style(m, tmp_path / "clean.onnx")).run(x)
    for key, name in names.items():
        b = int(key[-2:]) + 1
        add = f"/features/features.{3 * b + 1}/conv/Add_output_0"
        arrays[key] = clean[add] if add in clean else clean[next(k for k in clean if f"conv.block_{b}_project/" in k)]
    np.savez(dump, **arrays)
    assert compare(str(dump), weights=m, mapping=str(mapping))["agrees"]


def test_tf2onnx_style_graph(model, tmp_path):
    """NHWC input, Transposes around every conv, batch norms as Mul/Add in NHWC, MatMul + Add:
    mapped (a 48x48x48 map's axes told apart by the Transposes), weights folded from OTHER."""
    path = tf_style(model, tmp_path / "tf.onnx")
    for weights in (model, None):
        report = compare(path, weights=weights)
        assert report["agrees"] and len(report["layers"]) == n_keras_outputs(model)
    assert "BN as Mul/Add" in report["layers"][0]["how"]
    path = tf_style(model, tmp_path / "tf_eps.onnx", eps={"block_3_depthwise_BN": 1e-5})
    report = compare(path, weights=model)
    assert (report["first_divergent_layer"], report["diagnosis"]["cause"]) == ("block_3_depthwise_BN", "bn_epsilon")
    path = tf_style(model, tmp_path / "tf_relu.onnx", relu={"block_7_expand_relu"})
    report = compare(path)
    assert (report["first_divergent_layer"], report["diagnosis"]["cause"]) == ("block_7_expand_relu", "activation")


def test_batch_norms_as_arithmetic_in_either_operand_order(model, tmp_path):
    """A converter may write a batch norm's Mul and Add with the constant first (both commute)
    and its shift as a Sub of the negated constant: the weights read from OTHER fold each alike,
    and every layer agrees with the model the graph was written from."""
    from onnx import numpy_helper
    from mobilenetv2.tools.compare.report import format_table
    m = onnx.load(tf_style(model, tmp_path / "tf.onnx"))
    inits = {t.name: t for t in m.graph.initializer}
    bn = [n for n in m.graph.node if n.name.endswith(("/batchnorm/mul", "/batchnorm/add_1"))]
    for n in bn:
        n.input[0], n.input[1] = n.input[1], n.input[0]
    shift = bn[1]  # bn_Conv1's Add: x + b as x - (-b)
    neg = numpy_helper.from_array(-numpy_helper.to_array(inits[shift.input[0]]), shift.input[0] + "/neg")
    m.graph.initializer.append(neg)
    shift.op_type, shift.input[:] = "Sub", [shift.input[1], neg.name]
    onnx.save(m, str(tmp_path / "swapped.onnx"))
    report = compare(str(tmp_path / "swapped.onnx"))
    assert report["agrees"] and report["unmapped"] == [] and len(report["layers"]) == n_keras_outputs(model)
    assert "weights: read from OTHER" in format_table(report)


def test_keras3_torch_export_style_casts_are_looked_through(model, tmp_path):
    """Keras 3's ONNX export on its torch backend writes a float-to-float Cast after every op
    (and around the pooling): compare read them as ops, mapped 53 of 99 layers, listed every
    ReLU6 as missing and diverged at bn_Conv1 on a healthy graph.  A Cast to float is an
    Identity to the topology; a Cast pair through float16 still rounds (test_compare_quant)."""
    from onnx import TensorProto, helper
    path = tf_style(model, tmp_path / "tf.onnx")
    m = onnx.load(path)
    nodes = []
    for n in m.graph.node:
        nodes.append(n)
        if n.op_type in ("Conv", "Transpose", "Mul", "Add", "Clip", "ReduceMean", "Squeeze", "MatMul"):
            out = n.output[0]
            n.output[0] = out + "/pre_cast"
            nodes.append(helper.make_node("Cast", [out + "/pre_cast"], [out], to=TensorProto.FLOAT))
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    onnx.save(m, str(tmp_path / "casts.onnx"))
    for weights in (model, None):
        report = compare(str(tmp_path / "casts.onnx"), weights=weights)
        assert report["agrees"] and report["unmapped"] == []
        assert len(report["layers"]) == n_keras_outputs(model)


# -- output -----------------------------------------------------------------------------------
def test_plot(model, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib (pip install 'mobilenetv2[plot]')")
    path = torch_style(model, tmp_path / "relu.onnx", relu={"block_2_expand_relu"})
    png = tmp_path / "err.png"
    main(["compare", path, "--plot", str(png), "--quiet"])  # weights from OTHER
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_output_paths_are_checked_before_the_runs(model, tmp_path, capsys, monkeypatch):
    """A folder as --json or --plot is refused in one line before OTHER and the reference run
    (it was refused after them, naming the temporary file the rename failed on)."""
    import mobilenetv2.tools.compare as C
    path = export_onnx(model, tmp_path / "m.onnx")

    def no_run(*args, **kw):
        raise AssertionError("ran before checking the output paths")
    monkeypatch.setattr(C, "compare", no_run)
    for flag in ("--json", "--plot"):
        assert main(["compare", str(path), flag, str(tmp_path), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("mobilenetv2 compare: error:") and f"{flag} path" in err and ".tmp" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_images_go_to_both_sides(model, tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (120, 100, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    path = torch_style(model, tmp_path / "bgr.onnx", input_map="bgr")
    report = compare(path, weights=model, images=[str(tmp_path)])
    assert report["input"]["shape"] == [2, 96, 96, 3]
    assert report["diagnosis"]["cause"] == "layout"


# -- bad input: exit 2, one line ----------------------------------------------------------------
def test_usage_errors_exit_2_with_one_line(model, tmp_path, capsys):
    clean = export_onnx(model, tmp_path / "clean.onnx")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage" * 10)
    np.savez(tmp_path / "dump.npz", input=np.zeros((1, 96, 96, 3), np.float32))
    small = MobileNetV2((32, 32, 3), alpha=0.35, include_top=False, weights=None)
    export_onnx(small, tmp_path / "small.onnx")
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("Relu", ["input"], ["y"])], "g",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=7), tmp_path / "relu.onnx")
    cases = [
        [str(tmp_path / "missing.onnx")],
        [str(tmp_path / "junk.onnx")],
        [str(tmp_path / "relu.onnx")],                         # not a MobileNetV2
        [clean, "--mapping", str(bad_json)],
        [clean, "--weights", str(tmp_path / "nope.h5")],
        [clean, "--input", str(tmp_path / "missing.npy")],
        [str(tmp_path / "dump.npz")],                          # a dump without --weights
        [str(tmp_path / "dump.npz"), "--weights", str(tmp_path / "small.onnx")],
        [clean, "--random", "0"],
        [clean, "--random", "2", "--seed", "-1"],
        [clean, "--factor", "inf"],
        [clean, "--factor", "nan"],
        [str(tmp_path / "model.pt")],
    ]
    (tmp_path / "model.pt").write_bytes(b"x")
    for args in cases:
        assert main(["compare"] + args + ["--quiet"]) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("mobilenetv2 compare: error:") and "\n" not in err, (args, err)


def test_bad_python_arguments_are_compare_errors(model, tmp_path):
    """The Python API refuses what argparse's types keep from the CLI: --random 2.5 or "3" ran
    2 and 3 images, a negative or string seed reached NumPy's own ValueError/TypeError, and
    factor=inf made every layer agree."""
    path = export_onnx(model, tmp_path / "m.onnx")
    for kw, match in [(dict(random=2.5), "random"), (dict(random="3"), "random"), (dict(random=True), "random"),
                      (dict(seed=-1), "seed"), (dict(seed="a"), "seed"), (dict(seed=1.0), "seed"),
                      (dict(factor=float("inf")), "factor"), (dict(factor=float("nan")), "factor"),
                      (dict(factor=True), "factor"), (dict(factor="30"), "factor"), (dict(factor=1), "factor"),
                      (dict(factor=0.5), "factor")]:
        with pytest.raises(CompareError, match=match):
            compare(path, **kw)
    report = compare(path, random=np.int64(1), seed=np.uint32(3), factor=np.array(10.0))
    assert report["agrees"] and type(report["factor"]) is float
    assert compare(path, factor=1.5)["factor"] == 1.5  # any finite factor above 1


def test_missing_extra_is_named(monkeypatch, tmp_path, model):
    import sys
    path = export_onnx(model, tmp_path / "m.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(CompareError, match=r'pip install "mobilenetv2\[onnx\]"'):
        compare(path)


def test_keras_model_object(monkeypatch, model):
    """The Keras reader's plumbing, with a stand-in for keras (not installed here): OTHER's
    layers are named as Keras's, so they map by name; its weights are read by layer name, batch
    norms unfolded, so a wrong epsilon in OTHER is visible."""
    import sys
    import types
    other_engine = _model_with_eps(model, {"block_5_depthwise_BN": 1e-5})  # what "Keras" computes

    class Layer:
        def __init__(self, name):
            self.name = self.output = name

        def get_weights(self):
            return [w.astype(np.float32) for w in other_engine.get_layer(self.name).weights]

    class KerasModel:
        name = "mobilenetv2_0.35_96"
        input_shape = (None, 96, 96, 3)
        inputs = ["input_layer"]
        layers = [Layer(x.name) for x in other_engine.layers]

        def get_layer(self, name):
            other_engine.get_layer(name)  # raises ValueError for a name the model lacks
            return Layer(name)

    class Probe:
        def __init__(self, inputs, outputs):
            self.outputs = outputs

        def predict(self, x, verbose=0):
            t = other_engine.features(x, self.outputs)
            return [t[n] for n in self.outputs]

    monkeypatch.setitem(sys.modules, "keras", types.SimpleNamespace(Model=Probe))
    report = compare(KerasModel(), random=1, seed=3)
    assert report["other"]["kind"] == "keras" and "by layer name" in report["weights"]["source"]
    assert len(report["layers"]) == len(model.layers) - 1
    assert report["first_divergent_layer"] == "block_5_depthwise_BN"
    assert report["diagnosis"]["cause"] == "bn_epsilon"


def test_local_functions_are_inlined(model, tmp_path):
    """torch.onnx's dynamo exporter writes modules as ONNX local functions: here every Clip is
    a call of a function holding it, and the graph still maps and agrees."""
    from onnx import helper
    m = onnx.load(torch_style(model, tmp_path / "plain.onnx"))
    fn = helper.make_function("pkg.torch.test", "ReLU6", ["x", "lo", "hi"], ["y"],
                              [helper.make_node("Clip", ["x", "lo", "hi"], ["y"])],
                              [helper.make_opsetid("", 13)])
    for node in m.graph.node:
        if node.op_type == "Clip":
            node.op_type, node.domain = "ReLU6", "pkg.torch.test"
    m.functions.append(fn)
    m.opset_import.append(helper.make_opsetid("pkg.torch.test", 1))
    onnx.save(m, tmp_path / "functions.onnx")
    report = compare(str(tmp_path / "functions.onnx"), weights=model)
    assert report["agrees"] and len(report["layers"]) == n_keras_outputs(model)


def test_a_fine_tuned_head_in_the_weights_file_is_the_reference(tmp_path):
    """A Keras .h5 of a 7-class fine-tuned MobileNetV2 as --weights: compare built 1000-class models
    to load it into and refused it ('loads into no MobileNetV2 of alpha ...')."""
    m7 = lively_weights(MobileNetV2(SHAPE, alpha=0.35, weights=None, classes=7, classifier_activation=None))
    h5 = tmp_path / "fine_tuned.h5"
    m7.save_weights(h5)
    path = export_onnx(m7, tmp_path / "fine_tuned.onnx", batch=None)
    report = compare(path, weights=str(h5), random=1, seed=4)
    assert report["agrees"] and report["layers"][-1]["layer"] == "predictions"
    assert "7 classes" in report["weights"]["source"]
    # ... and a head that differs from the file's is found there
    other = m7.get_weights()
    other[-2] = other[-2][:, ::-1].copy()  # the classes' columns in reverse order
    m7.set_weights(other)
    report = compare(export_onnx(m7, tmp_path / "swapped.onnx", batch=None), weights=str(h5), random=1, seed=4)
    assert not report["agrees"] and report["first_divergent_layer"] == "predictions"


# -- OTHER's own input map, read from its graph -----------------------------------------------------
MEAN255, STD255 = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])  # torchvision's, on [0, 255]


def _pixels(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n,) + SHAPE).astype(np.float32)


def _map_at(src, out, at, ops):
    """The export ``src`` with ``ops`` ((op_type, constant), or ("BatchNormalization", (gamma,
    beta, mean, var)), or ("Cast", None) to float) computed on tensor ``at`` before the nodes
    that read it: "input" (NHWC, ahead of the export's Transpose), "nchw" (after it) or
    "bn_Conv1" (after the first conv)."""
    from onnx import TensorProto, helper, numpy_helper
    m = onnx.load(str(src))
    g = m.graph
    readers = [n for n in g.node if at in n.input]
    prev, new = at, []
    for i, (op, value) in enumerate(ops):
        out_t = f"pre_{at}_{i}"
        if op == "Cast":
            new.append(helper.make_node("Cast", [prev], [out_t], to=TensorProto.FLOAT))
        elif op == "BatchNormalization":
            names = [f"pre_bn{i}_{k}" for k in range(4)]
            g.initializer.extend(numpy_helper.from_array(np.asarray(v, np.float32), n) for v, n in zip(value, names))
            new.append(helper.make_node(op, [prev] + names, [out_t], epsilon=1e-3))
        else:
            g.initializer.append(numpy_helper.from_array(np.asarray(value, np.float32), f"pre_c{i}"))
            new.append(helper.make_node(op, [prev, f"pre_c{i}"], [out_t]))
        prev = out_t
    for n in readers:
        n.input[list(n.input).index(at)] = prev
    first = list(g.node).index(readers[0])
    for n in reversed(new):
        g.node.insert(first, n)
    onnx.save(m, str(out))
    return str(out)


NCHW_C = (1, 3, 1, 1)
OWN_MAPS = {  # name: (where, ops), each mapping [0, 255] pixels by torchvision's mean/std
    "sub_div_nchw": ("nchw", [("Sub", MEAN255.reshape(NCHW_C)), ("Div", STD255.reshape(NCHW_C))]),
    "sub_mul_nchw": ("nchw", [("Sub", MEAN255.reshape(NCHW_C)), ("Mul", (1 / STD255).reshape(NCHW_C))]),
    "before_the_transpose_nhwc": ("input", [("Sub", MEAN255), ("Cast", None), ("Div", STD255)]),
    "tf2onnx_add_mul": ("input", [("Add", -MEAN255), ("Mul", 1 / STD255)]),
    "batch_norm": ("nchw", [("BatchNormalization", (np.ones(3), np.zeros(3), MEAN255, STD255 ** 2 - 1e-3))]),
}


def test_input_affine_composes_the_input_arithmetic_and_stops_at_anything_else():
    """Hand-computed: 4 - (x - m) * 0.5, through a Transpose, is -0.5 x + (4 + 0.5 m); a division
    of a constant by the input is no affine map (None), nor is a graph that starts with a conv."""
    from mobilenetv2.tools.compare.graph import Node, input_affine

    def affine(kind, v, src, out, data_first=True):
        return Node("affine", [src], out, attrs=dict(kind=kind, value=np.asarray(v, np.float64), data_first=data_first))
    m = np.array([1.0, 2.0, 3.0])
    nodes = [affine("Sub", m, "x", "a"), Node("reshape", ["a"], "b", attrs={"kind": "Transpose"}),
             affine("Mul", 0.5, "b", "c"), affine("Sub", 4.0, "c", "d", data_first=False), Node("conv", ["d"], "e")]
    a, b = input_affine(nodes, "x")
    assert np.broadcast_to(a, 3).tolist() == [-0.5] * 3 and b.tolist() == (4 + 0.5 * m).tolist()
    assert input_affine([affine("Mul", 2.0, "x", "a"), affine("Div", 2.0, "a", "b", data_first=False)], "x") is None
    assert input_affine(nodes[-1:], "d") is None
    # a batch norm of constants: gamma (x - mean) / sqrt(var + eps) + beta, per channel
    bn = Node("bn", ["x"], "y", attrs=dict(gamma=np.array([2.0, 1, 1]), beta=np.array([0.5, 0, 0]),
                                            mean=m, var=np.array([3.0, 0, 0]), eps=1.0))
    a, b = input_affine([bn], "x")
    assert a.tolist() == [1.0, 1.0, 1.0] and b.tolist() == [-0.5, -2.0, -3.0]
    # three values along the image's height are no per-channel map where the layout is known
    along_h = affine("Mul", m.reshape(1, 1, 3, 1), "x", "a")
    assert input_affine([along_h], "x", {"x": "NCHW"}) is None
    assert input_affine([affine("Mul", m.reshape(1, 3, 1, 1), "x", "a")], "x", {"x": "NCHW"})[0].tolist() == m.tolist()


def test_input_maps_composes_the_maps_before_and_after_the_inputs_resize():
    """Hand-computed: (x - 100) / 50 before a resize R and 2 y + 0.5 after it is, since a
    per-channel a x + b commutes with R, 0.04 R(x) - 3.5: a2 a1 = 2 / 50, a2 b1 + b2 = 2 (-2) + 0.5;
    the reference's input is the resized tensor, mapped back by the part before the resize."""
    from mobilenetv2.tools.compare.graph import Node, OtherModel, input_maps

    def affine(kind, v, src, out):
        return Node("affine", [src], out, attrs=dict(kind=kind, value=np.asarray(v, np.float64), data_first=True))
    nodes = [affine("Sub", 100.0, "x", "a"), affine("Div", 50.0, "a", "b"),
             Node("other", ["b"], "r", attrs=dict(kind="Resize", mode="linear")),
             affine("Mul", 2.0, "r", "c"), affine("Add", 0.5, "c", "d"), Node("conv", ["d"], "e")]
    other = OtherModel("onnx", "m.onnx", nodes, "NHWC", (8, 8), "NHWC")
    assert input_maps(other, "x") == "r" and other.input_resize == "r"
    assert other.input_resize_op == "an ONNX Resize, mode linear"
    (a, b), (a1, b1) = other.input_affine, other.affine_before_resize
    assert np.ravel(a).tolist() == pytest.approx([0.04]) and np.ravel(b).tolist() == pytest.approx([-3.5])
    assert np.ravel(a1).tolist() == pytest.approx([0.02]) and np.ravel(b1).tolist() == pytest.approx([-2.0])
    # no map after the resize: the whole map is the one before it
    other = OtherModel("onnx", "m.onnx", nodes[:3] + [Node("conv", ["r"], "e")], "NHWC", (8, 8), "NHWC")
    input_maps(other, "x")
    assert np.ravel(other.input_affine[1]).tolist() == pytest.approx([-2.0])


@pytest.mark.parametrize("case", sorted(OWN_MAPS))
def test_a_graphs_own_mean_std_is_read_and_named(model, clean, tmp_path, case):
    """A torch-style graph taking [0, 255] RGB with the ImageNet mean/std baked in (per channel,
    by Div or Mul, through the export's Transpose and a Cast, as tf2onnx's Add + Mul or as a
    BatchNormalization), against Keras's weights: the map is read from the graph itself, exactly,
    as the preprocessing candidate (before, only the map fitted on the stem found it)."""
    from mobilenetv2.tools.compare.onnx_reader import read_onnx
    where, ops = OWN_MAPS[case]
    path = _map_at(clean, tmp_path / f"{case}.onnx", where, ops)
    a, b = read_onnx(path).input_affine
    assert np.broadcast_to(a, 3) == pytest.approx(1 / STD255, rel=1e-6)
    assert b == pytest.approx(-MEAN255 / STD255, rel=1e-6)
    report = compare(path, weights=model, batch=_pixels(2, 3))
    d = report["diagnosis"]
    assert (report["first_divergent_layer"], d["cause"], d["also"], d["after_fix"]["agrees"]) == \
        ("bn_Conv1", "preprocessing", [], True)
    ev = d["evidence"][0]
    assert "read from its graph" in ev["applied"]
    assert ev["detail"]["scale"] == pytest.approx(1 / STD255, rel=1e-6)
    # what it expects: the pixels its map sends to Keras's [-1, 1], mean -/+ std (not [0, 255]),
    # rounded for reading (to within 0.1 % of the range)
    assert ev["detail"]["expects_range"] == [pytest.approx(MEAN255 - STD255, abs=0.12),
                                             pytest.approx(MEAN255 + STD255, abs=0.12)]


@pytest.mark.parametrize("ops,scale,named", [
    ([("Div", 127.5), ("Sub", 1.0)], 1 / 127.5, True),    # Keras's own x / 127.5 - 1
    ([("Sub", 128.0), ("Div", 128.0)], 1 / 128, False),   # (x - 128) / 128: close to Keras's, not it
])
def test_a_graphs_own_scalar_map(model, clean, tmp_path, ops, scale, named):
    """A scalar map on [0, 255] pixels: Keras's own is found as the [0, 255] scaling (every layer
    agreeing once the pixels are mapped), and one a little off it is the graph's own, exact:
    the named [0, 255] scaling does not explain it."""
    path = _map_at(clean, tmp_path / "scalar.onnx", "input", ops)
    report = compare(path, weights=model, batch=_pixels(2, 5))
    d = report["diagnosis"]
    assert (d["cause"], d["after_fix"]["agrees"]) == ("preprocessing", True), d
    ev = d["evidence"][0]
    assert ev["detail"]["scale"] == pytest.approx([scale] * 3, rel=1e-6)
    assert ev["detail"]["offset"] == pytest.approx([-1.0] * 3, rel=1e-6)
    assert ("expects input in [0, 255]" in ev["applied"]) == named
    assert ("read from its graph" in ev["applied"]) != named


def test_a_map_after_the_first_conv_is_no_input_map(model, clean, tmp_path):
    """Arithmetic by constants on the first conv's output (here a Mul and a Div that cancel) is
    the network's, not OTHER's input map: none is read, and the graph agrees."""
    from mobilenetv2.tools.compare.onnx_reader import read_onnx
    path = _map_at(clean, tmp_path / "after.onnx", "bn_Conv1", [("Mul", 4.0), ("Div", 4.0)])
    assert read_onnx(path).input_affine is None
    assert compare(path, weights=model, random=1)["agrees"]
    # nor is a map whose input is read by something else too (the input, not only the map, goes on)
    two = _map_at(clean, tmp_path / "mid.onnx", "nchw", [("Mul", 2.0)])
    m = onnx.load(two)
    m.graph.node.append(onnx.helper.make_node("Identity", ["nchw"], ["input_too"]))
    m.graph.output.append(onnx.helper.make_tensor_value_info("input_too", onnx.TensorProto.FLOAT, None))
    onnx.save(m, str(tmp_path / "twice.onnx"))
    assert read_onnx(str(tmp_path / "twice.onnx")).input_affine is None


def test_a_qdq_graph_rounding_its_input_behind_its_own_map(model, clean, tmp_path):
    """An int8 QDQ graph (ONNX Runtime's quantizer) whose QuantizeLinear follows the graph's
    mean/std: the map is read, the input rounding found behind it, and the stem is
    preprocessing (also precision), every layer agreeing once both are applied."""
    quantization = pytest.importorskip("onnxruntime.quantization",
                                       reason="int8 graphs are made by onnxruntime.quantization")
    path = _map_at(clean, tmp_path / "meanstd.onnx", "nchw", OWN_MAPS["sub_div_nchw"][1])

    class Calibration(quantization.CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": _pixels(1, seed)} for seed in range(4)])

        def get_next(self):
            return next(self.batches, None)
    int8 = str(tmp_path / "int8.onnx")
    quantization.quantize_static(path, int8, Calibration(), quant_format=quantization.QuantFormat.QDQ,
                                 per_channel=True, activation_type=quantization.QuantType.QUInt8,
                                 weight_type=quantization.QuantType.QInt8, op_types_to_quantize=["Conv", "Gemm", "Add"])
    g = onnx.load(int8).graph
    consts = {t.name for t in g.initializer}
    kinds = [n.op_type for n in g.node if not set(n.input) <= consts]  # not a weight's DequantizeLinear
    assert kinds[:6] == ["Transpose", "Sub", "Div", "QuantizeLinear", "DequantizeLinear", "Conv"], kinds[:6]
    report = compare(int8, weights=model, batch=_pixels(2, 7))
    d = report["diagnosis"]
    assert (report["first_divergent_layer"], d["cause"], d["also"], d["after_fix"]["agrees"]) == \
        ("bn_Conv1", "preprocessing", ["precision"], True), d
    detail = d["evidence"][0]["detail"]
    assert detail["scale"] == pytest.approx(1 / STD255, rel=1e-6)
    assert detail["weights"] == "int8" and detail["input"]  # the input rounded behind the map


def test_a_classifier_checkpoint_as_weights_for_a_backbone(tmp_path):
    """transformers' 0.35_96 classifier checkpoint (../shared/hf) given as --weights for a graph with
    no head (our export of its backbone): the reference keeps the checkpoint's graph without its
    classifier, and every layer agrees up to out_relu (the graph has no pooling: said unmapped)."""
    from conftest import require_shared
    from mobilenetv2 import from_pretrained
    folder = require_shared("hf", "mobilenet_v2_0.35_96")
    hf = from_pretrained(folder)
    assert hf.config.head == "classification"
    backbone = MobileNetV2((96, 96, 3), alpha=0.35, include_top=False, weights=None)
    for layer in backbone.weighted_layers():
        src = hf.get_layer(layer.name)
        if hasattr(src, "epsilon"):
            layer.epsilon = src.epsilon
        layer.set_weights(src.get_weights(), backbone.dtype)
    report = compare(export_onnx(backbone, tmp_path / "backbone.onnx"), weights=str(folder))
    assert report["agrees"] and report["layers"][-1]["layer"] == "out_relu"
    assert report["weights"]["source"] == f"Hugging Face checkpoint {str(folder)!r}"
    assert [u["layer"] for u in report["unmapped"]] == ["global_average_pooling2d"]


def test_symmetric_pads_on_every_stride_2_conv_one_diagnosis_and_its_equivalents_simplest_first(model, tmp_path):
    """PyTorch's padding=1 on every stride-2 conv at 96x96: one diagnosis at bn_Conv1 explains every
    layer (the pads on every stride-2 conv, not the stem's alone).  At an even side a stride-2 conv
    never reads its bottom or right pad, so the stem's own pads (1, 1, 1, 1), (1, 0, 1, 0),
    (1, 0, 1, 1) and (1, 1, 1, 0) explain bn_Conv1 too: listed as equivalent, symmetric first, then
    per-axis-uniform pads, then the rest in order, then the stem alone (the first found, (1, 1, 1, 1)
    on the stem, is kept in the list when the pads on every stride-2 conv replace it)."""
    s2 = {x.name for x in model.layers if getattr(x, "stride", 1) == 2}
    d = compare(torch_style(model, tmp_path / "sym.onnx", sym_pads=s2), weights=model)["diagnosis"]
    assert (d["layer"], d["cause"], d["further"]) == ("bn_Conv1", "padding", [])
    assert d["evidence"][0]["detail"] == {"layers": "all stride-2", "pads": [1, 1, 1, 1]} and d["after_fix"]["agrees"]
    assert d["equivalent"] == [f"pads (top, bottom, left, right) {p} instead of (0, 1, 0, 1) for Conv1"
                               for p in ((1, 1, 1, 1), (1, 0, 1, 0), (1, 0, 1, 1), (1, 1, 1, 0))] + [
        "symmetric pads (1, 1, 1, 1) on the stride-2 convs before bn_Conv1 that could not be compared: Conv1"]
