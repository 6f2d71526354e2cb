"""DeepLabV3 segmentation and transformers' image processing walked as a hostile user: the class
maps of logits no processor makes (integers, no labels, no pixels), photos wider than 8192, images
without pixels, and `mobilenetv2 bench --segmentation`'s arguments and JSON."""
import json

import numpy as np
import pytest
from PIL import Image

from conftest import cli_error_lines, require_shared
from mobilenetv2 import ArgumentError, hf_preprocess, post_process_semantic_segmentation
from mobilenetv2.engines import native
from mobilenetv2.processing.preprocessing import MAX_PIXELS


# -- post_process_semantic_segmentation --------------------------------------------------------
def _ramp_logits(dtype, axis):
    """Two labels over a 2x4 (axis 2) or 4x2 (axis 1) grid: label 0 is 0, label 1 the ramp
    -3, -1, 1, 3 along ``axis``.  A bilinear resize (align_corners False) of a ramp is the ramp at
    each output's source coordinate ``(x + 0.5) * 4 / W - 0.5``, so label 1 wins exactly where that
    is past 1.5: from x = W / 2 on, for an even W."""
    ramp = np.array([-3.0, -1.0, 1.0, 3.0])
    logits = np.zeros((1, 2, 4, 2) if axis == 2 else (1, 4, 2, 2), dtype)
    logits[..., 1] = ramp[None, None, :] if axis == 2 else ramp[None, :, None]
    return logits


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_class_map_wider_than_8192_is_made_as_torch_makes_it(dtype):
    """A photo may be 12000x2000 (24 M pixels; the package reads up to 64 M, with no bound a side),
    but a target side past 8192 was refused, so `segment` failed on a panorama after the model had
    run.  The map, from the ramp's hand-computed split, at 9000 wide and 9000 high."""
    wide = post_process_semantic_segmentation(_ramp_logits(dtype, 2), [(3, 9000)])[0]
    assert wide.shape == (3, 9000)
    assert (wide[:, :4500] == 0).all() and (wide[:, 4500:] == 1).all()
    tall = post_process_semantic_segmentation(_ramp_logits(dtype, 1), [(9000, 2)])[0]
    assert tall.shape == (9000, 2)
    assert (tall[:4500] == 0).all() and (tall[4500:] == 1).all()
    # the photo's own bound, the area, still holds (checked before anything is allocated)
    with pytest.raises(ArgumentError, match="target size"):
        post_process_semantic_segmentation(_ramp_logits(dtype, 2), [(2, MAX_PIXELS // 2 + 1)])


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, bool, complex, object, str])
def test_logits_that_are_not_floats_are_refused(dtype):
    """Integer logits were resized in integers (the interpolation weights truncated to 0): 94 of
    120 pixels of a 10x12 map came out wrong, silently (torch refuses integer input to a bilinear
    interpolate); complex ones lost their imaginary part with a warning, strings and bools raised
    TypeError.  Each is an ArgumentError now, with or without target sizes."""
    logits = (np.random.default_rng(0).normal(size=(1, 5, 6, 4)) * 3).astype(np.int8).astype(dtype)
    for sizes in ([(10, 12)], None):
        with pytest.raises(ArgumentError, match="logits must be floats"):
            post_process_semantic_segmentation(logits, sizes)


@pytest.mark.parametrize("shape,sizes", [((1, 5, 6, 0), None), ((1, 5, 6, 0), [(3, 3)]),
                                         ((1, 0, 6, 4), [(3, 3)]), ((1, 5, 0, 4), [(3, 3)])])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logits_without_labels_or_pixels_are_argument_errors(shape, sizes, dtype):
    """No labels: NumPy's bare ValueError (no targets) or an AttributeError; no rows to resize from
    in float64: an IndexError."""
    with pytest.raises(ArgumentError, match="at least one label"):
        post_process_semantic_segmentation(np.zeros(shape, dtype), sizes)


# -- hf_preprocess -----------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["pillow", "torchvision"])
@pytest.mark.parametrize("image", [np.zeros((0, 5, 3), np.uint8), np.zeros((5, 0, 3), np.uint8),
                                   Image.new("RGB", (0, 4)), Image.new("RGB", (4, 0))],
                         ids=["array-0-rows", "array-0-cols", "pil-0-wide", "pil-0-high"])
def test_an_image_without_pixels_is_an_argument_error(image, backend):
    """The resize divided by its short side: a ZeroDivisionError."""
    with pytest.raises(ArgumentError, match="H, W >= 1|no pixels"):
        hf_preprocess(image, None, backend)


def test_a_one_pixel_image_is_still_taken():
    """The bound above is no pixels, not few: 1x1 is resized as transformers resizes it (every
    output pixel the one input pixel), then centre-cropped, then (u / 255 - 0.5) / 0.5."""
    x = hf_preprocess(np.full((1, 1, 3), (0, 51, 255), np.uint8))
    assert x.shape == (1, 224, 224, 3)
    want = ((np.array([0, 51, 255]) * (1 / 255)).astype(np.float32) - np.float32(0.5)) / np.float32(0.5)
    assert np.array_equal(x, np.broadcast_to(want, x.shape))


@pytest.mark.parametrize("field,value", [("shortest_edge", 0), ("crop_height", 0), ("image_std", (0.5, 0.0, 0.5)),
                                         ("image_mean", (0.5, 0.5)), ("rescale_factor", "x"), ("do_resize", 1)])
def test_a_processor_config_made_by_hand_is_checked_as_its_json_is(field, value):
    """``model.processor_config`` (a ProcessorConfig) changed, or one made by hand, went into the
    processor unchecked: shortest_edge 0 a bare ValueError from Pillow, crop_height 0 an empty
    (1, 0, 224, 3) input, a std of 0 infinities (a RuntimeWarning only), a mean of two values
    NumPy's broadcast error.  Each is now the ConfigError its preprocessor_config.json gives."""
    from mobilenetv2 import ConfigError
    from mobilenetv2.formats.hf_config import ProcessorConfig
    image = np.zeros((40, 50, 3), np.uint8)
    with pytest.raises(ConfigError, match="<ProcessorConfig>"):
        hf_preprocess(image, ProcessorConfig(**{field: value}))
    # a ProcessorConfig that its JSON would give is the one used (here 300 / 100 / no normalize):
    # 40x50 to 300x375, its centre 224 x 100 at top (300 - 224) // 2, left (375 - 100) // 2
    x = hf_preprocess(image + 255, ProcessorConfig(shortest_edge=300, crop_width=100, do_normalize=False))
    assert x.shape == (1, 224, 100, 3) and (x == np.float32(1.0)).all()


# -- mobilenetv2 segment -----------------------------------------------------------------------
def test_segment_writes_the_class_map_of_a_panorama_wider_than_8192(tmp_path, capsys):
    """A 9000x200 photo: `segment` ran the model, then failed with "target size (200, 9000) must
    have sides from 1 to 8192" (a size the user never gave).  Now the indexed PNG at the photo's
    size, its values class ids, its shares summing to the whole."""
    from mobilenetv2.cli import main
    folder = require_shared("hf", "deeplabv3_mobilenet_v2_1.0_513")
    photo = np.zeros((200, 9000, 3), np.uint8)
    photo[..., 0] = np.arange(9000) % 256
    photo[..., 1] = (np.arange(200) * 1.2).astype(np.uint8)[:, None]
    Image.fromarray(photo).save(tmp_path / "pano.png")
    out = tmp_path / "mask.png"
    assert main(["segment", "--hf", str(folder), str(tmp_path / "pano.png"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    mask = Image.open(out)
    assert mask.mode == "P" and mask.size == (9000, 200)
    values = np.asarray(mask)
    assert values.max() < 21
    shares = [float(line.rsplit(None, 1)[1].rstrip("%")) for line in printed.splitlines()[1:]]
    assert len(shares) == len(np.unique(values)) and sum(shares) == pytest.approx(100, abs=0.05)


# -- mobilenetv2 bench --segmentation ----------------------------------------------------------
def test_bench_segmentation_refuses_an_empty_folder_name(tmp_path, capsys, monkeypatch):
    """`--segmentation ""` (an unset shell variable) named no folder and was timed as random
    weights ("weights: random" in the JSON); it is refused before anything is built."""
    from mobilenetv2.cli import main
    from mobilenetv2.tools import benchmark_segmentation

    def no_model(*a, **kw):
        raise AssertionError("built a model for an empty folder name")
    monkeypatch.setattr(benchmark_segmentation, "load_model", no_model)
    monkeypatch.chdir(tmp_path)
    for argv in (["--segmentation", ""], ["--segmentation="]):
        with pytest.raises(SystemExit) as info:
            main(["bench"] + argv + ["--size", "65", "--runs", "1", "--rounds", "1"])
        assert info.value.code == 2
        err = cli_error_lines(capsys.readouterr().err.strip())
        assert len(err) == 1 and "checkpoint folder, or 'random'" in err[0], err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("runs,rounds,split", [(20, 3, [7, 7, 6]), (2, 3, [1, 1]), (6, 2, [3, 3])])
def test_bench_segmentation_times_the_runs_asked_and_keeps_every_time(runs, rounds, split, tmp_path, capsys,
                                                                     monkeypatch):
    """--runs 20 over 3 rounds timed 6 a round, 18 in all (the JSON said "runs": 18), --runs 2 over
    3 rounds timed 3, and the JSON held only the summaries.  The rounds now make exactly --runs
    calls between them (rounds of one call where there are fewer runs than rounds), and each row
    keeps its calls' times by round, from which its median, p10 and min are recomputed.  (The
    timing children are replaced by given times: nothing is timed here.)"""
    pytest.importorskip("onnxruntime", reason="the segmentation bench exports to ONNX Runtime")
    if not native.available():
        pytest.skip("the segmentation bench needs the C core: the C extension is not built")
    from mobilenetv2.cli import main
    from mobilenetv2.tools import benchmark_segmentation
    asked = []

    def fake_child(ctx, engine, hf_dir, onnx_path, size, threads, calls, warmup, hide=False):
        asked.append((engine, threads, calls, warmup))
        base = {"c": 0.010, "ort": 0.020}[engine] * threads
        wall = [base + 0.001 * i for i in range(calls)]
        return wall, [w / 2 for w in wall], 100.0
    monkeypatch.setattr(benchmark_segmentation, "run_child", fake_child)
    assert main(["bench", "--segmentation", "random", "--size", "33", "--threads", "1,2", "--runs", str(runs),
                 "--rounds", str(rounds), "--warmup", "2", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    for engine in ("c", "ort"):
        for threads in (1, 2):
            assert [(c, w) for e, t, c, w in asked if (e, t) == (engine, threads)] == [(n, 2) for n in split]
    report = json.loads(next(tmp_path.glob("segmentation-*.json")).read_text())
    assert (report["runs"], report["rounds"], report["warmup"], report["threads"]) == (runs, len(split), 2, [1, 2])
    for row in report["rows"]:
        base = {"c": 10.0, "ort": 20.0}[row["engine"]] * row["threads"]
        want = [[base + i for i in range(n)] for n in split]
        assert [len(r) for r in row["times_ms_by_round"]] == split
        assert np.allclose(np.concatenate(row["times_ms_by_round"]), np.concatenate(want))
        every = np.concatenate(want)
        assert row["runs"] == runs
        assert row["median_ms"] == pytest.approx(np.median(every))
        assert row["p10_ms"] == pytest.approx(np.percentile(every, 10))
        assert row["min_ms"] == pytest.approx(every.min())
        assert row["cpu_median_ms"] == pytest.approx(np.median(every) / 2)
