"""Hugging Face folders in and out: from_pretrained's checks, save_pretrained (Keras .h5 -> the shared
converted folder, exactly), the real backbone on 101 photos, and hf_preprocess against transformers."""
import errno
import json
import re
import shutil

import numpy as np
import pytest

from conftest import keras_reference, require_shared
from mobilenetv2 import MobileNetV2
from mobilenetv2.engines import native
from mobilenetv2.hf import CheckpointError, from_pretrained, save_pretrained
from mobilenetv2.errors import ImageError
from mobilenetv2.formats.hf_config import ConfigError, ProcessorConfig, parse_processor_config
from mobilenetv2.processing.hf_processing import hf_preprocess
from mobilenetv2.formats.safetensors import SafetensorsError, load_file, save_file

PHOTOS = {"panda": "panda.jpg", "cat": "cat.png", "grace_hopper": "grace_hopper.bmp"}


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def _copy(name, tmp_path):
    dst = tmp_path / name
    shutil.copytree(require_shared("hf", name), dst)
    for p in dst.iterdir():
        p.chmod(0o644)
    return dst


# -- save_pretrained -----------------------------------------------------------------------------
def test_keras_h5_converts_to_the_shared_folder_exactly(tmp_path):
    h5 = require_shared("weights", "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5")
    ref = require_shared("hf", "mobilenet_v2_1.0_224_backbone_real")
    model = MobileNetV2(include_top=False, weights=h5)
    out = save_pretrained(model, tmp_path / "converted")
    ours, theirs = load_file(f"{out}/model.safetensors"), load_file(ref / "model.safetensors")
    assert sorted(ours) == sorted(theirs)
    for name, a in theirs.items():
        assert ours[name].dtype == a.dtype and ours[name].shape == a.shape, name
        assert np.array_equal(ours[name], a), name
    config, want = json.load(open(f"{out}/config.json")), json.load(open(ref / "config.json"))
    want.pop("transformers_version")
    assert config == want
    assert json.load(open(f"{out}/preprocessor_config.json")) == json.load(open(ref / "preprocessor_config.json"))


@pytest.mark.parametrize("name", ["mobilenet_v2_0.35_96", "deeplabv3_mobilenet_v2_1.0_513"])
def test_save_pretrained_round_trips_a_checkpoint(tmp_path, name):
    folder = require_shared("hf", name)
    model = from_pretrained(folder)
    out = save_pretrained(model, tmp_path / "again")
    ours, theirs = load_file(f"{out}/model.safetensors"), load_file(folder / "model.safetensors")
    skipped = {n for n in theirs if "conv_1x1" in n} if "deeplab" in name else set()
    assert sorted(ours) == sorted(set(theirs) - skipped)  # the segmentation model has no conv_1x1
    for n in ours:
        assert np.array_equal(ours[n], theirs[n]), n
    config, want = json.load(open(f"{out}/config.json")), json.load(open(folder / "config.json"))
    want.pop("transformers_version")
    assert config == want


# -- from_pretrained's checks --------------------------------------------------------------------
def _rewrite(folder, edit):
    tensors = {k: np.array(v) for k, v in load_file(folder / "model.safetensors").items()}
    edit(tensors)
    save_file(tensors, folder / "model.safetensors", {"format": "pt"})


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.pop("classifier.bias"), "lacks 1 tensor"),
    (lambda t: t.__setitem__("extra.weight", np.zeros(3, np.float32)), "does not have: extra.weight"),
    (lambda t: t.__setitem__("classifier.bias", np.zeros(1000, np.float32)), r"shape \(1000,\)"),
    (lambda t: t.__setitem__("classifier.bias", np.zeros(1001, np.int32)), "dtype I32"),
    (lambda t: t["classifier.bias"].__setitem__(3, np.nan), "NaN or inf"),
])
def test_checkpoint_mismatches_are_named(tmp_path, edit, message):
    folder = _copy("mobilenet_v2_0.35_96", tmp_path)
    _rewrite(folder, edit)
    with pytest.raises(CheckpointError, match=message):
        from_pretrained(folder)


def test_a_refused_load_weights_leaves_the_model_as_it_was(tmp_path):
    """load_weights set each layer as it went: a NaN in the classifier's bias (read last) was
    refused after 208 of the 262 arrays had taken the checkpoint's values, as set_weights and
    the Keras model's load_weights never leave a model."""
    folder = _copy("mobilenet_v2_0.35_96", tmp_path)
    model = from_pretrained(folder)
    before = model.get_weights()

    def edit(tensors):  # other weights, and a NaN in the last tensor read
        for name in tensors:
            tensors[name] *= 2
        tensors["classifier.bias"][3] = np.nan

    _rewrite(folder, edit)
    with pytest.raises(CheckpointError, match="NaN or inf"):
        model.load_weights(folder / "model.safetensors")
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before))


@pytest.mark.parametrize("field, value", [
    ("depth_multiplier", -1), ("depth_multiplier", "1.0"), ("output_stride", 4), ("tf_padding", 1),
    ("hidden_act", "gelu"), ("layer_norm_eps", 0), ("layer_norm_eps", 1), ("model_type", "resnet"), ("id2label", {"0": 1}),
    ("id2label", {"1": "a"}), ("id2label", {}), ("architectures", ["EvilModel"]), ("image_size", True),
])
def test_bad_config_fields_are_refused(tmp_path, field, value):
    folder = _copy("mobilenet_v2_0.35_96", tmp_path)
    config = json.load(open(folder / "config.json"))
    config[field] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=field if field != "id2label" or value != {"1": "a"} else "ids"):
        from_pretrained(folder)


def test_config_not_json_and_ignored_fields(tmp_path):
    folder = _copy("mobilenet_v2_0.35_96", tmp_path)
    config = json.load(open(folder / "config.json"))
    config.update(torch_dtype="float16", dtype="bfloat16", transformers_version="4.0", something_new=[1])
    (folder / "config.json").write_text(json.dumps(config))
    assert from_pretrained(folder).dtype == np.float32
    (folder / "config.json").write_text("{'not': json}")
    with pytest.raises(ConfigError, match="not valid JSON"):
        from_pretrained(folder)


def test_a_depth_multiplier_that_does_not_fit_the_tensors(tmp_path):
    folder = _copy("mobilenet_v2_0.35_96", tmp_path)
    config = json.load(open(folder / "config.json"))
    config["depth_multiplier"] = 0.5
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="depth_multiplier"):
        from_pretrained(folder)


def test_pytorch_bin_is_refused_with_how_to_convert(tmp_path):
    folder = _copy("mobilenet_v2_0.35_96", tmp_path)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(SafetensorsError, match="safe_serialization=True"):
        from_pretrained(folder)


def test_segmentation_checkpoint_without_conv_1x1_loads(tmp_path):
    folder = _copy("deeplabv3_mobilenet_v2_1.0_513", tmp_path)
    _rewrite(folder, lambda t: [t.pop(k) for k in list(t) if "conv_1x1" in k])
    from_pretrained(folder)


# -- the real backbone ---------------------------------------------------------------------------
@pytest.mark.skipif(not native.available(), reason="the 1e-5 bound is the C core's float32")
def test_real_backbone_from_hf_folder_matches_keras_on_101_photos():
    ref = keras_reference("real_backbone_1.0_224.npz")
    model = from_pretrained(require_shared("hf", "mobilenet_v2_1.0_224_backbone_real"))
    x = ref["inputs_uint8"].astype(np.float32) / np.float32(127.5) - np.float32(1)
    pooled = model.predict(x)
    errors = np.linalg.norm(pooled - ref["pooled"], axis=1) / np.linalg.norm(ref["pooled"], axis=1)
    assert errors.max() < 1e-5, errors.max()


def test_real_backbone_float64_matches_transformers():
    ref = np.load(require_shared("reference", "hf", "real_backbone_1.0_224.npz"))
    model = from_pretrained(require_shared("hf", "mobilenet_v2_1.0_224_backbone_real"), dtype="float64")
    keras = keras_reference("real_backbone_1.0_224.npz")
    x = keras["inputs_uint8"][ref["keras_rows"]].astype(np.float32) / np.float32(127.5) - np.float32(1)
    x = x.astype(np.float64)  # transformers' float64 run took the float32 input's values
    assert rel(model.predict(x), ref["pooler_output_f64"]) < 1e-10


# -- the image processor -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mobilenet_v2_1.0_224", "mobilenet_v2_0.35_96"])
def test_hf_preprocess_is_the_pillow_backend_bit_for_bit(name):
    ref = np.load(require_shared("reference", "hf", name + ".npz"))
    for photo, file in PHOTOS.items():
        x = hf_preprocess(require_shared("images", file), require_shared("hf", name))
        assert x.dtype == np.float32
        assert np.array_equal(x, ref[f"{photo}/pixel_values_pil"].transpose(0, 2, 3, 1)), photo


def pillow_backend(path, shortest_edge, crop):
    """transformers' Pillow-backend processor as ../shared/reference/hf/README.md writes it out,
    computed here with Pillow directly: short side to `shortest_edge`, long side int(S * long /
    short), PIL bilinear, centre crop at int((h - ch) / 2), int((w - cw) / 2), then
    ((u * (1/255)) as float32 - 0.5) / 0.5."""
    from PIL import Image
    with Image.open(path) as im:
        im = im.convert("RGB")
        w0, h0 = im.size
        if w0 <= h0:
            w, h = shortest_edge, int(shortest_edge * h0 / w0)
        else:
            w, h = int(shortest_edge * w0 / h0), shortest_edge
        u = np.asarray(im.resize((w, h), Image.BILINEAR))
    top, left = int((h - crop) / 2), int((w - crop) / 2)
    u = u[top:top + crop, left:left + crop]
    return (((u.astype(np.float64) * (1 / 255)).astype(np.float32) - np.float32(0.5)) / np.float32(0.5))[None], (h, w)


def test_hf_preprocess_is_the_pillow_backend_at_513():
    """The references hold no Pillow-backend tensor at 513 (only the torchvision backend's, for the
    panda). The recipe above is first checked against transformers' own pixel_values_pil at 224 and
    96 (bit for bit, three photos each), then hf_preprocess must equal it at 513 for the three
    photos, with the panda resized to 545x618 as the README records."""
    for name, short, crop in (("mobilenet_v2_1.0_224", 256, 224), ("mobilenet_v2_0.35_96", 128, 96)):
        ref = np.load(require_shared("reference", "hf", name + ".npz"))
        for photo, file in PHOTOS.items():
            x, _ = pillow_backend(require_shared("images", file), short, crop)
            assert np.array_equal(x, ref[f"{photo}/pixel_values_pil"].transpose(0, 2, 3, 1)), (name, photo)
    folder = require_shared("hf", "deeplabv3_mobilenet_v2_1.0_513")
    for photo, file in PHOTOS.items():
        expected, resized = pillow_backend(require_shared("images", file), 545, 513)
        if photo == "panda":
            assert resized == (545, 618)
        x = hf_preprocess(require_shared("images", file), folder)
        assert x.shape == (1, 513, 513, 3) and np.array_equal(x, expected), photo


@pytest.mark.parametrize("name", ["mobilenet_v2_1.0_224", "mobilenet_v2_0.35_96", "deeplabv3_mobilenet_v2_1.0_513"])
def test_distance_to_the_torchvision_backend(name):
    """The torchvision backend's pixel_values differ from Pillow's by one grey level (2/255) on at
    most 0.35 % of the values, and elsewhere by at most an ulp (README's table)."""
    ref = np.load(require_shared("reference", "hf", name + ".npz"))
    for photo, file in PHOTOS.items():
        if f"{photo}/pixel_values" not in ref:
            continue
        x = hf_preprocess(require_shared("images", file), require_shared("hf", name))
        diff = np.abs(x - ref[f"{photo}/pixel_values"].transpose(0, 2, 3, 1))
        level = diff > 1e-6
        assert np.allclose(diff[level], 2 / 255, atol=1e-6)
        assert level.mean() < 0.0035 and diff[~level].max(initial=0) <= 6e-8
        print(f"{name} {photo}: {level.mean():.3%} of values one level apart, "
              f"relative L2 {rel(x, ref[f'{photo}/pixel_values'].transpose(0, 2, 3, 1)):.2e}")


def test_hf_preprocess_arrays_and_errors(tmp_path):
    u = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    x = hf_preprocess(u, {"size": {"shortest_edge": 256}, "crop_size": {"height": 224, "width": 224}})
    assert x.shape == (1, 224, 224, 3)
    with pytest.raises(ConfigError, match="resample"):
        hf_preprocess(u, {"resample": 3})
    x = hf_preprocess(u, {"do_resize": False, "crop_size": {"height": 500, "width": 500}})
    assert x.shape == (1, 500, 500, 3)  # refused before; padded as below


# A 3x5 image, pixel (i, j) of channel 0 is 10 (i + 1) + (j + 1); channels 1 and 2 add 100 and 200.
SMALL = (np.add.outer(10 * np.arange(1, 4), np.arange(1, 6))[..., None] + [0, 100, 200]).astype(np.uint8)
Z = [0] * 8


@pytest.mark.parametrize("crop, rows", [
    # height 3 -> 4: one zero row, above (ceil(1 / 2) = 1); width 5 -> 4: left (5 - 4) // 2 = 0
    ((4, 4), [Z[:4], [11, 12, 13, 14], [21, 22, 23, 24], [31, 32, 33, 34]]),
    # 3 -> 5 and 5 -> 7: one zero on each side of both
    ((5, 7), [Z[:7], [0, 11, 12, 13, 14, 15, 0], [0, 21, 22, 23, 24, 25, 0], [0, 31, 32, 33, 34, 35, 0], Z[:7]]),
    # 3 -> 4 and 5 -> 6: the odd zero row and column both above / to the left
    ((4, 6), [Z[:6], [0, 11, 12, 13, 14, 15], [0, 21, 22, 23, 24, 25], [0, 31, 32, 33, 34, 35]]),
    # only the width is short: rows cropped at (3 - 2) // 2 = 0, columns 5 -> 8 padded ceil(3 / 2) = 2, 1
    ((2, 8), [[0, 0, 11, 12, 13, 14, 15, 0], [0, 0, 21, 22, 23, 24, 25, 0]]),
    # only the height is short: 3 -> 6 padded 2 above, 1 below; columns cropped at (5 - 3) // 2 = 1
    ((6, 3), [Z[:3], Z[:3], [12, 13, 14], [22, 23, 24], [32, 33, 34], Z[:3]]),
    ((3, 5), [[11, 12, 13, 14, 15], [21, 22, 23, 24, 25], [31, 32, 33, 34, 35]]),
])
def test_a_crop_larger_than_the_image_is_padded_with_zeros_as_transformers_does(crop, rows):
    """transformers' Pillow-backend MobileNetV2ImageProcessor (models/mobilenet_v2/
    image_processing_pil_mobilenet_v2.py, ``_preprocess``: resize, center_crop, rescale, normalize)
    crops with src/transformers/image_transforms.py ``center_crop``: top = (h - ch) // 2; where the
    crop is larger it places the image in zeros at ceil((ch - h) / 2) (the same for the width) and
    takes the whole crop.  The zeros are uint8, before rescale and normalize, so they come out as
    (0 - mean) / std.  Expected pixels written out by hand from those rules (transformers is not
    installed here)."""
    e0 = np.array(rows, np.uint8)
    expected_u = (e0[..., None] + (e0 > 0)[..., None] * np.array([0, 100, 200])).astype(np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    cfg = ProcessorConfig(do_resize=False, crop_height=crop[0], crop_width=crop[1], image_mean=mean, image_std=std)
    x = hf_preprocess(SMALL, cfg)
    expected = ((expected_u.astype(np.float64) * (1 / 255)).astype(np.float32) - np.float32(mean)) / np.float32(std)
    assert x.shape == (1, *crop, 3) and np.array_equal(x[0], expected)
    assert np.array_equal(x[0][e0 == 0], np.broadcast_to(-np.float32(mean) / np.float32(std), ((e0 == 0).sum(), 3)))


@pytest.mark.parametrize("config, says", [
    # sizes past what a model takes were refused only by predict, after the preprocessing had
    # allocated them (16384: ~14 GB)
    ({"size": {"shortest_edge": 4097}}, r"size must be .*each from 1 to 4096"),
    ({"size": {"shortest_edge": 0}}, r"size must be .*each from 1 to 4096"),
    ({"crop_size": {"height": 4097, "width": 224}}, r"crop_size .* each from 32 to 4096"),
    ({"crop_size": 31}, r"crop_size .* each from 32 to 4096"),
    # values that turn a pixel into inf: the CLI printed NumPy's overflow warning and the model's
    # NaN error, neither naming this file
    ({"image_std": [1e-300, 1e-300, 1e-300]}, "turn pixels into values up to 5e\\+299"),
    ({"image_mean": [1e300, 0, 0]}, "turn pixels into values up to"),
    ({"rescale_factor": 1e300}, "turn pixels into values up to"),
    ({"rescale_factor": 1e300, "do_rescale": False, "image_std": 1e-300, "do_normalize": False}, None),
])
def test_processor_values_are_checked_against_what_the_model_takes(config, says):
    if says is None:
        assert parse_processor_config(config).rescale_factor == 1e300  # unused values: accepted
        return
    with pytest.raises(ConfigError, match=says):
        parse_processor_config(config, "preprocessor_config.json")
    assert parse_processor_config({"size": {"shortest_edge": 1}}).shortest_edge == 1  # both bounds taken
    assert parse_processor_config({"size": 4096}).shortest_edge == 4096
    worst = parse_processor_config({"image_mean": [-1e3] * 3, "image_std": [1e-3] * 3})  # 1e6: fine
    assert np.isfinite(hf_preprocess(np.zeros((40, 40, 3), np.uint8), worst)).all()


def test_thin_image_is_refused_before_resizing():
    """transformers resizes the short side to 256 whatever the long side: a 1 x 60000 image
    would become 256 x 15,360,000 (11.8 GB). Refused by its size after resizing, before it."""
    import tracemalloc
    thin = np.zeros((1, 60000, 3), np.uint8)
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match=r"60000x1; resized so its short side is 256 it would be "
                                             r"15360000x256, more than 67,108,864 pixels"):
            hf_preprocess(thin)
        assert tracemalloc.get_traced_memory()[1] < 50 << 20
    finally:
        tracemalloc.stop()
    assert hf_preprocess(np.zeros((4, 1000, 3), np.uint8)).shape == (1, 224, 224, 3)  # 64000x256: taken


def test_an_oversized_config_fails_before_allocating_weights(tmp_path):
    """A config describing a far bigger net (depth_multiplier 8: ~300 M weights) than its tensors is
    refused from the safetensors header, before the model's weights exist."""
    import tracemalloc
    folder = _copy("mobilenet_v2_0.35_96", tmp_path)
    config = json.load(open(folder / "config.json"))
    config["depth_multiplier"] = 8.0
    (folder / "config.json").write_text(json.dumps(config))
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match="depth_multiplier 8"):
            from_pretrained(folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 1024 * 1024


# -- exact bounds of config fields (survivors of the mutation pass) -------------------------------
CLS = {"architectures": ["MobileNetV2ForImageClassification"]}


@pytest.mark.parametrize("obj, labels", [
    (dict(CLS, num_labels=1), {0: "LABEL_0"}),           # one class is a classifier too
    (dict(CLS, id2label={str(i): f"c{i}" for i in range(100000)}), None),
])
def test_label_count_bounds_accepted(obj, labels):
    from mobilenetv2.formats.hf_config import parse_config
    config = parse_config(obj, "config.json")
    if labels is not None:
        assert config.id2label == labels
    else:
        assert len(config.id2label) == 100000


@pytest.mark.parametrize("obj, says", [
    (dict(CLS, num_labels=0), "num_labels must be an integer from 1 to 100000"),
    (dict(CLS, id2label={str(i): f"c{i}" for i in range(100001)}), "id2label must map at most 100000 decimal ids"),
    # checked before transformers' default names are made (10**12 of them took 14 s and a MemoryError)
    ({"architectures": ["MobileNetV2ForImageClassification"], "num_labels": 10 ** 12},
     "num_labels must be an integer from 1 to 100000 .* got 1000000000000"),
    # ids as transformers writes them: ASCII digits, no leading zero ("00" and "0" were one id;
    # "\u00b2" passed isdigit() and failed int() as a bare ValueError)
    (dict(CLS, id2label={"0": "a", "00": "b"}), "no leading zero"),
    (dict(CLS, id2label={"\u00b2": "a"}), "strings of ASCII digits"),
    (dict(CLS, id2label={"\u0660": "a"}), "strings of ASCII digits"),
])
def test_label_count_bounds_refused(obj, says):
    from mobilenetv2.formats.hf_config import parse_config
    with pytest.raises(ConfigError, match=says):
        parse_config(obj, "config.json")


def test_image_size_bounds():
    from mobilenetv2.formats.hf_config import parse_config
    assert parse_config({"image_size": 32}, "config.json").image_size == 32
    assert parse_config({"image_size": 4096}, "config.json").image_size == 4096  # the model's MAX_SIZE
    for bad in (31, 4097):
        with pytest.raises(ConfigError, match=r"image_size.*\[32, 4096\]"):
            parse_config({"image_size": bad}, "config.json")


def test_missing_folder_and_wrong_model_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint folder not found"):
        from_pretrained(tmp_path / "nowhere")
    # a hub name, as transformers takes it: what to do, as nothing is downloaded
    with pytest.raises(FileNotFoundError, match=r"downloads nothing.*snapshot_download\('<name>'\)") as info:
        from_pretrained(str(tmp_path / "google/mobilenet_v2_1.0_224"))
    assert info.value.errno == errno.ENOENT and info.value.filename.endswith("google/mobilenet_v2_1.0_224")
    (tmp_path / "afile").write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="checkpoint is a folder .* not a file"):
        from_pretrained(tmp_path / "afile")
    with pytest.raises(TypeError, match="save_pretrained takes a MobileNetV2 model, got dict"):
        save_pretrained({}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_empty_save_pretrained_path_is_refused(tmp_path, monkeypatch):
    """"" was the current folder: three files written where the user did not say."""
    from mobilenetv2 import MobileNetV2, OutputPathError
    monkeypatch.chdir(tmp_path)
    model = MobileNetV2((32, 32, 3), alpha=0.35, include_top=False, weights=None)
    for path in ("", "  ", b""):
        with pytest.raises(OutputPathError, match="empty"):
            save_pretrained(model, path)
    assert not any(tmp_path.iterdir())


def test_hf_model_needs_a_config_and_describes_itself():
    from mobilenetv2.hf import HFMobileNetV2
    from mobilenetv2.formats.hf_config import parse_config
    with pytest.raises(TypeError, match="config must be an HFConfig"):
        HFMobileNetV2({"depth_multiplier": 0.35})
    backbone = HFMobileNetV2(parse_config({"depth_multiplier": 0.35}, "config.json"))
    assert backbone.describe() == "transformers MobileNetV2Model depth_multiplier=0.35"
    cls = HFMobileNetV2(parse_config(dict(CLS, depth_multiplier=0.5, num_labels=7), "config.json"))
    assert cls.describe() == "transformers MobileNetV2ForImageClassification depth_multiplier=0.5 (7 labels)"


def test_config_json_cap_is_16_mib(tmp_path):
    from mobilenetv2.formats.hf_config import read_json
    p = tmp_path / "config.json"
    body = b'{"a": 1}'
    p.write_bytes(body + b" " * (16 * 1024 * 1024 - len(body)))     # exactly 16 MiB: read
    assert read_json(p, "config.json") == {"a": 1}
    p.write_bytes(body + b" " * (16 * 1024 * 1024 + 1 - len(body)))
    with pytest.raises(ConfigError, match="larger than 16777216 bytes"):
        read_json(p, "config.json")


# -- survivors of the second mutation pass (seed 1) --------------------------------------------------
def test_config_defaults_and_exact_edges():
    from mobilenetv2.formats.hf_config import parse_config, parse_processor_config
    # transformers' default for a head without labels: two, named LABEL_0 and LABEL_1
    assert parse_config(CLS, "config.json").id2label == {0: "LABEL_0", 1: "LABEL_1"}
    assert parse_config({"layer_norm_eps": 0.999}, "config.json").layer_norm_eps == 0.999
    with pytest.raises(ConfigError, match=r"layer_norm_eps.*\(0, 1\)"):
        parse_config({"layer_norm_eps": 1.0}, "config.json")
    with pytest.raises(ConfigError, match=r"id2label's ids must be 0\.\.0, each once"):
        parse_config(dict(CLS, id2label={"1": "a"}), "config.json")
    # MobileNetV2ImageProcessor's default resize: shortest edge 256
    assert parse_processor_config({}).shortest_edge == 256
    # the mean may be negative; only the std must be positive
    assert parse_processor_config({"image_mean": [-0.5, 0.0, 2.0]}).image_mean == (-0.5, 0.0, 2.0)
    with pytest.raises(ConfigError, match="image_std must be three numbers"):
        parse_processor_config({"image_std": [0.5, 0.0, 0.5]})


def test_safetensors_header_alignment_and_a_0x80_length_byte(tmp_path):
    """save_file pads the header to 8 bytes (the data stays aligned, as the reference writer
    does); a header whose length's first byte is 0x80 is not mistaken for a pickle."""
    from mobilenetv2.formats.safetensors import SafetensorsFile
    for name_len in range(1, 10):
        p = tmp_path / f"a{name_len}.safetensors"
        save_file({"x" * name_len: np.arange(3, dtype=np.float32)}, p)
        n = int.from_bytes(p.read_bytes()[:8], "little")
        assert n % 8 == 0, n
    header = b'{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    header += b" " * (0x80 - len(header))
    p = tmp_path / "b.safetensors"
    p.write_bytes(len(header).to_bytes(8, "little") + header + np.float32(1.5).tobytes())
    assert p.read_bytes()[0] == 0x80
    with SafetensorsFile(p) as f:
        assert f.get("t").tolist() == [1.5]


@pytest.mark.parametrize("drop, dots", [(4, False), (5, True)])
def test_missing_tensors_message_lists_four_then_dots(tmp_path, drop, dots):
    folder = tmp_path / "ckpt"
    save_pretrained(MobileNetV2((32, 32, 3), alpha=0.35, include_top=False, weights=None), folder)
    tensors = load_file(folder / "model.safetensors")
    names = sorted(n for n in tensors if n.endswith("running_mean"))[:drop]
    save_file({k: v for k, v in tensors.items() if k not in names}, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=f"lacks {drop} tensor") as info:
        from_pretrained(folder)
    assert (", ..." in str(info.value)) == dots
    assert all(n in str(info.value) for n in names[:4])


def _bounds():
    """Every ranged config field with its range as its own refusal message states it."""
    from mobilenetv2.formats import hf_config
    for field, (_, want) in hf_config._CHECKS.items():
        m = re.fullmatch(r"(a number|an integer) in ([\[(])(-?[\d.]+), (-?[\d.]+)([\])])", want)
        if m:
            yield field, m.group(1) == "an integer", m.group(2) == "[", float(m.group(3)), float(m.group(4)), \
                m.group(5) == "]"


@pytest.mark.parametrize("field, integer, low_in, low, high, high_in", list(_bounds()))
def test_config_ranges_hold_at_both_ends_as_their_messages_say(field, integer, low_in, low, high, high_in):
    """Each end of a range is in or out as the message shows it ('(0, 8]': 8 taken, 0 refused), and
    a step past a closed end is refused (an integer's step: 1; a number's: a millionth)."""
    from mobilenetv2.formats.hf_config import parse_config
    step = 1 if integer else 1e-6
    kind = int if integer else float

    def taken(v):
        try:
            parse_config({field: kind(v)})
            return True
        except ConfigError as exc:
            assert field in str(exc)
            return False

    assert taken(low) == low_in and taken(high) == high_in
    assert not taken(low - step) and not taken(high + step)
    assert taken(low + step) and taken(high - step)


def test_every_numeric_config_field_has_a_checked_range():
    assert {f for f, *_ in _bounds()} == {"depth_multiplier", "depth_divisible_by", "min_depth", "expand_ratio",
                                          "layer_norm_eps", "num_channels", "image_size", "classifier_dropout_prob"}


@pytest.mark.parametrize("classes", [1000, 7])
def test_save_pretrained_names_imagenet_classes_or_transformers_defaults(tmp_path, classes):
    """Keras's 1000 ImageNet classes keep their names in id2label (0 tench, 999 toilet_tissue, as
    Keras's imagenet_class_index lists them); any other head gets transformers' LABEL_i."""
    model = MobileNetV2((96, 96, 3), alpha=0.35, weights=None, classes=classes)
    config = json.load(open(f"{save_pretrained(model, tmp_path / 'out')}/config.json"))
    labels = config["id2label"]
    assert len(labels) == classes and config["architectures"] == ["MobileNetV2ForImageClassification"]
    if classes == 1000:
        assert (labels["0"], labels["1"], labels["999"]) == ("tench", "goldfish", "toilet_tissue")
    else:
        assert labels == {str(i): f"LABEL_{i}" for i in range(7)}


def _height_width_case(crop):
    """The panda, a size {"height": 100, "width": 150} config with the crop ``crop`` (None: no
    crop), as (RGB uint8 photo, config, the crop's window of the 100x150 resize as slices)."""
    from PIL import Image
    config = {"size": {"height": 100, "width": 150}, "do_center_crop": crop is not None}
    if crop:
        config["crop_size"] = {"height": crop[0], "width": crop[1]}
    ch, cw = crop or (100, 150)
    top, left = int((100 - ch) / 2), int((150 - cw) / 2)
    with Image.open(require_shared("images", "panda.jpg")) as im:
        photo = np.asarray(im.convert("RGB"))
    return photo, config, (slice(top, top + ch), slice(left, left + cw))


def _fused(u):
    """The torchvision backend's rescale and normalize of the hub's checkpoints, in float32."""
    return (u.astype(np.float32) - np.float32(127.5)) / np.float32(127.5)


@pytest.mark.parametrize("crop", [None, (96, 128)])
def test_a_height_and_width_size_resizes_to_exactly_that(crop):
    """transformers' MobileNetV2ImageProcessor takes size {"height": H, "width": W} (resized to
    exactly H x W, the aspect not kept) as well as {"shortest_edge": N}; it was refused. Pillow
    backend: Pillow's bilinear resize to (W, H) itself, then the crop at int((h - ch) / 2); torchvision
    backend: torch's antialiased uint8 resize as torch_resize computes it (by hand elsewhere; torch
    itself in the next test)."""
    from PIL import Image
    from mobilenetv2.processing.torch_resize import resize_bilinear_aa_u8  # (by hand: test_hf_torchvision_backend)
    photo, config, window = _height_width_case(crop)
    u = np.asarray(Image.fromarray(photo).resize((150, 100), Image.BILINEAR))[window]
    want = ((u.astype(np.float64) * (1 / 255)).astype(np.float32) - np.float32(0.5)) / np.float32(0.5)
    x = hf_preprocess(photo, config)
    assert x.shape == (1,) + u.shape and np.array_equal(x[0], want)
    assert parse_processor_config(config).to_json()["size"] == {"height": 100, "width": 150}  # round trip
    want = _fused(resize_bilinear_aa_u8(photo, 100, 150)[window])
    assert np.array_equal(hf_preprocess(photo, config, backend="torchvision")[0], want)


@pytest.mark.parametrize("crop", [None, (96, 128)])
def test_a_height_and_width_size_is_torch_s_own_resize(crop):
    """The torchvision backend at size {"height": H, "width": W}: torch's own antialiased uint8
    resize to (H, W), then the crop, rescale and normalize fused."""
    torch = pytest.importorskip("torch", reason="torch (not a test extra) runs its own resize here")
    photo, config, window = _height_width_case(crop)
    t = torch.from_numpy(photo.copy()).permute(2, 0, 1)[None]
    r = torch.nn.functional.interpolate(t, size=(100, 150), mode="bilinear", antialias=True, align_corners=False)
    want = _fused(r[0].permute(1, 2, 0).numpy()[window])
    assert np.array_equal(hf_preprocess(photo, config, backend="torchvision")[0], want)


@pytest.mark.parametrize("size", [{"height": 100}, {"height": 100, "width": 0}, {"height": 4097, "width": 5},
                                  {"shortest_edge": 8, "height": 8, "width": 8}])
def test_a_size_of_neither_form_is_refused(size):
    with pytest.raises(ConfigError, match="size must be"):
        parse_processor_config({"size": size})
