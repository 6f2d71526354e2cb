"""The safetensors reader and writer: round trips, the shared checkpoints, and every malformed file
refused with SafetensorsError before any tensor byte is read or any large buffer allocated."""
import json
import pickle
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mobilenetv2.formats import safetensors
from mobilenetv2.formats.safetensors import SafetensorsError, SafetensorsFile
from conftest import require_shared


def _raw(path, header, data=b"", length=None):
    """Write a file with this header (a dict, or raw bytes) and data region."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write((len(text) if length is None else length).to_bytes(8, "little"))
        f.write(text)
        f.write(data)
    return path


def _t(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def test_round_trip_dtypes_and_metadata(tmp_path):
    tensors = {"w": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "n": np.array(7, np.int64),
               "d": np.linspace(0, 1, 5), "e": np.zeros((0, 3), np.float32),
               "b": np.array([True, False]), "big": np.arange(3, dtype=">i4")}
    path = safetensors.save_file(tensors, tmp_path / "m.safetensors", {"format": "pt"})
    f = SafetensorsFile(path)
    assert f.metadata == {"format": "pt"}
    assert sorted(f.names()) == sorted(tensors)
    for name, a in tensors.items():
        got = f.get(name)
        assert got.shape == a.shape and np.array_equal(got, a)
        assert not got.flags.writeable
    assert f.dtype("w") == "F32" and f.dtype("n") == "I64" and f.dtype("big") == "I32"


def test_tensors_are_views_of_the_mapped_file(tmp_path):
    a = np.arange(1000, dtype=np.float32)
    path = safetensors.save_file({"a": a}, tmp_path / "m.safetensors")
    got = SafetensorsFile(path).get("a")
    assert got.base is not None and not got.flags.owndata  # a view, not a copy
    assert np.array_equal(got, a)


def test_an_array_safetensors_cannot_hold_is_refused_naming_it(tmp_path):
    """Complex, string and object arrays have no safetensors dtype: the writer names the tensor
    and its dtype, and leaves no file."""
    from mobilenetv2.errors import ArgumentError
    for bad in (np.zeros(2, np.complex64), np.array(["x"]), np.array([None])):
        with pytest.raises(ArgumentError, match=f"tensor 'b': dtype {bad.dtype} has no safetensors equivalent"):
            safetensors.save_file({"a": np.zeros(1, np.float32), "b": bad}, tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_bf16_widens_to_float32(tmp_path):
    values = np.array([1.0, -2.5, 0.15625], np.float32)
    bits = (values.view(np.uint32) >> 16).astype("<u2")
    path = _raw(tmp_path / "m.safetensors", {"x": _t("BF16", [3], 0, 6)}, bits.tobytes())
    assert np.array_equal(SafetensorsFile(path).get("x"), values)


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda s: s != "__metadata__"),
                       st.tuples(st.sampled_from(["<f4", "<f8", "<i8", "u1", "<u2"]),
                                 st.lists(st.integers(0, 4), max_size=3)), max_size=5))
def test_round_trip_property(tmp_path_factory, spec):
    rng = np.random.default_rng(0)
    tensors = {k: (rng.standard_normal(shape) * 50).astype(dt) for k, (dt, shape) in spec.items()}
    path = safetensors.save_file(tensors, tmp_path_factory.mktemp("st") / "m.safetensors")
    got = safetensors.load_file(path)
    assert set(got) == set(tensors)
    for k in tensors:
        assert got[k].dtype == tensors[k].dtype and np.array_equal(got[k], tensors[k])


def test_reads_the_shared_checkpoint():
    f = SafetensorsFile(require_shared("hf", "mobilenet_v2_1.0_224", "model.safetensors"))
    assert f.shape("mobilenet_v2.conv_stem.first_conv.convolution.weight") == (32, 3, 3, 3)
    assert f.dtype("mobilenet_v2.conv_1x1.normalization.num_batches_tracked") == "I64"
    assert f.shape("classifier.weight") == (1001, 1280)


# each malformed file: how it is made, and what its refusal says is wrong (a later check refusing
# the file with another reason, or none, would hide a check gone missing)
MALFORMED = {
    "header length past the file": (lambda p: _raw(p, {"a": _t("F32", [1], 0, 4)}, b"\0" * 4, length=4000),
        "header length field says 4000 bytes"),
    "huge header length": (lambda p: _raw(p, b"{}", length=2 ** 62),
        "more than the"),
    "header over the cap": (lambda p: _raw(p, b"{}", length=safetensors.MAX_HEADER_BYTES + 1),
        "more than the"),
    "header too short": (lambda p: _raw(p, b"{", length=1),
        "says 1 bytes and the file has 1"),
    "file shorter than 8 bytes": (lambda p: (p.write_bytes(b"\x05\0\0"), p)[1],
        "fewer than the 8"),
    "header not JSON": (lambda p: _raw(p, b"{not json}"),
        "not valid JSON"),
    "header not UTF-8": (lambda p: _raw(p, b'{"\xff": 1}'),
        "not UTF-8"),
    "header a list": (lambda p: _raw(p, b"[1, 2, 3]"),
        "a JSON list"),
    "header deeply nested": (lambda p: _raw(p, b"[" * 100000 + b"]" * 100000),
        "nests too deeply"),
    "duplicate names": (lambda p: _raw(p, b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},'
                                          b' "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}',
                                       b"\0" * 4),
        "'a' appears twice"),
    "unknown dtype": (lambda p: _raw(p, {"a": _t("F128", [1], 0, 16)}, b"\0" * 16),
        "unknown dtype 'F128'"),
    "dtype not a string": (lambda p: _raw(p, {"a": _t(["F32"], [1], 0, 4)}, b"\0" * 4),
        "unknown dtype"),
    "negative dimension": (lambda p: _raw(p, {"a": _t("F32", [-1], 0, 4)}, b"\0" * 4),
        "got [-1]"),
    "float dimension": (lambda p: _raw(p, {"a": _t("F32", [1.0], 0, 4)}, b"\0" * 4),
        "got [1.0]"),
    "huge shape": (lambda p: _raw(p, {"a": _t("F32", [2 ** 40, 2 ** 40], 0, 4)}, b"\0" * 4),
        "got [1099511627776"),
    "offsets past the end": (lambda p: _raw(p, {"a": _t("F32", [4], 0, 16)}, b"\0" * 8),
        "run past the end of the file"),
    "offsets reversed": (lambda p: _raw(p, {"a": _t("F32", [1], 4, 0)}, b"\0" * 4),
        "0 <= begin <= end, got [4, 0]"),
    "offsets negative": (lambda p: _raw(p, {"a": _t("F32", [1], -4, 0)}, b"\0" * 4),
        "got [-4, 0]"),
    "shape and offsets disagree": (lambda p: _raw(p, {"a": _t("F32", [3], 0, 8)}, b"\0" * 8),
        "take 12 bytes, data_offsets [0, 8] span 8"),
    "overlapping tensors": (lambda p: _raw(p, {"a": _t("F32", [2], 0, 8), "b": _t("F32", [2], 4, 12)},
                                           b"\0" * 12),
        "'a' and 'b' overlap"),
    "gap between tensors": (lambda p: _raw(p, {"a": _t("F32", [1], 0, 4), "b": _t("F32", [1], 8, 12)},
                                           b"\0" * 12),
        "belong to no tensor"),
    "trailing bytes": (lambda p: _raw(p, {"a": _t("F32", [1], 0, 4)}, b"\0" * 8),
        "the tensors cover 4"),
    "extra key in an entry": (lambda p: _raw(p, {"a": dict(_t("F32", [1], 0, 4), more=1)}, b"\0" * 4),
        "exactly dtype, shape and data_offsets"),
    "metadata not strings": (lambda p: _raw(p, {"__metadata__": {"x": 1}}),
        "__metadata__ must be an object of strings"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_are_refused(tmp_path, case):
    make, reason = MALFORMED[case]
    path = make(tmp_path / "bad.safetensors")
    tracemalloc.start()
    try:
        with pytest.raises(SafetensorsError) as info:
            SafetensorsFile(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(info.value, ValueError)
    assert "bad.safetensors" in str(info.value) and reason in str(info.value)
    assert peak < 8 * 1024 * 1024, f"{case}: {peak} bytes allocated"


def test_pytorch_pickles_are_refused_unopened(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    for name in ("pytorch_model.bin", "weights.safetensors"):
        path = tmp_path / name
        path.write_bytes(pickle.dumps(Boom(), protocol=2))
        with pytest.raises(SafetensorsError, match="safe_serialization=True"):
            SafetensorsFile(path)
    zipped = tmp_path / "model.pt"
    zipped.write_bytes(b"PK\x03\x04" + b"\0" * 60)
    with pytest.raises(SafetensorsError, match="pickle"):
        SafetensorsFile(zipped)


def test_missing_name_is_named(tmp_path):
    path = safetensors.save_file({"a": np.zeros(2, np.float32)}, tmp_path / "m.safetensors")
    with pytest.raises(SafetensorsError, match="no tensor 'b'"):
        SafetensorsFile(path).get("b")


@pytest.mark.parametrize("extra, says", [
    (1, "more than the 4194304 allowed"),
    (0, "truncated"),  # at the cap: only the file's size refuses it
])
def test_header_cap_is_exact(tmp_path, extra, says):
    """4 MiB, not the reference reader's 100 MB: JSON of empty lists parses to ~20x its size in
    Python objects (a 99 MB header took 2.7 GB and 17 s before its first check)."""
    assert safetensors.MAX_HEADER_BYTES == 4 << 20
    p = tmp_path / "model.safetensors"
    p.write_bytes((safetensors.MAX_HEADER_BYTES + extra).to_bytes(8, "little") + b"{}")
    with pytest.raises(SafetensorsError, match=says):
        SafetensorsFile(p)


def test_real_checkpoint_headers_are_far_under_the_cap():
    found = sorted(require_shared("hf").glob("*/model.safetensors"))
    assert found, "../shared/hf holds no model.safetensors"
    for path in found:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
        assert n < safetensors.MAX_HEADER_BYTES // 32, path


@pytest.mark.parametrize("shape", [[0, 2 ** 63], [0, 2 ** 31], [2 ** 40, 0]])
def test_dimension_beyond_the_bound_is_refused_even_when_empty(tmp_path, shape):
    """A zero-byte tensor with a dimension NumPy cannot allocate passed the size check (0 bytes)
    and failed later as NumPy's own ValueError."""
    p = _raw(tmp_path / "model.safetensors", {"a": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}})
    with pytest.raises(SafetensorsError, match=r"shape must be a list of at most 16 integers from 0 to 2147483647"):
        SafetensorsFile(p)


def test_the_shortest_header_an_empty_object_reads_as_no_tensors(tmp_path):
    """'{}' unpadded (2 bytes, the least a header can be) is a file of no tensors; 1 byte is refused
    (MALFORMED's 'header too short')."""
    f = SafetensorsFile(_raw(tmp_path / "empty.safetensors", b"{}"))
    assert len(f) == 0 and list(f.names()) == [] and safetensors.load_file(tmp_path / "empty.safetensors") == {}


def test_a_header_length_past_the_file_names_both_sizes(tmp_path):
    path = MALFORMED["header length past the file"][0](tmp_path / "m.safetensors")
    after = path.stat().st_size - 8  # the bytes after the 8-byte length field
    with pytest.raises(SafetensorsError, match=f"header length field says 4000 bytes and the file has {after} after it"):
        SafetensorsFile(path)
