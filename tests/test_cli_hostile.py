"""The command line on hostile files, run as a subprocess: classify --hf, segment, compare,
features and predict each fail with exactly one line on stderr, no traceback, the documented exit
status, and nothing written."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import one_line
from mobilenetv2 import MobileNetV2, cli
from mobilenetv2.hf import save_pretrained

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("MOBILENETV2_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "mobilenetv2", *map(str, args)], capture_output=True,
                          text=True, timeout=120, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "ckpt"
    save_pretrained(MobileNetV2((32, 32, 3), alpha=0.35, include_top=False, weights=None), folder)
    return folder


@pytest.fixture(scope="module")
def hf_classifier(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hfc") / "ckpt"
    save_pretrained(MobileNetV2((32, 32, 3), alpha=0.35, classes=10, weights=None), folder)
    return folder


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
    return path


def _clone(src, dst, **replace):
    dst.mkdir()
    for p in src.iterdir():
        if p.name in replace:
            replace[p.name](dst / p.name, p)
        else:
            (dst / p.name).write_bytes(p.read_bytes())
    return dst


def _symlink_outside(dst, src):
    outside = dst.parent.parent / ("outside-" + src.name)
    outside.write_bytes(src.read_bytes())
    os.symlink(outside, dst)


def _fifo(dst, src):
    os.mkfifo(dst)


def _nan_config(dst, src):
    dst.write_bytes(src.read_bytes().replace(b'"layer_norm_eps": 0.001', b'"layer_norm_eps": NaN'))


def _truncated(dst, src):
    dst.write_bytes(src.read_bytes()[:1000])


def _header_lie(dst, src):
    raw = src.read_bytes()
    dst.write_bytes((2 ** 63).to_bytes(8, "little") + raw[8:])


@pytest.mark.parametrize("member, damage, says", [
    ("model.safetensors", _symlink_outside, "outside the checkpoint folder"),
    ("config.json", _symlink_outside, "outside the checkpoint folder"),
    ("config.json", _fifo, "FIFO"),
    ("model.safetensors", _fifo, "FIFO"),
    ("config.json", _nan_config, "NaN"),
    ("model.safetensors", _truncated, "model.safetensors"),
    ("model.safetensors", _header_lie, "header length"),
])
def test_classify_hf_hostile_folder(tmp_path, hf_classifier, image, member, damage, says):
    folder = _clone(hf_classifier, tmp_path / "bad", **{member: damage})
    line = one_line(run_cli("classify", "--hf", folder, image))
    assert line.startswith("mobilenetv2 classify: error:") and says in line, line


def test_classify_hf_good_folder_then_backbone(tmp_path, hf_classifier, hf_folder, image):
    good = run_cli("classify", "--hf", hf_classifier, image, "--top", "3")
    assert good.returncode == 0 and good.stdout.count("\n") == 4, good
    line = one_line(run_cli("classify", "--hf", hf_folder, image))
    assert "not an image classifier" in line


def test_classify_hf_missing_folder(tmp_path, image):
    line = one_line(run_cli("classify", "--hf", tmp_path / "nowhere", image))
    assert "nowhere" in line


def test_segment_hostile(tmp_path, hf_folder, image):
    # a backbone checkpoint is not a segmentation model
    out = tmp_path / "mask.png"
    line = one_line(run_cli("segment", image, "--hf", hf_folder, "--out", out))
    assert line.startswith("mobilenetv2 segment: error:")
    assert not out.exists()
    bad = _clone(hf_folder, tmp_path / "bad", **{"model.safetensors": _symlink_outside})
    line = one_line(run_cli("segment", image, "--hf", bad, "--out", out))
    assert "outside the checkpoint folder" in line and not out.exists()
    line = one_line(run_cli("segment", image, "--hf", hf_folder, "--out", ""))
    assert "--out" in line
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(("bad", "outside"))) == ["img.png"]


def _npz_bytes(**arrays):
    import io
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.mark.parametrize("name, make, says", [
    ("d.npz", lambda p: p.write_bytes(_npz_bytes(input=np.zeros((1, 8, 8, 3), np.float32))[:200]), "d.npz"),
    ("d.npz", lambda p: p.write_bytes(_npz_bytes(input=np.zeros((1, 8, 8, 3), np.float32),
                                                 evil=np.array([{}], dtype=object))), "pickle"),
    ("d.npz", lambda p: os.mkfifo(p), "FIFO"),
    ("m.onnx", lambda p: os.mkfifo(p), "FIFO (named pipe), not a regular file; give the path of an ONNX file"),
    ("m.onnx", lambda p: p.write_bytes(b"\x08\x07garbage" * 30), "m.onnx"),
    ("missing.onnx", lambda p: None, "does not exist"),
])
def test_compare_bad_other_exits_2(tmp_path, name, make, says):
    path = tmp_path / name
    make(path)
    line = one_line(run_cli("compare", path, "--weights", "none", "--quiet", cwd=tmp_path))
    assert line.startswith("mobilenetv2 compare: error:") and says in line, line


def test_compare_bad_mapping_exits_2(tmp_path):
    dump = tmp_path / "d.npz"
    dump.write_bytes(_npz_bytes(input=np.zeros((1, 32, 32, 3), np.float32)))
    mapping = tmp_path / "m.json"
    mapping.write_text('{"tensors": {}, "x": Infinity}')
    line = one_line(run_cli("compare", dump, "--mapping", mapping, "--quiet", cwd=tmp_path))
    assert "m.json" in line and "Infinity" in line


def test_compare_internal_error_is_not_a_verdict(monkeypatch, capsys, tmp_path):
    """compare's 1 means "diverges": a bug inside it exits 3, one line."""
    import mobilenetv2.tools.compare as C

    def broken(*a, **k):
        raise KeyError("bug")
    monkeypatch.setattr(C, "compare", broken)
    status = cli.main(["compare", str(tmp_path / "x.onnx"), "--quiet"])
    err = capsys.readouterr().err
    assert status == 3 and err.count("\n") == 1 and "internal error: KeyError" in err


@pytest.mark.parametrize("kind", ["features", "predict"])
def test_batch_commands_hostile_weights_and_out(tmp_path, image, kind):
    pytest.importorskip("pyarrow")
    os.mkfifo(tmp_path / "w.h5")
    line = one_line(run_cli(kind, image, "--out", tmp_path / "out", "--weights", tmp_path / "w.h5",
                            "--alpha", "0.35", "--size", "96", "--quiet"))
    assert line.startswith(f"mobilenetv2 {kind}: error:") and "FIFO" in line, line
    (tmp_path / "junk.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    line = one_line(run_cli(kind, image, "--out", tmp_path / "out2", "--weights", tmp_path / "junk.h5",
                            "--alpha", "0.35", "--size", "96", "--quiet"))
    assert "junk.h5" in line
