"""The ONNX export computes what the model computes (checked with onnx's reference evaluator,
and ONNX Runtime where installed)."""
import os

import numpy as np
import pytest

from mobilenetv2 import MobileNetV2, export_onnx

from conftest import EXPORT_CASES

onnx = pytest.importorskip("onnx", reason="onnx is an optional extra (pip install 'mobilenetv2[onnx]')")


def rel_l2(a, b):
    return np.linalg.norm(np.float64(a) - b) / np.linalg.norm(np.float64(b))


CASES = EXPORT_CASES


@pytest.mark.parametrize("shape,alpha,kw", CASES)
def test_reference_evaluator(tmp_path, shape, alpha, kw):
    from onnx.reference import ReferenceEvaluator
    model = MobileNetV2(shape, alpha=alpha, weights=None, **kw)
    x = np.random.default_rng(0).uniform(-1, 1, (1,) + shape).astype(np.float32)
    path = export_onnx(model, tmp_path / "m.onnx")
    onnx.checker.check_model(onnx.load(path))
    (got,) = ReferenceEvaluator(path).run(None, {"input": x})
    want = model.predict(x)
    assert got.shape == want.shape
    assert rel_l2(got, want) <= 1e-5


@pytest.mark.parametrize("shape,alpha,kw", CASES)
def test_onnxruntime(tmp_path, shape, alpha, kw):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (a benchmark peer)")
    model = MobileNetV2(shape, alpha=alpha, weights=None, **kw)
    x = np.random.default_rng(1).uniform(-1, 1, (2,) + shape).astype(np.float32)
    path = export_onnx(model, tmp_path / "m.onnx", batch=None)
    (got,) = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": x})
    assert rel_l2(got, model.predict(x)) <= 1e-5


def test_an_existing_folder_is_not_an_output_path(tmp_path):
    from mobilenetv2 import OutputPathError
    with pytest.raises(OutputPathError, match="existing folder"):
        export_onnx(MobileNetV2((32, 32, 3), alpha=0.35, include_top=False, weights=None), tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("size", [(224,), (224, 224, 3), (224.5, 224), ("96", "96"), (96, None), 96, "96"])
def test_an_input_size_that_is_not_two_whole_numbers_is_refused(tmp_path, size):
    """input_size is (height, width): one number, three, a fraction, strings or a None among
    them are refused with the argument named, before a file exists (the other size checks,
    32..4096 and against a fixed input, come after this one)."""
    from mobilenetv2 import ArgumentError
    model = MobileNetV2((None, None, 3), alpha=0.35, weights=None, include_top=False)
    with pytest.raises(ArgumentError, match=r"^export_onnx: input_size must be \(height, width\), two whole numbers"):
        export_onnx(model, tmp_path / "m.onnx", input_size=size)
    assert not os.listdir(tmp_path)


def test_a_layer_the_exporter_does_not_write_is_refused(tmp_path):
    """Every layer the package builds is written by its own branch; a layer of a kind the
    exporter has none for (a new one, or a user's) is refused by name, not left out of the
    graph (the file would then compute another network), and nothing is written."""
    from mobilenetv2 import ArgumentError
    from mobilenetv2.network import layers as L

    class Mystery(L.Layer):  # an identity the shapes pass through
        def output_shape(self, shape):
            return shape

        def __call__(self, x):
            return x

    model = MobileNetV2((96, 96, 3), alpha=0.35, weights=None, include_top=False)
    i = next(i for i, layer in enumerate(model.layers) if layer.name == "block_3_expand_relu")
    model.layers[i] = Mystery("block_3_expand_relu", model.layers[i].inputs)
    with pytest.raises(ArgumentError, match=r"export_onnx cannot export layer 'block_3_expand_relu' \(Mystery\)"):
        export_onnx(model, tmp_path / "m.onnx")
    assert not os.listdir(tmp_path)


def test_needs_a_static_shape(tmp_path):
    with pytest.raises(ValueError, match="static"):
        export_onnx(MobileNetV2(None, alpha=0.35, include_top=False, weights=None), tmp_path / "m.onnx")


@pytest.mark.parametrize("not_a_model", ["m.h5", None])
def test_needs_a_model(tmp_path, not_a_model):
    from mobilenetv2 import ArgumentError
    with pytest.raises(ArgumentError, match="export_onnx takes a model"):  # was an AttributeError
        export_onnx(not_a_model, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_model_over_2_gib_is_refused_before_any_work(tmp_path):
    """alpha=4 with 100,000 classes (each within its bounds) is 2.04 GiB of float32 weights: onnx
    failed after 37 s with protobuf's 'EncodeError: Failed to serialize proto', and export_tflite
    wrote a 2.2 GB file LiteRT refuses ('not a valid Flatbuffer buffer'). Refused up front, by the
    weights' size: a file is its float32 weights and under 1 MiB more (measured below)."""
    import types
    from mobilenetv2 import ArgumentError, export_tflite
    from mobilenetv2.network import arch
    huge = types.SimpleNamespace(input_shape=(32, 32, 3), layers=arch.build_layers(4.0, classes=100000))
    for export in (export_onnx, export_tflite):
        with pytest.raises(ArgumentError, match=r"2\.04 GiB .* more than the 2 GiB"):
            export(huge, tmp_path / "m")
    assert list(tmp_path.iterdir()) == []
    for kw in (dict(classes=7), dict(include_top=False), dict(top_pooling="7x7")):
        model = MobileNetV2((96, 96, 3), alpha=0.35, weights=None, **kw)
        for export in (export_onnx, export_tflite):
            size = os.path.getsize(export(model, tmp_path / "m"))
            assert 0 <= size - arch.export_bytes(model) < 2 ** 20, (kw, export)


# The IR version each opset first shipped with, from onnx's release table (onnx.helper.VERSION_TABLE):
# written out here so the test does not check the exporter against the function the exporter calls.
IR_FOR_OPSET = {13: 7, 14: 7, 15: 8, 16: 8, 17: 8, 18: 8, 19: 9, 20: 9, 21: 10}


@pytest.mark.parametrize("opset", sorted(IR_FOR_OPSET))
def test_ir_version_goes_with_the_opset(tmp_path, opset):
    model = MobileNetV2((32, 32, 3), alpha=0.35, include_top=False, weights=None)
    path = export_onnx(model, tmp_path / "m.onnx", opset=opset)
    m = onnx.load(path)
    assert m.ir_version == IR_FOR_OPSET[opset]
    assert [(o.domain, o.version) for o in m.opset_import] == [("", opset)]
    # the table itself: the first onnx release carrying this opset wrote this IR version
    first = min((row for row in onnx.helper.VERSION_TABLE if row[2] >= opset), key=lambda r: r[2])
    assert first[1] == IR_FOR_OPSET[opset]
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (a benchmark peer)")
    x = np.random.default_rng(opset).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    (got,) = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": x})
    assert rel_l2(got, model.predict(x)) <= 1e-5


@pytest.mark.parametrize("opset", [12, 22, "13", True, 13.0, np.int8(12)])
def test_opset_out_of_range(tmp_path, opset):
    model = MobileNetV2((32, 32, 3), alpha=0.35, include_top=False, weights=None)
    with pytest.raises(ValueError, match="opset must be a whole number from 13 to 21, got"):
        export_onnx(model, tmp_path / "m.onnx", opset=opset)


def test_opset_a_numpy_integer(tmp_path):
    """As batch takes one: was refused as 'opset must be an integer ..., got np.int64(17)'."""
    path = export_onnx(MobileNetV2((32, 32, 3), alpha=0.35, include_top=False, weights=None), tmp_path / "m.onnx",
                       opset=np.int64(17))
    assert [(o.domain, o.version) for o in onnx.load(path).opset_import] == [("", 17)]


# The oldest ONNX Runtime the README claims: the first release with wheels for the Pythons we support
# (3.11) is 1.15.1. It runs opsets 13-19 with a fixed batch, 13-18 with a dynamic one (at 19 the
# dynamic batch's Reshape is Reshape-19, which 1.15 has no kernel for), and TF-slim's 7x7 head at
# 13-18 only (AveragePool-19 has none either). CI installs it in a venv of its own (.ci/run).
OLDEST_ORT = "1.15.1"


def oldest_ort_cases():
    """(model, batch, input_size, opsets) for each model family the README says 1.15.1 runs."""
    from mobilenetv2.hf import HFMobileNetV2
    from mobilenetv2.formats.hf_config import HFConfig
    plain = MobileNetV2((96, 96, 3), alpha=0.35, weights=None)
    slim = MobileNetV2((256, 224, 3), alpha=0.35, weights=None, top_pooling="7x7")  # a 2x1 grid of scores
    deeplab = HFMobileNetV2(HFConfig(depth_multiplier=0.35, output_stride=8, head="segmentation",
                                     id2label={i: str(i) for i in range(5)}))
    return [(plain, 1, None, range(13, 20)), (plain, None, None, range(13, 19)),
            (slim, 1, None, range(13, 19)), (slim, None, None, range(13, 19)),
            (deeplab, 1, (64, 48), range(13, 20))]


def test_the_oldest_claimed_onnx_runtime_runs_every_opset_it_reads(tmp_path):
    import json
    import os
    import subprocess
    python = os.environ.get("MOBILENETV2_OLDEST_ORT_PYTHON")
    if not python:
        pytest.skip(f"needs MOBILENETV2_OLDEST_ORT_PYTHON: a Python with onnxruntime=={OLDEST_ORT} and "
                    "numpy<2 (CI makes one in .ci/run)")
    files = []
    for i, (model, batch, size, opsets) in enumerate(oldest_ort_cases()):
        x = np.random.default_rng(7).uniform(-1, 1, (batch or 2,) + (size or model.input_shape[:2]) + (3,))
        np.save(tmp_path / f"x{i}.npy", x.astype(np.float32))
        files += [(model, str(export_onnx(model, tmp_path / f"m{i}-{opset}.onnx", opset=opset, batch=batch,
                                          input_size=size)), str(tmp_path / f"x{i}.npy")) for opset in opsets]
    script = (
        "import json, sys, numpy as np, onnxruntime as ort\n"
        "for f, x in zip(sys.argv[1::2], sys.argv[2::2]):\n"
        "    (y,) = ort.InferenceSession(f, providers=['CPUExecutionProvider']).run(None, {'input': np.load(x)})\n"
        "    np.save(f + '.out.npy', y)\n"
        "print(json.dumps(ort.__version__))\n")
    done = subprocess.run([python, "-c", script, *(a for _, f, xf in files for a in (f, xf))],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == OLDEST_ORT
    for model, f, xf in files:
        assert rel_l2(np.load(f + ".out.npy"), model.predict(np.load(xf))) <= 1e-5, f


@pytest.mark.parametrize("shape,grid,activation", [((320, 320, 3), 4, "softmax"), ((224, 224, 3), 1, "softmax"),
                                                   ((288, 256, 3), 3, None)])
def test_tf_slim_s_7x7_head(tmp_path, shape, grid, activation):
    """AveragePool 7x7 (VALID, stride 1), then the dense layer as a 1x1 Conv over its grid and a
    Softmax per cell (was a NotImplementedError), against the float64 engine in ONNX Runtime."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (a benchmark peer)")
    model = MobileNetV2(shape, alpha=0.35, weights=None, top_pooling="7x7", classifier_activation=activation)
    twin = MobileNetV2(shape, alpha=0.35, weights=None, top_pooling="7x7", classifier_activation=activation,
                       dtype="float64")
    x = np.random.default_rng(4).uniform(-1, 1, (2,) + shape).astype(np.float32)
    path = export_onnx(model, tmp_path / "slim.onnx", batch=None)
    (got,) = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": x})
    want = twin.predict(x.astype(np.float64))
    assert got.shape == want.shape and want.shape[1] == grid
    assert rel_l2(got, want) <= max(1e-5, 3 * rel_l2(model.predict(x), want))  # float32 rounding, as ours


def test_transformers_checkpoint_with_the_7x7_head(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (a benchmark peer)")
    from conftest import require_shared
    from mobilenetv2 import from_pretrained
    folder = require_shared("hf", "mobilenet_v2_0.35_96")
    model = from_pretrained(folder, top_pooling="7x7")
    x = np.random.default_rng(5).uniform(-1, 1, (1, 320, 256, 3)).astype(np.float32)
    path = export_onnx(model, tmp_path / "slim.onnx", input_size=(320, 256))
    (got,) = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": x})
    want = from_pretrained(folder, top_pooling="7x7", dtype="float64").predict(x.astype(np.float64))
    assert got.shape == want.shape == (1, 4, 2, 1001)  # a 10x8 map: a 4x2 grid of 7x7 windows
    assert rel_l2(got, want) <= max(1e-5, 3 * rel_l2(model.predict(x), want))  # float32 rounding, as ours


def test_an_export_past_2_gib_is_refused_before_writing(tmp_path, monkeypatch):
    """A protobuf message holds 2**31 - 1 bytes; with 1 MiB kept for the graph, weights of
    2**31 - 1 - 2**20 bytes are the most exported.  (No real model is that big: the count is set.)"""
    from mobilenetv2.network import arch
    model = MobileNetV2((32, 32, 3), alpha=0.35, include_top=False, weights=None)
    monkeypatch.setattr(arch, "export_bytes", lambda m: 2 ** 31 - 1 - 2 ** 20)
    arch.check_export_bytes(model, "export_onnx")
    monkeypatch.setattr(arch, "export_bytes", lambda m: 2 ** 31 - 2 ** 20)
    with pytest.raises(ValueError, match="export_onnx: this model's weights are 2.00 GiB in float32, more than the 2 GiB"):
        arch.check_export_bytes(model, "export_onnx")
    with pytest.raises(ValueError, match="export_onnx: this model's weights"):
        export_onnx(model, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []
