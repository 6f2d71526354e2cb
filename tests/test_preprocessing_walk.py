"""load_image walked as a careful user would: 16-bit PGMs however dark, a PIL image's EXIF
orientation, arrays the caller owns, and Pillow's bomb warning beside the package's own refusal.
Each truth is independent of the code: the 16-bit scale in float64, np.rot90 of the stored
pixels as the EXIF orientation tag defines them, Pillow's own 16-bit PNG."""
import warnings

import numpy as np
import pytest
from PIL import Image

from conftest import require_shared
from mobilenetv2.cli import main
from mobilenetv2.errors import ImageError
from mobilenetv2.processing.preprocessing import load_image


def pgm(path, values, maxval, plain=False):
    """A greyscale PGM written byte by byte: binary (P5, big-endian 16-bit samples above 255) or
    plain text (P2)."""
    h, w = values.shape
    if plain:
        body = " ".join(str(int(v)) for v in values.ravel()).encode()
        path.write_bytes(b"P2\n%d %d\n%d\n" % (w, h, maxval) + body + b"\n")
    else:
        path.write_bytes(b"P5\n%d %d\n%d\n" % (w, h, maxval) + values.astype(">u2").tobytes())
    return path


DARK = (np.arange(40 * 48).reshape(40, 48) % 256).astype(np.uint16)  # 0..255 of 65535: near black


@pytest.mark.parametrize("plain", [False, True])
def test_a_dark_16_bit_pgm_is_scaled_from_16_bits_not_read_as_8(tmp_path, plain):
    """A PGM of maxval 65535 holds 16-bit samples; Pillow reads it in mode I, whose range the
    code guessed from the pixels (no value past 255: taken as 8-bit), so a dark photo came out
    up to 257 times too bright, 255 of 65535 as white.  It is 255/65535 of full scale."""
    path = pgm(tmp_path / "dark.pgm", DARK, 65535, plain)
    want = np.rint(DARK.astype(np.float64) * 255 / 65535).astype(np.uint8)  # 0 or 1
    got = load_image(path, target_size=DARK.shape)
    for c in range(3):
        np.testing.assert_array_equal(got[:, :, c], want)
    # the same samples in a 16-bit PNG (Pillow's I;16) give the same image
    png = tmp_path / "dark.png"
    Image.fromarray(DARK).save(png)
    assert Image.open(png).mode == "I;16"
    np.testing.assert_array_equal(load_image(png, target_size=DARK.shape), got)


def test_a_dark_pgm_of_10_bits_is_scaled_from_its_maxval(tmp_path):
    """maxval 1023: Pillow stretches the samples to 0..65535 (3 -> 192), still under 256."""
    values = (np.arange(40 * 48).reshape(40, 48) % 4).astype(np.uint16)
    got = load_image(pgm(tmp_path / "ten.pgm", values, 1023), target_size=values.shape)[:, :, 0]
    assert np.abs(got.astype(np.float64) - values * 255 / 1023).max() <= 0.75  # v/1023 of white


def test_a_bright_16_bit_pgm_is_unchanged(tmp_path):
    values = (np.arange(40 * 48).reshape(40, 48) * 31 % 65536).astype(np.uint16)
    got = load_image(pgm(tmp_path / "bright.pgm", values, 65535), target_size=values.shape)[:, :, 1]
    np.testing.assert_array_equal(got, np.rint(values.astype(np.float64) * 255 / 65535).astype(np.uint8))


STORED = np.random.default_rng(11).integers(0, 256, (40, 60, 3), dtype=np.uint8)
# EXIF Orientation: how the stored pixels are turned for display (TIFF 6.0 / EXIF 2.3, tag 274)
TURNS = {2: lambda a: a[:, ::-1], 3: lambda a: np.rot90(a, 2), 4: lambda a: a[::-1],
         5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
         7: lambda a: np.rot90(a, 2).transpose(1, 0, 2), 8: lambda a: np.rot90(a, 1)}


@pytest.mark.parametrize("orientation", sorted(TURNS))
def test_a_pil_image_is_turned_by_its_exif_orientation_as_its_file_is(tmp_path, orientation):
    """load_image applies EXIF orientation (its docstring; hf_preprocess does for PIL images
    too); a PIL image from Image.open was taken as stored, so load_image(Image.open(p)) was not
    load_image(p)."""
    img = Image.fromarray(STORED)
    exif = img.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "turned.png"
    img.save(path, exif=exif)
    want = TURNS[orientation](STORED)
    size = want.shape[:2]
    np.testing.assert_array_equal(load_image(path, target_size=size), want)
    with Image.open(path) as opened:
        np.testing.assert_array_equal(load_image(opened, target_size=size), want)


def test_a_pil_jpeg_with_orientation_matches_its_path(tmp_path):
    img = Image.fromarray(STORED)
    exif = img.getexif()
    exif[0x0112] = 6
    path = tmp_path / "turned.jpg"
    img.save(path, exif=exif, quality=95)
    from_path = load_image(path, target_size=(60, 40))
    with Image.open(path) as opened:
        np.testing.assert_array_equal(load_image(opened, target_size=(60, 40)), from_path)


def test_load_image_returns_an_array_the_caller_may_write(tmp_path):
    """Keras's img_to_array gives a writable array; np.asarray of a Pillow image is a read-only
    view of its bytes, and `x = load_image(p); x[mask] = 0` was NumPy's 'assignment destination
    is read-only'."""
    path = tmp_path / "x.png"
    Image.fromarray(STORED).save(path)
    for out in (load_image(path, target_size=(40, 60)), load_image(path, target_size=32),
                load_image(Image.fromarray(STORED), target_size=(40, 60))):
        assert out.flags.writeable and out.flags.c_contiguous and out.dtype == np.uint8
        out[0, 0] = 7
        assert out[0, 0].tolist() == [7, 7, 7]
    np.testing.assert_array_equal(load_image(path, target_size=(40, 60)), STORED)  # a copy each time


@pytest.fixture
def pillow_limit_5000(monkeypatch):
    """Pillow's bomb limit at 5000 pixels: it warns from 5000 and raises from 10000; the package
    refuses from min(its own 64 M, Pillow's), 5000."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)


def test_an_image_pillow_warns_of_is_refused_without_the_warning(tmp_path, pillow_limit_5000):
    """Every image Pillow's DecompressionBombWarning is raised for is over the package's own limit
    and refused, saying so: the warning said it twice (and the commands print warnings, so a
    refused image was two lines on stderr, not one)."""
    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((60, 100, 3), np.uint8)).save(path)  # 6000 pixels
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        with pytest.raises(ImageError, match=r"100x60, too large to decode safely \(more than 5000 pixels"):
            load_image(path)
    assert [str(w.message) for w in said] == []
    assert warnings.filters == before  # nothing left in the process's filters


def test_the_command_says_a_refused_bomb_in_one_line(tmp_path, pillow_limit_5000, monkeypatch, capsys):
    monkeypatch.setenv("MOBILENETV2_NO_DOWNLOAD", "1")
    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((60, 100, 3), np.uint8)).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        rc = main(["dump", str(path), "--layers", "out_relu", "--out", str(tmp_path / "a.npz"),
                   "--weights", "none", "--size", "96"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert "too large to decode safely" in err and not (tmp_path / "a.npz").exists()


def test_real_photos_still_match_keras_after_the_changes():
    """The panda through a path, a binary file and a PIL image: Keras's recorded input."""
    from conftest import keras_reference
    ref = keras_reference("synthetic_keras.npz")["panda_uint8_224"]
    panda = require_shared("images", "panda.jpg")
    with open(panda, "rb") as f:
        from_file = load_image(f)
    with Image.open(panda) as img:
        from_pil = load_image(img)
    for got in (load_image(panda), from_file, from_pil):
        np.testing.assert_array_equal(got, ref)
