"""A walk through transformers' classification checkpoints: config.json variants transformers
builds (depth multipliers, min_depth, tf_padding, finegrained_output, first_layer_is_expansion,
output_stride, label counts) against an independent float64 port of transformers' forward, and
the refusals of a checkpoint's values and of safetensors edge cases.

The truth for the variants is ``_transformers_forward`` below: transformers' modeling_mobilenet_v2.py
(MobileNetV2Stem, MobileNetV2InvertedResidual, apply_tf_padding, make_divisible) written again in
NumPy, NCHW, float64, from the state dict alone; the first test holds it to transformers' own float64
logits in ../shared/reference/hf."""
import json
import struct

import numpy as np
import pytest

from conftest import require_shared
from mobilenetv2 import MobileNetV2
from mobilenetv2.errors import ArgumentError
from mobilenetv2.formats.safetensors import SafetensorsFile, load_file, save_file
from mobilenetv2.formats.hf_config import ConfigError
from mobilenetv2.hf import CheckpointError, from_pretrained, save_pretrained
from mobilenetv2.processing.hf_processing import processor_config

DEFAULTS = dict(depth_multiplier=1.0, depth_divisible_by=8, min_depth=8, expand_ratio=6.0, output_stride=32,
                first_layer_is_expansion=True, finegrained_output=True, tf_padding=True, layer_norm_eps=0.001)
WIDTHS = [16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320]
STRIDES = [2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1]


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


# -- transformers' MobileNetV2, again, in float64 NumPy ------------------------------------------

def _make_divisible(value, divisor, min_value):
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * value else new)


def _depth(cfg, c):
    return _make_divisible(int(round(c * cfg["depth_multiplier"])), cfg["depth_divisible_by"], cfg["min_depth"])


def _conv(x, w, stride, dilation, groups, tf_padding):
    """torch's Conv2d (no bias) on x (C, H, W), with apply_tf_padding's pads or padding=dilation."""
    k = w.shape[-1]
    if tf_padding:
        def pads(n):
            p = max(k - stride, 0) if n % stride == 0 else max(k - n % stride, 0)
            return p // 2 * dilation, (p - p // 2) * dilation
        x = np.pad(x, ((0, 0), pads(x.shape[1]), pads(x.shape[2])))
    else:
        p = (k - 1) // 2 * dilation
        x = np.pad(x, ((0, 0), (p, p), (p, p)))
    span = dilation * (k - 1) + 1
    ho, wo = (x.shape[1] - span) // stride + 1, (x.shape[2] - span) // stride + 1
    out = np.zeros((w.shape[0], ho, wo))
    cin, cout = x.shape[0] // groups, w.shape[0] // groups
    for g in range(groups):
        for i in range(k):
            for j in range(k):
                patch = x[g * cin:(g + 1) * cin, i * dilation:i * dilation + stride * (ho - 1) + 1:stride,
                          j * dilation:j * dilation + stride * (wo - 1) + 1:stride]
                out[g * cout:(g + 1) * cout] += np.einsum("oc,chw->ohw", w[g * cout:(g + 1) * cout, :, i, j], patch)
    return out


def _layer(sd, name, x, cfg, stride=1, dilation=1, groups=1, act=True):
    """MobileNetV2ConvLayer: conv, BatchNorm2d (eval), ReLU6."""
    x = _conv(x, sd[name + ".convolution.weight"], stride, dilation, groups, cfg["tf_padding"])
    g, b, mean, var = (sd[f"{name}.normalization.{k}"][:, None, None]
                       for k in ("weight", "bias", "running_mean", "running_var"))
    x = (x - mean) / np.sqrt(var + cfg["layer_norm_eps"]) * g + b
    return np.clip(x, 0, 6) if act else x


def _transformers_forward(sd, cfg, x):
    """(logits, pooler_output, hidden_states) of MobileNetV2ForImageClassification for one NCHW
    image x (C, H, W), in float64."""
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    p = "mobilenet_v2."
    channels = [_depth(cfg, c) for c in WIDTHS]
    h = _layer(sd, p + "conv_stem.first_conv", x, cfg, stride=2)
    if not cfg["first_layer_is_expansion"]:
        h = _layer(sd, p + "conv_stem.expand_1x1", h, cfg)
    h = _layer(sd, p + "conv_stem.conv_3x3", h, cfg, groups=_depth(cfg, 32))
    h = _layer(sd, p + "conv_stem.reduce_1x1", h, cfg, act=False)  # no residual in the stem
    current, dilation, hidden = 2, 1, []
    for i in range(16):
        if current == cfg["output_stride"]:
            stride, block_dilation = 1, dilation
            dilation *= STRIDES[i]
        else:
            stride, block_dilation = STRIDES[i], 1
            current *= stride
        expanded = _make_divisible(int(round(channels[i] * cfg["expand_ratio"])), cfg["depth_divisible_by"],
                                   cfg["min_depth"])
        q = f"{p}layer.{i}."
        y = _layer(sd, q + "expand_1x1", h, cfg)
        y = _layer(sd, q + "conv_3x3", y, cfg, stride=stride, dilation=block_dilation, groups=expanded)
        y = _layer(sd, q + "reduce_1x1", y, cfg, act=False)
        h = h + y if stride == 1 and channels[i] == channels[i + 1] else y
        hidden.append(h)
    pooled = _layer(sd, p + "conv_1x1", h, cfg).mean(axis=(1, 2))
    return sd["classifier.weight"] @ pooled + sd["classifier.bias"], pooled, hidden


def _state_dict(cfg, labels, seed=0, num_channels=3):
    """Random float32 weights of the MobileNetV2ForImageClassification ``cfg`` describes, with
    the tensor names and shapes transformers' save_pretrained writes."""
    rng = np.random.default_rng(seed)
    sd = {}

    def conv(name, cin, cout, k, groups=1):
        fan = cin // groups * k * k
        sd[name + ".convolution.weight"] = (rng.standard_normal((cout, cin // groups, k, k)) *
                                            np.sqrt(2 / fan)).astype(np.float32)
        for key, lo, hi in (("weight", 0.5, 1.5), ("bias", -0.2, 0.2), ("running_mean", -0.2, 0.2),
                            ("running_var", 0.5, 2.0)):
            sd[f"{name}.normalization.{key}"] = rng.uniform(lo, hi, cout).astype(np.float32)
        sd[name + ".normalization.num_batches_tracked"] = np.array(0, np.int64)

    p = "mobilenet_v2."
    channels, stem = [_depth(cfg, c) for c in WIDTHS], _depth(cfg, 32)
    conv(p + "conv_stem.first_conv", num_channels, stem, 3)
    if not cfg["first_layer_is_expansion"]:
        conv(p + "conv_stem.expand_1x1", stem, stem, 1)
    conv(p + "conv_stem.conv_3x3", stem, stem, 3, groups=stem)
    conv(p + "conv_stem.reduce_1x1", stem, channels[0], 1)
    for i in range(16):
        expanded = _make_divisible(int(round(channels[i] * cfg["expand_ratio"])), cfg["depth_divisible_by"],
                                   cfg["min_depth"])
        conv(f"{p}layer.{i}.expand_1x1", channels[i], expanded, 1)
        conv(f"{p}layer.{i}.conv_3x3", expanded, expanded, 3, groups=expanded)
        conv(f"{p}layer.{i}.reduce_1x1", expanded, channels[i + 1], 1)
    last = 1280 if cfg["finegrained_output"] and cfg["depth_multiplier"] < 1.0 else _depth(cfg, 1280)
    conv(p + "conv_1x1", channels[-1], last, 1)
    sd["classifier.weight"] = (rng.standard_normal((labels, last)) * 0.05).astype(np.float32)
    sd["classifier.bias"] = rng.uniform(-0.1, 0.1, labels).astype(np.float32)
    return sd


def _folder(tmp_path, fields, labels=3, config_json=None):
    """A checkpoint folder of random weights for MobileNetV2Config(**fields): (folder, cfg, state dict)."""
    cfg = dict(DEFAULTS, **fields)
    sd = _state_dict(cfg, labels)
    save_file(sd, tmp_path / "model.safetensors", {"format": "pt"})
    obj = dict(fields, model_type="mobilenet_v2", architectures=["MobileNetV2ForImageClassification"],
               id2label={str(i): f"class {i}" for i in range(labels)}) if config_json is None else config_json
    (tmp_path / "config.json").write_text(json.dumps(obj))
    return tmp_path, cfg, sd


@pytest.mark.parametrize("tf_padding", [True, False])
def test_the_port_is_transformers_own_float64_run(tf_padding):
    ref = np.load(require_shared("reference", "hf", "mobilenet_v2_0.35_96.npz"))
    sd = load_file(require_shared("hf", "mobilenet_v2_0.35_96", "model.safetensors"))
    x = np.random.default_rng(33 * 1000 + 40).uniform(-1, 1, (1, 33, 40, 3)).astype(np.float32)
    logits, _, _ = _transformers_forward(sd, dict(DEFAULTS, depth_multiplier=0.35, tf_padding=tf_padding),
                                         x[0].transpose(2, 0, 1).astype(np.float64))
    key = "random_33x40/logits_f64" if tf_padding else "tf_padding_false/random_33x40/logits_f64"
    assert rel(logits, ref[key][0]) < 1e-12


# -- a stem as wide as its projection: transformers' stem has no residual ------------------------

@pytest.mark.parametrize("fields", [
    dict(depth_multiplier=0.25),                      # 8 and 8 channels
    dict(depth_multiplier=0.54),                      # 16 and 16
    dict(depth_multiplier=0.5, min_depth=32),         # 32 and 32
    dict(depth_multiplier=1.0, depth_divisible_by=32),
    dict(depth_multiplier=0.25, first_layer_is_expansion=False),
], ids=["dm0.25", "dm0.54", "min_depth32", "divisible_by32", "dm0.25_stem_expand"])
def test_a_stem_as_wide_as_its_projection_adds_no_residual(tmp_path, fields):
    folder, cfg, sd = _folder(tmp_path, fields)
    x = np.random.default_rng(5).uniform(-1, 1, (1, 67, 54, 3))
    logits, _, hidden = _transformers_forward(sd, cfg, x[0].transpose(2, 0, 1))
    gold = from_pretrained(folder, dtype="float64")
    assert rel(gold.predict(x)[0], logits) < 1e-10  # was 0.11 to 1.3 with Keras's residual
    assert "expanded_conv_add" not in {layer.name for layer in gold.layers}
    ours = gold.hidden_states(x)
    for i in (0, 1, 15):
        assert rel(ours[i][0].transpose(2, 0, 1), hidden[i]) < 1e-10
    assert rel(from_pretrained(folder).predict(x.astype(np.float32))[0], logits) < 1e-4


@pytest.mark.parametrize("alpha", [0.25, 0.1])
def test_save_pretrained_refuses_a_keras_model_whose_first_block_adds_its_input(tmp_path, alpha):
    """Keras's first block adds a residual where its widths are equal; transformers' stem does not:
    such a model was written, without a word, as a checkpoint transformers computes differently."""
    model = MobileNetV2((32, 32, 3), alpha=alpha, include_top=False, weights=None)
    assert "expanded_conv_add" in model._by_name
    with pytest.raises(ArgumentError, match=f"alpha={alpha:g}: Keras's first block adds its input.*no exact"):
        save_pretrained(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fields, labels", [
    (dict(depth_multiplier=0.75), 3),
    (dict(depth_multiplier=1.4), 3),
    (dict(depth_multiplier=0.5, finegrained_output=False), 3),
    (dict(depth_multiplier=0.35, tf_padding=False, first_layer_is_expansion=False), 3),
    (dict(depth_multiplier=0.5, output_stride=16, expand_ratio=2.5), 1),
    (dict(depth_multiplier=0.5, output_stride=8, depth_divisible_by=3, layer_norm_eps=1e-5), 1001),
])
def test_config_variants_transformers_builds_match_its_forward(tmp_path, fields, labels):
    folder, cfg, sd = _folder(tmp_path, fields, labels)
    x = np.random.default_rng(6).uniform(-1, 1, (2, 65, 49, 3))
    gold, fast = from_pretrained(folder, dtype="float64"), from_pretrained(folder)
    y64, y32 = gold.predict(x), fast.predict(x.astype(np.float32))
    assert y64.shape == (2, labels)
    for i in range(2):
        logits, _, _ = _transformers_forward(sd, cfg, x[i].transpose(2, 0, 1))
        assert rel(y64[i], logits) < 1e-10
        assert rel(y32[i], logits) < 1e-4


def test_a_minimal_config_gets_transformers_defaults(tmp_path):
    """{"depth_multiplier": 0.35} alone: no architectures (the head its tensors hold), no labels
    (transformers' LABEL_0, LABEL_1), every other field MobileNetV2Config's default."""
    folder, cfg, sd = _folder(tmp_path, dict(depth_multiplier=0.35), labels=2,
                              config_json={"depth_multiplier": 0.35})
    model = from_pretrained(folder, dtype="float64")
    assert model.id2label == {0: "LABEL_0", 1: "LABEL_1"}
    x = np.random.default_rng(7).uniform(-1, 1, (1, 48, 40, 3))
    assert rel(model.predict(x)[0], _transformers_forward(sd, cfg, x[0].transpose(2, 0, 1))[0]) < 1e-10


@pytest.mark.parametrize("problem_type", ["multi_label_classification", "regression", None])
def test_save_pretrained_keeps_the_problem_type(tmp_path, problem_type):
    """transformers' pipeline scores a multi-label or regression checkpoint with a sigmoid, not a
    softmax: a checkpoint written back by save_pretrained lost its problem_type, and so changed
    what transformers makes of it."""
    fields = dict(depth_multiplier=0.35)
    config = dict(fields, architectures=["MobileNetV2ForImageClassification"], problem_type=problem_type,
                  id2label={"0": "a", "1": "b"})
    (tmp_path / "in").mkdir()
    folder, _, _ = _folder(tmp_path / "in", fields, labels=2, config_json=config)
    out = save_pretrained(from_pretrained(folder), tmp_path / "out")
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written.get("problem_type") == problem_type and ("problem_type" in written) == (problem_type is not None)
    assert from_pretrained(out).config.problem_type == problem_type


def test_a_problem_type_transformers_refuses_is_refused(tmp_path):
    config = {"depth_multiplier": 0.35, "problem_type": "multi_label", "id2label": {"0": "a", "1": "b"}}
    folder, _, _ = _folder(tmp_path, dict(depth_multiplier=0.35), labels=2, config_json=config)
    with pytest.raises(ConfigError, match="config.json'.*problem_type must be null or one of"):
        from_pretrained(folder)


def test_the_default_processor_of_a_large_image_size_is_one_hf_preprocess_takes(tmp_path):
    """Without preprocessor_config.json the processor is the conversion script's (crop image_size,
    shortest edge image_size + 32): for image_size 4080 that edge, 4112, was past the 4096 that
    hf_preprocess holds every processor to, so the model's own processor was refused."""
    config = {"depth_multiplier": 0.35, "image_size": 4080, "id2label": {"0": "a", "1": "b"}}
    folder, _, _ = _folder(tmp_path, dict(depth_multiplier=0.35), labels=2, config_json=config)
    model = from_pretrained(folder)
    assert (model.processor_config.crop_height, model.processor_config.shortest_edge) == (4080, 4096)
    assert processor_config(model.processor_config) == model.processor_config  # what hf_preprocess checks first


# -- a checkpoint's values: refusals name the tensor as the file does ----------------------------

def _damaged(tmp_path, name, index, value, dtype=np.float32):
    src = require_shared("hf", "mobilenet_v2_0.35_96")
    tensors = {k: (np.array(v, dtype) if v.dtype == np.float32 else v)
               for k, v in load_file(src / "model.safetensors").items()}
    tensors[name].reshape(-1)[index] = value
    save_file(tensors, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_bytes((src / "config.json").read_bytes())
    return tmp_path


@pytest.mark.parametrize("name, value, dtype, says", [
    ("mobilenet_v2.conv_1x1.convolution.weight", np.nan, np.float32, "holds NaN or inf"),
    ("classifier.bias", np.inf, np.float32, "holds NaN or inf"),
    ("mobilenet_v2.layer.3.conv_3x3.normalization.running_var", np.inf, np.float16, "holds NaN or inf"),
    ("mobilenet_v2.layer.3.conv_3x3.normalization.running_var", -1.0, np.float32, r"negative values \(as low as -1\)"),
    ("classifier.bias", 1e39, np.float64, "beyond the range of float32.*dtype='float64'"),
])
def test_a_tensor_s_bad_values_are_refused_naming_the_tensor(tmp_path, name, value, dtype, says):
    folder = _damaged(tmp_path, name, 3, value, dtype)
    with pytest.raises(CheckpointError, match=f"model.safetensors'.*tensor '{name}'.*{says}"):
        from_pretrained(folder)


def test_a_float64_checkpoint_beyond_float32_loads_as_float64(tmp_path):
    folder = _damaged(tmp_path, "classifier.bias", 3, 1e39, np.float64)
    assert from_pretrained(folder, dtype="float64").get_layer("classifier").weights[1][3] == 1e39


# -- safetensors edge cases ----------------------------------------------------------------------

def test_save_file_refuses_a_tensor_named_like_the_metadata_key(tmp_path):
    """It wrote a file whose __metadata__ was a tensor: unreadable, by this reader and the reference."""
    with pytest.raises(ArgumentError, match="__metadata__"):
        save_file({"__metadata__": np.zeros(3, np.float32)}, tmp_path / "m.safetensors", {"format": "pt"})
    assert not (tmp_path / "m.safetensors").exists()


def test_a_bf16_scalar_reads_as_a_0d_array_as_f32_does(tmp_path):
    header = json.dumps({"s": {"dtype": "BF16", "shape": [], "data_offsets": [0, 2]},
                         "v": {"dtype": "BF16", "shape": [2], "data_offsets": [2, 6]}}).encode()
    header += b" " * (-len(header) % 8)
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + np.array([0x3FC0, 0xC020, 0x4049], "<u2").tobytes())
    f = SafetensorsFile(path)
    s, v = f.get("s"), f.get("v")
    assert isinstance(s, np.ndarray) and s.shape == () and s.dtype == np.float32 and s == 1.5  # was np.float32
    assert v.tolist() == [-2.5, 3.140625]


# -- classify --hf: scored as transformers' pipeline scores, any mix of image sizes ---------------

def _classify(folder, *images):
    import subprocess
    import sys
    run = subprocess.run([sys.executable, "-m", "mobilenetv2", "classify", "--hf", str(folder), "--json",
                          "--top", "5", *map(str, images)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return {r["image"]: {p["id"]: p["score"] for p in r["predictions"]} for r in json.loads(run.stdout)}


@pytest.mark.parametrize("labels, problem_type", [(1, None), (3, "multi_label_classification"),
                                                  (3, "single_label_classification"), (3, None)])
def test_classify_scores_as_transformers_pipeline_does(tmp_path, labels, problem_type):
    """transformers' image-classification pipeline applies a sigmoid per class where the config says
    multi_label_classification or there is a single label, else a softmax; `classify --hf` always
    took a softmax (a 1-label checkpoint scored 1.0000 on every image)."""
    from mobilenetv2.processing.hf_processing import hf_preprocess
    fields = dict(depth_multiplier=0.35)
    config = dict(fields, model_type="mobilenet_v2", architectures=["MobileNetV2ForImageClassification"],
                  id2label={str(i): f"class {i}" for i in range(labels)}, image_size=96)
    if problem_type:
        config["problem_type"] = problem_type
    folder, cfg, sd = _folder(tmp_path, fields, labels, config_json=config)
    image = require_shared("images", "panda.jpg")
    x = hf_preprocess(image, from_pretrained(folder).processor_config).astype(np.float64)
    logits, _, _ = _transformers_forward(sd, cfg, x[0].transpose(2, 0, 1))
    if problem_type == "multi_label_classification" or labels == 1:
        want = 1 / (1 + np.exp(-logits))
    else:
        want = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    got = _classify(folder, image)[str(image)]
    assert sorted(got) == list(range(labels))
    np.testing.assert_allclose([got[i] for i in range(labels)], want, rtol=2e-4, atol=1e-6)


def test_classify_takes_images_of_different_sizes_without_a_center_crop(tmp_path):
    """A processor without a center crop keeps each image's aspect, so two photos give inputs of
    two sizes: classify --hf failed with NumPy's concatenate message; each image is scored as when
    it is classified alone."""
    folder, _, _ = _folder(tmp_path, dict(depth_multiplier=0.35), 3)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "do_resize": True, "size": {"shortest_edge": 64}, "do_center_crop": False, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
        "resample": 2, "image_processor_type": "MobileNetV2ImageProcessor"}))
    panda, hopper = require_shared("images", "panda.jpg"), require_shared("images", "grace_hopper.bmp")
    both = _classify(folder, panda, hopper)
    for image in (panda, hopper):
        alone = _classify(folder, image)[str(image)]
        assert both[str(image)].keys() == alone.keys()
        np.testing.assert_allclose([both[str(image)][k] for k in alone], list(alone.values()), rtol=1e-6)
