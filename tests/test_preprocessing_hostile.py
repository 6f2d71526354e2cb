"""load_image on images made by someone else: only the documented formats, every decoder error
as the package's ImageError, bombs refused before decoding, no float64 copies of deep images,
and every argument bounded."""
import io
import os
import signal
import struct
import zlib
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image, ImageOps

from mobilenetv2.processing import preprocessing
from mobilenetv2.errors import ArgumentError, ImageError
from mobilenetv2.processing.preprocessing import load_image


def save(img, path, fmt=None, **kw):
    img.save(path, format=fmt, **kw)
    return path


RGB = Image.fromarray(np.random.default_rng(3).integers(0, 256, (40, 48, 3), dtype=np.uint8))


@pytest.mark.parametrize("fmt", ["TGA", "ICO", "QOI", "AVIF"])
def test_formats_outside_the_list_are_refused(tmp_path, fmt):
    path = save(RGB, tmp_path / f"x.{fmt.lower()}", fmt)
    assert Image.open(path).format == fmt  # Pillow alone would decode it
    with pytest.raises(ImageError, match=r"not an image file of a format load_image reads \(JPEG, PNG"):
        load_image(path)


def test_damaged_avif_is_an_image_error(tmp_path):
    path = save(RGB, tmp_path / "x.avif", "AVIF")
    path.write_bytes(path.read_bytes()[:150])
    with pytest.raises(ImageError):
        load_image(path)


def png_header_only(width, height):
    """A PNG whose IHDR declares width x height and whose pixel data is missing."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(9000, 9000))  # 81 M pixels: under Pillow's error limit
    with pytest.raises(ImageError, match=r"9000x9000, too large to decode safely \(more than 67108864"):
        load_image(path)


def test_truncated_and_garbage_files(tmp_path):
    good = save(RGB, tmp_path / "g.png")
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ImageError, match="cut.png.*truncated or corrupt"):
        load_image(cut)
    data = bytearray(good.read_bytes())
    data[60:80] = bytes(20)
    (tmp_path / "flip.png").write_bytes(bytes(data))
    with pytest.raises(ImageError, match="flip.png"):
        load_image(tmp_path / "flip.png")


def test_exif_errors_are_image_errors(tmp_path, monkeypatch):
    """Pillow versions before 10 raised SyntaxError from exif_transpose on damaged EXIF."""
    path = save(RGB, tmp_path / "e.jpg")

    def broken(img):
        raise SyntaxError("not a TIFF file (header b'XX\\x00*' not valid)")

    monkeypatch.setattr(ImageOps, "exif_transpose", broken)
    with pytest.raises(ImageError, match="e.jpg.*SyntaxError: not a TIFF file"):
        load_image(path)


@pytest.mark.parametrize("as_bytes", [False, True])
def test_fifo_is_refused_without_waiting(tmp_path, as_bytes):
    fifo = tmp_path / "img.png"
    os.mkfifo(fifo)
    old = signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("blocked")))
    signal.alarm(10)
    try:
        with pytest.raises(ImageError, match=r"^image file '.*img.png' is a FIFO \(named pipe\), not a regular file; "
                                             "give the path of an image file$"):
            load_image(os.fsencode(fifo) if as_bytes else fifo)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_16_bit_image_matches_float64_rounding_without_float64_copies(tmp_path, monkeypatch):
    values = np.random.default_rng(5).integers(0, 65536, (40, 50)).astype(np.uint16)
    values[0, :4] = [0, 128, 65535, 32768]
    path = save(Image.fromarray(values), tmp_path / "deep.png")
    want = np.rint(values.astype(np.float64) * 255 / 65535).astype(np.uint8)  # the reference
    created = []
    real_asarray, real_array = np.asarray, np.array

    def spy(fn):
        def wrapped(*a, **k):
            out = fn(*a, **k)
            if isinstance(out, np.ndarray) and out.dtype == np.float64 and out.size >= values.size:
                created.append(out.shape)
            return out
        return wrapped

    monkeypatch.setattr(preprocessing.np, "asarray", spy(real_asarray))
    monkeypatch.setattr(preprocessing.np, "array", spy(real_array))
    got = load_image(path, target_size=(40, 50))
    np.testing.assert_array_equal(got[:, :, 0], want)
    assert created == []


def test_float_image_with_nan_and_inf(tmp_path):
    a = np.full((40, 50), 100.0, np.float32)
    a[0, 0], a[0, 1], a[0, 2] = np.nan, np.inf, -np.inf
    out = load_image(Image.fromarray(a, "F"), target_size=(40, 50))[:, :, 0]
    assert out[0, 0] == 0 and out[0, 2] == 0 and out[0, 1] == 255
    assert (out[1:] == 100).all()


@pytest.mark.parametrize("size", [0, -1, preprocessing.MAX_TARGET + 1, 2.5, True, "224", (224,),
                                  (224, 224, 3), Fraction(224), (224, None), 10 ** 30])
def test_target_size_bounds(size):
    with pytest.raises(ArgumentError, match="target_size"):
        load_image(RGB, target_size=size)


def test_target_size_numpy_ints_are_fine():
    assert load_image(RGB, target_size=(np.int64(33), np.uint16(34))).shape == (33, 34, 3)


@pytest.mark.parametrize("interp", [["bilinear"], None, 2, "Bilinear"])
def test_interpolation_must_be_a_known_name(interp):
    with pytest.raises(ArgumentError, match="interpolation must be one of"):
        load_image(RGB, interpolation=interp)


@pytest.mark.parametrize("crop", [0, -0.5, 1.01, float("nan"), True, "middle", [0.5]])
def test_crop_bounds(crop):
    with pytest.raises(ArgumentError, match="crop must be"):
        load_image(RGB, crop=crop)


def test_crop_that_rounds_to_an_empty_box():
    tall = Image.fromarray(np.zeros((1000, 32, 3), np.uint8))
    with pytest.raises(ImageError, match=r"^crop=0\.3 of image '<PIL image>' \(32x1000\) at the target's aspect "
                                         r"ratio is 0\.3x300 pixels, which rounds to an empty region"):
        load_image(tall, target_size=(1000, 1), crop=0.3)
    assert load_image(tall, target_size=(1000, 1), crop=Fraction(1, 1)).shape == (1000, 1, 3)


def test_an_error_while_converting_is_an_image_error_not_a_half_done_array(monkeypatch):
    """A decoder's error raised while converting or resizing (after the file was read) ends in
    ImageError naming the image and the error; the package's own ImageError passes unchanged."""
    def broken(self, *args, **kwargs):
        raise OSError("broken data stream when reading image file")
    monkeypatch.setattr(Image.Image, "resize", broken)
    with pytest.raises(ImageError, match=r"^image '<PIL image>' cannot be converted: OSError: broken data stream"):
        load_image(Image.fromarray(np.zeros((40, 50, 3), np.uint8)), target_size=(32, 32))
    def exhausted(self, *args, **kwargs):
        raise MemoryError
    monkeypatch.setattr(Image.Image, "resize", exhausted)  # not the unresized image handed back
    with pytest.raises(ImageError, match=r"^image '<PIL image>': out of memory while converting it$"):
        load_image(Image.fromarray(np.zeros((40, 50, 3), np.uint8)), target_size=(32, 32))
    tall = Image.fromarray(np.zeros((1000, 32, 3), np.uint8))
    with pytest.raises(ImageError, match=r"^crop=0\.3 of image"):
        load_image(tall, target_size=(1000, 1), crop=0.3)


def test_not_a_path_or_file():
    with pytest.raises(ArgumentError, match="takes a file path, a binary file or a PIL image, got int"):
        load_image(42)


def test_open_file_object_in_memory():
    buf = io.BytesIO()
    RGB.save(buf, format="PNG")
    buf.seek(0)
    np.testing.assert_array_equal(load_image(buf, target_size=(40, 48)), np.asarray(RGB))


def test_float_image_over_255_is_scaled_from_16_bits():
    values = np.linspace(0, 65535, 40 * 50).reshape(40, 50).astype(np.float32)
    want = np.rint(values.astype(np.float64) * 255 / 65535).astype(np.uint8)
    got = load_image(Image.fromarray(values, "F"), target_size=(40, 50))[:, :, 0]
    assert np.abs(got.astype(int) - want).max() <= 1  # float32 arithmetic: at most one step off
    assert (got == want).mean() > 0.99


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's own, at open
def test_our_pixel_limit_applies_below_pillows_own(tmp_path, monkeypatch):
    """Pillow only warns between its limit and twice it; the package refuses from its limit."""
    path = save(Image.fromarray(np.zeros((60, 100, 3), np.uint8)), tmp_path / "x.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)  # 6000 pixels: Pillow would only warn
    with pytest.raises(ImageError, match=r"60\b.*too large to decode safely \(more than 5000 pixels\)"):
        load_image(path)


def tiled_tiff(width, height, tile):
    """A little-endian RGB TIFF of one deflate tile of tile x tile pixels (the values: the
    pixel's x + y, per channel c + that), written byte by byte (Pillow writes no tiles)."""
    yy, xx = np.mgrid[:tile, :tile]
    pixels = (xx + yy)[..., None] + np.arange(3)
    data = zlib.compress(pixels.astype(np.uint8).tobytes())
    entries = [(256, 3, 1, width), (257, 3, 1, height), (258, 3, 3, None), (259, 3, 1, 8),
               (262, 3, 1, 2), (277, 3, 1, 3), (284, 3, 1, 1), (322, 3, 1, tile), (323, 3, 1, tile),
               (324, 4, 1, None), (325, 4, 1, len(data))]
    bits_at = 8 + 2 + 12 * len(entries) + 4
    data_at = bits_at + 6
    out = b"II*\0" + struct.pack("<IH", 8, len(entries))
    for tag, kind, count, value in entries:
        value = {258: bits_at, 324: data_at}.get(tag, value)
        out += struct.pack("<HHI", tag, kind, count)
        out += struct.pack("<HH", value, 0) if kind == 3 and count == 1 else struct.pack("<I", value)
    return out + struct.pack("<I", 0) + struct.pack("<3H", 8, 8, 8) + data, pixels[:height, :width]


def test_tiff_tile_larger_than_the_image_within_bounds_decodes(tmp_path):
    path = tmp_path / "tiled.tif"
    raw, want = tiled_tiff(64, 48, 256)
    path.write_bytes(raw)
    got = load_image(path, target_size=(48, 64))
    assert np.array_equal(got, want.astype(np.float32))


@pytest.mark.parametrize("tile, refused", [(1024, False), (1025, True)])
def test_tiff_tiles_past_the_image_may_reach_2_to_the_20_pixels(tmp_path, tile, refused):
    """A tile larger than its image is decoded whole up to 1024x1024 = 2**20 pixels (4 MB of
    RGBA buffer); one more row and column and it is refused."""
    path = tmp_path / "tiled.tif"
    raw, want = tiled_tiff(64, 48, tile)
    path.write_bytes(raw)
    if refused:
        with pytest.raises(ImageError, match=f"declares tiles of {tile}x{tile}, each decoded whole: "
                                             r"refused \(tiles larger than the image and than 1,048,576"):
            load_image(path, target_size=(48, 64))
    else:
        assert np.array_equal(load_image(path, target_size=(48, 64)), want.astype(np.float32))


@pytest.mark.parametrize("width, height", [(1, 1), (31, 31), (400, 31), (31, 400), (2, 300)])
def test_images_under_32_pixels_on_a_side_are_resized_as_keras_does(tmp_path, width, height):
    """The model's 32-pixel minimum is on its input, the resized image: a 1x1 icon or a 400x31
    banner loads as Keras's load_img loads it (it was refused, where Keras and hf_preprocess
    take it).  A flat colour stays that colour at any size."""
    path = save(Image.fromarray(np.full((height, width, 3), 7, np.uint8)), tmp_path / "x.png")
    got = load_image(path)
    assert got.shape == (224, 224, 3) and np.all(got == 7)
    rng = np.random.default_rng(width * 1000 + height)
    path = save(Image.fromarray(rng.integers(0, 256, (height, width, 3), np.uint8)), tmp_path / "r.png")
    # what keras.utils.load_img(path, target_size=(224, 224)) does: convert("RGB"), then resize
    # (width, height) with Pillow's bilinear filter
    with Image.open(path) as img:
        want = np.asarray(img.convert("RGB").resize((224, 224), Image.BILINEAR))
    assert np.array_equal(load_image(path), want)


@pytest.mark.parametrize("size", [(0, 5), (5, 0), (0, 0)])
def test_a_pil_image_without_pixels_is_an_argument_error(size):
    """Any image of a pixel is taken; a PIL image of none (no file holds one) came back as a black
    224x224 array, Pillow's resize of nothing."""
    with pytest.raises(ArgumentError, match=f"is {size[0]}x{size[1]}: it has no pixels"):
        load_image(Image.new("RGB", size))


def test_tiff_tile_far_larger_than_the_image_is_refused_before_decoding(tmp_path):
    """Each tile is inflated whole: a 64x64 image in one 26736x26736 tile took 2 GB from 2 MB."""
    path = tmp_path / "huge-tile.tif"
    raw, _ = tiled_tiff(64, 64, 2048)
    path.write_bytes(raw)
    assert 2048 * 2048 > preprocessing.MAX_TILE_PIXELS
    with pytest.raises(ImageError, match=r"is 64x64 and declares tiles of 2048x2048, each decoded whole"):
        load_image(path, target_size=(64, 64))


def test_our_own_refusals_inside_decoding_are_said_as_they_are(tmp_path, monkeypatch):
    """The pixel limit and the tile check raise ImageError inside the decoding block, whose
    handler for decoder errors must pass them on unchanged, not reword them as 'cannot be read
    (truncated or corrupt?)': the file is sound, only too large."""
    path = save(Image.fromarray(np.zeros((60, 100, 3), np.uint8)), tmp_path / "x.png")
    monkeypatch.setattr(preprocessing, "MAX_PIXELS", 5000)
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert str(info.value).startswith(f"image {str(path)!r} is 100x60, too large to decode safely")
    assert "truncated or corrupt" not in str(info.value)


def test_a_float_image_past_65535_is_white_not_wrapped_to_black():
    """F images whose values exceed 255 are scaled by 255/65535; a value past 65535 (or +inf
    there) is then past 255 and must clip to 255, not wrap to 0 in the uint8 cast."""
    a = np.full((32, 32), 30000.0, np.float32)
    a[0, 0], a[0, 1], a[0, 2] = 70000.0, 1e9, np.inf
    out = load_image(Image.fromarray(a, "F"), target_size=(32, 32))[:, :, 0]
    assert (out[0, :3] == 255).all()
    assert out[1, 1] == round(30000 * 255 / 65535)  # 117: the scale applies to the rest


def test_a_crop_of_exactly_one_pixel_is_that_pixel():
    """crop=1/32 of a 32x32 image is its 1x1 centre, rounded down-right: pixel (16, 16); one
    pixel is a region, only zero is refused."""
    a = np.random.default_rng(5).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = load_image(Image.fromarray(a), target_size=1, crop=1 / 32)
    np.testing.assert_array_equal(out[0, 0], a[16, 16])
