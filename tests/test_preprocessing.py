"""Image loading and preprocessing: Keras's exact inputs on real photos, every Pillow mode, errors."""
import io
import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st
from PIL import Image

from conftest import keras_reference, require_shared
from mobilenetv2 import load_image, preprocess_input


def test_preprocess_by_hand():
    x = np.array([0, 127.5, 255], np.float32)
    np.testing.assert_array_equal(preprocess_input(x), [-1.0, 0.0, 1.0])
    assert preprocess_input(np.array([0, 255], np.uint8)).dtype == np.float32
    assert preprocess_input(np.zeros(3)).dtype == np.float64
    assert preprocess_input([[1, 2]]).shape == (1, 2)
    with pytest.raises(ValueError, match="numeric"):
        preprocess_input(np.array(["a"]))


@given(st.lists(st.integers(0, 255), min_size=1, max_size=50))
def test_preprocess_is_keras_tf_mode(values):
    x = np.array(values, np.uint8)
    want = x.astype(np.float32) / np.float32(127.5) - np.float32(1)  # Keras: x /= 127.5; x -= 1
    got = preprocess_input(x)
    np.testing.assert_array_equal(got, want)
    assert got.min() >= -1 and got.max() <= 1


def test_keras_reference_inputs_bit_exact():
    """load_image gives exactly what Keras's reference fed its model, for all 101 photos."""
    ref = keras_reference("real_backbone_1.0_224.npz")
    images = require_shared("images")
    for i, name in enumerate(ref["files"]):
        path = images / ("imagenet-sample" if name != "panda.jpg" else "") / str(name)
        np.testing.assert_array_equal(load_image(path), ref["inputs_uint8"][i], err_msg=str(name))


def test_panda_at_every_size():
    ref = keras_reference("synthetic_keras.npz")
    panda = require_shared("images", "panda.jpg")
    for rows in (96, 128, 160, 192, 224):
        np.testing.assert_array_equal(load_image(panda, target_size=rows), ref[f"panda_uint8_{rows}"])


def _save(img, tmp_path, name, **kw):
    path = tmp_path / name
    img.save(path, **kw)
    return path


def test_modes_are_converted_to_rgb(tmp_path):
    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (40, 1))  # 40x64 ramp
    cases = {
        "L.png": Image.fromarray(grey, "L"),
        "LA.png": Image.fromarray(np.dstack([grey, np.full_like(grey, 9)]), "LA"),
        "RGBA.png": Image.fromarray(np.dstack([grey, grey, grey, np.zeros_like(grey)]), "RGBA"),
        "P.png": Image.fromarray(grey, "L").convert("P"),
        "CMYK.jpg": Image.fromarray(np.dstack([grey] * 3), "RGB").convert("CMYK"),
    }
    for name, img in cases.items():
        out = load_image(_save(img, tmp_path, name), target_size=(40, 64))
        assert out.shape == (40, 64, 3) and out.dtype == np.uint8, name
        if name != "CMYK.jpg":  # lossless: every channel is the grey ramp
            for c in range(3):
                np.testing.assert_array_equal(out[:, :, c], grey, err_msg=name)
        else:
            assert np.abs(out.astype(int) - grey[:, :, None]).max() <= 6


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    deep = (np.arange(64, dtype=np.uint16) * 1040)[None].repeat(40, axis=0)  # 0 .. 65520
    path = _save(Image.fromarray(deep), tmp_path, "deep.png")
    out = load_image(path, target_size=(40, 64))
    np.testing.assert_array_equal(out[:, :, 0], np.rint(deep.astype(np.float64) * 255 / 65535).astype(np.uint8))
    assert out.max() == 255 and len(np.unique(out)) == 64


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((40, 60, 3), np.uint8)
    a[:10, :10] = 255  # a white top-left corner in the stored pixels
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6  # stored rotated: display needs a 90 degree clockwise turn
    path = _save(img, tmp_path, "rot.png", exif=exif)
    out = load_image(path, target_size=(60, 40), interpolation="nearest")
    assert out.shape == (60, 40, 3)
    assert out[:10, -10:].min() == 255 and out[:10, :10].max() == 0  # the corner is now top-right


def test_center_crop(tmp_path):
    a = np.zeros((40, 120, 3), np.uint8)
    a[:, 40:80] = 200  # the middle third is bright
    path = _save(Image.fromarray(a), tmp_path, "wide.png")
    np.testing.assert_array_equal(load_image(path, target_size=40, crop="center"), a[:, 40:80])
    # A fraction takes that share of the central square: 0.5 -> the middle 20x20.
    half = load_image(path, target_size=20, crop=0.5)
    np.testing.assert_array_equal(half, a[10:30, 50:70])
    whole = load_image(path, target_size=40, interpolation="nearest")
    assert (whole == 0).any()  # without a crop the dark sides are squeezed in
    with pytest.raises(ValueError, match="crop"):
        load_image(path, crop=1.5)


def test_other_inputs_and_errors(tmp_path):
    rgb = Image.fromarray(np.full((50, 50, 3), 7, np.uint8))
    assert load_image(rgb, target_size=32).shape == (32, 32, 3)
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    buf.seek(0)
    assert load_image(buf, target_size=(33, 35)).shape == (33, 35, 3)
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        load_image(tmp_path / "nope.jpg")
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="junk.jpg"):
        load_image(junk)
    good = _save(rgb, tmp_path, "cut.jpg")
    cut = tmp_path / "cut2.jpg"
    cut.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ValueError, match="cut2.jpg"):
        load_image(cut)
    small = _save(Image.fromarray(np.zeros((31, 40, 3), np.uint8)), tmp_path, "small.png")
    assert not load_image(small).any() and load_image(small).shape == (224, 224, 3)  # resized, as Keras does
    with pytest.raises(ValueError, match="interpolation"):
        load_image(good, interpolation="cubic-ish")


@pytest.mark.parametrize("transparency", [1, bytes([255, 0, 128])])  # one entry; an alpha for each
def test_palette_with_transparency_keeps_its_colours(tmp_path, transparency):
    """Without a warning: Pillow warns converting a palette whose transparency is bytes straight
    to RGB, so it goes through RGBA (the same colours)."""
    colours = np.array([[250, 0, 0], [0, 120, 0], [0, 0, 60]], np.uint8)
    idx = np.arange(40 * 64).reshape(40, 64) % 3
    img = Image.fromarray(idx.astype(np.uint8), "P")
    img.putpalette(colours.ravel().tolist())
    path = _save(img, tmp_path, "pt.png", transparency=transparency)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = load_image(path, target_size=(40, 64))
    np.testing.assert_array_equal(out, colours[idx])  # alpha dropped, as Keras's convert("RGB")


def test_deep_grey_modes(tmp_path):
    values = np.arange(64)[None].repeat(40, axis=0)
    # 32-bit I with 16-bit values: scaled by 255/65535
    deep = Image.fromarray((values * 1000).astype(np.int32), "I")
    np.testing.assert_array_equal(load_image(deep, target_size=(40, 64))[:, :, 1],
                                  np.rint(values * 1000 * 255 / 65535).astype(np.uint8))
    # I or F holding 8-bit values: kept as they are
    for arr, mode in ((values.astype(np.int32) * 4, "I"), (values.astype(np.float32) * 4, "F")):
        out = load_image(Image.fromarray(arr, mode), target_size=(40, 64))
        np.testing.assert_array_equal(out[:, :, 2], values * 4, err_msg=mode)
    # ... up to 255 itself, the top of 8 bits (scaled, 255 would become 1)
    top = np.minimum(values * 5, 255)
    for arr, mode in ((top.astype(np.int32), "I"), (top.astype(np.float32), "F")):
        out = load_image(Image.fromarray(arr, mode), target_size=(40, 64))
        assert out.max() == 255
        np.testing.assert_array_equal(out[:, :, 0], top, err_msg=mode)


def test_paths_that_are_not_image_files(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="not a file"):
        load_image(tmp_path)
    path = _save(Image.fromarray(np.zeros((100, 100, 3), np.uint8)), tmp_path, "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10000 pixels is then a decompression bomb
    with pytest.raises(ValueError, match="big.png.*too large"):
        load_image(path)


def test_center_crop_to_a_wide_target_from_a_tall_image(tmp_path):
    a = np.zeros((100, 40, 3), np.uint8)
    a[40:60] = np.arange(40, dtype=np.uint8)[:, None] * 5  # the middle 20 rows carry a ramp
    path = _save(Image.fromarray(a), tmp_path, "tall.png")
    # target 20 rows x 40 cols (aspect 2): the full width and the middle 20 rows, no resize needed
    np.testing.assert_array_equal(load_image(path, target_size=(20, 40), crop="center"), a[40:60])
    assert load_image(path, target_size=(20, 40), crop="center", interpolation="lanczos").shape == (20, 40, 3)
