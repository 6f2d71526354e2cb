"""Weights files made by someone else: the loader reads nothing outside the file it is given,
never waits on a FIFO, checks every declared size and shape before reading data, and turns
every damaged-file error of h5py, zipfile and zlib into its own WeightsError.

Each hostile file is built from a good Keras 2 file with one dataset swapped for the attack,
and where the attack points at a sentinel file of random bytes, the test first shows that
plain h5py does read the sentinel through it (so the refusal is what keeps it out)."""
import os
import zipfile

import h5py
import numpy as np
import pytest

from conftest import fail_after
from mobilenetv2 import MobileNetV2
from mobilenetv2.formats import loader
from mobilenetv2.errors import Error, WeightsError
from test_loader import expected_of, model_layers, write_keras2, write_keras3

# the code under test runs the same with or without the C extension: .ci/no-ext leaves it out
pytestmark = pytest.mark.engine_independent

TARGET = "bn_Conv1/bn_Conv1/gamma:0"  # the dataset each attack replaces (16 float32 for 0.35)


@pytest.fixture(scope="module")
def small():
    return model_layers(0.35, include_top=False)


@pytest.fixture
def sentinel(tmp_path):
    """A file of random bytes that must never reach the weights."""
    path = tmp_path / "sentinel.bin"
    path.write_bytes(np.random.default_rng(7).bytes(4096))
    return path


@pytest.fixture(autouse=True)
def no_hang():
    """A test that blocks (a FIFO opened for reading) fails after 10 s instead of hanging."""
    yield from fail_after(10, "the loader blocked")


def hostile(tmp_path, small, attack):
    """A good Keras 2 file whose TARGET dataset is replaced by ``attack(group, name)``."""
    path = tmp_path / "hostile.h5"
    write_keras2(path, small)
    with h5py.File(path, "a") as f:
        group, name = f["bn_Conv1"], "bn_Conv1/gamma:0"
        del group[name]
        attack(group, name)
    return path


def refused(path, small, match):
    with pytest.raises(WeightsError, match=match) as info:
        loader.load_by_order(path, expected_of(small))
    return str(info.value)


def test_external_raw_storage_over_a_local_file(tmp_path, small, sentinel):
    path = hostile(tmp_path, small, lambda g, n: g.create_dataset(
        n, shape=(16,), dtype="<f4", external=[(str(sentinel), 0, 64)]))
    with h5py.File(path, "r") as f:  # plain h5py reads the sentinel's bytes as weights
        assert f[TARGET][()].tobytes() == sentinel.read_bytes()[:64]
    msg = refused(path, small, r"bn_Conv1/bn_Conv1/gamma:0 keeps its data in external file\(s\) .*refused")
    assert str(sentinel) in msg


def test_external_link_to_another_file(tmp_path, small, sentinel):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("g", data=np.frombuffer(sentinel.read_bytes()[:64], "<f4"))
    path = hostile(tmp_path, small, lambda g, n: g.__setitem__(n, h5py.ExternalLink(str(other), "/g")))
    with h5py.File(path, "r") as f:
        assert f[TARGET][()].tobytes() == sentinel.read_bytes()[:64]
    refused(path, small, r"goes through 'gamma:0', an external link to another file .*other\.h5")


def test_external_link_to_a_fifo_does_not_hang(tmp_path, small):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    path = hostile(tmp_path, small, lambda g, n: g.__setitem__(n, h5py.ExternalLink(str(fifo), "/g")))
    refused(path, small, "an external link to another file")


def test_soft_link_to_another_dataset(tmp_path, small):
    path = hostile(tmp_path, small, lambda g, n: g.__setitem__(n, h5py.SoftLink("/Conv1/Conv1/kernel:0")))
    refused(path, small, "a soft link")


def test_the_link_access_list_follows_one_soft_link_at_most(tmp_path):
    """Beneath the reader's own refusal of every soft link, the HDF5 link access list it opens
    objects with stops a chain after one step, so a check missed somewhere still reaches nothing
    two links away (HDF5's own default follows 16)."""
    path = tmp_path / "links.h5"
    with h5py.File(path, "w") as f:
        f["d"] = np.arange(3.0)
        f["one"] = h5py.SoftLink("/d")
        f["two"] = h5py.SoftLink("/one")
    lapl, _ = loader._access_lists()
    with h5py.File(path, "r") as f:
        assert h5py.h5o.get_info(f.id, b"one", lapl=lapl).type == h5py.h5o.TYPE_DATASET
        assert h5py.h5o.get_info(f.id, b"two").type == h5py.h5o.TYPE_DATASET
        with pytest.raises(RuntimeError, match="too many links"):
            h5py.h5o.get_info(f.id, b"two", lapl=lapl)


def test_soft_link_cycle(tmp_path, small):
    def attack(g, n):
        g["bn_Conv1/loop"] = h5py.SoftLink("/bn_Conv1/bn_Conv1/loop")
        g.attrs["weight_names"] = np.array([b"bn_Conv1/loop/gamma:0", b"bn_Conv1/beta:0",
                                           b"bn_Conv1/moving_mean:0", b"bn_Conv1/moving_variance:0"])
    path = hostile(tmp_path, small, attack)
    with h5py.File(path, "r") as f, pytest.raises(RuntimeError, match="too many links"):  # plain h5py
        f["bn_Conv1/bn_Conv1/loop/gamma:0"]
    refused(path, small, "goes through 'loop', a soft link")


def test_virtual_dataset_over_another_file(tmp_path, small, sentinel):
    other = tmp_path / "src.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("g", data=np.frombuffer(sentinel.read_bytes()[:64], "<f4"))

    def attack(g, n):
        layout = h5py.VirtualLayout(shape=(16,), dtype="<f4")
        layout[:] = h5py.VirtualSource(str(other), "g", shape=(16,))
        g.create_virtual_dataset(n, layout)
    path = hostile(tmp_path, small, attack)
    with h5py.File(path, "r") as f:
        assert f[TARGET][()].tobytes() == sentinel.read_bytes()[:64]
    refused(path, small, "is a virtual dataset .*refused")


def test_virtual_dataset_with_a_missing_source(tmp_path, small):
    """Plain h5py reads the missing source as zeros (the fill value): a silent wrong answer."""
    def attack(g, n):
        layout = h5py.VirtualLayout(shape=(16,), dtype="<f4")
        layout[:] = h5py.VirtualSource(str(tmp_path / "gone.h5"), "g", shape=(16,))
        g.create_virtual_dataset(n, layout)
    path = hostile(tmp_path, small, attack)
    with h5py.File(path, "r") as f:
        assert not f[TARGET][()].any()
    refused(path, small, "is a virtual dataset")


def test_huge_declared_shape_is_refused_before_reading(tmp_path, small, monkeypatch):
    path = hostile(tmp_path, small, lambda g, n: g.create_dataset(n, shape=(1 << 31,), dtype="<f4",
                                                                   chunks=(1 << 16,)))
    assert path.stat().st_size < 10 ** 7  # declared 8 GiB, nothing written
    refused(path, small, r"declares shape \(2147483648,\), larger than any MobileNetV2 weight")


def test_non_float_dataset_is_refused_before_reading(tmp_path, small):
    path = hostile(tmp_path, small, lambda g, n: g.create_dataset(
        n, data=np.zeros(16, dtype=[("a", "<f4"), ("b", "<i4")])))
    refused(path, small, "has dtype .*expected floating point")


def test_empty_dataset_is_named_as_such(tmp_path, small):
    path = hostile(tmp_path, small, lambda g, n: g.create_dataset(n, data=h5py.Empty("<f4")))
    refused(path, small, r"bn_Conv1/bn_Conv1/gamma:0 is an empty dataset \(HDF5's null dataspace")


def _never_written(chunks=None, write=None):
    """An attack writing ``bn_Conv1/gamma:0`` (16 values) with HDF5's fill time 'never': where
    the file holds no data, HDF5 leaves the reader's buffer as it was (values of earlier
    arrays of the process, a different model each load)."""
    def attack(group, name):
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
        if chunks:
            dcpl.set_chunk(chunks)
        h5py.h5d.create(group.id, name.encode(), h5py.h5t.IEEE_F32LE, h5py.h5s.create_simple((16,)),
                        dcpl=dcpl)
        if write:
            group[name][write] = 1.0
    return attack


@pytest.mark.parametrize("chunks, write", [(None, None), ((8,), None), ((8,), slice(0, 8))],
                         ids=["contiguous", "chunked", "half-written"])
def test_dataset_never_written_is_refused(tmp_path, small, chunks, write):
    path = hostile(tmp_path, small, _never_written(chunks, write))
    refused(path, small, r"bn_Conv1/bn_Conv1/gamma:0 was never written .*incomplete")


def test_dataset_written_under_fill_time_never_loads(tmp_path, small):
    """Fill time 'never' is harmless once every chunk is written: the values are the file's."""
    path = hostile(tmp_path, small, _never_written((8,), slice(None)))
    layers = loader.load_by_order(path, expected_of(small))
    assert np.array_equal(layers[1][0], np.ones(16, np.float32))  # bn_Conv1: gamma first


def test_chunk_larger_than_its_dataset_is_refused(tmp_path, small):
    """16 values in one gzip chunk declared to hold 2**26: each read inflates the whole chunk
    (256 MB here; HDF5 allows 4 GiB a chunk) from a file of a few hundred KB."""
    def attack(group, name):
        group.create_dataset(name, shape=(16,), maxshape=(None,), chunks=(1 << 26,), dtype="<f4",
                             compression="gzip", data=np.ones(16, np.float32))
    path = hostile(tmp_path, small, attack)
    assert path.stat().st_size < 4 << 20  # the small model's 2 MB and a chunk inflating to 256 MB
    refused(path, small, r"gamma:0 \(\(16,\)\) is stored in chunks of \(67108864,\) values")


def test_variable_length_names_are_bounded_by_their_stored_lengths(tmp_path, small, monkeypatch):
    """Variable-length names (what Keras 3 and h5py 3 write) point into the file's heap; many may
    point at one long string, which HDF5 expands once per element.  Their stored lengths are read
    first, and the list only where they add up to the bound fixed-length lists have."""
    path = tmp_path / "w.h5"
    write_keras2(path, small)
    with h5py.File(path, "a") as f:
        names = [n.decode() for n in f.attrs["layer_names"]]
        f.attrs.create("layer_names", data=names, dtype=h5py.string_dtype())
    size = sum(len(n.encode()) for n in names)
    monkeypatch.setattr(loader, "MAX_ATTR_BYTES", size)
    assert len(loader.load_by_order(path, expected_of(small))) == len(expected_of(small))
    monkeypatch.setattr(loader, "MAX_ATTR_BYTES", size - 1)
    refused(path, small, f"'layer_names' of the file holds {len(names)} names of {size} bytes together")


def test_fixed_length_names_are_bounded_by_their_stored_size(tmp_path, small, monkeypatch):
    path = tmp_path / "w.h5"
    write_keras2(path, small)
    with h5py.File(path, "r") as f:
        stored = f.attrs.get_id("layer_names")
        count, width = stored.shape[0], stored.dtype.itemsize
    size = count * width
    monkeypatch.setattr(loader, "MAX_ATTR_BYTES", size)
    assert len(loader.load_by_order(path, expected_of(small))) == len(expected_of(small))
    monkeypatch.setattr(loader, "MAX_ATTR_BYTES", size - 1)
    refused(path, small, f"'layer_names' of the file holds {count} names of {width} bytes")


@pytest.mark.parametrize("change", ["shape", "count"])
def test_shapes_and_layer_count_are_checked_before_any_data_is_read(tmp_path, small, monkeypatch, change):
    path = tmp_path / "w.h5"
    layers = list(small)
    if change == "shape":
        k = max(i for i, layer in enumerate(layers) if layer[2])
        name, cls, weights = layers[k]
        layers[k] = (name, cls, [(w, np.zeros(a.shape[:-1] + (a.shape[-1] + 1,), np.float32))
                                  for w, a in weights])
    else:
        layers = layers[:-3]
    write_keras2(path, layers)
    reads = []
    real = loader._Stored.read
    monkeypatch.setattr(loader._Stored, "read", lambda self: reads.append(self.where) or real(self))
    with pytest.raises(WeightsError, match="does not fit"):
        loader.load_by_order(path, expected_of(small))
    assert reads == []


def test_negative_moving_variance_names_the_layer(tmp_path, small):
    layers = list(small)
    k, (name, cls, weights) = next((i, l) for i, l in enumerate(layers) if l[0] == "block_3_project_BN")
    weights = [(w, -a - 1 if w == "moving_variance" else a) for w, a in weights]
    weights = [(w, np.where(np.arange(a.size) < 3, a, 0) if w == "moving_variance" else a) for w, a in weights]
    layers[k] = (name, cls, weights)
    path = tmp_path / "w.h5"
    write_keras2(path, layers)
    # three negative values and the rest zero (a zero variance is allowed: eps keeps it finite)
    with pytest.raises(WeightsError, match=r"'block_3_project_BN' .*'moving_variance' has 3 negative value"):
        MobileNetV2((96, 96, 3), alpha=0.35, include_top=False, weights=str(path))


@pytest.mark.parametrize("as_bytes", [False, True])
def test_fifo_path_is_refused_at_once(tmp_path, as_bytes):
    fifo = tmp_path / "w.h5"
    os.mkfifo(fifo)
    path = os.fsencode(fifo) if as_bytes else str(fifo)
    with pytest.raises(WeightsError, match=r"is a FIFO \(named pipe\), not a regular file"):
        loader.read_weights(path)


def test_device_path_is_refused():
    with pytest.raises(WeightsError, match="is a device, not a regular file"):
        loader.read_weights("/dev/zero")


# -- Keras 3 containers and .keras archives -----------------------------------------------------
def test_container_cycle_is_refused(tmp_path, small):
    path = tmp_path / "w.weights.h5"
    write_keras3(path, small)
    with h5py.File(path, "a") as f:
        f["layers/conv2d/layers"] = f["layers"]  # a hard link to an ancestor: a cycle
    refused(path, small, "contains itself")


def test_deep_nesting_is_refused(tmp_path, small):
    path = tmp_path / "w.weights.h5"
    write_keras3(path, small)
    with h5py.File(path, "a") as f:
        g = f["layers"]
        for i in range(loader.MAX_DEPTH + 5):
            g = g.create_group(f"functional_{i}/layers")
    refused(path, small, f"nested more than {loader.MAX_DEPTH} deep")


def keras_archive(tmp_path, small, compression=zipfile.ZIP_DEFLATED, encrypt=False, extra=()):
    h5 = tmp_path / "model.weights.h5"
    write_keras3(h5, small)
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w", compression) as zf:
        zf.writestr("config.json", "{}")
        info = zipfile.ZipInfo("model.weights.h5")
        info.compress_type = compression
        zf.writestr(info, h5.read_bytes())
        for name, data in extra:
            zf.writestr(name, data)
    if encrypt:  # zipfile cannot write encrypted members: set the flag in both headers
        data = bytearray(path.read_bytes())
        name = b"model.weights.h5"
        for sig, flag_at, name_at in ((b"PK\x03\x04", 6, 30), (b"PK\x01\x02", 8, 46)):
            at = data.index(sig)
            while data[at + name_at:at + name_at + len(name)] != name:
                at = data.index(sig, at + 4)
            data[at + flag_at] |= 0x1
        path.write_bytes(bytes(data))
    return path


def test_good_archive_loads(tmp_path, small):
    assert len(loader.load_by_order(keras_archive(tmp_path, small), expected_of(small))) == len(expected_of(small))


def test_encrypted_archive_member(tmp_path, small):
    refused(keras_archive(tmp_path, small, encrypt=True), small, "model.weights.h5 is encrypted")


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_unexpected_compression(tmp_path, small, method):
    refused(keras_archive(tmp_path, small, compression=method), small, f"compression method {method}")


def test_zip_bomb_is_refused_before_inflating(tmp_path, small, monkeypatch):
    monkeypatch.setattr(loader, "MAX_FILE_BYTES", 8 << 20)
    path = keras_archive(tmp_path, small, extra=[("bomb.bin", bytes(16 << 20))])
    assert path.stat().st_size < 4 << 20  # the weights themselves are 1.5 MB
    refused(path, small, r"would inflate to \d+ bytes \(at most 8388608\)")


def test_archive_with_thousands_of_members(tmp_path, small):
    path = keras_archive(tmp_path, small, extra=[(f"x{i}", b"") for i in range(200)])
    refused(path, small, "a zip archive of 202 members")


def test_damaged_archive_is_a_weights_error(tmp_path, small):
    path = keras_archive(tmp_path, small)
    data = bytearray(path.read_bytes())
    start = data.index(b"model.weights.h5") + 40  # inside the deflated member
    data[start:start + 64] = bytes(64)
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        loader.load_by_order(path, expected_of(small))


def test_every_loader_error_is_the_packages_own(tmp_path, small):
    """Byte flips over the whole metadata of a good file: each load ends in success or a
    WeightsError (h5py's RuntimeError, KeyError, OSError never escape)."""
    path = tmp_path / "w.h5"
    write_keras2(path, small)
    good = path.read_bytes()
    rng = np.random.default_rng(11)
    outcomes = {}
    for _ in range(60):
        data = bytearray(good)
        for pos in rng.integers(0, 4096, 4):  # HDF5 metadata sits near the start
            data[pos] ^= int(rng.integers(1, 256))
        path.write_bytes(bytes(data))
        try:
            loader.load_by_order(path, expected_of(small))
            outcomes["loaded"] = outcomes.get("loaded", 0) + 1
        except Error as exc:
            assert isinstance(exc, WeightsError)
            outcomes["refused"] = outcomes.get("refused", 0) + 1
    assert outcomes.get("refused", 0) > 10


def test_declared_size_bounds_are_exact(tmp_path, small, monkeypatch):
    """A dataset of exactly MAX_DATASET_ELEMENTS values passes the size check (and then fails
    the shape check); one more value is refused by the size check."""
    for n, says in ((loader.MAX_DATASET_ELEMENTS, "does not fit"),
                    (loader.MAX_DATASET_ELEMENTS + 1, "larger than any MobileNetV2 weight")):
        path = hostile(tmp_path, small, lambda g, name: g.create_dataset(
            name, data=np.zeros(n, "<f4"), chunks=(1 << 16,), compression="gzip"))
        refused(path, small, says)


def test_total_declared_bytes_bound_is_exact(tmp_path, small, monkeypatch):
    path = tmp_path / "w.h5"
    write_keras2(path, small)
    total = 8 * sum(a.size for _, _, ws in small for _, a in ws)  # counted as float64
    monkeypatch.setattr(loader, "MAX_TOTAL_BYTES", total)
    assert len(loader.load_by_order(path, expected_of(small))) == len(expected_of(small))
    monkeypatch.setattr(loader, "MAX_TOTAL_BYTES", total - 1)
    refused(path, small, f"declare more than {total - 1} bytes together")


def test_is_a_directory_error_carries_its_errno(tmp_path):
    import errno
    with pytest.raises(IsADirectoryError) as info:
        loader.read_weights(tmp_path)
    assert info.value.errno == errno.EISDIR


@pytest.mark.parametrize("libver", ["earliest", "latest"])  # superblock version 0, and 3
def test_the_superblock_end_address_is_read_for_each_superblock_version(tmp_path, libver):
    """The end-of-file address the download check compares with the file's size, read from the
    superblock h5py writes with each library version bound: it is the file's size."""
    import h5py
    from mobilenetv2.formats.loader import _superblock_end
    path = tmp_path / f"{libver}.h5"
    with h5py.File(path, "w", libver=libver) as f:
        f.attrs["layer_names"] = np.array([b"dense"], dtype="S5")
        f.create_dataset("dense/kernel:0", data=np.arange(12, dtype=np.float32).reshape(3, 4))
    head = path.read_bytes()[:64]
    assert head[8] == (0 if libver == "earliest" else 3)  # the superblock's version byte
    assert _superblock_end(head) == path.stat().st_size


def test_a_superblock_with_4_byte_lengths_is_still_read(tmp_path):
    """A superblock's address size is what locates its end-of-file address; its length size may
    differ: HDF5 writes a file of 4-byte lengths with a version-2 superblock (address size at byte
    9, length size at 10), and its end is found."""
    import h5py
    from mobilenetv2.formats.loader import _superblock_end
    path = tmp_path / "lengths4.h5"
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_sizes(8, 4)
    fid = h5py.h5f.create(str(path).encode(), h5py.h5f.ACC_TRUNC, fcpl=fcpl)
    with h5py.File(fid) as f:
        f.create_dataset("dense/kernel:0", data=np.arange(12, dtype=np.float32).reshape(3, 4))
    head = path.read_bytes()[:64]
    assert (head[8], head[9], head[10]) == (2, 8, 4)
    assert _superblock_end(head) == path.stat().st_size


def test_a_weight_that_is_a_group_is_refused_naming_it(tmp_path, small):
    """A weight the layer's list names that is a group, not a dataset: the package's error naming
    it, not whatever reading a group's id as a dataset's would raise."""
    path = hostile(tmp_path, small, lambda group, name: group.create_group(name))
    refused(path, small, "bn_Conv1/gamma:0 is not a dataset")


def test_a_listed_layer_that_is_a_dataset_is_refused_naming_it(tmp_path):
    """layer_names lists 'Conv1', and 'Conv1' is a dataset, not the group of its weights: the
    package's error naming the layer, not whatever reading a dataset as a group would raise."""
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"Conv1"], dtype="S5")  # fixed-length, as Keras writes it
        f.create_dataset("Conv1", data=np.zeros((3, 3, 3, 16), np.float32))
    with pytest.raises(WeightsError, match="lists layer 'Conv1' but has no group for it"):
        loader.read_weights(str(path))
