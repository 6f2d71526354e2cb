"""The .tflite export computes what the model computes: LiteRT running it against the float64
engine, against the files TensorFlow's own converter made of the same weights (../shared/peers),
and read back with the TFLite schema's generated reader that ships with LiteRT."""
import collections

import numpy as np
import pytest

from mobilenetv2 import ArgumentError, MobileNetV2, OutputPathError, export_tflite

from conftest import EXPORT_CASES, require_shared, synthetic_weight_fn

litert = pytest.importorskip("ai_edge_litert.interpreter",
                             reason="LiteRT is an optional extra (pip install 'mobilenetv2[litert]')")


def rel_l2(a, b):
    return np.linalg.norm(np.float64(a) - b) / np.linalg.norm(np.float64(b))


def run(path, x, threads=1):
    """LiteRT's output for x, and the interpreter's ops by name."""
    it = litert.Interpreter(model_path=str(path), num_threads=threads)
    inp = it.get_input_details()[0]["index"]
    if tuple(it.get_input_details()[0]["shape"]) != x.shape:
        it.resize_tensor_input(inp, list(x.shape))
    it.allocate_tensors()
    it.set_tensor(inp, x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]).copy()


def ops_of(path):
    it = litert.Interpreter(model_path=str(path),
                            experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    return collections.Counter(d["op_name"] for d in it._get_ops_details())


def declared_shapes_are_litert_s(path, dilated_depthwise_version=2):
    """Every tensor's shape as the file declares it (read with LiteRT's generated schema code) is
    the shape LiteRT's own shape inference gives it (a file's declared shapes are what other
    readers, converters and viewers take as they are); and a depthwise convolution with dilation
    is written with that op's version 2, the version TFLite gives dilation (TensorFlow's converter
    writes it so).  Returns the number of tensors checked."""
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    data = open(path, "rb").read()
    g = schema.Model.GetRootAs(data, 0).Subgraphs(0)
    declared = {i: (g.Tensors(i).Name().decode(), g.Tensors(i).ShapeAsNumpy().tolist())
                for i in range(g.TensorsLength())}
    it = litert.Interpreter(model_path=str(path),
                            experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    # (the kernels' own scratch tensors, unnamed, come after the file's)
    inferred = {d["index"]: (d["name"], d["shape"].tolist()) for d in it.get_tensor_details() if d["index"] in declared}
    assert declared == inferred
    m = schema.Model.GetRootAs(data, 0)
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        code = m.OperatorCodes(op.OpcodeIndex())
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) == schema.BuiltinOperator.DEPTHWISE_CONV_2D:
            options = schema.DepthwiseConv2DOptions()
            options.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
            dilated = max(options.DilationHFactor(), options.DilationWFactor()) > 1
            assert code.Version() == (dilated_depthwise_version if dilated else 1)
    return len(declared)


# float32 against float64, relative L2 of the outputs: LiteRT on TensorFlow's own files of the
# synthetic weights measured 0.8e-5 to 1.6e-5 (0.35_96, 1.0_224, three inputs each), on our export
# 0.6e-5 to 1.3e-5, our C engine 0.3e-5 to 1.5e-5 (the 0.35 transformers checkpoint).
TOLERANCE = 5e-5


def float64_twin(model, **kw):
    """The same network and weights in float64: the reference."""
    twin = MobileNetV2(model.input_shape, alpha=model.alpha, weights=None, include_top=model.include_top,
                       pooling=model.pooling, classes=model.classes,
                       classifier_activation=model.classifier_activation, dtype="float64", **kw)
    twin.set_weights(model.get_weights())
    return twin


CASES = EXPORT_CASES + [((64, 64, 3), 1.3, dict(include_top=False, pooling="avg"))]


@pytest.mark.parametrize("shape,alpha,kw", CASES)
def test_litert_runs_the_export_as_the_float64_engine_computes(tmp_path, shape, alpha, kw):
    model = MobileNetV2(shape, alpha=alpha, weights=None, **kw)
    x = np.random.default_rng(0).uniform(-1, 1, (2,) + shape).astype(np.float32)
    path = export_tflite(model, tmp_path / "m.tflite", batch=2)
    got = run(path, x)
    want = float64_twin(model).predict(x.astype(np.float64))
    assert got.shape == want.shape
    assert rel_l2(got, want) <= TOLERANCE


def test_pads_that_same_does_not_give_become_a_pad_op(tmp_path):
    """Keras pads the stride-2 depthwise convs of an odd map by 1 on both sides (correct_pad), which
    TFLite's SAME also does; an even map by 0 and 1, SAME again: so there is no PAD, as in the
    converter's graph.  A transformers checkpoint with tf_padding false pads 1 and 1 on an even
    map: a PAD before each stride-2 convolution, then VALID."""
    import json
    import shutil
    from mobilenetv2 import from_pretrained
    model = MobileNetV2((33, 40, 3), alpha=0.35, weights=None, include_top=False)
    assert "PAD" not in ops_of(export_tflite(model, tmp_path / "keras.tflite"))
    hf = require_shared("hf", "mobilenet_v2_0.35_96")
    folder = tmp_path / "torch_padding"
    shutil.copytree(hf, folder)
    config = json.loads((folder / "config.json").read_text())
    config["tf_padding"] = False
    (folder / "config.json").write_text(json.dumps(config))
    path = export_tflite(from_pretrained(folder), tmp_path / "hf.tflite", input_size=(96, 96))
    assert ops_of(path)["PAD"] == 5  # the stem and the four stride-2 depthwise convs
    assert declared_shapes_are_litert_s(path) > 100  # the padded maps' among them
    x = np.random.default_rng(2).uniform(-1, 1, (1, 96, 96, 3)).astype(np.float32)
    want = from_pretrained(folder, dtype="float64").predict(x.astype(np.float64))
    assert rel_l2(run(path, x), want) <= TOLERANCE


@pytest.mark.parametrize("variant", ["0.35_96", "0.5_160", "1.0_224", "1.4_224"])
def test_the_same_graph_and_outputs_as_tensorflow_s_converter(tmp_path, variant):
    """../shared/peers holds what TensorFlow's converter made of a Keras MobileNetV2 with the
    synthetic weights: our export of the same weights has the same ops and LiteRT gives the same
    outputs (to float32 rounding) for both."""
    theirs = require_shared("peers", f"mobilenet_v2_{variant}_synthetic.tflite")
    fn = synthetic_weight_fn()
    alpha, res = float(variant.split("_")[0]), int(variant.split("_")[1])
    model = MobileNetV2((res, res, 3), alpha=alpha, weights=None)
    model.set_weights([fn(layer.name, w, s) for layer in model.weighted_layers()
                       for w, s in zip(layer.weight_names, layer.weight_shapes())])
    ours = export_tflite(model, tmp_path / "m.tflite")
    assert ops_of(ours) == ops_of(theirs)
    x = np.random.default_rng(3).uniform(-1, 1, (1, res, res, 3)).astype(np.float32)
    want = float64_twin(model).predict(x.astype(np.float64))
    ours_y, theirs_y = run(ours, x), run(theirs, x)
    assert rel_l2(theirs_y, want) <= TOLERANCE  # the reference agrees with TensorFlow's file
    assert rel_l2(ours_y, want) <= TOLERANCE
    assert rel_l2(ours_y, theirs_y) <= TOLERANCE


def test_the_schema_s_own_reader_reads_it(tmp_path):
    """Read back with LiteRT's generated TFLite schema code (not the exporter's writer): identifier,
    version, the subgraph's input and output, every constant's bytes where its shape says and on
    16 bytes, as the schema's force_align asks."""
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    model = MobileNetV2((64, 48, 3), alpha=0.35, weights=None, classes=7)
    path = export_tflite(model, tmp_path / "m.tflite", batch=3)
    data = path and open(path, "rb").read()
    assert data[4:8] == b"TFL3"
    m = schema.Model.GetRootAs(data, 0)
    assert m.Version() == 3 and m.SubgraphsLength() == 1
    g = m.Subgraphs(0)
    tin, tout = g.Tensors(g.Inputs(0)), g.Tensors(g.Outputs(0))
    assert tin.ShapeAsNumpy().tolist() == [3, 64, 48, 3] and tout.ShapeAsNumpy().tolist() == [3, 7]
    assert m.Buffers(0).DataLength() == 0  # buffer 0: the empty one, for tensors without data
    weights = dict(zip([f"{layer.name}/{w}" for layer in model.weighted_layers() for w in layer.weight_names],
                       model.get_weights()))
    constants = 0
    for i in range(g.TensorsLength()):
        t = g.Tensors(i)
        if t.Buffer() == 0:
            continue
        constants += 1
        buf = m.Buffers(t.Buffer())
        n = int(np.prod(t.ShapeAsNumpy()))
        assert buf.DataLength() == 4 * n
        start = buf._tab.Vector(buf._tab.Offset(4))
        assert start % 16 == 0
        if t.Name().decode() == "predictions/kernel":  # the head as it is: transposed, not folded
            got = np.frombuffer(data, "<f4", n, start).reshape(t.ShapeAsNumpy())
            np.testing.assert_array_equal(got, weights["predictions/kernel"].T)
    assert constants == 2 * (35 + 17) + 1 + 2  # convolutions' kernels and biases, MEAN's axes, the head


def test_every_tensor_named_after_a_keras_layer_holds_that_layer(tmp_path):
    """A tensor's name is the Keras layer whose output it holds, so a dump of LiteRT's tensors by
    name reads as our own ``dump``: a convolution with its batch norm folded and ReLU6 fused
    outputs the ReLU6's values (``Conv1_relu``), and was named after the batch norm (``bn_Conv1``)."""
    model = MobileNetV2((96, 96, 3), alpha=0.35, weights=None, classifier_activation=None)
    x = np.random.default_rng(6).uniform(-1, 1, (1, 96, 96, 3)).astype(np.float32)
    it = litert.Interpreter(model_path=str(export_tflite(model, tmp_path / "m.tflite")),
                            experimental_preserve_all_tensors=True,
                            experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    want = float64_twin(model).trace(x.astype(np.float64))
    got = {d["name"]: it.get_tensor(d["index"]) for d in it.get_tensor_details() if d["name"] in want}
    assert "Conv1_relu" in got and "bn_Conv1" not in got  # a fused conv's output is its activation's
    assert len(got) == 35 + 17 + 10 + 2  # convolutions' outputs, adds, the pooling, the head
    for name, array in got.items():
        assert rel_l2(array, want[name]) <= TOLERANCE, name


def test_refusals(tmp_path):
    dynamic = MobileNetV2(None, alpha=0.35, include_top=False, weights=None)
    with pytest.raises(ArgumentError, match="static"):
        export_tflite(dynamic, tmp_path / "m.tflite")
    model = MobileNetV2((32, 32, 3), alpha=0.35, include_top=False, weights=None)
    for batch in (0, -1, 1.5, True, 5000):
        with pytest.raises(ArgumentError, match="batch"):
            export_tflite(model, tmp_path / "m.tflite", batch=batch)
    with pytest.raises(OutputPathError):
        export_tflite(model, tmp_path)
    for not_a_model in ("m.h5", None, model.layers):  # was an AttributeError
        with pytest.raises(ArgumentError, match="takes a model"):
            export_tflite(not_a_model, tmp_path / "m.tflite")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("shape,grid", [((224, 224, 3), 1), ((320, 320, 3), 4)])
def test_tf_slim_s_7x7_head(tmp_path, shape, grid):
    """AVERAGE_POOL_2D, then the dense layer as a 1x1 CONV_2D over its grid and a SOFTMAX per cell:
    a 320x320 input gives a 4x4 grid of scores."""
    model = MobileNetV2(shape, alpha=0.35, weights=None, top_pooling="7x7")
    path = export_tflite(model, tmp_path / "slim.tflite")
    assert ops_of(path)["AVERAGE_POOL_2D"] == 1
    x = np.random.default_rng(5).uniform(-1, 1, (1,) + shape).astype(np.float32)
    got = run(path, x)
    assert got.shape == (1, grid, grid, 1000)
    assert rel_l2(got, float64_twin(model, top_pooling="7x7").predict(x.astype(np.float64))) <= TOLERANCE


def test_deeplabv3_as_transformers_computes_it(tmp_path):
    """The segmentation checkpoint (dilated depthwise convolutions, the pooled branch resized with
    align_corners, the concatenation) against the logits transformers computed for the panda."""
    from mobilenetv2 import from_pretrained
    folder = require_shared("hf", "deeplabv3_mobilenet_v2_1.0_513")
    ref = np.load(require_shared("reference", "hf", "deeplabv3_mobilenet_v2_1.0_513.npz"))
    path = export_tflite(from_pretrained(folder), tmp_path / "deeplab.tflite", input_size=(513, 513))
    ops = ops_of(path)
    assert ops["RESIZE_BILINEAR"] == 1 and ops["CONCATENATION"] == 1
    # tf_padding: every convolution pads TF-SAME, the dilated depthwise ones over their 2d+1 window:
    # each is written with padding SAME, as TensorFlow's converter writes them, and no PAD op
    assert ops["DEPTHWISE_CONV_2D"] == 17 and "PAD" not in ops
    x = np.ascontiguousarray(ref["panda/pixel_values"].transpose(0, 2, 3, 1))
    assert rel_l2(run(path, x), ref["panda/logits"].transpose(0, 2, 3, 1)) <= TOLERANCE


def test_deeplabv3_at_another_size_as_the_float64_engine(tmp_path):
    """At 129x97 the pooled branch is resized to 17x13."""
    from mobilenetv2 import from_pretrained
    folder = require_shared("hf", "deeplabv3_mobilenet_v2_1.0_513")
    x = np.random.default_rng(6).uniform(-1, 1, (1, 129, 97, 3)).astype(np.float32)
    path = export_tflite(from_pretrained(folder), tmp_path / "deeplab.tflite", input_size=(129, 97))
    assert "PAD" not in ops_of(path)  # at this size too
    assert declared_shapes_are_litert_s(path) > 100  # dilated depthwise convolutions: version 2
    assert rel_l2(run(path, x), from_pretrained(folder, dtype="float64").predict(x.astype(np.float64))) <= TOLERANCE


class _Tiny:
    """The exporter's view of a model (its layers in order, input shape, name): a 3x3 stride-2
    convolution and a resize back to the input's size, which DeepLabV3 only does from 1x1."""
    name = "tiny"
    input_shape = (9, 7, 4)

    def __init__(self, align_corners):
        from mobilenetv2.network import layers as L
        rng = np.random.default_rng(7)
        conv = L.Conv2D("down", ["input"], 4, 5, kernel=3, stride=2, use_bias=True)
        conv.set_weights([rng.uniform(-1, 1, (3, 3, 4, 5)), rng.uniform(-1, 1, 5)], np.float64)
        self.layers = [L.InputLayer("input"), conv,
                       L.ResizeBilinear("up", ["down", "input"], align_corners=align_corners)]

    def __call__(self, x):
        return self.layers[2](self.layers[1](x), x)


@pytest.mark.parametrize("align_corners", [True, False])
def test_a_resize_from_more_than_one_pixel(tmp_path, align_corners):
    """PyTorch's bilinear resize: align_corners, or half-pixel centers (TFLite's half_pixel_centers)."""
    model = _Tiny(align_corners)
    path = export_tflite(model, tmp_path / "tiny.tflite")
    x = np.random.default_rng(8).uniform(-1, 1, (1, 9, 7, 4))
    got = run(path, x.astype(np.float32))
    assert got.shape == (1, 9, 7, 5)
    assert rel_l2(got, model(x)) <= TOLERANCE


def test_compare_reads_the_export_back_and_agrees_layer_by_layer(tmp_path):
    """``mobilenetv2 compare`` on an exported file (a variant TensorFlow made no file of here): it
    recovers the weights from the file and finds every layer within the float32 noise floor."""
    import json
    from mobilenetv2.cli import main
    path = export_tflite(MobileNetV2((128, 128, 3), alpha=0.75, weights=None), tmp_path / "m.tflite")
    out = tmp_path / "r.json"
    assert main(["compare", str(path), "--random", "1", "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert report["agrees"] and report["other"]["kind"] == "tflite"
    assert report["weights"]["source"].startswith("read from OTHER")
    assert len(report["layers"]) == 64  # 52 convolutions' outputs, 10 adds, the pooling, the head


def test_the_bench_times_litert_on_an_export_where_shared_has_no_file(tmp_path, monkeypatch):
    """Any variant gets a LiteRT row: without a converter's file in shared/peers the bench exports
    the model it times for every engine, and the run's header says so."""
    from mobilenetv2.tools import benchmark
    monkeypatch.setattr(benchmark, "shared_dir", lambda: None)
    assert benchmark.litert_source("0.75_128") == "export_tflite"
    model = MobileNetV2((128, 128, 3), alpha=0.75, weights=None)
    path = benchmark.litert_file(model, "0.75_128", 2, tmp_path)
    assert path.parent == tmp_path
    x = np.random.default_rng(4).uniform(-1, 1, (2, 128, 128, 3)).astype(np.float32)
    assert rel_l2(run(path, x), float64_twin(model).predict(x.astype(np.float64))) <= TOLERANCE


def test_the_bench_times_tensorflow_s_file_where_there_is_one(monkeypatch):
    from mobilenetv2.tools import benchmark
    theirs = require_shared("peers", "mobilenet_v2_0.35_96_synthetic.tflite")
    monkeypatch.setattr(benchmark, "shared_dir", lambda: theirs.parent.parent)
    assert benchmark.litert_file(None, "0.35_96", 1, None) == theirs
    assert benchmark.litert_source("0.35_96") == "TensorFlow's converter (shared/peers)"
