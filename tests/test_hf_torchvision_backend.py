"""hf_preprocess(backend="torchvision"): transformers 5's default MobileNetV2ImageProcessor bit for bit,
without torch.  Against transformers' own ``pixel_values`` (three photos at 224 and 96, the panda at
513), and against cases worked by hand from the definitions: torch's uint8 antialiased resize
(mobilenetv2/processing/torch_resize.py), the torchvision backend's zero padding, its fused rescale/normalize."""
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from conftest import require_shared
from mobilenetv2.cli import main
from mobilenetv2.errors import ArgumentError
from mobilenetv2.processing.hf_processing import BACKENDS, hf_preprocess
from mobilenetv2.processing.torch_resize import aa_taps, resize_bilinear_aa_u8

PHOTOS = {"panda": "panda.jpg", "cat": "cat.png", "grace_hopper": "grace_hopper.bmp"}
CASES = [(model, photo) for model in ("mobilenet_v2_1.0_224", "mobilenet_v2_0.35_96") for photo in PHOTOS]
CASES.append(("deeplabv3_mobilenet_v2_1.0_513", "panda"))


@pytest.mark.parametrize("model, photo", CASES)
def test_equals_transformers_torchvision_backend_bit_for_bit(model, photo):
    ref = np.load(require_shared("reference", "hf", f"{model}.npz"))
    want = ref[f"{photo}/pixel_values"].transpose(0, 2, 3, 1)  # NCHW -> NHWC
    x = hf_preprocess(require_shared("images", PHOTOS[photo]), require_shared("hf", model), backend="torchvision")
    assert x.dtype == want.dtype == np.float32 and x.shape == want.shape
    assert np.array_equal(x, want)
    if f"{photo}/pixel_values_pil" in ref:  # the two backends really differ here: not a test of nothing
        pil = hf_preprocess(require_shared("images", PHOTOS[photo]), require_shared("hf", model))
        assert np.array_equal(pil, ref[f"{photo}/pixel_values_pil"].transpose(0, 2, 3, 1))
        assert not np.array_equal(pil, x)


# -- the resize, by hand -------------------------------------------------------------------------
def _fixed(weight, bits):
    """torch's int16 weight: floor(0.5 + w * 2**bits), from the exact fraction."""
    return int(weight * 2 ** bits + Fraction(1, 2))


def _pass(rows, first, weights, bits):
    """One hand pass over a list of rows of ints: (2**(bits-1) + sum k * pixel) >> bits, clamped."""
    return [[min(255, max(0, (2 ** (bits - 1) + sum(k * row[f + j] for j, k in enumerate(ks))) >> bits))
             for f, ks in zip(first, weights)] for row in rows]


# 7 -> 4 columns: scale s = 7/4, support 7/4; output i's centre c = s (i + 1/2) = 7/8, 21/8, 35/8, 49/8;
# inputs int(c - s + 1/2) .. int(c + s + 1/2) - 1 = 0-2, 1-3, 3-5, 4-6 (at most 6); weights
# 1 - |j + 1/2 - c| / s, normalised: 8/7 (11/8, 9/8, 1/8) / (21/8) = (11, 9, 1) / 21; (5, 13, 7) / 25;
# (7, 13, 5) / 25; (1, 9, 11) / 21.  The largest, 13/25, times 2**16 would pass 2**15: 15 bits.
COLS = ([0, 1, 3, 4], [[Fraction(n, 21) for n in (11, 9, 1)], [Fraction(n, 25) for n in (5, 13, 7)],
                       [Fraction(n, 25) for n in (7, 13, 5)], [Fraction(n, 21) for n in (1, 9, 11)]], 15)
# 5 -> 3 rows: s = 5/3, centres 5/6, 5/2, 25/6; inputs 0-1 (input 2 sits at distance exactly s: weight
# 0), 1-3, 3-4; weights (0.8, 0.6) / 1.4 = (4, 3) / 7; (0.4, 1, 0.4) / 1.8 = (2, 5, 2) / 9; (3, 4) / 7.
# The largest, 4/7, times 2**16 would pass 2**15: 15 bits.
ROWS = ([0, 1, 3], [[Fraction(4, 7), Fraction(3, 7)], [Fraction(n, 9) for n in (2, 5, 2)],
                    [Fraction(3, 7), Fraction(4, 7)]], 15)


def test_taps_are_the_hand_computed_ones():
    for (n, m), (first, weights, bits) in {(7, 4): COLS, (5, 3): ROWS}.items():
        got_first, got_k, got_bits = aa_taps(n, m)
        assert got_bits == bits and list(got_first) == first
        for row, ws in zip(got_k, weights):
            assert list(row) == [_fixed(w, bits) for w in ws] + [0] * (len(row) - len(ws))
    first, k, bits = aa_taps(7, 4)
    assert k[0, :3].tolist() == [17164, 14043, 1560] and k[1, :3].tolist() == [6554, 17039, 9175]


def test_a_5x7_image_resized_to_3x4_by_hand():
    u = np.random.default_rng(7).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    u[0, :, 0] = 255  # a saturated row and a black column as well
    u[:, 2, 1] = 0
    want = np.zeros((3, 4, 3), np.uint8)
    for c in range(3):
        rows = [[int(v) for v in u[y, :, c]] for y in range(5)]
        cols = _pass(rows, COLS[0], [[_fixed(w, COLS[2]) for w in ws] for ws in COLS[1]], COLS[2])  # 5 x 4
        cols_t = [list(col) for col in zip(*cols)]                                                   # 4 x 5
        out_t = _pass(cols_t, ROWS[0], [[_fixed(w, ROWS[2]) for w in ws] for ws in ROWS[1]], ROWS[2])  # 4 x 3
        want[:, :, c] = np.array(out_t).T
    assert np.array_equal(resize_bilinear_aa_u8(u, 3, 4), want)


def test_six_to_one_breaks_a_tie_as_torch_does_not_as_pillow():
    """6 -> 1: s = 6, centre 3, all six inputs, weights (7, 9, 11, 11, 9, 7) / 54; the largest, 11/54,
    takes 17 bits.  This row averages to exactly 87.5: torch's 17-bit weights (16991, 21845, 26700)
    round it up to 88, Pillow's 22-bit ones (543706, 699051, 854395, summing below 2**22) down to 87."""
    row = [43, 24, 152, 16, 109, 197]
    assert sum(Fraction(n, 54) * v for n, v in zip((7, 9, 11, 11, 9, 7), row)) == Fraction(175, 2)
    first, k, bits = aa_taps(6, 1)
    assert bits == 17 and k[0].tolist()[:6] == [_fixed(Fraction(n, 54), 17) for n in (7, 9, 11, 11, 9, 7)]
    u = np.repeat(np.array(row, np.uint8)[None, :, None], 3, axis=2)
    assert resize_bilinear_aa_u8(u, 1, 1)[0, 0].tolist() == [88, 88, 88]
    assert np.asarray(Image.fromarray(u).resize((1, 1), Image.BILINEAR))[0, 0].tolist() == [87, 87, 87]


def test_precision_stops_at_22_bits_as_torch_s_does():
    """600 -> 1 (a short side of 1 in a preprocessor config, or a thin image): s = 600, centre 300,
    all 600 inputs, weights 1 - |j + 1/2 - 300| / 600 summing to 600 - 150 = 450; the largest,
    (1199/1200) / 450, times 2**23 is 18,626, below 2**15, so the bit rule alone would give 23 bits;
    torch stops at 22 (its int32 sums of 255 * 2**bits must not overflow).  300 -> 1 reaches 22 by
    the rule: (599/600) / 225 times 2**23 passes 2**15."""
    for n in (600, 300):
        first, k, bits = aa_taps(n, 1)
        total = Fraction(n * n - n * n // 4, n)  # n - (sum over j of |j + 1/2 - n/2|) / n = 3n/4
        assert bits == 22 and first.tolist() == [0]
        assert k[0].tolist()[:n] == [_fixed((1 - abs(Fraction(2 * j + 1 - n, 2)) / n) / total, 22) for j in range(n)]
    u = np.full((1, 600, 3), 255, np.uint8)
    assert resize_bilinear_aa_u8(u, 1, 1).tolist() == [[[255, 255, 255]]]


def test_upsampling_two_to_three_by_hand():
    """2 -> 3: s = 2/3 < 1, so the support is 1 input: centres 1/3, 1, 5/3 take input 0, both (1/2
    each), input 1; the largest weight, 1, takes 14 bits; the middle is (a + b + 1) // 2."""
    first, k, bits = aa_taps(2, 3)
    assert bits == 14 and first.tolist() == [0, 0, 1] and k[:, :2].tolist() == [[16384, 0], [8192, 8192], [16384, 0]]
    u = np.array([[[10, 0, 255], [13, 255, 254]]], np.uint8)
    assert resize_bilinear_aa_u8(u, 1, 3).tolist() == [[[10, 0, 255], [12, 128, 255], [13, 255, 254]]]
    assert resize_bilinear_aa_u8(u, 2, 2).tolist() == [u[0].tolist(), u[0].tolist()]  # rows alone: copies


def test_sizes_that_do_not_change_are_copied_and_tiny_sizes_work():
    u = np.random.default_rng(1).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    assert np.array_equal(resize_bilinear_aa_u8(u, 4, 5), u)
    assert resize_bilinear_aa_u8(u, 1, 1).shape == (1, 1, 3)
    assert resize_bilinear_aa_u8(u[:1, :1], 3, 2).tolist() == [[u[0, 0].tolist()] * 2] * 3


# -- the crop's padding and the rescale ----------------------------------------------------------
def test_odd_padding_puts_the_extra_zero_below_and_right():
    """A 29x28 image in a 32x33 crop: 3 rows and 5 columns of zeros.  The torchvision backend pads
    diff // 2 before and the rest after (tvF.pad): 1 row above, 2 below, 2 columns left, 3 right;
    the Pillow backend the other way round: 2 above, 1 below, 3 left, 2 right."""
    u = np.random.default_rng(3).integers(1, 256, (29, 28, 3), dtype=np.uint8)
    cfg = {"do_resize": False, "crop_size": {"height": 32, "width": 33}}
    for backend, top, left in (("torchvision", 1, 2), ("pillow", 2, 3)):
        x = hf_preprocess(u, cfg, backend=backend)[0]
        inside = np.zeros((32, 33), bool)
        inside[top:top + 29, left:left + 28] = True
        assert (x[~inside] == -1.0).all() and (x[inside] > -1.0).all(), backend
    x = hf_preprocess(u, cfg, backend="torchvision")[0]
    assert np.array_equal(x[1:30, 2:30], (u.astype(np.float32) - np.float32(127.5)) / np.float32(127.5))


def test_padding_one_side_and_cropping_the_other():
    u = np.random.default_rng(2).integers(1, 256, (29, 40, 3), dtype=np.uint8)
    x = hf_preprocess(u, {"do_resize": False, "crop_size": {"height": 32, "width": 32}}, backend="torchvision")[0]
    assert np.array_equal(x[1:30], (u[:, 4:36].astype(np.float32) - np.float32(127.5)) / np.float32(127.5))
    assert (x[[0, 30, 31]] == -1.0).all()


def test_rescale_and_normalize_are_fused_in_float32():
    """transformers divides the mean and std by the factor (float32(m) * float32(1 / r)) and then
    computes (u - mean) / std: for the hub's 0.5 / 0.5 / (1 / 255), (u - 127.5) / 127.5, one float32
    ulp away from the Pillow backend's ((u / 255 in float64) - 0.5) / 0.5 for some u."""
    u = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    cfg = {"do_resize": False, "do_center_crop": False}
    tv, pil = hf_preprocess(u, cfg, "torchvision")[0], hf_preprocess(u, cfg, "pillow")[0]
    f = u.astype(np.float32)
    assert np.array_equal(tv, (f - np.float32(127.5)) / np.float32(127.5))
    assert 0 < np.count_nonzero(tv != pil) and np.abs(tv - pil).max() <= np.spacing(np.float32(1))
    imagenet = dict(cfg, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    m, s, r = np.float32([0.485, 0.456, 0.406]), np.float32([0.229, 0.224, 0.225]), np.float32(255.0)
    assert np.array_equal(hf_preprocess(u, imagenet, "torchvision")[0], (f - m * r) / (s * r))
    rescale_only = dict(cfg, do_normalize=False, rescale_factor=0.0039)
    assert np.array_equal(hf_preprocess(u, rescale_only, "torchvision")[0], f * np.float32(0.0039))
    assert np.array_equal(hf_preprocess(u, dict(cfg, do_normalize=False, do_rescale=False), "torchvision")[0], f)


# -- the argument and the command line -----------------------------------------------------------
@pytest.mark.parametrize("backend", ["Pillow", "torch", "", None, 1, ("pillow",), np.array("pillow")])
def test_backend_is_checked(backend):
    with pytest.raises(ArgumentError, match=r"backend must be one of 'pillow', 'torchvision'"):
        hf_preprocess(np.zeros((8, 8, 3), np.uint8), backend=backend)
    assert BACKENDS == ("pillow", "torchvision")


@pytest.mark.parametrize("u, size", [(np.zeros((4, 4), np.uint8), (2, 2)), (np.zeros((4, 4, 3)), (2, 2)),
                                     (np.zeros((0, 4, 3), np.uint8), (2, 2)), (np.zeros((4, 4, 3), np.uint8), (0, 2)),
                                     (np.zeros((4, 4, 3), np.uint8), (2.5, 2))])
def test_resize_refuses_what_it_cannot_take(u, size):
    with pytest.raises(ArgumentError, match="resize_bilinear_aa_u8"):
        resize_bilinear_aa_u8(u, *size)


def test_classify_hf_backend_torchvision_gives_transformers_default_top5(capsys):
    import json
    folder = require_shared("hf", "mobilenet_v2_1.0_224")
    ref = np.load(require_shared("reference", "hf", "mobilenet_v2_1.0_224.npz"))
    images = [str(require_shared("images", f)) for f in ("panda.jpg", "cat.png")]
    assert main(["classify", "--hf", str(folder), *images, "--json", "--hf-backend", "torchvision"]) == 0
    for result, photo in zip(json.loads(capsys.readouterr().out), ("panda", "cat")):
        assert [p["id"] for p in result["predictions"]] == list(np.argsort(-ref[f"{photo}/logits"][0])[:5])


def test_hf_backend_without_hf_is_refused(capsys):
    image = str(require_shared("images", "cat.png"))
    assert main(["classify", image, "--hf-backend", "torchvision"]) == 2
    assert "--hf-backend applies only with --hf" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["classify", "--hf", "x", image, "--hf-backend", "tf"])
    assert exc.value.code == 2 and "invalid choice: 'tf'" in capsys.readouterr().err
