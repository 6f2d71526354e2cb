"""Untrusted-file rules on the Hugging Face path and compare's readers of OTHER: regular files
only (a FIFO is refused at once, never waited on), no symbolic link out of a checkpoint folder,
capped and strict JSON, no pickles or external data; every failure the package's own error
naming the file."""
import os
import shutil
import threading
import zipfile

import numpy as np
import pytest

from conftest import require_shared
from mobilenetv2 import Error
from mobilenetv2.hf import CheckpointError, from_pretrained
from mobilenetv2.formats.hf_config import MAX_JSON_BYTES, ConfigError, read_config, read_json
from mobilenetv2.formats.safetensors import SafetensorsError, SafetensorsFile
from mobilenetv2.tools.compare.dump_reader import read_dump
from mobilenetv2.tools.compare.errors import CompareError
from mobilenetv2.tools.compare.mapping import load_mapping_file

# the code under test runs the same with or without the C extension: .ci/no-ext leaves it out
pytestmark = pytest.mark.engine_independent


def _fifo(tmp_path, name):
    p = tmp_path / name
    os.mkfifo(p)
    return p


def _in_thread(fn, *args):
    """Run fn in a thread and fail (instead of hanging the suite) if it blocks on a FIFO."""
    box = {}

    def go():
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 -- handed back to the test
            box["error"] = exc
    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), f"{fn.__name__} blocked on a FIFO"
    return box


def _copy(tmp_path, name="mobilenet_v2_0.35_96"):
    dst = tmp_path / "ckpt"
    shutil.copytree(require_shared("hf", name), dst)
    for p in dst.iterdir():
        p.chmod(0o644)
    return dst


# -- config JSON -------------------------------------------------------------------------------------
@pytest.mark.parametrize("as_bytes", [False, True])
def test_fifo_config_and_safetensors_refused_at_once(tmp_path, as_bytes):
    for name, fn, cls in [("config.json", lambda p: read_json(p, "config.json"), ConfigError),
                          ("model.safetensors", SafetensorsFile, SafetensorsError)]:
        p = _fifo(tmp_path, name)
        arg = os.fsencode(p) if as_bytes else p
        box = _in_thread(fn, arg)
        assert isinstance(box.get("error"), cls), box
        assert "FIFO" in str(box["error"]) and name in str(box["error"])
        assert str(box["error"]).count(os.fspath(p)) == 1, box["error"]  # the file named once, not
                                                     # "safetensors file 'x': safetensors file 'x' is a FIFO"


@pytest.mark.parametrize("text,problem", [
    ('{"a": NaN}', "NaN"), ('{"a": Infinity}', "Infinity"), ('{"a": -Infinity}', "Infinity"),
    ('{"a": 1e400}', "overflows"), ('{"a": ' + "9" * 5000 + "}", "valid JSON"),
    ("[" * 100000 + "]" * 100000, "valid JSON"), ('{"a": 1', "valid JSON"), ("\xff{}", "valid JSON"),
    ("[]", "JSON object"),
])
def test_config_json_strict(tmp_path, text, problem):
    p = tmp_path / "config.json"
    p.write_bytes(text.encode("utf-8", "surrogateescape") if text != "\xff{}" else b"\xff{}")
    with pytest.raises(ConfigError, match=problem) as info:
        read_config(p)
    assert "config.json" in str(info.value)


def test_config_json_size_capped_before_reading(tmp_path):
    p = tmp_path / "config.json"
    with open(p, "wb") as f:
        f.truncate(MAX_JSON_BYTES + 1)
    with pytest.raises(ConfigError, match=f"larger than {MAX_JSON_BYTES}"):
        read_config(p)


# -- the checkpoint folder ------------------------------------------------------------------------
def test_symlink_out_of_the_folder_is_refused(tmp_path):
    folder = _copy(tmp_path)
    outside = tmp_path / "elsewhere.safetensors"
    (folder / "model.safetensors").rename(outside)
    os.symlink(outside, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="outside the checkpoint folder") as info:
        from_pretrained(folder)
    assert "model.safetensors" in str(info.value)
    # the config and the processor config too
    (folder / "model.safetensors").unlink()
    outside.rename(folder / "model.safetensors")
    (folder / "preprocessor_config.json").unlink()
    os.symlink("/etc/passwd", folder / "preprocessor_config.json")
    with pytest.raises(CheckpointError, match="preprocessor_config.json"):
        from_pretrained(folder)


def test_symlinks_inside_the_folder_and_the_hub_cache_layout_load(tmp_path):
    src = _copy(tmp_path)
    repo = tmp_path / "models--google--mobilenet_v2_0.35_96"
    snap = repo / "snapshots" / "abc123"
    (repo / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    for i, p in enumerate(sorted(src.iterdir())):
        blob = repo / "blobs" / f"blob{i}"
        shutil.move(p, blob)
        os.symlink(os.path.relpath(blob, snap), snap / p.name)
    model = from_pretrained(snap)
    assert model.config.depth_multiplier == pytest.approx(0.35)
    # inside the folder itself
    inner = tmp_path / "inner"
    shutil.copytree(snap, inner, symlinks=False)
    (inner / "model.safetensors").rename(inner / "weights.bin")
    os.symlink("weights.bin", inner / "model.safetensors")
    assert from_pretrained(inner).config.depth_multiplier == pytest.approx(0.35)


def test_fifo_in_the_folder_is_refused(tmp_path):
    folder = _copy(tmp_path)
    (folder / "preprocessor_config.json").unlink()
    os.mkfifo(folder / "preprocessor_config.json")
    box = _in_thread(from_pretrained, folder)
    assert isinstance(box.get("error"), ConfigError) and "FIFO" in str(box["error"])


# -- compare's readers of OTHER ------------------------------------------------------------------
def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_npz_with_a_pickle_is_refused(tmp_path):
    p = _npz(tmp_path / "d.npz", input=np.zeros((1, 8, 8, 3), np.float32),
             evil=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CompareError, match="pickle") as info:
        read_dump(p)
    assert "d.npz" in str(info.value)


def test_npz_header_shape_lie_refused_before_allocating(tmp_path):
    p = tmp_path / "d.npz"
    good = tmp_path / "x.npy"
    np.save(good, np.zeros(4, np.float32))
    raw = good.read_bytes()
    fixed = raw.replace(b"(4,), }" + b" " * 12, b"(4000000000000,), }")   # same header length
    assert len(fixed) == len(raw) and fixed != raw
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("input.npy", fixed)
    with pytest.raises(CompareError, match="more than the"):
        read_dump(p)


@pytest.mark.parametrize("damage", ["truncate", "flip", "not_zip", "member_not_npy"])
def test_damaged_npz(tmp_path, damage):
    p = _npz(tmp_path / "d.npz", input=np.arange(8 * 8 * 3, dtype=np.float32).reshape(1, 8, 8, 3))
    data = bytearray(p.read_bytes())
    if damage == "truncate":
        data = data[:len(data) // 2]
    elif damage == "flip":
        for i in range(40, 120):
            data[i] ^= 0xFF
    elif damage == "not_zip":
        data = b"<html>not found</html>"
    p.write_bytes(bytes(data))
    if damage == "member_not_npy":
        with zipfile.ZipFile(p, "w") as zf:
            zf.writestr("input.txt", "hello")
    with pytest.raises(CompareError) as info:
        read_dump(p)
    assert "d.npz" in str(info.value)


def test_fifo_npz_npy_folder_and_mapping_refused_at_once(tmp_path):
    box = _in_thread(read_dump, _fifo(tmp_path, "d.npz"))
    assert isinstance(box.get("error"), CompareError) and "FIFO" in str(box["error"])
    folder = tmp_path / "dump"
    folder.mkdir()
    os.mkfifo(folder / "input.npy")
    box = _in_thread(read_dump, folder)
    assert isinstance(box.get("error"), CompareError)
    box = _in_thread(load_mapping_file, os.fsencode(_fifo(tmp_path, "map.json")))
    assert isinstance(box.get("error"), CompareError) and "FIFO" in str(box["error"])


@pytest.mark.parametrize("text,problem", [
    ('{"tensors": {"a": "Conv1"}, "x": NaN}', "NaN"), ("[" * 100000, "not valid JSON"),
    ("\xff", "not valid JSON"), ('{"tensors": [1]}', "must be a JSON object"),
])
def test_mapping_json_strict(tmp_path, text, problem):
    p = tmp_path / "map.json"
    p.write_bytes(b"\xff" if text == "\xff" else text.encode())
    with pytest.raises(CompareError, match=problem) as info:
        load_mapping_file(p)
    assert "map.json" in str(info.value)


def test_mapping_json_size_capped(tmp_path):
    p = tmp_path / "map.json"
    with open(p, "wb") as f:
        f.truncate((1 << 20) + 1)
    with pytest.raises(CompareError, match="larger than"):
        load_mapping_file(p)


def test_onnx_external_data_refused_everywhere(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper
    from mobilenetv2.tools.compare.onnx_reader import read_onnx
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\x00" * 64)

    def ext_tensor(name):
        t = helper.make_tensor(name, TensorProto.FLOAT, [4], [0.0] * 4)
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", "secret.bin"), ("offset", "0"), ("length", "16")):
            e = t.external_data.add()
            e.key, e.value = k, v
        return t
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    const = helper.make_node("Constant", [], ["c"], value=ext_tensor("c"))
    add = helper.make_node("Add", ["x", "c"], ["y"])
    graph = helper.make_graph([const, add], "g", [x], [y])
    path = tmp_path / "m.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(CompareError, match="external file") as info:
        read_onnx(path)
    assert "m.onnx" in str(info.value)
    # it names the file it refused to read and says how to put the weights inside (the dynamo
    # exporter of torch.onnx writes a .data file beside the .onnx by default)
    assert "'secret.bin'" in str(info.value) and "external_data=False" in str(info.value)
    box = _in_thread(read_onnx, _fifo(tmp_path, "p.onnx"))
    assert isinstance(box.get("error"), CompareError) and "FIFO" in str(box["error"])


@pytest.mark.parametrize("h, w", [(60000, 60000), (4100, 96), (8, 8)])
def test_declared_input_size_checked_before_the_input_is_drawn(tmp_path, monkeypatch, h, w):
    """An ONNX file declaring a 60000 x 60000 input made compare draw its random input at that
    size (86 GB in float64) before anything looked at it; a MobileNetV2 takes sides 32..4096."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper
    import mobilenetv2.tools.compare.api as api
    monkeypatch.setattr(api, "make_input", lambda *a, **k: pytest.fail("the input was drawn before its size was checked"))
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, h, w])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, h, w])])
    path = tmp_path / "big.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7)
                     .SerializeToString())
    with pytest.raises(CompareError, match=f"big.onnx.* takes {h}x{w} images; .* from 32 to 4096"):
        api.compare(str(path))


def test_tflite_fifo_and_garbage(tmp_path):
    pytest.importorskip("ai_edge_litert")
    from mobilenetv2.tools.compare.tflite_reader import read_tflite
    box = _in_thread(read_tflite, _fifo(tmp_path, "m.tflite"))
    assert isinstance(box.get("error"), CompareError) and "FIFO" in str(box["error"])
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"TFL3" + b"\x00" * 60)
    with pytest.raises(CompareError, match="bad.tflite"):
        read_tflite(bad)


def test_every_refusal_is_an_error():
    for cls in (ConfigError, SafetensorsError, CheckpointError, CompareError):
        assert issubclass(cls, Error)


@pytest.mark.parametrize("archs", [[["MobileNetV2Model"]], [{"a": 1}], [None], "MobileNetV2Model", [1]])
def test_architectures_of_any_json_type_refused_cleanly(tmp_path, archs):
    """Found by the fuzz suite: a list inside "architectures" was a TypeError (unhashable)."""
    from mobilenetv2.formats.hf_config import parse_config
    with pytest.raises(ConfigError, match="architectures must be one of"):
        parse_config({"architectures": archs}, "config.json")


def test_hf_preprocess_folder_with_a_link_out_is_refused(tmp_path):
    from mobilenetv2.processing.hf_processing import processor_config
    folder = tmp_path / "ckpt"
    folder.mkdir()
    outside = tmp_path / "proc.json"
    outside.write_text('{"size": {"shortest_edge": 64}}')
    os.symlink(outside, folder / "preprocessor_config.json")
    with pytest.raises(ConfigError, match="outside the checkpoint folder"):
        processor_config(folder)
    assert processor_config(outside).shortest_edge == 64      # the file given directly is read


@pytest.mark.parametrize("tensor, value", [
    ("layer.14.reduce_1x1.normalization.bias", 1e6),     # past float16's range (65504)
    ("layer.11.reduce_1x1.normalization.weight", 1e-45),  # a channel whose int8 step is 0 in float32
])
def test_a_checkpoint_with_extreme_finite_weights_is_compared(tmp_path, capsys, tensor, value):
    """Found by the fuzz suite's hf kind: a Hugging Face folder whose weights differ from the
    dump's in one value of block 15 or block 12, finite but extreme, given as --weights.  The report
    must say the dump diverges first at out_relu (its first layer after that block); compare
    instead failed with "layer 'block_15_project_BN' weight 'beta' contains NaN or inf" (about
    finite weights, naming no file): the diagnosis rounded the weights to float16 (1e6 is inf
    there) or onto an int8 grid whose step was 0 in float32 (0 / 0), and the command line printed
    NumPy's "overflow encountered in cast" as a warning."""
    import warnings
    from conftest import cli_error_lines
    from mobilenetv2 import MobileNetV2
    from mobilenetv2.cli import main
    from mobilenetv2.hf import save_pretrained
    from mobilenetv2.formats.safetensors import load_file, save_file
    from mobilenetv2.tools.compare import compare
    model = MobileNetV2((32, 32, 3), alpha=0.35, include_top=False, weights=None)
    x = np.random.default_rng(5).standard_normal((1, 32, 32, 3)).astype(np.float32)
    trace = model.trace(x)
    dump = tmp_path / "dump.npz"
    np.savez(dump, input=x, **{k: trace[k] for k in ("Conv1_relu", "block_2_add", "out_relu")})
    folder = save_pretrained(model, tmp_path / "ckpt")
    tensors = {k: np.array(v) for k, v in load_file(f"{folder}/model.safetensors").items()}
    tensors[tensor][0] = value
    save_file(tensors, f"{folder}/model.safetensors", {"format": "pt"})
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        report = compare(str(dump), weights=str(folder))
    assert [r["agrees"] for r in report["layers"]] == [True, True, False]
    assert report["first_divergent_layer"] == "out_relu"
    assert not [w for w in seen if issubclass(w.category, RuntimeWarning) and "encountered" in str(w.message)]
    assert main(["compare", str(dump), "--weights", str(folder), "--quiet"]) == 1
    assert cli_error_lines(capsys.readouterr().err) == []


def test_a_checkpoint_folder_given_as_other_says_to_give_it_with_weights(tmp_path):
    """compare reads a folder as OTHER as a dump of .npy files; a Hugging Face checkpoint given
    there (the fuzz suite's hf kind does) was refused as "has no .npy files" alone."""
    from mobilenetv2 import MobileNetV2
    from mobilenetv2.hf import save_pretrained
    from mobilenetv2.tools.compare import compare
    folder = save_pretrained(MobileNetV2((32, 32, 3), alpha=0.35, include_top=False, weights=None), tmp_path / "ckpt")
    with pytest.raises(CompareError, match="no .npy files: it holds a config.json.* given with --weights") as info:
        compare(folder)
    assert "ckpt" in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CompareError, match=r"no \.npy files$"):
        compare(str(tmp_path / "empty"))
