"""README's "Weights" section walked as a hostile, careful user: Keras's own files, the variant
registry's functions, the search folders and mirrors.  Each test is a claim that did not hold.
Servers are local (127.0.0.1) or file:// folders; nothing here touches the internet, and Keras's
home is a temporary folder (test_registry's autouse ``isolated``)."""
import io
import os
import re
import struct
import time

import h5py
import numpy as np
import pytest

from conftest import fail_after, keras3, require_shared
from mobilenetv2 import ArgumentError, MobileNetV2
from mobilenetv2.formats import loader, registry
from mobilenetv2.formats.loader import WeightsError
from mobilenetv2.formats.registry import DownloadError
from test_loader import arrays_of, assert_arrays_equal, expected_of, model_layers, write_keras2
from test_registry import PAYLOAD, cache, isolated, keras_name, only_good_files, server  # noqa: F401

pytestmark = pytest.mark.engine_independent  # loading and downloading: the same code with or without the C extension

OFFICIAL_LAYOUT = ("weights", "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5")


@pytest.fixture
def no_hang():
    """A test that blocks (a FIFO opened for reading) fails after 20 s instead of hanging."""
    yield from fail_after(20, "blocked")


@pytest.fixture(scope="module")
def small():
    return model_layers(0.35, include_top=False)


# -- Keras 3's full-model .h5: variable-length name lists -------------------------------------
def keras_attr(group, name, values):
    """What Keras's save_attributes_to_hdf5_group does with a list of encoded names under h5py 3:
    ``group.attrs[name] = data``, which h5py stores as variable-length strings."""
    group.attrs[name] = [v.encode() if isinstance(v, str) else v for v in values]


def write_vlen_keras2(path, layers, libver="earliest", model_file=False, later_attrs=0):
    """A Keras 2 layout file with its layer and weight name lists as Keras 3 (h5py 3) writes them;
    ``later_attrs`` attributes added at the end push the header into continuation chunks."""
    with h5py.File(path, "w", libver=libver) as f:
        root = f.create_group("model_weights") if model_file else f
        for lname, _, weights in layers:
            g = root.create_group(lname)
            for wname, a in weights:
                g.create_dataset(f"{lname}/{wname}", data=a)
            keras_attr(g, "weight_names", [f"{lname}/{w}" for w, _ in weights])
        keras_attr(root, "layer_names", [name for name, _, _ in layers])
        root.attrs["backend"] = "jax"
        root.attrs["keras_version"] = "3.15.1"
        for i in range(later_attrs):
            root.attrs[f"note{i}"] = np.arange(40, dtype=np.float64)


def test_keras3_full_model_h5_loads_as_keras_reads_it(tmp_path):
    """README: "legacy Keras 2 weights or full-model files" load.  Keras 3's model.save('x.h5')
    writes its layer_names and weight_names as variable-length strings (h5py 3 stores a list
    so), and every such file was refused: "Keras writes these names as fixed-length strings"."""
    keras = keras3("a full-model .h5 that Keras itself wrote")
    src = require_shared(*OFFICIAL_LAYOUT)
    k = keras.applications.MobileNetV2(input_shape=(224, 224, 3), include_top=False, weights=None)
    k.load_weights(str(src))
    path = tmp_path / "full.h5"
    k.save(str(path))
    with h5py.File(path, "r") as f:  # what is tested: Keras's list of names is variable-length
        assert h5py.check_string_dtype(f["model_weights"].attrs.get_id("layer_names").dtype).length is None
    ours = MobileNetV2(input_shape=(224, 224, 3), include_top=False, weights=str(path))
    want = k.get_weights()
    got = ours.get_weights()
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("libver, model_file, later_attrs", [
    ("earliest", True, 0),   # Keras 3's model.save('x.h5')
    ("earliest", False, 0),  # tf.keras 2 save_weights('x.h5') under h5py 3
    ("earliest", False, 40), # the header in continuation chunks
    ("latest", False, 5),    # version 2 object headers (OHDR / OCHK)
])
def test_variable_length_name_lists_load_exactly(tmp_path, small, libver, model_file, later_attrs):
    path = tmp_path / "w.h5"
    write_vlen_keras2(path, small, libver, model_file, later_attrs)
    assert_arrays_equal(loader.load_by_order(path, expected_of(small)), arrays_of(small))


def _alias_names(data, count, long, lie=None):
    """``data`` (a file whose root layer_names is ``count`` variable-length names, the first
    ``long`` bytes, the second 2) with every name's descriptor (length, heap collection, index)
    pointing at the first name's heap object, its length set to ``lie`` where given: the 4 GB
    expansion of a 1 MB file."""
    data = bytearray(data)
    first = data.find(struct.pack("<I", long))
    while struct.unpack_from("<I", data, first + 16)[0] != 2:
        first = data.find(struct.pack("<I", long), first + 1)
        assert first >= 0
    desc = bytes(data[first:first + 16])
    if lie is not None:
        desc = struct.pack("<I", lie) + desc[4:]
    for i in range(count):
        data[first + 16 * i:first + 16 * (i + 1)] = desc
    return bytes(data)


@pytest.mark.parametrize("lie", [None, 0xFFFFFFF0])
def test_aliased_or_lying_variable_length_names_are_refused_before_they_expand(tmp_path, lie):
    """Variable-length names are read now, but only after their stored lengths are added up:
    2,000 names all pointing at one 100 kB string (200 MB once read; HDF5 took 8 s and 2 GB for
    1 MB strings), or a length that lies (HDF5 allocates and zeroes it before reading)."""
    count = 2000
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        keras_attr(f, "layer_names", ["B" * 100_000] + [f"n{i}" for i in range(count - 1)])
    path = tmp_path / "bomb.h5"
    path.write_bytes(_alias_names(buf.getvalue(), count, 100_000, lie))
    start = time.monotonic()
    with pytest.raises(WeightsError, match=r"'layer_names' of the file holds 2000 names of \d+ bytes together"):
        loader.read_weights(path)
    assert time.monotonic() - start < 2


def test_variable_length_names_in_dense_attribute_storage_are_refused(tmp_path, small):
    """Where the lengths cannot be read as surely as HDF5 finds the attribute, the list is
    refused, as every variable-length list was, with the reason."""
    path = tmp_path / "w.h5"
    write_vlen_keras2(path, small, "latest", later_attrs=12)  # > 8 attributes: dense storage
    with pytest.raises(WeightsError, match="variable-length strings stored where their lengths cannot be read"):
        loader.load_by_order(path, expected_of(small))


# -- mirrors: file:// ---------------------------------------------------------------------------
def test_a_fifo_in_a_file_mirror_is_refused_not_waited_on(isolated, monkeypatch, no_hang):
    """urllib's file:// handler open()s the path: a FIFO of the file's name blocked the download
    for ever, past the 600 s deadline (which holds sockets only)."""
    mirror = isolated / "mirror"
    mirror.mkdir()
    os.mkfifo(mirror / keras_name(0.5, 96, False))
    os.symlink("/dev/zero", mirror / keras_name(0.5, 128, False))
    monkeypatch.setenv(registry.ENV_URL, mirror.as_uri())
    with pytest.raises(DownloadError, match=r"cannot download file://.*: is a FIFO \(named pipe\), not a regular file"):
        registry.resolve(0.5, 96, False)
    with pytest.raises(DownloadError, match=r"cannot download file://.*: is a device, not a regular file"):
        registry.resolve(0.5, 128, False)
    only_good_files(cache(isolated))


def test_a_file_mirror_still_downloads_a_regular_file(isolated, monkeypatch):
    mirror = isolated / "mirror"
    mirror.mkdir()
    (mirror / keras_name(0.5, 96, False)).write_bytes(PAYLOAD)
    monkeypatch.setenv(registry.ENV_URL, mirror.as_uri().replace("file://", "file://localhost"))
    assert registry.resolve(0.5, 96, False).read_bytes() == PAYLOAD


# -- mirrors: a query string in the base ----------------------------------------------------------
@pytest.mark.parametrize("base, url", [
    ("http://h/w?token=a", "http://h/w/{}?token=a"),
    ("http://h/w/?token=a&b=c", "http://h/w/{}?token=a&b=c"),
    ("http://h/w#frag", "http://h/w/{}"),
    ("http://h/w/", "http://h/w/{}"),
])
def test_the_file_name_goes_into_the_mirrors_path_before_its_query(isolated, monkeypatch, base, url):
    """'http://h/w?token=a' was made 'http://h/w?token=a/<file>': a request for /w, the file
    name in the query."""
    monkeypatch.setenv(registry.ENV_URL, base)
    name = keras_name(1.0, 224, True)
    assert registry.weights_url(1.0, 224, True) == url.format(name)
    assert next(v["url"] for v in registry.variants() if v["file"] == name) == url.format(name)


def test_a_mirror_with_a_query_is_downloaded_from_the_files_path(isolated, server, monkeypatch):
    seen = []
    name = keras_name(0.5, 96, False)

    def route(handler):
        seen.append(handler.path)
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(PAYLOAD)))
        handler.end_headers()
        handler.wfile.write(PAYLOAD)
    server.routes[f"/w/{name}?token=s3cret"] = route
    monkeypatch.setenv(registry.ENV_URL, server.url.rstrip("/") + "?token=s3cret")
    assert registry.resolve(0.5, 96, False).read_bytes() == PAYLOAD
    assert seen == [f"/w/{name}?token=s3cret"]


# -- the registry's functions: arguments as every public call reads them ---------------------
@pytest.mark.parametrize("include_top", ["False", "no", None, 2, 0.5])
def test_an_include_top_that_is_no_flag_is_refused(include_top):
    """include_top='False' named the file with the top (bool('False')), None the one without."""
    for call in (registry.weights_url, registry.weights_filename, registry.resolve):
        with pytest.raises(ArgumentError, match="include_top must be True or False"):
            call(1.0, 224, include_top)


@pytest.mark.parametrize("alpha, rows", [(True, 224), ("1.0", 224), (1.0, 224.7), (1.0, "224"), (1.0, True)])
def test_an_alpha_or_rows_of_the_wrong_kind_names_no_file(alpha, rows):
    """alpha=True was 1.0, rows=224.7 was 224 and '224' was 224: a file for what was not asked."""
    with pytest.raises(ArgumentError, match="no official MobileNetV2 weights"):
        registry.weights_url(alpha, rows)


def test_numpy_numbers_name_the_file_they_hold():
    """np.float32(0.35) is 0.35 to the model (and to Keras); the registry said there is no file."""
    want = keras_name(0.35, 96, False)
    for alpha, rows, top in [(np.float32(0.35), 96, False), (np.float16(0.35), np.int64(96), np.bool_(False)),
                             (np.array(0.35, np.float32), np.array(96), 0)]:
        assert registry.weights_filename(alpha, rows, top) == want


# -- files found: a truncated one ---------------------------------------------------------------
def _truncated():
    return PAYLOAD[:len(PAYLOAD) // 2]


@pytest.mark.parametrize("content, says", [(_truncated(), "truncated"), (b"", "it is empty (0 bytes)"), (b"<html>", "not an HDF5 file")])
def test_a_truncated_file_in_the_keras_cache_is_replaced(isolated, monkeypatch, capsys, content, says):
    """Keras writes a download into the file's own name: killed, it leaves a truncated file, which
    was used (then refused by the loader, 'delete it') for the 40 entries without a recorded size,
    though a download of the same bytes is refused as incomplete HDF5.  Now it is not the
    official file, and a download replaces it."""
    mirror = isolated / "mirror"
    mirror.mkdir()
    name = keras_name(0.5, 96, False)
    (mirror / name).write_bytes(PAYLOAD)
    monkeypatch.setenv(registry.ENV_URL, mirror.as_uri())
    target = cache(isolated) / name
    target.parent.mkdir(parents=True)
    target.write_bytes(content)
    assert registry.found_weights(0.5, 96, False)[1] is not None
    assert registry.resolve(0.5, 96, False) == target
    assert target.read_bytes() == PAYLOAD
    assert says in capsys.readouterr().err


def test_a_truncated_file_in_the_weights_dir_is_the_users_to_fix(isolated, monkeypatch):
    """Only Keras's cache is ours to download over: the user's own folder's truncated file is
    used as found (never deleted, nothing downloaded), and the loader names it."""
    mine = isolated / "mine"
    mine.mkdir()
    name = keras_name(0.5, 96, False)
    (mine / name).write_bytes(_truncated())
    monkeypatch.setenv(registry.ENV_DIR, str(mine))
    assert registry.resolve(0.5, 96, False) == mine / name
    with pytest.raises(WeightsError, match=re.escape(repr(str(mine / name)))):
        MobileNetV2(input_shape=(96, 96, 3), alpha=0.5, include_top=False, weights="imagenet")
    assert (mine / name).read_bytes() == _truncated()
    only_good_files(cache(isolated))


def test_a_whole_unverified_file_found_is_still_used(isolated, monkeypatch, small):
    """The check of a found file without a recorded size: a whole Keras file passes."""
    mine = isolated / "mine"
    mine.mkdir()
    layers = model_layers(0.5, include_top=False, seed=3)
    write_keras2(mine / keras_name(0.5, 96, False), layers)
    monkeypatch.setenv(registry.ENV_DIR, str(mine))
    model = MobileNetV2(input_shape=(96, 96, 3), alpha=0.5, include_top=False, weights="imagenet")
    assert_arrays_equal([layer.get_weights() for layer in model.weighted_layers()], arrays_of(layers))
