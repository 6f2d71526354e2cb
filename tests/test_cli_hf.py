"""The CLI with transformers checkpoints: classify --hf, segment --hf (one-line errors, atomic PNG)."""
import json

import numpy as np
import pytest
from PIL import Image

from conftest import cli_error_lines, require_shared
from mobilenetv2 import from_pretrained, hf_preprocess, post_process_semantic_segmentation
from mobilenetv2.cli import main


def test_classify_hf_top5_are_transformers_top5(capsys):
    folder = require_shared("hf", "mobilenet_v2_1.0_224")
    ref = np.load(require_shared("reference", "hf", "mobilenet_v2_1.0_224.npz"))
    images = [str(require_shared("images", f)) for f in ("panda.jpg", "cat.png")]
    assert main(["classify", "--hf", str(folder), *images, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    config = json.load(open(folder / "config.json"))
    for result, photo in zip(out, ("panda", "cat")):
        want = np.argsort(-ref[f"{photo}_pil/logits"][0])[:5]  # the Pillow backend's input
        assert [p["id"] for p in result["predictions"]] == list(want)
        assert [p["label"] for p in result["predictions"]] == [config["id2label"][str(i)] for i in want]


def test_segment_writes_the_class_map_at_the_image_size(tmp_path, capsys):
    folder = require_shared("hf", "deeplabv3_mobilenet_v2_1.0_513")
    photo = str(require_shared("images", "panda.jpg"))
    out = tmp_path / "mask.png"
    assert main(["segment", "--hf", str(folder), photo, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    mask = Image.open(out)
    assert mask.mode == "P" and mask.size == (696, 613)  # indexed: its values are the class ids
    assert "person" in printed and "#" in printed
    shares = [float(line.rsplit(None, 1)[1].rstrip("%")) for line in printed.splitlines()[1:]]
    assert len(shares) > 1 and shares == sorted(shares, reverse=True)  # the largest class first
    # shown in PASCAL VOC's colours (class 15, person: #c08080); the values are the class map
    # (test_hf_postprocess.py holds that map to transformers')
    assert mask.getpalette()[15 * 3:16 * 3] == [0xc0, 0x80, 0x80]
    model = from_pretrained(folder)
    want = post_process_semantic_segmentation(model.predict(hf_preprocess(photo, model.processor_config)),
                                              [(613, 696)])[0]
    assert np.array_equal(np.asarray(mask), want) and len(np.unique(want)) > 1
    assert main(["segment", "--hf", str(folder), photo, "--out", str(tmp_path / "o.png"), "--overlay"]) == 0
    # the overlay: photo and class colour half and half, rounded
    colours = np.array(mask.getpalette()[:3 * 256], dtype=np.float64).reshape(-1, 3)
    blend = (np.asarray(Image.open(photo).convert("RGB"), dtype=np.float64) + colours[want]) / 2
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png")), np.round(blend))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.png", "o.png"]  # no temporary left


@pytest.mark.parametrize("argv, message", [
    (["segment", "--hf", "HF_CLS", "IMG", "--out", "OUT.png"], "not a segmentation model"),
    (["segment", "--hf", "HF_SEG", "IMG", "--out", "OUT.txt"], ".png"),
    (["classify", "--hf", "HF_SEG", "IMG"], "not an image classifier"),
    (["classify", "--hf", "/nonexistent", "IMG"], "not found"),
    # the defaults' values given were accepted and ignored (only other values were refused)
    (["classify", "--hf", "HF_CLS", "IMG", "--alpha", "1.0", "--size", "224"], "--alpha, --size do not apply"),
    (["classify", "--hf", "HF_CLS", "IMG", "--weights", "imagenet"], "--weights does not apply"),
])
def test_errors_are_one_line(tmp_path, capsys, argv, message):
    subs = {"HF_CLS": str(require_shared("hf", "mobilenet_v2_0.35_96")),
            "HF_SEG": str(require_shared("hf", "deeplabv3_mobilenet_v2_1.0_513")),
            "IMG": str(require_shared("images", "cat.png")), "OUT.png": str(tmp_path / "m.png"),
            "OUT.txt": str(tmp_path / "m.txt")}
    assert main([subs.get(a, a) for a in argv]) == 2
    err = capsys.readouterr().err
    lines = cli_error_lines(err)
    assert len(lines) == 1 and message in lines[0], err
    assert list(tmp_path.iterdir()) == []


def test_the_palette_is_pascal_vocs():
    """PASCAL VOC's colour map as its devkit lists it: background black, then the bits of the id
    spread over the channels' high bits (aeroplane #800000, ..., person #c08080, tvmonitor #004080)."""
    from mobilenetv2.cli import _palette
    voc = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0), 4: (0, 0, 128), 5: (128, 0, 128),
           6: (0, 128, 128), 7: (128, 128, 128), 8: (64, 0, 0), 9: (192, 0, 0), 15: (192, 128, 128),
           20: (0, 64, 128), 255: (224, 224, 192)}  # 255: VOC's 'void' border
    colours = _palette(256)
    assert colours.shape == (256, 3) and colours.dtype == np.uint8
    assert {i: tuple(int(v) for v in colours[i]) for i in voc} == voc
    assert len({tuple(c) for c in colours}) == 256  # distinct
