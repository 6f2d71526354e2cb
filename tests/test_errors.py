"""Every exception the package raises on purpose is a mobilenetv2.errors.Error, and keeps the
built-in base that existing ``except ValueError`` / ``except OSError`` code relies on."""
import importlib

import pytest

import mobilenetv2
from mobilenetv2.errors import Error

# (module, class name, the built-in base it must keep)
CLASSES = [
    ("mobilenetv2.errors", "WeightsError", ValueError),
    ("mobilenetv2.errors", "ImageError", ValueError),
    ("mobilenetv2.errors", "ArgumentError", ValueError),
    ("mobilenetv2.errors", "DownloadError", OSError),
    ("mobilenetv2.errors", "OutputPathError", OSError),
    ("mobilenetv2.engines.pool", "ThreadsError", ValueError),
    ("mobilenetv2.formats.safetensors", "SafetensorsError", ValueError),
    ("mobilenetv2.hf", "CheckpointError", ValueError),
    ("mobilenetv2.formats.hf_config", "ConfigError", ValueError),
    ("mobilenetv2.tools.compare.errors", "CompareError", ValueError),
    ("mobilenetv2.tools.compare.errors", "MissingExtra", ImportError),
    ("mobilenetv2.engines.native", "EngineUnavailable", RuntimeError),
    ("mobilenetv2.files", "NotRegularFile", ValueError),
    ("mobilenetv2.ray", "RayJobFailed", RuntimeError),
]


@pytest.mark.parametrize("module,name,builtin", CLASSES, ids=[c[1] for c in CLASSES])
def test_each_exception_is_an_error_and_keeps_its_base(module, name, builtin):
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, Error)
    assert issubclass(cls, builtin)


@pytest.mark.parametrize("name", ["Error", "WeightsError", "ImageError", "ArgumentError", "DownloadError",
                                  "OutputPathError", "ThreadsError", "SafetensorsError", "CheckpointError",
                                  "ConfigError", "CompareError", "EngineUnavailable", "NotRegularFile"])
def test_exported_from_the_package(name):
    cls = getattr(mobilenetv2, name)
    assert name in mobilenetv2.__all__
    assert cls is Error or issubclass(cls, Error)


def test_raised_instances_are_caught_by_error(tmp_path):
    from mobilenetv2.formats.safetensors import SafetensorsFile
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x00" * 4)          # shorter than the 8-byte header length
    with pytest.raises(Error, match="model.safetensors"):
        SafetensorsFile(bad)
    from mobilenetv2.formats.hf_config import read_json
    cfg = tmp_path / "config.json"
    cfg.write_text("[1, 2]")
    with pytest.raises(Error, match="config.json"):
        read_json(cfg, "config.json")


@pytest.mark.parametrize("noun, says", [
    ("ONNX file", "an ONNX file"), ("OpenVINO IR", "an OpenVINO IR"), ("TFLite file", "a TFLite file"),
    (".tflite file", "a .tflite file"), ("HDF5 file", "an HDF5 file"), ("URL", "a URL"),
    ("image file", "an image file"), ("array file", "an array file"), ("weights file", "a weights file"),
    ("int", "an int"), ("unit", "a unit"), ("user", "a user"), ("8-vector", "an 8-vector"),
    ("11-vector", "an 11-vector"), ("18000-vector", "an 18000-vector"), ("16-vector", "a 16-vector"),
    ("1100-vector", "a 1100-vector"), ("", "a "),
])
def test_a_or_an_goes_by_the_sound(noun, says):
    """The article the refusals put before a file's kind ("give the path of a ONNX file" read badly)."""
    from mobilenetv2.errors import a_or_an
    assert a_or_an(noun) == says


# -- every refusal of a bad argument is an Error (and still a ValueError) ---------------------------
def _bad_calls():
    """(label, call): public calls with one argument wrong, each of which the package refuses."""
    import numpy as np
    from mobilenetv2 import MobileNetV2, decode_predictions, export_onnx, export_tflite, preprocess_input
    from mobilenetv2.engines import c_kernels
    from mobilenetv2.processing.hf_processing import hf_preprocess, post_process_semantic_segmentation
    from mobilenetv2.formats.registry import weights_filename
    from mobilenetv2.formats.safetensors import save_file
    from mobilenetv2.network.variants import parse_variant

    m = MobileNetV2(alpha=0.35, input_shape=(32, 32, 3), include_top=False, weights=None)
    x = np.zeros((1, 32, 32, 3), np.float32)
    nan = x.copy()
    nan[0, 3, 4, 1] = np.nan

    def set_engine():
        m.engine = "gpu"

    return [
        ("pooling", lambda: MobileNetV2(pooling="sum", weights=None)),
        ("imagenet alpha", lambda: MobileNetV2(alpha=0.6)),
        ("imagenet classes", lambda: MobileNetV2(classes=10)),
        ("uint8 input", lambda: m(x.astype(np.uint8))),
        ("input rank", lambda: m(x[0, 0])),
        ("input channels", lambda: m(np.zeros((1, 32, 32, 4), np.float32))),
        ("input size", lambda: m(np.zeros((1, 33, 32, 3), np.float32))),
        ("empty batch", lambda: m(x[:0])),
        # lists of arrays of different shapes (these three were NumPy's ValueErrors)
        ("ragged images", lambda: m.predict([x[0], np.zeros((32, 40, 3), np.float32)])),
        ("ragged preprocess", lambda: preprocess_input([x[0], x[0, :5]])),
        ("ragged decode", lambda: decode_predictions([np.zeros(1000), np.zeros(10)])),
        ("NaN input", lambda: m(nan)),
        ("batch_size", lambda: m.predict(x, batch_size=0)),
        ("layer name", lambda: m.get_layer("block_99_expand")),
        ("features of the input", lambda: m.features(x, [m.layers[0].name])),
        ("set_weights count", lambda: m.set_weights([])),
        ("load_weights path", lambda: m.load_weights(None)),  # (these two were TypeErrors)
        ("save_weights path", lambda: m.save_weights(None)),
        ("engine", set_engine),
        ("preprocess dtype", lambda: preprocess_input(np.array(["a"]))),
        ("decode rank", lambda: decode_predictions(np.zeros(1000))),
        ("decode top", lambda: decode_predictions(np.zeros((1, 1000)), top=0)),
        ("variant", lambda: parse_variant("2.0_224")),
        ("registry", lambda: weights_filename(0.6, 224)),
        ("onnx opset", lambda: export_onnx(m, "unused.onnx", opset=3)),
        ("export input_size", lambda: export_tflite(m, "unused.tflite", input_size=(16, 16))),
        ("hf image array", lambda: hf_preprocess(np.zeros((8, 8), np.uint8))),
        ("hf logits", lambda: post_process_semantic_segmentation(np.zeros((2, 3)))),
        ("safetensors metadata", lambda: save_file({}, "unused.safetensors", metadata={"a": 1})),
        ("kernel dtype", lambda: c_kernels.relu6(np.zeros(4, np.float64))),
        ("kernel pool kind", lambda: c_kernels.global_pool(x, kind="sum")),
        ("kernel pads", lambda: c_kernels.dwconv3x3(x, np.zeros((3, 3, 3), np.float32),
                                                    np.zeros(3, np.float32), 1, (3, 0, 0, 0))),
    ]


BAD_CALLS = ["pooling", "imagenet alpha", "imagenet classes", "uint8 input", "input rank", "input channels",
             "input size", "empty batch", "ragged images", "ragged preprocess", "ragged decode",
             "NaN input", "batch_size", "layer name", "features of the input", "set_weights count",
             "load_weights path", "save_weights path", "engine", "preprocess dtype", "decode rank",
             "decode top", "variant", "registry", "onnx opset", "export input_size", "hf image array",
             "hf logits", "safetensors metadata", "kernel dtype", "kernel pool kind", "kernel pads"]


def test_the_bad_calls_are_all_listed():
    assert [label for label, _ in _bad_calls()] == BAD_CALLS


@pytest.mark.parametrize("label", BAD_CALLS)
def test_a_bad_argument_is_refused_with_the_package_s_own_error(label, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    call = dict(_bad_calls())[label]
    with pytest.raises(Error) as info:
        call()
    assert isinstance(info.value, ValueError)
    assert not any(tmp_path.iterdir())  # nothing written (the safetensors and ONNX refusals)


def _raises_of_bare_value_error():
    """(file, function, line) of each ``raise ValueError(...)`` in the package's source."""
    import ast
    from pathlib import Path
    root = Path(mobilenetv2.__file__).parent
    out = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for fn in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            for node in ast.walk(fn):
                exc = node.exc if isinstance(node, ast.Raise) else None
                if isinstance(exc, ast.Call) and isinstance(exc.func, ast.Name) and exc.func.id == "ValueError":
                    out.append((path.relative_to(root).as_posix(), fn.name, node.lineno))
    return out


# A bare ValueError is raised only where a caller turns it into an Error or a usage message:
# json's parse hooks (the reader wraps what they raise, naming the file) and the bench's
# unreachable engine fallback.
INTERNAL_VALUE_ERRORS = {
    ("formats/hf_config.py", "_refuse_constant"), ("formats/hf_config.py", "_finite_float"),
    ("formats/safetensors.py", "_no_duplicates"), ("tools/compare/mapping.py", "_no_constant"),
    ("tools/benchmark.py", "_runner"),
}


def test_no_bare_value_error_reaches_a_user():
    bare = {(f, fn) for f, fn, _ in _raises_of_bare_value_error()}
    assert bare - INTERNAL_VALUE_ERRORS == set(), "raise ArgumentError (or a closer Error) instead"
    assert INTERNAL_VALUE_ERRORS <= bare  # the list names only raises that exist


@pytest.mark.parametrize("exporter", ["export_tflite", "export_onnx"])
def test_an_export_size_is_one_the_model_takes(exporter, tmp_path):
    """input_size is (height, width), whole numbers in the model's 32..4096, and where the model
    fixes a size, that size: the file must compute what the model computes (a 5x5 export of a
    model that refuses 5x5 inputs wrote a file before)."""
    import numpy as np
    from mobilenetv2 import ArgumentError, MobileNetV2
    if exporter == "export_onnx":
        pytest.importorskip("onnx", reason="export_onnx needs the onnx extra")
    export = getattr(mobilenetv2, exporter)
    dynamic = MobileNetV2((None, None, 3), alpha=0.35, include_top=False, weights=None)
    fixed = MobileNetV2((32, 40, 3), alpha=0.35, include_top=False, weights=None)
    bad = [(dynamic, (0, 64), "from 32 to 4096"), (dynamic, (5, 5), "from 32 to 4096"),
           (dynamic, (64, 4097), "from 32 to 4096"), (dynamic, "64", "two whole numbers"),
           (dynamic, (64,), "two whole numbers"), (dynamic, (64, 64, 3), "two whole numbers"),
           (dynamic, (64.0, 64), "two whole numbers"), (dynamic, (True, 64), "two whole numbers"),
           (dynamic, None, "static"), (fixed, (40, 32), "takes inputs of"), (fixed, (32, 48), "takes inputs of")]
    for model, size, match in bad:
        with pytest.raises(ArgumentError, match=match):
            export(model, tmp_path / "m.out", input_size=size)
    assert not any(tmp_path.iterdir())
    export(fixed, tmp_path / "fixed.out", input_size=(32, 40))  # the model's own size, spelled out
    export(dynamic, tmp_path / "dynamic.out", input_size=(np.int64(33), 47))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dynamic.out", "fixed.out"]


@pytest.mark.parametrize("exporter", ["export_tflite", "export_onnx"])
def test_an_export_batch_is_a_whole_number_from_1_to_4096(exporter, tmp_path):
    """export_onnx wrote files for batch 0, -1, 1.5 and "2" before (an input of batch 0 or "2")."""
    import numpy as np
    from mobilenetv2 import ArgumentError, MobileNetV2
    if exporter == "export_onnx":
        pytest.importorskip("onnx", reason="export_onnx needs the onnx extra")
    export = getattr(mobilenetv2, exporter)
    model = MobileNetV2((32, 32, 3), alpha=0.35, include_top=False, weights=None)
    bad = [0, -1, 1.5, "2", True, 4097, np.float32(2)] + ([None] if exporter == "export_tflite" else [])
    for batch in bad:
        with pytest.raises(ArgumentError, match="batch must be a whole number from 1 to 4096"):
            export(model, tmp_path / "m.out", batch=batch)
    assert not any(tmp_path.iterdir())
    for batch in [1, np.int32(4096)] + ([None] if exporter == "export_onnx" else []):
        export(model, tmp_path / f"{batch}.out", batch=batch)
    assert len(list(tmp_path.iterdir())) == (3 if exporter == "export_onnx" else 2)
