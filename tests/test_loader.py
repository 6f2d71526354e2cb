"""The .h5 loader on files written here in every Keras layout, with the model's shapes taken
from ``arch.build_layers``; and on the two real files in shared/weights.

The writers below follow the layouts Keras documents in its saving code (legacy HDF5:
``layer_names`` / ``weight_names`` attributes, chunked when long; Keras 3: ``layers/<class>_<n>/vars/<i>``).
"""
import os
import re
import zipfile

import h5py
import numpy as np
import pytest

from conftest import require_shared
from mobilenetv2 import MobileNetV2
from mobilenetv2.network import arch
from mobilenetv2.formats import loader
from mobilenetv2.formats.loader import WeightsError

KERAS3_CLASS = {"Conv2D": "conv2d", "DepthwiseConv2D": "depthwise_conv2d",
                "BatchNormalization": "batch_normalization", "Dense": "dense", "ReLU": "re_lu",
                "ZeroPadding2D": "zero_padding2d", "Add": "add", "InputLayer": "input_layer",
                "GlobalAveragePooling2D": "global_average_pooling2d"}


def model_layers(alpha=0.35, include_top=False, classes=10, seed=0):
    """Every layer of the Keras model as (name, class, [(weight name, random array)])."""
    rng = np.random.default_rng(seed)
    out = []
    for layer in arch.build_layers(alpha, include_top=include_top, classes=classes):
        weights = [(w, rng.standard_normal(s).astype(np.float32))
                   for w, s in zip(layer.weight_names, layer.weight_shapes())]
        weights = [(w, np.abs(a) if w == "moving_variance" else a) for w, a in weights]
        out.append((layer.name, type(layer).__name__, weights))
    return out


def expected_of(layers):
    return [(name, [(w, a.shape) for w, a in ws]) for name, _, ws in layers if ws]


def arrays_of(layers):
    return [[a for _, a in ws] for _, _, ws in layers if ws]


def old_name(name):
    """The 2018 official files' names: 'block_3_expand' -> 'mobl3_conv_3_expand',
    'block_3_expand_BN' -> 'bn3_conv_3_bn_expand' (expanded_conv is block 0)."""
    m = re.fullmatch(r"(?:block_(\d+)|expanded_conv)_(expand|depthwise|project)(_BN)?", name)
    if not m:
        return {"Conv_1_bn": "bn_Conv_1", "predictions": "Logits"}.get(name, name)
    i, op, bn = m.group(1) or "0", m.group(2), m.group(3)
    return f"bn{i}_conv_{i}_bn_{op}" if bn else f"mobl{i}_conv_{i}_{op}"


def write_keras2(path, layers, colon=True, nested=True, chunks=1, model_file=False,
                 rename=None, dtype=None):
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if model_file else f
        if model_file:
            f.attrs["model_config"] = "{}"
        names = [(rename or (lambda n: n))(name) for name, _, _ in layers]
        encoded = np.array([n.encode() for n in names])
        if chunks == 1:
            root.attrs["layer_names"] = encoded
        else:
            for i, part in enumerate(np.array_split(encoded, chunks)):
                root.attrs[f"layer_names{i}"] = part
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = b"2.1.6"
        for lname, (_, _, weights) in zip(names, layers):
            g = root.create_group(lname)
            wnames = []
            for wname, a in weights:
                full = (f"{lname}/{wname}" if nested else wname) + (":0" if colon else "")
                g.create_dataset(full, data=a if dtype is None else a.astype(dtype))
                wnames.append(full.encode())
            if chunks > 1 and len(wnames) > 1:
                for i, part in enumerate(np.array_split(np.array(wnames), 2)):
                    g.attrs[f"weight_names{i}"] = part
            else:
                g.attrs["weight_names"] = np.array(wnames) if wnames else np.array([])


def write_keras3(path, layers, container="layers", wrap=None):
    """Keras 3 .weights.h5: layers named by class and numbered per class in model order;
    ``wrap`` nests the whole model as one layer of that class name (a model in a model)."""
    with h5py.File(path, "w") as f:
        f.create_group("vars")
        f.create_group("optimizer/vars")
        top = f.create_group(container)
        if wrap:
            top.create_group(f"{wrap}/vars")
            top = top.create_group(f"{wrap}/layers")
        used = {}
        for _, cls, weights in layers:
            base = KERAS3_CLASS[cls]
            n = used.get(base, -1) + 1
            used[base] = n
            g = top.create_group((f"{base}_{n}" if n else base) + "/vars")
            for i, (_, a) in enumerate(weights):
                g.create_dataset(str(i), data=a)


def assert_arrays_equal(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert len(g) == len(w)
        for a, b in zip(g, w):
            assert a.dtype == np.float32 and a.flags.c_contiguous
            np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def small():
    return model_layers(0.35, include_top=False)


# -- every layout reads back the written arrays in model order ---------------------------------
@pytest.mark.parametrize("colon, nested, chunks, model_file", [
    (True, True, 1, False),    # tf.keras 2 save_weights
    (False, True, 1, False),   # Keras 3 legacy .h5 (weight path without ':0')
    (True, False, 1, False),   # datasets directly in the layer group
    (True, True, 3, False),    # layer_names0.. / weight_names0.. chunks
    (True, True, 1, True),     # whole-model file: model_weights/
])
def test_keras2_layouts(tmp_path, small, colon, nested, chunks, model_file):
    path = tmp_path / "w.h5"
    write_keras2(path, small, colon=colon, nested=nested, chunks=chunks, model_file=model_file)
    assert_arrays_equal(loader.load_by_order(path, expected_of(small)), arrays_of(small))
    read = loader.read_weights(path)
    assert [name for name, _ in read] == [name for name, _, ws in small if ws]
    assert [[w for w, _ in ws] for _, ws in read] == [[w for w, _ in ws] for _, _, ws in small if ws]


def test_old_2018_layer_names_match_by_order(tmp_path):
    layers = model_layers(0.35, include_top=True, classes=10)
    path = tmp_path / "old.h5"
    write_keras2(path, layers, rename=old_name)
    names = [name for name, _ in loader.read_weights(path)]
    assert names[2:6] == ["mobl0_conv_0_depthwise", "bn0_conv_0_bn_depthwise",
                          "mobl0_conv_0_project", "bn0_conv_0_bn_project"]
    assert names[-1] == "Logits"
    assert_arrays_equal(loader.load_by_order(path, expected_of(layers)), arrays_of(layers))


@pytest.mark.parametrize("container, wrap", [("layers", None), ("_layer_checkpoint_dependencies", None),
                                             ("layers", "functional")])
def test_keras3_weights_h5(tmp_path, container, wrap):
    layers = model_layers(0.35, include_top=True, classes=10)
    path = tmp_path / "m.weights.h5"
    write_keras3(path, layers, container, wrap)
    assert_arrays_equal(loader.load_by_order(path, expected_of(layers)), arrays_of(layers))
    read = dict(loader.read_weights(path))
    prefix = f"{wrap}/" if wrap else ""
    assert [w for w, _ in read[prefix + "batch_normalization_3"]] == ["gamma", "beta", "moving_mean",
                                                                      "moving_variance"]
    # the 11th depthwise layer of the model is block_10's
    block_10 = next(ws for name, _, ws in layers if name == "block_10_depthwise")
    np.testing.assert_array_equal(read[prefix + "depthwise_conv2d_10"][0][1], block_10[0][1])


def keras_archive(tmp_path, layers):
    """A .keras file as Keras 3 writes one: config.json and model.weights.h5 in a zip."""
    inner = tmp_path / "model.weights.h5"
    write_keras3(inner, layers)
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", "{}")
        zf.write(inner, "model.weights.h5")
    return path


def test_keras_archive(tmp_path, small):
    path = keras_archive(tmp_path, small)
    assert_arrays_equal(loader.load_by_order(path, expected_of(small)), arrays_of(small))


def test_weights_stored_by_name_in_another_order_and_dtype(tmp_path, small):
    """Batch-norm statistics written before gamma/beta, in float64: matched by name, float32 out."""
    shuffled = [(n, c, ws[2:] + ws[:2] if len(ws) == 4 else ws) for n, c, ws in small]
    path = tmp_path / "w.h5"
    write_keras2(path, shuffled, dtype=np.float64)
    assert_arrays_equal(loader.load_by_order(path, expected_of(small)), arrays_of(small))


def test_float16_weights_load_as_their_exact_float32_values(tmp_path, small):
    """A file saved in half precision (a mixed-precision model's weights cast down) is read: every
    float16 is a float32 exactly, so the loaded arrays are the written ones, widened."""
    path = tmp_path / "w.h5"
    write_keras2(path, small, dtype=np.float16)
    halves = [[a.astype(np.float16).astype(np.float32) for a in ws] for ws in arrays_of(small)]
    assert any(not np.array_equal(h, a) for hs, ws in zip(halves, arrays_of(small)) for h, a in zip(hs, ws))
    assert_arrays_equal(loader.load_by_order(path, expected_of(small)), halves)


@pytest.mark.parametrize("width, refused", [(256, False), (257, True)])
def test_a_name_list_over_16_mib_is_refused_before_it_is_read(tmp_path, width, refused):
    """65,536 names (the most a list may hold) of 256 bytes is 16 MiB, the largest list read;
    one byte wider per name and the attribute is refused before any of it is read."""
    path = tmp_path / "w.h5"
    with h5py.File(path, "w", libver="latest") as f:  # dense attribute storage: over 64 KB
        f.attrs["layer_names"] = np.array([b"x" * width] * loader.MAX_ATTR_ELEMENTS)
    with pytest.raises(WeightsError) as info:
        loader.read_weights(path)
    said = str(info.value)
    if refused:
        assert f"holds 65536 names of {width} bytes, more than any Keras file (16777216 bytes" in said
    else:  # read whole: the first name listed has no group
        assert "more than any Keras file" not in said and "lists layer 'xxx" in said


def test_check_file_holds_hdf5_to_its_superblock_and_passes_an_archive(tmp_path, small):
    """The download check: an HDF5 file must end where its superblock says; a .keras archive
    (a zip: no HDF5 superblock at offset 0 to hold it to) passes once it opens safely."""
    path = tmp_path / "w.h5"
    write_keras2(path, small)
    loader.check_file(path)
    data = path.read_bytes()
    (tmp_path / "long.h5").write_bytes(data + b"\0" * 16)
    with pytest.raises(WeightsError, match=f"is {len(data) + 16} bytes and its HDF5 superblock says "
                                           f"{len(data)}: bytes were appended"):
        loader.check_file(tmp_path / "long.h5")
    loader.check_file(keras_archive(tmp_path, small))


def test_model_loads_a_file(tmp_path):
    layers = model_layers(0.5, include_top=True, classes=7)
    path = tmp_path / "w.h5"
    write_keras2(path, layers, rename=old_name)
    model = MobileNetV2((96, 96, 3), alpha=0.5, include_top=True, classes=7, weights=path)
    assert_arrays_equal([layer.get_weights() for layer in model.weighted_layers()], arrays_of(layers))


# -- mismatches say what is wrong and the likely cause ------------------------------------------
def load_error(path, alpha=0.35, include_top=False, classes=10):
    with pytest.raises(WeightsError) as info:
        loader.load_by_order(path, expected_of(model_layers(alpha, include_top, classes)),
                             context=f"MobileNetV2 alpha={alpha}")
    return str(info.value)


@pytest.mark.parametrize("file_alpha, model_alpha, layer", [(0.5, 0.35, "block_1_project"),
                                                            (1.0, 0.35, "Conv1"),
                                                            (0.35, 1.4, "Conv1")])
def test_wrong_alpha_names_the_files_alpha(tmp_path, file_alpha, model_alpha, layer):
    path = tmp_path / "w.h5"
    write_keras2(path, model_layers(file_alpha), rename=old_name)
    msg = load_error(path, alpha=model_alpha)
    assert str(path) in msg and f"alpha={model_alpha}" in msg
    assert f"'{layer}' (in the file: '{old_name(layer)}')" in msg
    assert f"looks like alpha={file_alpha}" in msg
    assert "should have shape" in msg


def test_wrong_alpha_in_keras3_file(tmp_path):
    path = tmp_path / "w.weights.h5"
    write_keras3(path, model_layers(0.75))
    assert "looks like alpha=0.75" in load_error(path, alpha=0.35)


def test_file_with_top_model_without(tmp_path):
    path = tmp_path / "w.h5"
    write_keras2(path, model_layers(0.35, include_top=True, classes=10), rename=old_name)
    msg = load_error(path, include_top=False)
    assert "'Logits', 10 classes" in msg and "include_top=True" in msg and "looks like alpha" not in msg


def test_file_without_top_model_with(tmp_path, small):
    path = tmp_path / "w.h5"
    write_keras2(path, small)
    msg = load_error(path, include_top=True)
    assert "nothing in the file for 'predictions'" in msg and "include_top=False" in msg


def test_classes_mismatch(tmp_path):
    path = tmp_path / "w.h5"
    write_keras2(path, model_layers(0.35, include_top=True, classes=10))
    msg = load_error(path, include_top=True, classes=7)
    assert "'predictions'" in msg and "(1280, 7)" in msg and "(1280, 10)" in msg and "classes=10" in msg


def test_missing_layers(tmp_path, small):
    weighted = [i for i, (_, _, ws) in enumerate(small) if ws]
    path = tmp_path / "w.h5"
    write_keras2(path, small[:weighted[-3]])
    msg = load_error(path)
    assert "the file has 101 layers with weights and the model has 104" in msg
    assert "nothing in the file for 'block_16_project_BN'" in msg


def test_extra_weight_in_a_layer(tmp_path, small):
    layers = [(n, c, ws + [("bias", np.zeros(ws[0][1].shape[-1], np.float32))] if n == "Conv1" else ws)
              for n, c, ws in small]
    path = tmp_path / "w.h5"
    write_keras2(path, layers)
    msg = load_error(path)
    assert "layer #0 'Conv1'" in msg and "takes 1 weight(s) (kernel), the file has 2 (kernel, bias)" in msg


def test_nan_weight_is_rejected(tmp_path, small):
    layers = [(n, c, [(w, a.copy()) for w, a in ws]) for n, c, ws in small]
    bn = [n for n, *_ in layers].index("block_5_depthwise_BN")
    layers[bn][2][3][1][7] = np.nan
    path = tmp_path / "w.h5"
    write_keras2(path, layers)
    msg = load_error(path)
    assert "'block_5_depthwise_BN'" in msg and "'moving_variance'" in msg and "1 NaN or inf" in msg


def test_integer_weights_are_rejected(tmp_path, small):
    path = tmp_path / "w.h5"
    write_keras2(path, small, dtype=np.int32)
    assert "dtype int32, expected floating point" in load_error(path)


# -- files that are not weights files ------------------------------------------------------------
def test_truncated_file(tmp_path, small):
    path = tmp_path / "w.h5"
    write_keras2(path, small)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        loader.read_weights(path)


def test_garbage_empty_missing_directory(tmp_path):
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"<html>404 Not Found</html>" * 10)
    with pytest.raises(WeightsError, match=r"not an HDF5 file \(it starts with b'<html>40'\)"):
        loader.read_weights(garbage)
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match="is empty"):
        loader.read_weights(empty)
    with pytest.raises(FileNotFoundError, match="weights file not found") as info:
        loader.read_weights(tmp_path / "nope.h5")
    assert info.value.filename == os.fspath(tmp_path / "nope.h5")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        loader.read_weights(tmp_path)
    bad_zip = tmp_path / "x.keras"
    with zipfile.ZipFile(bad_zip, "w") as zf:
        zf.writestr("config.json", "{}")
    with pytest.raises(WeightsError, match="without model.weights.h5"):
        loader.read_weights(bad_zip)


def test_hdf5_that_is_not_keras(tmp_path):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros(3)
    with pytest.raises(WeightsError, match=r"not a Keras weights file.*'images'"):
        loader.read_weights(path)


# -- the real backbone files ---------------------------------------------------------------------
OLD_NAMES = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
NEW_NAMES = "mobilenet_v2_1.0_224_no_top.keras3-names.h5"


def test_real_files_give_identical_weights():
    old, new = require_shared("weights", OLD_NAMES), require_shared("weights", NEW_NAMES)
    a = MobileNetV2(alpha=1.0, include_top=False, weights=old)
    b = MobileNetV2(alpha=1.0, include_top=False, weights=new)
    wa, wb = a.get_weights(), b.get_weights()
    assert len(wa) == len(wb) == 52 + 52 * 4  # 52 convolutions (kernel), 52 batch norms (4 each)
    for x, y in zip(wa, wb):
        np.testing.assert_array_equal(x, y)
    # read the file directly with h5py: the model's block_16_project kernel is the file's
    # mobl16_conv_16_project kernel, and block_16_project_BN's variance bn16_conv_16_bn_project's
    with h5py.File(old, "r") as f:
        kernel = f["mobl16_conv_16_project/mobl16_conv_16_project/kernel:0"][()]
        variance = f["bn16_conv_16_bn_project/bn16_conv_16_bn_project/moving_variance:0"][()]
    np.testing.assert_array_equal(a.get_layer("block_16_project").get_weights()[0], kernel)
    np.testing.assert_array_equal(a.get_layer("block_16_project_BN").get_weights()[3], variance)


def test_model_saved_inside_another_model(tmp_path):
    """tf.keras 2 saves a model used as a layer (Sequential([MobileNetV2, Dense])) as one group
    whose weights are '<inner layer>/<weight>:0', all trainable weights first."""
    backbone = model_layers(0.35, include_top=False)
    head = model_layers(0.35, include_top=True, classes=10)[-1]
    weights = [(n, w, a) for n, _, ws in backbone for w, a in ws]
    trainable = [x for x in weights if x[1] not in ("moving_mean", "moving_variance")]
    frozen = [x for x in weights if x[1] in ("moving_mean", "moving_variance")]
    path = tmp_path / "nested.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"input_1", b"mobilenetv2_0.35_224", b"dense"])
        f.create_group("input_1").attrs["weight_names"] = np.array([])
        g = f.create_group("mobilenetv2_0.35_224")
        names = [f"{n}/{w}:0".encode() for n, w, _ in trainable + frozen]
        for i, part in enumerate(np.array_split(np.array(names), 2)):
            g.attrs[f"weight_names{i}"] = part
        for (n, w, a), name in zip(trainable + frozen, names):
            g.create_dataset(name.decode(), data=a)
        d = f.create_group("dense")
        d.attrs["weight_names"] = np.array([b"dense/kernel:0", b"dense/bias:0"])
        for w, a in head[2]:
            d.create_dataset(f"dense/{w}:0", data=a)
    layers = backbone + [head]
    read = [name for name, _ in loader.read_weights(path)]
    assert read[:2] == ["mobilenetv2_0.35_224/Conv1", "mobilenetv2_0.35_224/bn_Conv1"]
    assert_arrays_equal(loader.load_by_order(path, expected_of(layers)), arrays_of(layers))
