"""Edges of Hugging Face checkpoint folders that the other HF tests leave out: what a pickle-only
folder tells the user to run, labels that cannot be printed, a config.json without
``architectures`` (transformers loads it by model_type), save_pretrained of a model whose input
is not RGB, and a ``layer_norm_eps`` that float32 cannot hold."""
import json

import numpy as np
import pytest

from conftest import require_shared
from mobilenetv2 import MobileNetV2, cli
from mobilenetv2.formats.hf_config import ConfigError, parse_config
from mobilenetv2.formats.safetensors import SafetensorsError, SafetensorsFile
from mobilenetv2.hf import CheckpointError, from_pretrained, save_pretrained

from test_hf_io import _copy  # noqa: E402  (a writable copy of a shared checkpoint)


def _edit_config(folder, edit):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


# -- a pytorch_model.bin alone -------------------------------------------------------------------
@pytest.mark.parametrize("name, architecture", [
    ("mobilenet_v2_0.35_96", "MobileNetV2ForImageClassification"),
    ("deeplabv3_mobilenet_v2_1.0_513", "MobileNetV2ForSemanticSegmentation"),
])
def test_a_pickle_only_folder_names_the_class_that_keeps_its_head(tmp_path, name, architecture):
    """transformers' AutoModel is MobileNetV2Model: AutoModel.from_pretrained(folder).save_pretrained
    drops the classifier or segmentation head and rewrites architectures as MobileNetV2Model. The
    conversion to run is the class config.json's architectures names."""
    folder = _copy(name, tmp_path)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(SafetensorsError) as info:
        from_pretrained(folder)
    message = str(info.value)
    assert "pytorch_model.bin" in message and "safe_serialization=True" in message
    assert f"{architecture}.from_pretrained(" in message
    assert "AutoModel.from_pretrained(" not in message


def test_a_pickle_given_directly_does_not_advise_automodel(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(b"\x80\x02}q\x00.")  # pickle.dumps({}, protocol=2): never unpickled
    with pytest.raises(SafetensorsError) as info:
        SafetensorsFile(path)
    assert "AutoModel.from_pretrained(" not in str(info.value)
    assert "MobileNetV2ForImageClassification" in str(info.value)


# -- labels ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("label, shows", [
    ("\ud800x", "U+D800"),                       # a lone surrogate: no encoding can print it
    ("tabby\n  1. forged_line  999  1.0000", "U+000A"),  # a newline: a line of output forged
    ("\x1b[2Jcleared", "U+001B"),                # a terminal escape sequence
    ("a\x00b", "U+0000"),
    ("x\x85y", "U+0085"),                         # C1 control: NEL
])
def test_labels_that_cannot_be_printed_as_they_are_are_refused_naming_the_id(label, shows):
    labels = {str(i): f"class_{i}" for i in range(5)}
    labels["3"] = label
    with pytest.raises(ConfigError) as info:
        parse_config({"architectures": ["MobileNetV2ForImageClassification"], "id2label": labels}, "c/config.json")
    assert "'c/config.json'" in str(info.value) and "id2label" in str(info.value)
    assert "3" in str(info.value) and shows in str(info.value)


@pytest.mark.parametrize("label", ["tench, Tinca tinca", "crème brûlée", "熊猫", "a\u00a0b", "👩\u200d🔬", "x y"])
def test_printable_labels_of_any_script_are_kept(label):
    config = parse_config({"architectures": ["MobileNetV2ForImageClassification"],
                           "id2label": {"0": label, "1": "b"}})
    assert config.id2label[0] == label


def test_a_checkpoint_with_a_surrogate_label_fails_at_load_naming_the_file(tmp_path, capsys):
    """Before: it loaded, and ``classify --hf`` died printing its results, with "'utf-8' codec can't
    encode character '\\ud800'", naming neither the file nor the label."""
    folder = _copy("mobilenet_v2_0.35_96", tmp_path)
    _edit_config(folder, lambda c: c["id2label"].update({str(i): "\ud800" for i in range(1001)}))
    photo = require_shared("images", "panda.jpg")
    assert cli.main(["classify", "--hf", str(folder), str(photo)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "config.json" in err and "id2label" in err


# -- config.json without architectures --------------------------------------------------------------
@pytest.mark.parametrize("name, head", [
    ("mobilenet_v2_0.35_96", "classification"),
    ("deeplabv3_mobilenet_v2_1.0_513", "segmentation"),
    ("mobilenet_v2_1.0_224_backbone_real", None),
])
def test_a_config_without_architectures_loads_by_its_tensors(tmp_path, name, head):
    """transformers' AutoModelFor... read model_type, not architectures (a config.json written by
    MobileNetV2Config(...).save_pretrained has none): the head is the one the tensors hold."""
    folder = _copy(name, tmp_path)
    _edit_config(folder, lambda c: c.pop("architectures", None))
    model = from_pretrained(folder, dtype="float64")
    assert model.config.head == head
    if head == "classification":  # the same logits as transformers' float64 run
        ref = np.load(require_shared("reference", "hf", "mobilenet_v2_0.35_96.npz"))
        x = np.random.default_rng(96 * 1000 + 96).uniform(-1, 1, (1, 96, 96, 3)).astype(np.float32)
        out = model.predict(x.astype(np.float64))
        want = ref["random_96x96/logits_f64"]
        assert np.linalg.norm(out - want) / np.linalg.norm(want) < 1e-10
    if head == "segmentation":
        assert model.predict(np.zeros((1, 64, 48, 3))).shape == (1, 8, 6, 21)


def test_without_architectures_a_folder_of_mixed_heads_is_still_refused(tmp_path):
    folder = _copy("mobilenet_v2_0.35_96", tmp_path)
    _edit_config(folder, lambda c: (c.pop("architectures"), c.update(num_labels=1001)))
    # the classification tensors with a head-less config: loads as the classifier its tensors are
    assert from_pretrained(folder).config.head == "classification"
    _edit_config(folder, lambda c: c.update(architectures=["MobileNetV2Model"]))
    with pytest.raises(CheckpointError, match="classifier"):
        from_pretrained(folder)


# -- save_pretrained of a model whose input is not RGB ------------------------------------------------
@pytest.mark.parametrize("channels", [1, 4])
def test_save_pretrained_writes_the_input_channels_the_stem_has(tmp_path, channels):
    """Before: config.json said num_channels 3 beside a stem weight (16, channels, 3, 3), a folder
    neither transformers nor from_pretrained loads."""
    model = MobileNetV2((96, 96, channels), alpha=0.35, weights=None, include_top=False, pooling="avg")
    folder = save_pretrained(model, tmp_path / "out")
    config = json.loads(open(f"{folder}/config.json").read())
    stem = SafetensorsFile(f"{folder}/model.safetensors").shape("conv_stem.first_conv.convolution.weight")
    assert config["num_channels"] == stem[1] == channels
    x = np.random.default_rng(0).uniform(-1, 1, (1, 96, 96, channels)).astype(np.float32)
    back = from_pretrained(folder)
    want = model.predict(x)  # the Keras model's own pooled features
    assert np.linalg.norm(back.predict(x) - want) / np.linalg.norm(want) < 1e-5


# -- layer_norm_eps ----------------------------------------------------------------------------------
@pytest.mark.parametrize("eps", [1e-300, 1e-46, 1e-39])
def test_a_layer_norm_eps_float32_cannot_hold_is_refused_at_load(eps):
    """float32(1e-300) is 0: a channel of variance 0 then divides by 0. Before: the folder loaded and
    predict failed with "batch-norm folding needs finite weights and var + eps > 0", naming no file."""
    assert np.float32(eps) < np.finfo(np.float32).tiny  # the independent fact
    with pytest.raises(ConfigError, match="layer_norm_eps"):
        parse_config({"layer_norm_eps": eps})


def test_a_folder_with_such_an_eps_is_refused_at_load_naming_its_config(tmp_path):
    folder = _copy("mobilenet_v2_0.35_96", tmp_path)
    _edit_config(folder, lambda c: c.update(layer_norm_eps=1e-300))
    with pytest.raises(ConfigError, match="config.json"):
        from_pretrained(folder)


@pytest.mark.parametrize("eps", [np.finfo(np.float32).tiny, 1e-12, 1e-5, 0.001, 0.999])
def test_layer_norm_eps_float32_holds_is_kept(eps):
    assert parse_config({"layer_norm_eps": float(eps)}).layer_norm_eps == float(eps)


def test_a_checkpoint_model_s_get_layer_takes_an_index_as_keras_does(tmp_path):
    """HFMobileNetV2.get_layer(index=i) was a TypeError (its override took a name only); by
    transformers' name, Keras's name and index it is the same layer."""
    from mobilenetv2 import ArgumentError, from_pretrained
    m = from_pretrained(require_shared("hf", "mobilenet_v2_0.35_96"))
    assert m.get_layer(index=1) is m.layers[1] and m.get_layer(index=-1) is m.layers[-1]
    i = [layer.name for layer in m.layers].index("Conv1_relu")  # transformers' conv_stem.first_conv
    assert m.get_layer("conv_stem.first_conv") is m.get_layer("Conv1_relu") is m.get_layer(index=i)
    with pytest.raises(ArgumentError, match=r"get_layer\(index=3\)"):
        m.get_layer(3)
    with pytest.raises(ArgumentError, match="not both"):
        m.get_layer("Conv1", index=1)
