"""Hostile weights files the other loader tests do not build: compressed chunks that inflate past
their chunk (a gzip or LZF bomb inside a dataset whose declared shape fits the model), filter
pipelines no writer makes, one layer or weight reached twice (listed twice, aliased through a NUL
byte, hard-linked), Keras 3 variables that skip an index, and a .keras archive holding two
model.weights.h5.  Each file's right answer is known: refused naming the file and the place, or
loaded with exactly the values written."""
import zipfile
import zlib

import h5py
import numpy as np
import pytest

from mobilenetv2 import MobileNetV2
from mobilenetv2.formats import loader
from mobilenetv2.errors import WeightsError
from test_loader import expected_of, model_layers, write_keras2, write_keras3

# the code under test runs the same with or without the C extension: .ci/no-ext leaves it out
pytestmark = pytest.mark.engine_independent

GAMMA = "bn_Conv1/gamma:0"  # bn_Conv1's first weight: 16 float32 for alpha 0.35


@pytest.fixture(scope="module")
def small():
    return model_layers(0.35, include_top=False)


def keras2_file(tmp_path, small, edit=None, name="w.h5"):
    path = tmp_path / name
    write_keras2(path, small)
    if edit:
        with h5py.File(path, "a") as f:
            edit(f)
    return path


def refused(path, small, match):
    with pytest.raises(WeightsError, match=match) as info:
        loader.load_by_order(path, expected_of(small))
    assert repr(str(path)) in str(info.value)
    return str(info.value)


def loads_exactly(path, small):
    got = loader.load_by_order(path, expected_of(small))
    want = [[a for _, a in ws] for _, _, ws in small if ws]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            np.testing.assert_array_equal(a, b)


def replace_gamma(make):
    """An edit replacing bn_Conv1's gamma by ``make(group, name, values)``."""
    def edit(f):
        group = f["bn_Conv1"]
        values = group[GAMMA][()]
        del group[GAMMA]
        make(group, GAMMA, values)
    return edit


def raw_chunk(data):
    """An edit writing ``data`` as the stored bytes of gamma's one chunk, whatever it inflates to."""
    def make(group, name, values):
        dset = group.create_dataset(name, shape=(16,), chunks=(16,), dtype="<f4", compression="gzip")
        dset.id.write_direct_chunk((0,), data)
    return make


# -- compressed chunks ---------------------------------------------------------------------------
def test_a_gzip_bomb_in_a_chunk_of_the_right_shape_is_refused_before_inflating(tmp_path, small):
    """gamma declares 16 values in one chunk of 16 (64 bytes) and its stored deflate stream
    inflates to 64 MB: HDF5's deflate filter grows its buffer until the stream ends (a 400 KB
    stream took 400 MB; the file may be 512 MB), then keeps the first 64 bytes, so the file
    even loaded.  The stream is inflated first at most one chunk's size, and refused."""
    bomb = zlib.compress(bytes(64 << 20), 9)
    path = keras2_file(tmp_path, small, replace_gamma(raw_chunk(bomb)))
    assert path.stat().st_size < 3 << 20
    refused(path, small, r"bn_Conv1/bn_Conv1/gamma:0 has a chunk at \(0,\) of \d+ stored bytes that "
                         r"inflates to more than its 64 bytes")


def test_an_lzf_bomb_in_a_chunk_of_the_right_shape_is_refused(tmp_path, small):
    """One literal byte, then back references of 264 bytes each (3 bytes apiece): 16 MB from
    180 KB, where the chunk holds 64 bytes."""
    bomb = b"\x00\x00" + b"\xe0\xff\x00" * 60000

    def make(group, name, values):
        dset = group.create_dataset(name, shape=(16,), chunks=(16,), dtype="<f4", compression="lzf")
        dset.id.write_direct_chunk((0,), bomb)
    path = keras2_file(tmp_path, small, replace_gamma(make))
    refused(path, small, r"gamma:0 has a chunk at \(0,\) of 180002 stored bytes that inflates to more "
                         "than its 64 bytes")


def test_a_deflate_stream_shorter_than_its_chunk_is_refused(tmp_path, small):
    path = keras2_file(tmp_path, small, replace_gamma(raw_chunk(zlib.compress(bytes(60)))))
    refused(path, small, r"gamma:0 has a chunk at \(0,\) .* inflates to 60 bytes, not its 64")


def test_a_deflate_stream_cut_short_is_refused(tmp_path, small):
    path = keras2_file(tmp_path, small, replace_gamma(raw_chunk(zlib.compress(bytes(64))[:-6])))
    refused(path, small, r"gamma:0 has a chunk at \(0,\) .* ends before its stream does for its 64 bytes")


def test_deflate_twice_is_refused_before_reading(tmp_path, small):
    """Deflate over deflate multiplies the ratios (a million to one): no writer makes it."""
    def make(group, name, values):
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((16,))
        dcpl.set_deflate(9)
        dcpl.set_deflate(9)
        dsid = h5py.h5d.create(group.id, name.encode(), h5py.h5t.IEEE_F32LE,
                               h5py.h5s.create_simple((16,)), dcpl=dcpl)
        dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, values)
    path = keras2_file(tmp_path, small, replace_gamma(make))
    refused(path, small, r"gamma:0 uses the HDF5 filters gzip, gzip; .*refused")


@pytest.mark.parametrize("options", [
    dict(compression="gzip"), dict(compression="gzip", shuffle=True, fletcher32=True),
    dict(compression="lzf", shuffle=True), dict(compression="lzf", fletcher32=True),
    dict(shuffle=True, fletcher32=True)], ids=["gzip", "gzip-shuffle-fletcher32", "lzf-shuffle",
                                               "lzf-fletcher32", "shuffle-fletcher32"])
def test_filtered_chunks_load_exactly_edge_chunks_included(tmp_path, small, options):
    """What h5py and h5repack write loads exactly: every dataset compressed in chunks that do not
    divide it (partial edge chunks), random values (LZF cannot compress them: stored raw, the
    filter skipped per chunk) and constant ones (compressed)."""
    layers = [(n, c, [(w, (np.full_like(a, 0.5) if i % 2 else a)) for i, (w, a) in enumerate(ws)])
              for n, c, ws in small]
    path = tmp_path / "w.h5"
    write_keras2(path, layers)
    with h5py.File(path, "a") as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        for n in names:
            values = f[n][()]
            del f[n]
            chunks = tuple(max(1, (d + 1) // 2) for d in values.shape)
            f.create_dataset(n, data=values, chunks=chunks, **options)
    loads_exactly(path, layers)


# -- a layer or weight reached twice -------------------------------------------------------------
def _same_shapes(small):
    """Two weighted layers of the model with the same weight shapes, the first before the second."""
    weighted = [(n, [a.shape for _, a in ws]) for n, _, ws in small if ws]
    for i, (a, sa) in enumerate(weighted):
        for b, sb in weighted[i + 1:]:
            if sa == sb and a.endswith("_expand"):
                return a, b
    raise AssertionError("no two layers alike")


def test_a_layer_listed_twice_is_refused(tmp_path, small):
    """layer_names names one expand layer where the next one of the same shapes belongs: by order
    the model's second layer would silently get the first one's weights."""
    first, second = _same_shapes(small)

    def edit(f):
        f.attrs["layer_names"] = np.array([first.encode() if n == second.encode() else n
                                           for n in f.attrs["layer_names"]])
    path = keras2_file(tmp_path, small, edit)
    refused(path, small, f"layer {first!r} is layer {first!r} again .*refused")


def test_a_name_aliased_through_a_nul_byte_is_refused(tmp_path, small):
    """'block_1_expand\\0x' is a name HDF5 reads up to the NUL: block_1_expand again."""
    first, second = _same_shapes(small)

    def edit(f):
        f.attrs["layer_names"] = np.array([first.encode() + b"\0x" if n == second.encode() else n
                                           for n in f.attrs["layer_names"]])
    path = keras2_file(tmp_path, small, edit)
    refused(path, small, r"'layer_names' of the file holds a name with a NUL byte inside "
                         rf"\(b'{first}\\x00x'\)")


def test_a_weight_listed_twice_is_refused(tmp_path, small):
    """bn_Conv1 lists gamma twice and beta not: by order beta would be gamma's values."""
    def edit(f):
        group = f["bn_Conv1"]
        names = list(group.attrs["weight_names"])
        group.attrs["weight_names"] = np.array([names[0], names[0]] + names[2:])
    path = keras2_file(tmp_path, small, edit)
    refused(path, small, r"bn_Conv1/bn_Conv1/gamma:0 is bn_Conv1/bn_Conv1/gamma:0 again")


def test_a_layer_hard_linked_to_another_is_refused(tmp_path, small):
    first, second = _same_shapes(small)

    def edit(f):
        del f[second]
        f[second] = f[first]
    path = keras2_file(tmp_path, small, edit)
    refused(path, small, f"layer {second!r} is layer {first!r} again")


def test_a_keras3_layer_hard_linked_to_another_is_refused(tmp_path, small):
    path = tmp_path / "w.weights.h5"
    write_keras3(path, small)
    with h5py.File(path, "a") as f:
        del f["layers/batch_normalization_2"]
        f["layers/batch_normalization_2"] = f["layers/batch_normalization_1"]
    refused(path, small, ": batch_normalization_2 is batch_normalization_1 again")


def test_a_failed_load_leaves_the_model_as_it_was(tmp_path, small):
    path = keras2_file(tmp_path, small, replace_gamma(raw_chunk(zlib.compress(bytes(1 << 20)))))
    model = MobileNetV2((96, 96, 3), alpha=0.35, include_top=False, weights=None)
    before = [[np.array(a) for a in layer.weights] for layer in model.weighted_layers()]
    with pytest.raises(WeightsError):
        model.load_weights(str(path))
    after = [[np.array(a) for a in layer.weights] for layer in model.weighted_layers()]
    for b, a in zip(before, after):
        for x, y in zip(b, a):
            np.testing.assert_array_equal(x, y)


# -- Keras 3 variables ---------------------------------------------------------------------------
@pytest.mark.parametrize("rename, says", [
    ({"1": "4"}, r"vars holds 0, 2, 3, 4"),  # gamma, moving_mean, moving_variance, and a 4th
    ({"1": "01"}, r"vars holds 0, 2, 3, 01"),
    ({"3": "moving_variance"}, r"vars holds 0, 1, 2, moving_variance"),
], ids=["gap", "leading-zero", "named"])
def test_keras3_variables_must_be_numbered_from_0_without_gaps(tmp_path, small, rename, says):
    """Keras 3 reads vars/0 .. vars/<n-1> and fails on any other: here a BatchNormalization
    whose vars skip 1 would load beta from vars/2 (moving_mean) and so on."""
    path = tmp_path / "w.weights.h5"
    write_keras3(path, small)
    with h5py.File(path, "a") as f:
        group = f["layers/batch_normalization_1/vars"]
        for old, new in rename.items():
            group.move(old, new)
    refused(path, small, ": batch_normalization_1/" + says
            + r"; Keras 3 writes a layer's variables as vars/0 to vars/3")


# -- .keras archives -----------------------------------------------------------------------------
def test_an_archive_holding_two_weights_members_is_refused(tmp_path, small):
    """zipfile (and so Keras) opens the last of two members of one name; a reader taking the
    first would load other weights from the same file than Keras."""
    one, two = tmp_path / "one.weights.h5", tmp_path / "two.weights.h5"
    write_keras3(one, small)
    write_keras3(two, model_layers(0.35, include_top=False, seed=5))
    path = tmp_path / "m.keras"
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", "{}")
        zf.writestr("model.weights.h5", one.read_bytes())
        zf.writestr("model.weights.h5", two.read_bytes())
    refused(path, small, "holds 2 members named model.weights.h5")


def test_archive_config_is_never_read(tmp_path, small):
    """A config.json of a Lambda layer, __class__ and module keys, and names that climb out of
    the archive: only model.weights.h5 is read, nothing is extracted or evaluated."""
    h5 = tmp_path / "model.weights.h5"
    write_keras3(h5, small)
    marker = tmp_path / "evaluated"
    config = ('{"module": "os", "class_name": "Lambda", "__class__": "os.system", "config": '
              f'{{"function": "__import__(\'os\').system(\'touch {marker}\')"}}}}')
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", config)
        zf.writestr("../../outside", b"x")
        zf.writestr("/etc/absolute", b"x")
        zf.writestr("model.weights.h5", h5.read_bytes())
    loads_exactly(path, small)
    assert not marker.exists() and not (tmp_path.parent.parent / "outside").exists()
