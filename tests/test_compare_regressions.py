"""``compare`` on peers a reviewer built to catch false alarms and wrong blame: each peer's defect
(or health) is constructed here, so the truth the report is checked against is known before the
report is read.  Our own ONNX export (export_onnx: BN folded in float32, Keras layer names as tensor
names) is edited by hand; see test_compare.py for the torch-style graphs."""
import json

import numpy as np
import pytest

# test_compare's module: its skips (onnx, onnxruntime), its input shape, and its lively 0.35
# model and clean export as this module's fixtures too
from test_compare import SHAPE, clean, model, onnx  # noqa: F401 (fixtures)

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from mobilenetv2 import MobileNetV2  # noqa: E402
from mobilenetv2.cli import main  # noqa: E402
from mobilenetv2.tools.compare import CAUSES, CompareError, compare  # noqa: E402
from onnx_graphs import lively_weights, torch_style  # noqa: E402

# the code under test runs the same with or without the C extension: .ci/no-ext leaves it out
pytestmark = pytest.mark.engine_independent


def _edit(src, dst, fn):
    m = onnx.load(src)
    fn(m.graph)
    onnx.checker.check_model(m)
    onnx.save(m, str(dst))
    return str(dst)


def _node(g, output):
    return next(n for n in g.node if n.output[0] == output)


def _init(g, name):
    return next(t for t in g.initializer if t.name == name)


def _after_logits(g, op, const=None):
    """``op`` applied to the logits before the graph's output (export_onnx's final Identity)."""
    _node(g, "output").input[0] = "head_out"
    ins = ["predictions"]
    if const is not None:
        g.initializer.append(numpy_helper.from_array(np.array(const, np.float32), "head_const"))
        ins.append("head_const")
    kw = {"axis": 1} if op == "Softmax" else {}
    g.node.insert(len(g.node) - 1, helper.make_node(op, ins, ["head_out"], **kw))


# -- 2: 1001-class heads ----------------------------------------------------------------------------
def test_a_1001_class_graph_with_its_own_weights_agrees(model, tmp_path):
    """The weights read from OTHER are the truth about OTHER: its 1001-class head (TF-slim's
    background class 0) is the reference's head too, nothing to blame."""
    report = compare(torch_style(model, tmp_path / "h1001.onnx", classes_1001=True), random=2)
    assert report["agrees"], [r for r in report["layers"] if not r["agrees"]][:1]
    assert report["layers"][-1]["layer"] == "predictions" and report["layers"][-1]["shape"] == [1001]
    assert "1001 classes" in report["weights"]["source"]


def test_a_1000_class_graph_against_1001_class_weights(model, tmp_path):
    """Reference weights with a background class 0 (a Hugging Face / TF-slim checkpoint), OTHER a
    Keras-style 1000-class head: the reference's class 0 dropped explains it."""
    ref = MobileNetV2(SHAPE, alpha=0.35, weights=None, classes=1001, classifier_activation=None)
    ws = list(model.get_weights())
    kernel, bias = ws[-2], ws[-1]
    ws[-2] = np.concatenate([np.full((kernel.shape[0], 1), 0.01, kernel.dtype), kernel], axis=1)
    ws[-1] = np.concatenate([np.array([0.5], bias.dtype), bias])
    ref.set_weights(ws)
    report = compare(torch_style(model, tmp_path / "h1000.onnx"), weights=ref, random=2)
    d = report["diagnosis"]
    assert report["first_divergent_layer"] == "predictions"
    assert d["cause"] == "class_offset" and d["evidence"][0]["detail"]["shift"] == 1
    assert d["evidence"][0]["detail"]["reference_classes"] == 1001
    assert d["after_fix"]["agrees"]


# -- 3: a layer OTHER does not have -------------------------------------------------------------
def _no_block_2_add(g):
    n = _node(g, "block_2_add")  # the Add made an Identity of the project output: no residual
    n.op_type = "Identity"
    del n.input[:]
    n.input.append("block_2_project_BN")


def test_a_missing_residual_add_is_named(model, clean, tmp_path, capsys):
    path = _edit(clean, tmp_path / "no_add.onnx", _no_block_2_add)
    w, out = tmp_path / "w.h5", tmp_path / "r.json"
    model.save_weights(w)
    assert main(["compare", path, "--weights", str(w), "--random", "2", "--seed", "1", "--json", str(out)]) == 1
    text = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert [u["layer"] for u in report["unmapped"]] == ["block_2_add"]
    assert "missing residual add" in report["unmapped"][0]["why"]
    assert "block_2_add" not in [r["layer"] for r in report["layers"]]
    d = report["diagnosis"]
    assert report["first_divergent_layer"] == "block_3_expand_BN"
    assert [u["layer"] for u in d["unmapped_before"]] == ["block_2_add"]
    # confirmed: the reference without its block_2 Add (the project output passed on) is OTHER
    assert d["cause"] == "missing_layer" and d["evidence"][0]["detail"]["kept_input"] == "block_2_project_BN"
    assert d["after_fix"]["agrees"] and "missing_layer" in CAUSES
    assert "unmapped: block_2_add has no counterpart in OTHER" in text
    assert ("note: block_2_add has no counterpart in OTHER (no Add after block_2_project_BN: a missing "
            "residual add?), right before this layer") in text


# -- 4: the final output as OTHER computes it -------------------------------------------------------
def test_probabilities_are_compared_with_softmax(model, clean, tmp_path):
    """A dump named as Keras layers by our own float32 engine with its default softmax head (what
    ``mobilenetv2 dump --layers all`` writes), and a graph with a Softmax after its logits: both
    are healthy; their predictions are compared against the reference's softmax."""
    m = MobileNetV2(SHAPE, alpha=0.35, weights=None)  # classifier_activation='softmax'
    m.set_weights(model.get_weights())
    x = np.random.default_rng(5).uniform(-1, 1, (2,) + SHAPE).astype(np.float32)
    t = m.trace(x)
    assert np.allclose(t["predictions"].sum(axis=1), 1)
    np.savez(tmp_path / "dump.npz", input=x, **t)
    report = compare(str(tmp_path / "dump.npz"), weights=model)
    assert report["agrees"], [r for r in report["layers"] if not r["agrees"]][:1]
    assert report["head"] == "softmax" and report["layers"][-1]["layer"] == "predictions"
    # one image, unbatched arrays (as `mobilenetv2 dump IMAGE --layers all` writes them)
    np.savez(tmp_path / "one.npz", input=x[0], **{k: v[0] for k, v in m.trace(x[:1]).items()})
    report = compare(str(tmp_path / "one.npz"), weights=model)
    assert report["agrees"] and report["head"] == "softmax"
    report = compare(_edit(clean, tmp_path / "softmax.onnx", lambda g: _after_logits(g, "Softmax")), weights=model)
    assert report["agrees"] and report["head"] == "softmax" and report["unmapped"] == []
    assert report["layers"][-1]["tensor"] == "head_out" and "Softmax" in report["layers"][-1]["how"]


@pytest.mark.parametrize("op,const,applies,text", [
    ("Sigmoid", None, "sigmoid", "OTHER applies sigmoid after the logits"),
    ("Mul", 0.5, "scale", "OTHER scales the logits by 0.5"),
])
def test_anything_else_after_the_logits_is_a_divergence_at_the_head(model, clean, tmp_path, op, const, applies, text):
    path = _edit(clean, tmp_path / f"{op}.onnx", lambda g: _after_logits(g, op, const))
    report = compare(path, weights=model, random=1)
    d = report["diagnosis"]
    assert not report["agrees"] and report["first_divergent_layer"] == "predictions"
    assert report["head"] == "logits"
    assert "bias" not in report["layers"][-1]["how"] and op in report["layers"][-1]["how"]
    assert d["cause"] == "head" and d["evidence"][0]["detail"]["applies"] == applies
    assert d["evidence"][0]["applied"] == text and d["after_fix"]["agrees"]
    assert "head" in CAUSES


def _pool_as(op, **attrs):
    def edit(g):
        for i, n in enumerate(g.node):
            if n.op_type == "GlobalAveragePool":
                g.node[i].CopyFrom(helper.make_node(op, list(n.input), list(n.output), name=n.name, **attrs))
    return edit


def test_a_max_pooling_head_is_named(model, clean, tmp_path, capsys):
    """OTHER pools by max where Keras averages: its pooling row diverges (it read as unmapped,
    and compare agreed with exit 0), and the diagnosis confirms the max on the reference."""
    path = _edit(clean, tmp_path / "max.onnx", _pool_as("GlobalMaxPool"))
    w = tmp_path / "w.h5"
    model.save_weights(w)
    assert main(["compare", path, "--weights", str(w), "--random", "2", "--quiet"]) == 1
    text = capsys.readouterr().out
    assert "DIVERGES at global_average_pooling2d (global max pooling" in text
    report = compare(path, weights=model, random=2)
    d = report["diagnosis"]
    assert report["unmapped"] == [] and report["first_divergent_layer"] == "global_average_pooling2d"
    assert d["cause"] == "pooling" and d["evidence"][0]["detail"]["other_pooling"] == "max"
    assert d["after_fix"]["agrees"] and "pooling" in CAUSES


def test_a_head_not_recognised_is_still_compared_at_the_output(model, clean, tmp_path, capsys):
    """A pooling compare has no name for (an L2 pooling): the pooling is unmapped, but OTHER's
    graph output is still compared as the predictions, so the run diverges (it agreed, exit 0)."""
    path = _edit(clean, tmp_path / "lp.onnx", _pool_as("GlobalLpPool", p=2))
    w = tmp_path / "w.h5"
    model.save_weights(w)
    assert main(["compare", path, "--weights", str(w), "--quiet"]) == 1
    assert "DIVERGES at predictions (OTHER's final output" in capsys.readouterr().out
    report = compare(path, weights=model)
    assert [u["layer"] for u in report["unmapped"]] == ["global_average_pooling2d"]
    assert report["layers"][-1]["layer"] == "predictions" and report["layers"][-1]["tensor"] == "output"
    assert report["first_divergent_layer"] == "predictions"


def test_a_headless_max_pooling_export_agrees_with_keras_max_pooling(model, tmp_path):
    """include_top=False, pooling='max' (Keras's own option): our export's GlobalMaxPool is
    compared with a reference pooling by max, and agrees (it was unmapped)."""
    from mobilenetv2 import export_onnx
    m = MobileNetV2(SHAPE, alpha=0.35, weights=None, include_top=False, pooling="max")
    m.set_weights(model.get_weights()[:len(m.get_weights())])
    report = compare(export_onnx(m, tmp_path / "max.onnx"), weights=m, random=2)
    assert report["agrees"] and report["unmapped"] == []
    assert report["layers"][-1]["layer"] == "global_max_pooling2d"
    assert "global max pooling" in report["layers"][-1]["how"]


def test_tf_slim_7x7_head_is_compared_as_tf_slim_computes_it(tmp_path):
    """TF-slim's head (a 7x7 average pooling window, then the logits as a 1x1 conv: a grid of
    scores above 224), as our export writes it, for ONNX and TFLite: it was refused ('53
    convolutions, MobileNetV2 has 52'); the reference now has that head too, and agrees through
    the pooling window and the grid of probabilities."""
    from onnx_graphs import lively_weights, our_exports
    slim = lively_weights(MobileNetV2((256, 256, 3), alpha=0.35, weights=None, top_pooling="7x7"), seed=4)
    files = our_exports(slim, tmp_path, "slim")
    for path in files:
        for weights in (None, slim):  # OTHER's own weights, or ours
            report = compare(path, weights=weights, random=1)
            assert report["agrees"] and report["unmapped"] == [], path
            assert [r["layer"] for r in report["layers"][-2:]] == ["average_pooling2d", "predictions"]
            assert report["layers"][-1]["shape"] == [2, 2, 1000] and report["head"] == "softmax"
    assert report["layers"][-2]["how"].startswith("average pooling window")
    # the weights as a transformers checkpoint: the reference is the checkpoint's graph with
    # OTHER's head (the pooling window), not transformers' global pooling
    from mobilenetv2.hf import save_pretrained
    plain = MobileNetV2((256, 256, 3), alpha=0.35, weights=None)  # transformers pools globally
    plain.set_weights(slim.get_weights())
    folder = save_pretrained(plain, tmp_path / "ckpt")
    report = compare(files[0], weights=str(folder), random=1)
    assert report["agrees"] and report["layers"][-1]["shape"] == [2, 2, 1000], report["first_divergent_layer"]
    # the same graph with a global pooling where TF-slim's window belongs diverges there
    path = _edit(files[0], tmp_path / "global.onnx", lambda g: [
        n.CopyFrom(helper.make_node("GlobalAveragePool", list(n.input), list(n.output), name=n.name))
        for n in g.node if n.op_type == "AveragePool"])
    report = compare(path, weights=slim, random=1)
    assert report["first_divergent_layer"] == "average_pooling2d"


# -- 5: a closest candidate only where it helps ---------------------------------------------------
def test_no_closest_candidate_that_does_not_reduce_the_error(model, clean, tmp_path, capsys):
    """One channel of block_7's depthwise output scaled by 1.01 after its ReLU6 (a Mul no layer
    of MobileNetV2 has): nothing compare models explains it, and no candidate that leaves the error
    as it was (an epsilon equal to the reference's once printed) is offered as the closest."""
    def one_channel(g):
        channels = numpy_helper.to_array(_init(g, "block_7_depthwise/W")).shape[0]
        scale = np.ones((1, channels, 1, 1), np.float32)
        scale[0, 5] = 1.01
        g.initializer.append(numpy_helper.from_array(scale, "one_channel"))
        for n in g.node:
            n.input[:] = ["scaled" if i == "block_7_depthwise_relu" else i for i in n.input]
        i = next(k for k, n in enumerate(g.node) if n.output[0] == "block_7_depthwise_relu")
        g.node.insert(i + 1, helper.make_node("Mul", ["block_7_depthwise_relu", "one_channel"], ["scaled"]))
    path = _edit(clean, tmp_path / "chan.onnx", one_channel)
    w = tmp_path / "w.h5"
    model.save_weights(w)
    assert main(["compare", path, "--weights", str(w), "--json", str(tmp_path / "r.json")]) == 1
    text = capsys.readouterr().out
    d = json.loads((tmp_path / "r.json").read_text())["diagnosis"]
    assert d["layer"] == "block_7_project_BN" and d["cause"] == "unexplained" and d["evidence"] == [], text
    assert "no candidate reduced the error" in text and "closest (not confirmed)" not in text


def _report(diagnosis):
    """The least report format_table prints: one divergent layer and ``diagnosis``."""
    row = {"layer": "Conv1", "how": "Conv", "agrees": False, "ratio": 500.0, "rel_l2": 5e-5, "max_abs": 1e-4,
           "cosine": 0.99999, "floor_rel_l2": 1e-7}
    return {"layers": [row], "first_divergent_layer": "Conv1", "agrees": False, "factor": 30.0, "floor": "float32",
            "other": {"source": "m.onnx", "kind": "onnx", "input_layout": "NCHW"},
            "weights": {"source": "w.h5", "cannot_detect": "-"}, "input": {"source": "random", "shape": [1, 8, 8, 3]},
            "diagnosis": dict({"layer": "Conv1", "also": [], "further": [], "tried": 7}, **diagnosis)}


def test_an_unexplained_layer_names_its_closest_candidate_only_where_there_is_one():
    from mobilenetv2.tools.compare.report import format_table
    closest = {"cause": "unexplained", "applied": "epsilon 1e-5 in bn_Conv1", "detail": {},
               "before": {"rel_l2": 5e-5, "ratio": 500.0}, "after": {"rel_l2": 2e-5, "ratio": 200.0}}
    text = format_table(_report({"cause": "unexplained", "evidence": [closest]}))
    assert "closest (not confirmed): epsilon 1e-5 in bn_Conv1" in text and "no candidate reduced" not in text
    text = format_table(_report({"cause": "unexplained", "evidence": []}))
    assert "no candidate reduced the error" in text and "closest" not in text and "(7 suspected defects tried)" in text


def test_the_table_shows_three_layers_past_the_first_divergent_one():
    from mobilenetv2.tools.compare.report import format_table
    report = _report({"cause": "unexplained", "evidence": []})
    rows = [dict(report["layers"][0], layer=f"layer_{i}", agrees=i < 2) for i in range(10)]
    report.update(layers=rows, first_divergent_layer="layer_2")
    text = format_table(report)
    assert ">> layer_2" in text and "layer_5" in text and "layer_6" not in text
    assert "... 4 more layers (--all to show them)" in text
    every = format_table(report, all_layers=True)
    assert "layer_9" in every and "more layers" not in every


def _weight_ref(model, other_layers):
    """What weight_diffs reads of compare's reference: its layers, OTHER's own model, no grids."""
    import types
    ref = types.SimpleNamespace(quant=None, layers=model.layers,
                                other_model=types.SimpleNamespace(layers=other_layers))
    ref.reader_of = lambda name, kind: next((x for x in model.layers if name in x.inputs and isinstance(x, kind)), None)
    return ref


def test_weight_diffs_of_a_layer_without_bias_and_of_another_graph():
    """A layer whose reference bias is 0 everywhere (beta = mean = 0) has no 'share of the
    largest bias' (None, not inf); OTHER's model missing a batch norm the reference has is
    another graph (a DeepLabV3's): nothing compared, no KeyError."""
    import copy
    from mobilenetv2.tools.compare.weight_diff import weight_diffs
    model = lively_weights(MobileNetV2((32, 32, 3), alpha=0.35, weights=None, include_top=False), seed=4)
    bn = model.get_layer("bn_Conv1")
    g, beta, mean, var = bn.get_weights()
    bn.set_weights([g, np.zeros_like(beta), np.zeros_like(mean), var])
    other = [copy.deepcopy(x) for x in model.layers]
    theirs = next(x for x in other if x.name == "bn_Conv1")
    theirs.set_weights([g, np.full_like(beta, 0.01), np.zeros_like(mean), var])  # every bias moved by 0.01
    diffs = weight_diffs(_weight_ref(model, other))
    assert list(diffs) == ["Conv1"]
    row = diffs["Conv1"].report()
    assert row["bias_channels_shifted"] == beta.size and row["max_bias_shift"] == pytest.approx(0.01, rel=1e-6)
    assert row["max_bias_shift_of_max_bias"] is None and row["kernel_values_off"] == 0
    assert weight_diffs(_weight_ref(model, [x for x in other if x.name != "bn_Conv1"])) == {}


def test_the_lines_of_layers_whose_weights_differ():
    from mobilenetv2.tools.compare.report import WEIGHT_LINES, _weight_lines
    moved = {"layer": "Conv1", "kernel_values_off": 0, "kernel_values": 864, "bias_channels_shifted": 3,
             "max_bias_shift": 0.01, "max_bias_shift_in_bias_scales": 2.0, "max_bias_shift_of_max_bias": 0.05}
    off = dict(moved, layer="block_1_project", kernel_values_off=5, bias_channels_shifted=0,
               max_bias_shift_in_bias_scales=None, max_bias_shift_of_max_bias=None)
    assert _weight_lines([moved, off]) == [
        "    Conv1: kernel within rounding of the reference's; 3 bias channel(s) moved, by up to 0.01 "
        "(2 x its bias scale, 5 % of its largest bias)",
        "    block_1_project: 5 of 864 kernel values off"]
    many = _weight_lines([off] * (WEIGHT_LINES + 2))
    assert len(many) == WEIGHT_LINES + 1 and many[-1] == "    ... 2 more layers (listed in the JSON)"


def test_a_defect_found_after_rounding_leads_and_keeps_every_other_cause():
    """compare's diagnosis from the causes found in turn: rounding (precision) found first goes to
    the defect's ``also`` and to ``further`` with every cause after the defect, in order."""
    from mobilenetv2.tools.compare.api import _defect_first
    found = [{"cause": c, "also": [], "layer": f"L{i}"} for i, c in
             enumerate(["precision", "padding", "bn_epsilon", "activation"])]
    d = _defect_first(found)
    assert (d["cause"], d["layer"], d["also"]) == ("padding", "L1", ["precision"])
    assert [f["cause"] for f in d["further"]] == ["precision", "bn_epsilon", "activation"]
    d = _defect_first(found[1:])
    assert d["cause"] == "padding" and [f["cause"] for f in d["further"]] == ["bn_epsilon", "activation"]
    d = _defect_first([found[0], {"cause": "unexplained", "also": [], "layer": "L9"}])
    assert d["cause"] == "precision" and [f["cause"] for f in d["further"]] == ["unexplained"]


def test_one_kernel_channel_off_is_different_weights(model, clean, tmp_path):
    """One channel of one depthwise kernel scaled by 1.01 against the weights it was exported from
    (the case above was 'unexplained' before OTHER's weights were compared with them): different
    weights in that layer alone, its 3x3 values of that channel off, its bias as the reference's."""
    def one_channel(g):
        t = _init(g, "block_7_depthwise/W")
        a = numpy_helper.to_array(t).copy()
        a[5] *= 1.01
        t.CopyFrom(numpy_helper.from_array(a, t.name))
    report = compare(_edit(clean, tmp_path / "chan.onnx", one_channel), weights=model, random=1)
    d = report["diagnosis"]
    assert (d["layer"], d["cause"], d["after_fix"]["agrees"]) == ("block_7_depthwise_BN", "different_weights", True)
    (layer,) = d["evidence"][0]["detail"]["layers"]
    assert (layer["layer"], layer["kernel_values_off"], layer["bias_channels_shifted"]) == ("block_7_depthwise", 9, 0)


def test_one_bias_channel_moved_in_a_float_graph_is_different_weights(model, clean, tmp_path):
    """One channel of one conv's (folded) bias moved by 0.05 in a float export, its kernels left
    as they were: a float graph has no rounding to put that on, so it is different weights in that
    layer alone, one bias channel shifted by 0.05 and no kernel value off."""
    def one_bias(g):
        t = _init(g, "block_5_project/B")
        a = numpy_helper.to_array(t).copy()
        a[3] += 0.05
        t.CopyFrom(numpy_helper.from_array(a, t.name))
    report = compare(_edit(clean, tmp_path / "bias.onnx", one_bias), weights=model, random=1)
    d = report["diagnosis"]
    assert (d["cause"], d["after_fix"]["agrees"]) == ("different_weights", True), d
    (layer,) = d["evidence"][0]["detail"]["layers"]
    assert (layer["layer"], layer["kernel_values_off"], layer["bias_channels_shifted"]) == ("block_5_project", 0, 1)
    assert layer["max_bias_shift"] == pytest.approx(0.05, abs=1e-6)


def _einsum_head(g):
    """The classifier's Gemm written as Einsum + Add (the same arithmetic; an op compare does not
    read as a dense layer)."""
    gemm = _node(g, "predictions")
    x, w, b = gemm.input
    i = list(g.node).index(gemm)
    g.node.remove(gemm)
    g.node.insert(i, helper.make_node("Add", ["logits_einsum", b], ["predictions"]))
    g.node.insert(i, helper.make_node("Einsum", [x, w], ["logits_einsum"], equation="bi,io->bo"))


def test_a_head_not_read_as_a_dense_layer_is_compared_where_it_ends_or_said_not_compared(model, clean, tmp_path):
    """OTHER's classifier in ops compare does not read as a dense layer: the reference dropped
    its head and the report said AGREES over the layers up to the pooling, never saying the
    classifier went unchecked (so an ONNX Runtime dynamically quantized MatMulInteger head, 1.4 %
    off, read as agreeing).  With weights that have the classifier its final output is compared
    (the same arithmetic here: it agrees); with weights read from OTHER, which has no dense layer
    to read, the report names predictions as not compared and the ops it did not read."""
    path = _edit(clean, tmp_path / "einsum.onnx", _einsum_head)
    report = compare(path, weights=model, random=1)
    top = report["layers"][-1]
    assert top["layer"] == "predictions" and top["how"].startswith("OTHER's final output") and report["agrees"], top
    report = compare(path, random=1)
    assert report["layers"][-1]["layer"] == "global_average_pooling2d" and report["agrees"]
    (u,) = report["unmapped"]
    assert u["layer"] == "predictions" and "(Einsum, Add)" in u["why"] and "not compared" in u["why"], u


# -- 6: float16 activations, float32 weights ---------------------------------------------------------
def test_float16_activations_with_float32_weights(model, clean, tmp_path, capsys):
    """A Cast to float16 and back after every Conv, Clip and Add, the weights left float32: the
    activations rounded alone explain it, and the report says so (not 'every weight rounded')."""
    def casts(g):
        nodes = []
        for n in g.node:
            nodes.append(n)
            if n.op_type in ("Conv", "Clip", "Add"):
                out = n.output[0]
                n.output[0] = out + "_f32"
                nodes.append(helper.make_node("Cast", [out + "_f32"], [out + "_h"], to=TensorProto.FLOAT16))
                nodes.append(helper.make_node("Cast", [out + "_h"], [out], to=TensorProto.FLOAT))
        del g.node[:]
        g.node.extend(nodes)
    path = _edit(clean, tmp_path / "f16act.onnx", casts)
    report = compare(path, weights=model, random=1, seed=7)
    d = report["diagnosis"]
    assert (report["first_divergent_layer"], d["cause"], d["also"]) == ("bn_Conv1", "precision", [])
    ev = d["evidence"][0]
    assert ev["detail"]["activations"] == "float16" and ev["detail"]["weights"] == "as given"
    assert "weights as they are" in ev["applied"] and "every weight" not in ev["applied"]
    assert d["after_fix"]["agrees"] and d["after_fix"]["floor"] == "measured float16 (quant.py)"
    assert d["further"] == []
    how = report["layers"][0]["how"]
    assert "Cast to float16 and back" in how and "QuantizeLinear" not in how


# -- 7: smaller wording defects ---------------------------------------------------------------------------
def _input_map(g, ops):
    first = g.node[0]
    first.input[0] = "pre_out"
    prev, new = "input", []
    for i, (op, value) in enumerate(ops):
        g.initializer.append(numpy_helper.from_array(np.asarray(value, np.float32), f"pre_c{i}"))
        out = "pre_out" if i == len(ops) - 1 else f"pre_{i}"
        new.append(helper.make_node(op, [prev, f"pre_c{i}"], [out]))
        prev = out
    for n in reversed(new):
        g.node.insert(0, n)


def test_input_in_0_255_reads_cleanly(model, clean, tmp_path):
    path = _edit(clean, tmp_path / "e255.onnx", lambda g: _input_map(g, [("Mul", 1 / 127.5), ("Sub", 1.0)]))
    d = compare(path, weights=model)["diagnosis"]
    assert d["cause"] == "preprocessing" and d["after_fix"]["agrees"]
    assert "expects input in [0, 255]" in d["evidence"][0]["applied"] and "e-0" not in d["evidence"][0]["applied"]


def test_imagenet_mean_std_inside_the_graph_is_named(model, clean, tmp_path):
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    nhwc = (1, 1, 1, 3)  # export_onnx's input is NHWC
    path = _edit(clean, tmp_path / "meanstd.onnx",
                 lambda g: _input_map(g, [("Sub", mean.reshape(nhwc)), ("Div", std.reshape(nhwc))]))
    d = compare(path, weights=model)["diagnosis"]
    assert d["cause"] == "preprocessing" and d["after_fix"]["agrees"]
    ev = d["evidence"][0]
    assert "ImageNet mean/std" in ev["applied"] and "[0, 1]" in ev["applied"]
    assert np.allclose(ev["detail"]["scale"], 1 / std) and np.allclose(ev["detail"]["offset"], -mean / std)


def test_shapes_that_differ_are_said_so(model, tmp_path, capsys):
    path = torch_style(model, tmp_path / "h1001.onnx", classes_1001=True)
    w = tmp_path / "w.h5"
    model.save_weights(w)
    assert main(["compare", path, "--weights", str(w)]) == 1
    text = capsys.readouterr().out
    assert "before: the shapes differ" in text and "inf" not in text


def test_weights_of_another_alpha_say_the_widths_differ(model, tmp_path):
    other_alpha = MobileNetV2(SHAPE, alpha=0.5, weights=None, classifier_activation=None)
    with pytest.raises(CompareError, match=r"widths differ.*alpha=0.35.*different alpha") as err:
        compare(torch_style(model, tmp_path / "a.onnx"), weights=other_alpha)
    assert "--mapping" not in str(err.value)


# -- hidden states only: defects inside a block OTHER shows only the output of ---------------------
@pytest.mark.parametrize("change,cause,text", [
    (lambda m: setattr(m.get_layer("block_5_depthwise_BN"), "epsilon", 1e-5), "bn_epsilon",
     "epsilon 1e-05 instead of 0.001 in block_5_depthwise_BN (not compared"),
    (lambda m: setattr(m.get_layer("block_5_expand_relu"), "max_value", None), "activation",
     "ReLU (no cap at 6) instead of ReLU6 in block_5_expand_relu (not compared"),
])
def test_a_defect_inside_a_block_a_hidden_states_dump_does_not_show(model, tmp_path, change, cause, text):
    """A dump of block outputs only (as transformers' output_hidden_states gives): a wrong epsilon
    in a depthwise batch norm, or ReLU for ReLU6 after an expand, shows first at the block's
    output. Only pads were tried in the layers between (an epsilon in the block's project BN was
    offered instead); now each unseen batch norm's usual epsilons and each unseen ReLU6."""
    broken = MobileNetV2(SHAPE, alpha=0.35, weights=None, classifier_activation=None, dtype="float64")
    broken.set_weights(model.get_weights())
    change(broken)
    x = np.random.default_rng(5).uniform(-1, 1, (2,) + SHAPE)
    names = [n.name for n in broken.layers if n.name.endswith(("_add", "_project_BN"))
             and n.name != "expanded_conv_project_BN"]
    np.savez(tmp_path / "hidden.npz", input=x.astype(np.float32),
             **{k: v.astype(np.float32) for k, v in broken.features(x, names).items()})
    report = compare(str(tmp_path / "hidden.npz"), weights=model)
    d = report["diagnosis"]
    assert report["first_divergent_layer"] == "block_5_project_BN"
    assert d["cause"] == cause and d["evidence"][0]["applied"].startswith(text)
    assert d["after_fix"]["agrees"]


def test_a_weights_patch_names_its_layers_in_the_plural_and_how_many_more():
    """The text of a weights cause: one layer, two (plural), all three shown, then 'and N more'."""
    from types import SimpleNamespace
    from mobilenetv2.tools.compare.weight_diff import SHOWN, _names
    assert SHOWN == 3
    layers = [SimpleNamespace(layer=f"l{i}") for i in range(5)]
    assert _names(layers[:1]) == "1 layer (l0)"
    assert _names(layers[:2]) == "2 layers (l0, l1)"
    assert _names(layers[:3]) == "3 layers (l0, l1, l2)"
    assert _names(layers) == "5 layers (l0, l1, l2 and 2 more)"


def test_a_dump_of_a_variant_compares_with_the_with_top_file_it_was_made_with(tmp_path, monkeypatch, capsys):
    """`dump --weights 0.35_96` then `compare acts.npz --weights 0.35_96` (the README's recipe):
    a dump of chosen layers has no head, so compare asked for the variant's _no_top file, and with
    downloading off failed (exit 2) where the with-top file the dump was made with, found, holds
    every weight it needs.  Here that file is a lively 0.35_96 model saved under the official
    name, the registry's size and SHA-256 made its."""
    import hashlib

    from PIL import Image

    from mobilenetv2.formats import registry
    folder = tmp_path / "weights"
    folder.mkdir()
    name = registry.weights_filename(0.35, 96, True)
    src = lively_weights(MobileNetV2((96, 96, 3), alpha=0.35, weights=None), seed=11)
    src.save_weights(str(folder / name))
    data = (folder / name).read_bytes()
    real_entry = registry._entry

    def entry(alpha, rows, include_top):
        e = real_entry(alpha, rows, include_top)
        return dict(e, size=len(data), sha256=hashlib.sha256(data).hexdigest()) if e["file"] == name else e
    monkeypatch.setattr(registry, "_entry", entry)
    monkeypatch.setenv("MOBILENETV2_WEIGHTS_DIR", str(folder))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # an empty Keras cache
    monkeypatch.setenv("MOBILENETV2_NO_DOWNLOAD", "1")
    img = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (120, 90, 3), np.uint8)).save(img)
    acts = tmp_path / "acts.npz"
    assert main(["dump", str(img), "--layers", "block_3_expand_relu", "out_relu", "--out", str(acts),
                 "--weights", "0.35_96"]) == 0
    capsys.readouterr()
    assert main(["compare", str(acts), "--weights", "0.35_96"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "AGREES" in out and name in out  # the with-top file named as the reference's weights
    assert registry.find_weights(0.35, 96, False) is None  # and no _no_top file came from anywhere
