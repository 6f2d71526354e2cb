"""The safetensors format with NumPy alone: a reader that checks everything before it reads data,
and a writer.

A safetensors file is an 8-byte little-endian header length N, N bytes of a UTF-8 JSON object
(``{"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...}``, plus an
optional ``"__metadata__"`` object of strings), then the tensors' raw little-endian bytes, the
offsets counted from the end of the header.  The reader validates the header length (capped at
``MAX_HEADER_BYTES``), that the header is a JSON object without repeated names, every dtype, shape
and offset pair, that ``end - begin`` is the shape's size in bytes, that the tensors tile the data
region exactly (no overlap, no gap, nothing past the end of the file), all before it touches a
byte of tensor data.  Tensors are then views of one read-only memory map of the file: nothing is
copied until the caller converts them.

PyTorch's ``pytorch_model.bin`` is a pickle, which can run code when loaded: it is refused, never
opened as a pickle.
"""
import json
import mmap
import os

import numpy as np

from mobilenetv2 import files
from mobilenetv2.errors import ArgumentError, Error

# The reference implementation allows 100 MB of header; a MobileNetV2 checkpoint's is 20-60 KB
# (300-400 tensors), and JSON of empty lists parses to ~20x its size in Python objects (a 99 MB
# header took 2.7 GB and 17 s before its first check): 4 MiB leaves room for any metadata.
MAX_HEADER_BYTES = 4 << 20
MAX_DIM = (1 << 31) - 1  # one dimension (NumPy refuses some larger ones even with a 0 beside them)

DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
    "BF16": np.dtype("<u2"),  # bfloat16: stored as its 16 bits, widened to float32 by get()
}
_NAMES = {dt: name for name, dt in DTYPES.items() if name != "BF16"}


def pickle_hint(architecture=None):
    """Why a PyTorch pickle is refused, and the conversion to run: with the class config.json's
    ``architectures`` names, as transformers' AutoModel is the bare MobileNetV2Model, whose
    save_pretrained would drop the classifier or segmentation head."""
    return ("it is a PyTorch pickle, which can run code when loaded and is never opened here; "
            "convert it once where torch and transformers are installed: "
            f"transformers.{architecture or 'CLASS'}.from_pretrained(folder).save_pretrained(folder, "
            "safe_serialization=True) writes model.safetensors" +
            ("" if architecture else ", CLASS being the one config.json's architectures names "
             "(MobileNetV2ForImageClassification, MobileNetV2ForSemanticSegmentation or MobileNetV2Model)") +
            " (not AutoModel, which would drop the head)")


PICKLE_HINT = pickle_hint()


class SafetensorsError(Error, ValueError):
    """A safetensors file that is malformed, or does not hold what the caller needs."""

    def __init__(self, path, problem):
        super().__init__(f"safetensors file {files.path_str(path)!r}: {problem}")
        self.path, self.problem = files.path_str(path), problem


def _refuse_pickle(path, head):
    """A PyTorch checkpoint by its name, or by its first bytes (a zip archive, or a pickle's
    protocol opcode where a safetensors header would have its opening brace)."""
    name = os.path.basename(os.fspath(path))
    pickled = head[:1] == b"\x80" and head[8:9] != b"{"
    if name.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl")) or head[:4] == b"PK\x03\x04" or pickled:
        raise SafetensorsError(path, PICKLE_HINT)


def _no_duplicates(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the name {key!r} appears twice")
        out[key] = value
    return out


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def parse_header(path, header, data_bytes):
    """Check a decoded header against a data region of ``data_bytes`` bytes.

    Returns (metadata dict, {name: (dtype name, shape tuple, begin, end)}).
    """
    try:
        text = header.decode("utf-8")
        obj = json.loads(text, object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        raise SafetensorsError(path, "the header is not UTF-8 text") from None
    except RecursionError:
        raise SafetensorsError(path, "the header nests too deeply to be a safetensors header") from None
    except ValueError as exc:  # json.JSONDecodeError is a ValueError; so is a repeated name
        raise SafetensorsError(path, f"the header is not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise SafetensorsError(path, f"the header is a JSON {type(obj).__name__}, not an object")
    metadata = obj.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SafetensorsError(path, "__metadata__ must be an object of strings")
    entries = {}
    for name, info in obj.items():
        where = f"tensor {name!r}"
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise SafetensorsError(path, f"{where}: expected an object with exactly dtype, shape and "
                                         f"data_offsets, got {str(info)[:120]}")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise SafetensorsError(path, f"{where}: unknown dtype {str(dtype)[:40]!r} "
                                         f"(known: {', '.join(sorted(DTYPES))})")
        if not isinstance(shape, list) or len(shape) > 16 or not all(_is_int(d) and 0 <= d <= MAX_DIM
                                                                     for d in shape):
            raise SafetensorsError(path, f"{where}: shape must be a list of at most 16 integers from 0 to "
                                         f"{MAX_DIM}, got {str(shape)[:80]}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            raise SafetensorsError(path, f"{where}: data_offsets must be [begin, end] with "
                                         f"0 <= begin <= end, got {str(offsets)[:80]}")
        begin, end = offsets
        if end > data_bytes:
            raise SafetensorsError(path, f"{where}: data_offsets [{begin}, {end}] run past the end of "
                                         f"the file (its data region has {data_bytes} bytes; truncated?)")
        nbytes = DTYPES[dtype].itemsize
        for d in shape:  # Python integers: no overflow, and the bound keeps them small
            nbytes *= d
        if nbytes != end - begin:
            raise SafetensorsError(path, f"{where}: dtype {dtype} and shape {tuple(shape)} take {nbytes} "
                                         f"bytes, data_offsets [{begin}, {end}] span {end - begin}")
        entries[name] = (dtype, tuple(shape), begin, end)
    pos, prev = 0, None
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        if begin < pos:
            raise SafetensorsError(path, f"tensors {prev!r} and {name!r} overlap (bytes {begin}..{pos})")
        if begin > pos:
            raise SafetensorsError(path, f"bytes {pos}..{begin} before tensor {name!r} belong to no tensor")
        pos, prev = end, name
    if pos != data_bytes:
        raise SafetensorsError(path, f"the data region has {data_bytes} bytes and the tensors cover {pos}")
    return metadata, entries


class SafetensorsFile:
    """A validated, memory-mapped safetensors file.

    ``names()``, ``shape(name)``, ``dtype(name)`` read only the header; ``get(name)`` returns a
    read-only NumPy view of the mapped file (no copy) in the file's dtype (BF16 is widened to a
    float32 copy).
    """

    def __init__(self, path):
        self.path = files.path_str(path)
        try:
            fd = files.open_regular(self.path, "safetensors file")
        except files.NotRegularFile as exc:
            raise SafetensorsError(self.path, exc.problem) from None  # (which names the file)
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(9)
            _refuse_pickle(self.path, head)
            head = head[:8]
            f.seek(8)
            if len(head) < 8:
                raise SafetensorsError(self.path, f"the file has {size} bytes, fewer than the 8 of the "
                                                  "header length (empty or truncated)")
            n = int.from_bytes(head, "little")
            if n > MAX_HEADER_BYTES:
                raise SafetensorsError(self.path, f"the header length field says {n} bytes, more than the "
                                                  f"{MAX_HEADER_BYTES} allowed (not a safetensors file?)")
            if n < 2 or 8 + n > size:
                raise SafetensorsError(self.path, f"the header length field says {n} bytes and the file "
                                                  f"has {size - 8} after it (truncated, or not a "
                                                  "safetensors file)")
            header = f.read(n)
            self.metadata, self._entries = parse_header(self.path, header, size - 8 - n)
            self._start = 8 + n
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size > self._start else None

    def names(self):
        return list(self._entries)

    def __contains__(self, name):
        return name in self._entries

    def __len__(self):
        return len(self._entries)

    def _entry(self, name):
        try:
            return self._entries[name]
        except KeyError:
            raise SafetensorsError(self.path, f"has no tensor {name!r}") from None

    def shape(self, name):
        return self._entry(name)[1]

    def dtype(self, name):
        """The safetensors dtype name ('F32', 'I64', ...)."""
        return self._entry(name)[0]

    def get(self, name):
        dtype, shape, begin, end = self._entry(name)
        dt = DTYPES[dtype]
        count = (end - begin) // dt.itemsize
        if count == 0:
            a = np.zeros(shape, dt)
            a.flags.writeable = False
        else:
            a = np.frombuffer(self._map, dtype=dt, count=count, offset=self._start + begin).reshape(shape)
        if dtype == "BF16":  # (in place: ``<<`` made a 0-d array a NumPy scalar)
            wide = a.astype(np.uint32)
            wide <<= 16
            a = wide.view(np.float32)
        return a

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def load_file(path):
    """{name: read-only array view} of every tensor in ``path``."""
    f = SafetensorsFile(path)
    return {name: f.get(name) for name in f.names()}


def save_file(tensors, path, metadata=None):
    """Write ``{name: array}`` as a safetensors file (little-endian, names sorted, header padded
    to 8 bytes), through a temporary file renamed into place: no half-written file is left."""
    path = os.path.abspath(os.fspath(path))
    header, arrays, pos = {}, [], 0
    if not isinstance(tensors, dict) or not all(isinstance(k, str) for k in tensors):
        raise ArgumentError(f"tensors must be a dict of name -> array, got {type(tensors).__name__}")
    if "__metadata__" in tensors:  # the header's key for the metadata: the file would be unreadable
        raise ArgumentError("a tensor cannot be named '__metadata__', the safetensors header's key for the "
                            "metadata (give the metadata as metadata=)")
    if metadata is not None:
        if not isinstance(metadata, dict) or \
                not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ArgumentError("safetensors metadata must map strings to strings")
        if metadata:
            header["__metadata__"] = dict(metadata)
    for name in sorted(tensors):
        a = np.asarray(tensors[name])
        key = _NAMES.get(a.dtype.newbyteorder("<"))
        if key is None:
            raise ArgumentError(f"tensor {name!r}: dtype {a.dtype} has no safetensors equivalent")
        a = np.ascontiguousarray(a, dtype=DTYPES[key]).reshape(a.shape)  # keeps a 0-d array 0-d
        header[name] = {"dtype": key, "shape": list(a.shape), "data_offsets": [pos, pos + a.nbytes]}
        arrays.append(a)
        pos += a.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with files.atomic_write(path, suffix=".safetensors") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for a in arrays:
            f.write(a.tobytes())
    return path
