"""Read Keras .h5 weights files and match them to the model's weighted layers by order.

Layouts read (learnt from Keras's saving code and the official files):

- Keras 2 weights-only files (``save_weights('x.h5')``; the official 2018 files): the root
  attribute ``layer_names`` lists every layer; each layer's group has the attribute
  ``weight_names``, and each weight is the dataset at that name inside the group
  (``Conv1/kernel:0``; Keras 3 writes ``Conv1/kernel``).  Keras splits attributes too long for
  one HDF5 header into ``layer_names0``, ``layer_names1``, ...
- Keras 2 whole-model files (``model.save('x.h5')``): the same under the ``model_weights`` group.
- Keras 3 ``.weights.h5`` files (also the ``model.weights.h5`` inside a ``.keras`` archive):
  ``layers/<class>[_<n>]/vars/<i>``, each layer named by its class in snake case and numbered per
  class in model order (``conv2d``, ``conv2d_1``, ...); TF-Keras 2.13 wrote
  ``_layer_checkpoint_dependencies`` for ``layers``.  These files do not record the order across
  classes, so they are matched class by class: the n-th ``conv2d`` of the file to the n-th
  Conv2D of the model.

Like Keras, layers are matched by the order of the layers that have weights, not by name: the
official files use older names (``mobl1_conv_1_expand``, ``bn1_conv_1_bn_expand``).

Files come from strangers, so nothing outside the given file is ever read (see _Source): the
path is opened once as a regular file and read into memory, only hard links are walked,
external links, soft links, virtual datasets, external storage and unknown filters are refused,
every declared shape, dtype and the layer count are checked before any data is read, each
compressed chunk is inflated here, no further than its size, before HDF5 inflates it, and a
layer or weight reached twice (listed twice, or through a hard link) is refused.
Every error of h5py, zipfile and the decompressors becomes a WeightsError naming the file.
"""
import collections
import contextlib
import functools
import io
import lzma
import os
import re
import struct
import zipfile
import zlib

import h5py
import numpy as np

from mobilenetv2 import files
from mobilenetv2.errors import WeightsError  # re-exported: loader.WeightsError

OFFICIAL_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
_CONTAINERS = ("layers", "_layer_checkpoint_dependencies")
# Keras 3 stores a layer's variables as vars/0, vars/1, ... in this order (trainable, then not).
_KERAS3_WEIGHT_NAMES = {
    "conv2d": ("kernel", "bias"),
    "depthwise_conv2d": ("kernel", "bias"),
    "dense": ("kernel", "bias"),
    "batch_normalization": ("gamma", "beta", "moving_mean", "moving_variance"),
}
_FileLayer = collections.namedtuple("_FileLayer", "name kind weights")  # weights: [(name, _Stored)]

# -- what a file may hold (every bound is far above what any MobileNetV2 file needs) -------------
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
MAX_FILE_BYTES = 512 << 20       # the largest official file (1.4_224 with top) is ~25 MB
MAX_DATASET_ELEMENTS = 1 << 24   # the largest MobileNetV2 weight: 1.4's classifier, 1792x1000
MAX_TOTAL_BYTES = 1 << 30        # all datasets a file declares, together, as float64
MAX_ATTR_ELEMENTS = 1 << 16      # a layer_names / weight_names list (MobileNetV2 has 158 layers)
MAX_ATTR_BYTES = 16 << 20        # one such list as stored (fixed-length names: count x width)
MIN_CHUNK_CAP = 1 << 16          # a chunk may hold this many values even where the dataset is smaller
MAX_OBJECTS = 20000              # groups and datasets visited in one file
MAX_DEPTH = 12                   # nested Keras 3 containers (a model inside a model: 2-3)
MAX_ARCHIVE_MEMBERS = 64         # a .keras archive holds 3 (config, metadata, weights)
_ALLOWED_FILTERS = {h5py.h5z.FILTER_DEFLATE: "gzip", h5py.h5z.FILTER_SHUFFLE: "shuffle",
                    h5py.h5z.FILTER_FLETCHER32: "fletcher32", 32000: "lzf"}
_COMPRESSORS = (h5py.h5z.FILTER_DEFLATE, 32000)
# Errors the HDF5, zip and decompression libraries raise on damaged input: turned into WeightsError.
_LIBRARY_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError, OverflowError,
                   RecursionError, NotImplementedError, EOFError, zlib.error, lzma.LZMAError,
                   struct.error, UnicodeError, zipfile.BadZipFile, AttributeError)


def _access_lists():
    """Property lists under which nothing outside the file can be reached even if a check were
    missed: external links resolve under a prefix that does not exist and may not open files
    for writing; soft and external link chains stop after one step; external raw storage and
    virtual dataset sources resolve under a prefix that does not exist."""
    nowhere = b"/nonexistent/mobilenetv2-refuses-external-files/"
    lapl = h5py.h5p.create(h5py.h5p.LINK_ACCESS)
    lapl.set_nlinks(1)
    lapl.set_elink_prefix(nowhere)
    lapl.set_elink_acc_flags(h5py.h5f.ACC_RDONLY)
    dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
    dapl.set_efile_prefix(nowhere)
    dapl.set_virtual_prefix(nowhere)
    return lapl, dapl


class _Stored:
    """A dataset checked for safety (layout, storage, filters, type, declared size) but not read:
    its declared ``shape`` is compared with the model's before any byte of data is read."""

    def __init__(self, source, where, dsid):
        self.source, self.where, self.dsid = source, where, dsid
        self.shape = tuple(int(d) for d in dsid.shape)
        self.dtype = np.dtype(dsid.dtype)

    def read(self):
        with self.source.guard(f"reading {self.where}"):
            self.source.check_chunks(self.dsid, self.where)
            out = np.zeros(self.shape, dtype=self.dtype.newbyteorder("="))
            if out.size:
                self.dsid.read(h5py.h5s.ALL, h5py.h5s.ALL, out)
            return out


class _Source:
    """One weights file opened for safe reading: the path is opened once, read-only, as a
    regular file (a FIFO or device is refused before anything waits on it), read whole into
    memory (bounded), and handed to HDF5 from memory, so HDF5 never opens a path itself.
    Only hard links are followed; external links, soft links, virtual datasets, external raw
    storage and unknown filters are refused before a byte of data is read."""

    def __init__(self, path):
        self.path = files.path_str(path)
        self.label = repr(self.path)
        self.objects = 0
        self.declared = 0
        self.reached = {}  # object address -> where it was first reached
        self.lapl, self.dapl = _access_lists()
        data = self._read_file(path)
        if data.startswith(b"PK\x03\x04"):
            self.label = f"{self.path!r} (its model.weights.h5)"
            data = self._from_archive(data)
        if not data.startswith(HDF5_MAGIC):
            raise WeightsError(f"weights file {self.label} is not an HDF5 file (it starts with "
                               f"{data[:8]!r}); expected a Keras .h5 weights file or a .keras archive")
        self.data = data  # the bytes HDF5 reads: where a variable-length name list's lengths are checked
        with self.guard("opening it"):
            self.file = h5py.File(io.BytesIO(data), "r")

    def _read_file(self, path):
        try:
            fd = files.open_regular(path, "weights file")
        except files.NotRegularFile as exc:
            raise WeightsError(str(exc)) from None
        except FileNotFoundError:
            raise FileNotFoundError(2, "weights file not found", self.path) from None
        except PermissionError:
            raise PermissionError(13, "weights file is not readable", self.path) from None
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise WeightsError(f"weights file {self.label} is empty (0 bytes; an interrupted "
                                   "download?): delete it and download it again")
            if size > MAX_FILE_BYTES:
                raise WeightsError(f"weights file {self.label} is {size} bytes, more than any "
                                   f"MobileNetV2 weights file ({MAX_FILE_BYTES} at most)")
            data = files.read_bounded(f, MAX_FILE_BYTES)
        if data is None:  # it grew past the bound since its size was read
            raise WeightsError(f"weights file {self.label} is more than any MobileNetV2 weights "
                               f"file ({MAX_FILE_BYTES} bytes at most)")
        return data

    def _from_archive(self, data):
        """model.weights.h5 from a Keras 3 archive: stored or deflated only, not encrypted,
        inflated size declared and capped, read no further than declared."""
        with self.guard("reading it as a zip archive"):
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                members = zf.infolist()
                if len(members) > MAX_ARCHIVE_MEMBERS:
                    raise WeightsError(f"weights file {self.path!r} is a zip archive of {len(members)} "
                                       f"members; a .keras archive has a few ({MAX_ARCHIVE_MEMBERS} at most)")
                total = sum(m.file_size for m in members)
                if total > MAX_FILE_BYTES:
                    raise WeightsError(f"weights file {self.path!r}: its members would inflate to "
                                       f"{total} bytes (at most {MAX_FILE_BYTES}): refused")
                found = [m for m in members if m.filename == "model.weights.h5"]
                if len(found) > 1:
                    raise WeightsError(f"weights file {self.path!r} holds {len(found)} members named "
                                       "model.weights.h5 (zipfile, and so Keras, reads the last; a "
                                       ".keras archive has one): refused")
                info = found[0] if found else None
                if info is None:
                    raise WeightsError(f"weights file {self.path!r} is a zip archive without "
                                       "model.weights.h5 (expected a Keras .h5 weights file or a "
                                       ".keras archive)")
                if info.flag_bits & 0x1:
                    raise WeightsError(f"weights file {self.path!r}: model.weights.h5 is encrypted; "
                                       "Keras never encrypts it: refused")
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    raise WeightsError(f"weights file {self.path!r}: model.weights.h5 uses zip "
                                       f"compression method {info.compress_type}; a .keras archive "
                                       "is stored or deflated: refused")
                with zf.open(info) as member:
                    out = member.read(info.file_size + 1)
                if len(out) != info.file_size:
                    raise WeightsError(f"weights file {self.path!r}: model.weights.h5 inflates to "
                                       f"{len(out)} bytes, its header says {info.file_size}")
                return out

    @contextlib.contextmanager
    def guard(self, doing):
        """Turn any library error while ``doing`` into a WeightsError naming the file."""
        try:
            yield
        except WeightsError:
            raise
        except MemoryError:
            raise WeightsError(f"weights file {self.label}: out of memory while {doing}") from None
        except _LIBRARY_ERRORS as exc:
            raise WeightsError(f"weights file {self.label} is truncated or corrupt, or not a Keras weights file "
                               f"({type(exc).__name__} while {doing}: {exc}); delete it and download "
                               "it again, or give the file Keras wrote") from None

    def close(self):
        with contextlib.suppress(Exception):
            self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- walking ---------------------------------------------------------------------------------
    def _count(self):
        self.objects += 1
        if self.objects > MAX_OBJECTS:
            raise WeightsError(f"weights file {self.label} has more than {MAX_OBJECTS} groups and "
                               "datasets (a loop of links, or not a MobileNetV2 file): refused")

    def child(self, group, name, where):
        """The object at ``name`` (a path relative to ``group``) or None where absent, following
        hard links only, one component at a time."""
        obj = group
        for part in name.split("/"):
            if part == "":
                continue
            if part in (".", ".."):
                raise WeightsError(f"weights file {self.label}: {where} names {name!r}, a relative "
                                   "path: refused")
            if not isinstance(obj, h5py.Group):
                return None
            link = obj.get(part, getlink=True)
            if link is None:
                return None
            if not isinstance(link, h5py.HardLink):
                kind = {h5py.SoftLink: "a soft link", h5py.ExternalLink: "an external link to "
                        "another file"}.get(type(link), "a link of an unknown kind")
                target = getattr(link, "filename", None) or getattr(link, "path", "")
                raise WeightsError(f"weights file {self.label}: {where} goes through {part!r}, "
                                   f"{kind} ({target!r}); a weights file must hold its data itself: "
                                   "refused")
            self._count()
            otype = h5py.h5o.get_info(obj.id, part.encode(), lapl=self.lapl).type
            if otype == h5py.h5o.TYPE_DATASET:
                obj = h5py.Dataset(h5py.h5d.open(obj.id, part.encode(), dapl=self.dapl))
            elif otype == h5py.h5o.TYPE_GROUP:
                obj = obj[part]
            else:
                return None
        return obj

    def keys(self, group, where):
        """The names directly in ``group`` (bounded)."""
        n = group.id.get_num_objs()
        if n > MAX_OBJECTS:
            raise WeightsError(f"weights file {self.label}: {where} holds {n} objects: refused")
        return [k for k in group]

    def stored(self, obj, where):
        """A checked, unread dataset at ``where``."""
        if not isinstance(obj, h5py.Dataset):
            raise WeightsError(f"weights file {self.label}: {where} is not a dataset")
        dsid = obj.id
        plist = dsid.get_create_plist()
        if plist.get_layout() == h5py.h5d.VIRTUAL:
            raise WeightsError(f"weights file {self.label}: {where} is a virtual dataset (its data "
                               "lives in other files); a weights file must hold its data itself: refused")
        if plist.get_external_count():
            raise WeightsError(f"weights file {self.label}: {where} keeps its data in external "
                               f"file(s) ({plist.get_external(0)[0]!r}); a weights file must hold "
                               "its data itself: refused")
        codes = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
        for code in codes:
            if code not in _ALLOWED_FILTERS:
                raise WeightsError(f"weights file {self.label}: {where} uses HDF5 filter {code}; only "
                                   f"{', '.join(sorted(_ALLOWED_FILTERS.values()))} are read: refused")
        compressors = [i for i, code in enumerate(codes) if code in _COMPRESSORS]
        if len(set(codes)) != len(codes) or len(compressors) > 1 or (
                compressors and h5py.h5z.FILTER_SHUFFLE in codes[compressors[0]:]):
            raise WeightsError(f"weights file {self.label}: {where} uses the HDF5 filters "
                               f"{', '.join(_ALLOWED_FILTERS[c] for c in codes)}; a weights file uses "
                               "each at most once, one compressor at most, shuffle before it (as h5py "
                               "and h5repack write them): refused")
        if dsid.get_type().get_class() != h5py.h5t.FLOAT or dsid.dtype.itemsize not in (2, 4, 8):
            raise WeightsError(f"weights file {self.label}: {where} has dtype {dsid.dtype}, "
                               "expected floating point")
        shape = dsid.shape
        if shape is None:
            raise WeightsError(f"weights file {self.label}: {where} is an empty dataset (HDF5's null "
                               "dataspace: no shape, no values), not a weight")
        elements = int(np.prod(shape, dtype=object))
        if elements > MAX_DATASET_ELEMENTS:
            raise WeightsError(f"weights file {self.label}: {where} declares shape {shape}, larger "
                               f"than any MobileNetV2 weight ({MAX_DATASET_ELEMENTS} values at most): refused")
        self.declared += elements * 8
        if self.declared > MAX_TOTAL_BYTES:
            raise WeightsError(f"weights file {self.label}: its datasets declare more than "
                               f"{MAX_TOTAL_BYTES} bytes together: refused")
        if plist.get_layout() == h5py.h5d.CHUNKED:
            chunk = plist.get_chunk()
            if int(np.prod(chunk, dtype=object)) > max(elements, MIN_CHUNK_CAP):
                raise WeightsError(f"weights file {self.label}: {where} ({shape}) is stored in chunks "
                                   f"of {chunk} values, each inflated whole when read; chunks larger "
                                   "than the dataset are refused")
        if elements and not self._written(dsid, plist, shape):
            raise WeightsError(f"weights file {self.label}: {where} was never written (HDF5 holds no "
                               "data for it, or only for part of it): the file is incomplete; give "
                               "the file Keras wrote")
        self.once(obj, where)
        return _Stored(self, where, dsid)

    def once(self, obj, where):
        """Refuse a layer group or weight dataset reached a second time: listed twice, named
        through an alias (a hard link), so that by order one layer's weights would fill another's."""
        addr = h5py.h5o.get_info(obj.id).addr
        if addr in self.reached:
            raise WeightsError(f"weights file {self.label}: {where} is {self.reached[addr]} again (listed "
                               "twice, or a hard link to it); a Keras file stores each layer and weight "
                               "once: refused")
        self.reached[addr] = where

    def check_chunks(self, dsid, where):
        """Before HDF5 decompresses a filtered dataset, inflate each stored chunk here, no further
        than the chunk's size: HDF5's deflate and LZF filters grow their buffer until the stream
        ends, so a few hundred KB stored for a chunk of 64 bytes would take GBs.  Each chunk must
        come back to exactly its size, as every writer leaves it."""
        plist = dsid.get_create_plist()
        if plist.get_layout() != h5py.h5d.CHUNKED or not plist.get_nfilters():
            return
        codes = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
        size = int(np.prod(plist.get_chunk(), dtype=object)) * dsid.get_type().get_size()

        def check(info):  # called by HDF5 for each stored chunk (get_chunk_info(k) is O(k))
            mask, data = dsid.read_direct_chunk(info.chunk_offset)
            stored = length = len(data)
            for i in reversed(range(len(codes))):  # the read order: the last filter written first
                if mask & (1 << i):  # an optional filter that did not apply to this chunk
                    continue
                if codes[i] == h5py.h5z.FILTER_FLETCHER32:
                    length -= 4
                    data = data[:-4] if data is not None else None
                elif codes[i] == h5py.h5z.FILTER_DEFLATE:
                    inflater = zlib.decompressobj()
                    data = inflater.decompress(data, size + 8)
                    length = len(data) if inflater.eof or len(data) > size else -1
                elif codes[i] == 32000:
                    length, data = _lzf_length(data, size + 8), None
                if length < 0:
                    break
            if length != size:
                at = tuple(int(n) for n in info.chunk_offset)
                got = ("inflates to more than its" if length > size else "ends before its stream does "
                       "for its" if length < 0 else f"inflates to {length} bytes, not its")
                raise WeightsError(f"weights file {self.label}: {where} has a chunk at {at} of {stored} "
                                   f"stored bytes that {got} {size} bytes (a decompression bomb, or "
                                   "damaged): refused")
        dsid.chunk_iter(check)

    @staticmethod
    def _written(dsid, plist, shape):
        """Whether every value of the dataset has storage in the file.  A dataset created but
        never (wholly) written has none, and with the fill time 'never' HDF5 then leaves the
        reader's buffer as it was: values no file holds."""
        layout = plist.get_layout()
        if layout == h5py.h5d.COMPACT:
            return True
        if layout == h5py.h5d.CHUNKED:
            chunk = plist.get_chunk()
            needed = 1
            for n, c in zip(shape, chunk):
                needed *= -(-int(n) // int(c))
            return dsid.get_num_chunks() == needed
        return dsid.get_storage_size() >= int(np.prod(shape, dtype=object)) * dsid.dtype.itemsize

    def attr_list(self, obj, name, where):
        """Keras's list attribute ``name`` of an HDF5 object, joined from ``name0, name1, ...``
        when Keras split it; None when absent.  Each part's size is checked before it is read."""
        if name in obj.attrs:
            names = [name]
        elif f"{name}0" in obj.attrs:
            names, i = [], 0
            while f"{name}{i}" in obj.attrs:
                names.append(f"{name}{i}")
                i += 1
                if i > MAX_ATTR_ELEMENTS:
                    break
        else:
            return None
        out = []
        for n in names:
            aid = obj.attrs.get_id(n)
            count = int(np.prod(aid.shape, dtype=object)) if aid.shape else 1
            if count == 0:  # Keras writes an empty list as an empty float array
                continue
            string = aid.dtype.kind == "S" or h5py.check_string_dtype(aid.dtype) is not None
            if not string or count + len(out) > MAX_ATTR_ELEMENTS:
                raise WeightsError(f"weights file {self.label}: attribute {n!r} of {where} has dtype "
                                   f"{aid.dtype} and {count} values; expected a list of names")
            for item in self._names(obj, aid, count, n, where):
                item = item.rstrip(b"\0")
                if b"\0" in item:  # HDF5 would read the name up to it: another name's alias
                    raise WeightsError(f"weights file {self.label}: attribute {n!r} of {where} holds "
                                       f"a name with a NUL byte inside ({item[:40]!r}): refused")
                try:
                    out.append(item.decode("utf8"))
                except UnicodeDecodeError:
                    raise WeightsError(f"weights file {self.label}: attribute {n!r} of {where} holds "
                                       f"a name that is not UTF-8 ({item[:40]!r})") from None
        return out

    def _names(self, obj, aid, count, n, where):
        """The names of a list attribute as bytes, their size known, and bounded, before they are
        read.  Keras 2 with h5py 2 wrote fixed-length strings (count x width); Keras 3's
        ``model.save('x.h5')`` (and any Keras with h5py 3) writes variable-length ones, whose
        elements point into the file's global heap, where many may point at one long string and
        each says its own length, which HDF5 allocates before reading (a 1 MB file made 4 GB
        that way): their lengths are read first, from the attribute as stored (_vlen_lengths),
        and the list is read only where they add up to no more than a fixed-length list may."""
        if aid.dtype.kind != "S":
            lengths = _vlen_lengths(self.data, obj, n, count) if h5py.check_string_dtype(aid.dtype) else None
            if lengths is None:
                raise WeightsError(f"weights file {self.label}: attribute {n!r} of {where} holds "
                                   "variable-length strings stored where their lengths cannot be read "
                                   "before them (shared, in dense attribute storage, or not as Keras and "
                                   "h5py write them): refused; re-save the weights with Keras")
            if sum(lengths) > MAX_ATTR_BYTES:
                raise WeightsError(f"weights file {self.label}: attribute {n!r} of {where} holds {count} "
                                   f"names of {sum(lengths)} bytes together, more than any Keras file "
                                   f"({MAX_ATTR_BYTES} bytes at most): refused")
            buf = np.empty(aid.shape or (), dtype=aid.dtype)
            with self.guard(f"reading attribute {n!r} of {where}"):
                aid.read(buf)
            return [x if isinstance(x, bytes) else str(x).encode("utf8") for x in np.atleast_1d(buf).ravel()]
        width = aid.dtype.itemsize
        if count * width > MAX_ATTR_BYTES:
            raise WeightsError(f"weights file {self.label}: attribute {n!r} of {where} holds {count} "
                               f"names of {width} bytes, more than any Keras file ({MAX_ATTR_BYTES} "
                               "bytes at most): refused")
        buf = np.zeros(aid.shape or (), dtype=f"S{width}")
        with self.guard(f"reading attribute {n!r} of {where}"):
            aid.read(buf)
        return [bytes(x) for x in np.atleast_1d(buf).ravel()]


# -- variable-length name lists: their lengths, from the attribute as stored --------------------
_UNDEFINED = (1 << 64) - 1  # HDF5's undefined address


class _Unreadable(Exception):
    """An object header or attribute message _vlen_lengths cannot read (it then refuses the list)."""

_MAX_HEADER_CHUNKS = 1024    # object header chunks followed for one object (continuations)


def _vlen_lengths(data, obj, name, count):
    """The stored length of each element of the variable-length string attribute ``name`` of
    the HDF5 object ``obj``, read from the file's bytes ``data`` as HDF5 reads them: the
    attribute message found by walking the object's header (version 1 or 2, continuation
    chunks followed), its elements' descriptors (length, global heap collection, index).
    None where this cannot be done as surely as HDF5 would find the attribute: 8-byte offsets
    and lengths only, no dense attribute storage, no shared message or datatype, one message
    of that name, a variable-length string type and ``count`` elements."""
    try:
        sb = _superblock(data)
        if sb is None:
            return None
        addr = sb + h5py.h5o.get_info(obj.id).addr
        found = []
        for mtype, flags, body in _header_messages(data, addr, sb):
            if mtype == 0x15 and _dense_attributes(body):
                return None
            if mtype == 0x0C:
                if flags & 0x02:  # a shared attribute: stored elsewhere
                    return None
                attr = _attribute(body)
                if attr is None:
                    return None
                if attr[0] == name.encode("utf8"):
                    found.append(attr)
        if len(found) != 1:
            return None
        _, vlen_string, n, raw = found[0]
        if not vlen_string or n != count or len(raw) < 16 * count:
            return None
        return [struct.unpack_from("<I", raw, 16 * i)[0] for i in range(count)]
    except (_Unreadable, struct.error, IndexError, ValueError, KeyError, TypeError, RuntimeError):
        return None


def _superblock(data):
    """The base address of an HDF5 superblock (versions 0-3) at offset 0 with 8-byte offsets and
    lengths, else None."""
    found = _superblock_addresses(data)
    return found[0] if found is not None and found[2] == 8 else None


def _header_messages(data, addr, base):
    """(type, flags, body) of every message of the object header at ``addr`` (version 1 or 2),
    continuation chunks (at addresses relative to the superblock's ``base``) included;
    _Unreadable where it is not one or runs past the file."""
    def within(start, end):
        if not 0 <= start <= end <= len(data):
            raise _Unreadable("past the end of the file")

    if data[addr:addr + 4] == b"OHDR":
        if data[addr + 4] != 2:
            raise _Unreadable("object header version")
        hflags = data[addr + 5]
        at = addr + 6 + (16 if hflags & 0x20 else 0) + (4 if hflags & 0x10 else 0)
        width = 1 << (hflags & 0x03)
        size = int.from_bytes(data[at:at + width], "little")
        chunks, v2 = [(at + width, at + width + size)], True
        head = 4 + (2 if hflags & 0x04 else 0)
    elif data[addr] == 1:
        size = struct.unpack_from("<I", data, addr + 8)[0]
        chunks, v2, head = [(addr + 16, addr + 16 + size)], False, 8
    else:
        raise _Unreadable("not an object header")
    seen = set()
    while chunks:
        start, end = chunks.pop(0)
        within(start, end)
        if (start, end) in seen or len(seen) >= _MAX_HEADER_CHUNKS:
            raise _Unreadable("a loop of continuation chunks")
        seen.add((start, end))
        at = start
        while at + head <= end:
            if v2:
                mtype, msize, mflags = data[at], struct.unpack_from("<H", data, at + 1)[0], data[at + 3]
            else:
                mtype, msize, mflags = struct.unpack_from("<HHB", data, at)
            body = at + head
            within(body, body + msize)
            if body + msize > end:
                raise _Unreadable("a message past its chunk")
            if mtype == 0x10:  # continuation: offset, length
                where, length = struct.unpack_from("<QQ", data, body)
                where += base
                if v2:
                    if data[where:where + 4] != b"OCHK":
                        raise _Unreadable("a continuation chunk without its signature")
                    chunks.append((where + 4, where + length - 4))
                else:
                    chunks.append((where, where + length))
            yield mtype, mflags, data[body:body + msize]
            at = body + msize


def _dense_attributes(body):
    """Whether an attribute info message says the object's attributes are in dense storage."""
    flags = body[1]
    heap = struct.unpack_from("<Q", body, 2 + (2 if flags & 0x01 else 0))[0]
    return heap != _UNDEFINED


def _attribute(body):
    """(name, is a variable-length string, element count, raw data) of an attribute message
    (versions 1-3); None where its datatype or dataspace is shared."""
    version = body[0]
    if version not in (1, 2, 3):
        raise _Unreadable("attribute message version")
    if version > 1 and body[1] & 0x03:
        return None
    name_size, type_size, space_size = struct.unpack_from("<HHH", body, 2)
    at = 8 + (1 if version == 3 else 0)
    pad = (lambda n: (n + 7) & ~7) if version == 1 else (lambda n: n)
    name = body[at:at + name_size].split(b"\0", 1)[0]
    at += pad(name_size)
    dtype = body[at:at + type_size]
    at += pad(type_size)
    space = body[at:at + space_size]
    at += pad(space_size)
    vlen_string = (len(dtype) >= 8 and dtype[0] & 0x0F == 9 and dtype[1] & 0x0F == 1
                   and struct.unpack_from("<I", dtype, 4)[0] == 16)
    sversion, rank = space[0], space[1]
    if sversion == 1:
        dims_at = 8
    elif sversion == 2:
        dims_at = 4
        if space[3] == 2:  # the null dataspace: no elements
            rank = 0
            return name, vlen_string, 0, body[at:]
    else:
        raise _Unreadable("dataspace message version")
    count = 1
    for i in range(rank):
        count *= struct.unpack_from("<Q", space, dims_at + 8 * i)[0]
    return name, vlen_string, count, body[at:]


def _lzf_length(data, limit):
    """The length an LZF stream decompresses to, counted from its tokens without decompressing,
    ``limit`` + 1 once past ``limit``, -1 where a token runs past the end (a literal run
    ``0LLLLL``: L+1 bytes follow; a back reference ``LLLooooo [L] oooooooo``: L+2 bytes, L = 7
    + the next byte where the 3 bits say 7)."""
    at, end, out = 0, len(data), 0
    while at < end:
        ctrl = data[at]
        if ctrl < 32:
            at, out = at + ctrl + 2, out + ctrl + 1
        else:
            run = ctrl >> 5
            if run == 7:
                run += data[at + 1] if at + 1 < end else 0
                at += 1
            at, out = at + 2, out + run + 2
        if at > end:
            return -1
        if out > limit:
            return limit + 1
    return out


# -- reading -----------------------------------------------------------------------------------
def _short_name(weight_name):
    """'block_1_expand/kernel:0' -> 'kernel'."""
    return weight_name.rsplit("/", 1)[-1].split(":", 1)[0]


def _read_legacy(src, root, where):
    layers = []
    for lname in src.attr_list(root, "layer_names", where):
        group = src.child(root, lname, f"layer {lname!r}")
        if not isinstance(group, h5py.Group):
            raise WeightsError(f"weights file {src.label} lists layer {lname!r} but has no group for it")
        src.once(group, f"layer {lname!r}")
        # A model saved as one layer of another holds all its layers' weights, named
        # '<inner layer>/<weight>', trainable ones first: split them back by inner layer.
        inner = {}
        for wname in src.attr_list(group, "weight_names", f"layer {lname!r}") or []:
            obj = src.child(group, wname, f"layer {lname!r} weight {wname!r}")
            if obj is None:
                raise WeightsError(f"weights file {src.label}: layer {lname!r} lists weight {wname!r} "
                                   "but has no dataset for it")
            stored = src.stored(obj, f"{lname}/{wname}")
            scope = wname.rsplit("/", 1)[0] if "/" in wname else ""
            inner.setdefault(scope, []).append((_short_name(wname), stored))
        for scope, weights in inner.items():
            name = lname if len(inner) == 1 else f"{lname}/{scope.rsplit('/', 1)[-1]}"
            layers.append(_FileLayer(name, None, weights))
    return layers


def _natural_key(key):
    """'conv2d_12' -> ('conv2d', 12), 'conv2d' -> ('conv2d', 0): Keras 3's per-class numbering."""
    base, num = re.fullmatch(r"(.*?)(?:_(\d+))?", key).groups()
    return base, int(num or 0)


def _read_keras3(src, container, prefix="", depth=0, seen=None):
    """Keras 3 layers under ``container``, depth-first; a container met twice (a cycle of hard
    links) or nested deeper than MAX_DEPTH is refused."""
    seen = set() if seen is None else seen
    addr = h5py.h5o.get_info(container.id).addr
    if addr in seen:
        raise WeightsError(f"weights file {src.label}: {prefix or '/'} contains itself (a cycle of "
                           "links): refused")
    if depth > MAX_DEPTH:
        raise WeightsError(f"weights file {src.label}: layers nested more than {MAX_DEPTH} deep at "
                           f"{prefix!r}: refused")
    seen.add(addr)
    layers = []
    for key in sorted(src.keys(container, prefix or "/"), key=_natural_key):
        group = src.child(container, key, f"{prefix}{key}")
        if not isinstance(group, h5py.Group):
            continue
        name = f"{prefix}{key}"
        variables = src.child(group, "vars", f"{name}/vars")
        if isinstance(variables, h5py.Group) and len(variables):
            src.once(group, name)
            kind = _natural_key(key)[0]
            keys = src.keys(variables, f"{name}/vars")
            if set(keys) != {str(i) for i in range(len(keys))}:
                held = sorted(keys, key=lambda k: (len(k), k))
                raise WeightsError(f"weights file {src.label}: {name}/vars holds "
                                   f"{', '.join(held[:8])}{', ...' if len(held) > 8 else ''}; Keras 3 "
                                   f"writes a layer's variables as vars/0 to vars/{len(keys) - 1} (and "
                                   "reads no other): refused")
            keys = [str(i) for i in range(len(keys))]
            known = _KERAS3_WEIGHT_NAMES.get(kind, ())
            names = list(known[:len(keys)]) if len(keys) <= len(known) else keys
            layers.append(_FileLayer(name, kind, [
                (wname, src.stored(src.child(variables, k, f"{name}/vars/{k}"), f"{name}/vars/{k}"))
                for wname, k in zip(names, keys)]))
        for sub in _CONTAINERS:
            inner = src.child(group, sub, f"{name}/{sub}")
            if isinstance(inner, h5py.Group):
                layers += _read_keras3(src, inner, f"{name}/", depth + 1, seen)
    return layers


def _read_layers(src):
    """The file's weighted layers as _FileLayer tuples (datasets checked, not read), and its
    layout's name."""
    f = src.file
    with src.guard("reading its layer list"):
        if src.attr_list(f, "layer_names", "the file") is not None:
            return _read_legacy(src, f, "the file"), "keras2"
        mw = src.child(f, "model_weights", "model_weights")
        if isinstance(mw, h5py.Group) and src.attr_list(mw, "layer_names", "model_weights") is not None:
            return _read_legacy(src, mw, "model_weights"), "keras2-model"
        for sub in _CONTAINERS:
            inner = src.child(f, sub, sub)
            if isinstance(inner, h5py.Group):
                return _read_keras3(src, inner), "keras3"
        top = sorted(src.keys(f, "/"))[:8]
    raise WeightsError(f"weights file {src.label} is HDF5 but not a Keras weights file: it has no "
                       "'layer_names' attribute and no 'model_weights' or 'layers' group "
                       f"(top-level keys: {top})")


def check_file(path):
    """Raise WeightsError unless ``path`` is a complete, safe HDF5 weights file or .keras archive
    (the download check for files the registry has no checksum for): it opens safely, and an
    HDF5 file ends where its superblock says, no shorter (truncated) and no longer (bytes
    appended after the data)."""
    with _Source(path) as src:
        with open(path, "rb") as f:
            head = f.read(64)
            size = os.fstat(f.fileno()).st_size
        end = _superblock_end(head)
        if end is not None and end != size:
            raise WeightsError(f"weights file {src.label} is {size} bytes and its HDF5 superblock says "
                               f"{end}: {'bytes were appended' if size > end else 'it is truncated'}")


def _superblock_addresses(head):
    """(base address, end-of-file address, size of lengths) that an HDF5 superblock at offset 0
    records, or None where it is not one of versions 0-3 with 8-byte offsets."""
    if not head.startswith(HDF5_MAGIC) or len(head) < 48:
        return None
    version = head[8]
    if version in (0, 1):  # sizes of offsets and lengths at 13 and 14; base, free space, end from 24 (28)
        offsets, lengths, at = head[13], head[14], 24 + (4 if version == 1 else 0)
    elif version in (2, 3):  # at 9 and 10; base, superblock extension, end from 12
        offsets, lengths, at = head[9], head[10], 12
    else:
        return None
    if offsets != 8:
        return None
    base = struct.unpack_from("<Q", head, at)[0]
    return base, base + struct.unpack_from("<Q", head, at + 16)[0], lengths


def _superblock_end(head):
    """The end-of-file address an HDF5 superblock at offset 0 records, or None where the
    superblock is not one of versions 0-3 with 8-byte addresses at offset 0."""
    found = _superblock_addresses(head)
    return None if found is None else found[1]


def read_weights(path):
    """The weighted layers of a Keras weights file, in the file's order.

    Returns ``[(layer_name, [(weight_name, float32 array), ...]), ...]`` with weight names
    shortened to Keras's (``kernel``, ``gamma``, ``moving_mean``, ...).  For Keras 3 files the
    layers come grouped by class, numbered in model order within each class (see module doc).
    """
    with _Source(path) as src:
        layers, _ = _read_layers(src)
        return [(layer.name, [(w, _as_float32(src, layer.name, w, s.read())) for w, s in layer.weights])
                for layer in layers]


def _as_float32(src, lname, wname, array):
    if array.dtype.kind != "f":
        raise WeightsError(f"weights file {src.label}: layer {lname!r} weight {wname!r} has "
                           f"dtype {array.dtype}, expected floating point")
    with np.errstate(over="ignore"):  # a float64 past float32's range: the finite check names it
        return np.ascontiguousarray(array, dtype=np.float32)


# -- diagnosis: which model does a file fit? ------------------------------------------------
def classifier_classes(path):
    """The classes of a Keras weights file's classifier (its one layer with a 2-D kernel, the
    dense head), or None where it has none (a _no_top file).  Only the layer list and the
    datasets' declared shapes are read."""
    path = files.path_str(path)
    with _Source(path) as src:
        layers, _ = _read_layers(src)
    dense = [layer for layer in layers if layer.weights and len(layer.weights[0][1].shape) == 2]
    return int(dense[-1].weights[0][1].shape[1]) if dense else None


@functools.lru_cache(maxsize=None)
def _backbone_shapes(alpha):
    """Weight shapes of each weighted backbone layer of MobileNetV2 ``alpha`` (no classifier)."""
    from mobilenetv2.network import arch
    return tuple(tuple(tuple(s) for s in layer.weight_shapes())
                 for layer in arch.build_layers(alpha, include_top=False) if layer.weight_shapes())


def _is_classifier(shapes):
    return bool(shapes) and len(shapes[0]) == 2


def _alphas_like(shapes):
    """Official alphas whose backbone agrees with ``shapes`` (one tuple of shapes per layer)
    over the layers both have."""
    if shapes and _is_classifier(shapes[-1]):
        shapes = shapes[:-1]
    if not shapes:
        return []
    return [a for a in OFFICIAL_ALPHAS
            if all(s == b for s, b in zip(shapes, _backbone_shapes(a)))]


def _hints(expected, found):
    """Likely causes of a mismatch between the model's and the file's layer shapes."""
    hints = []
    model_shapes = [tuple(tuple(s) for _, s in ws) for _, ws in expected]
    file_shapes = [tuple(a.shape for _, a in layer.weights) for layer in found]
    model_alphas, file_alphas = _alphas_like(model_shapes), _alphas_like(file_shapes)
    if file_alphas and not set(file_alphas) & set(model_alphas):
        looks = " or ".join(f"alpha={a}" for a in file_alphas)
        hints.append(f"the file looks like {looks}: build the model with that alpha, or load the "
                     "file made for the model's alpha")
    model_top = bool(model_shapes) and _is_classifier(model_shapes[-1])
    file_top = bool(file_shapes) and _is_classifier(file_shapes[-1])
    if file_top and not model_top:
        hints.append(f"the file has a classifier layer ({found[-1].name!r}, "
                     f"{file_shapes[-1][0][1]} classes) and the model has none: use "
                     "include_top=True, or the _no_top file")
    elif model_top and not file_top:
        hints.append("the model has a classifier layer and the file has none (a _no_top file?): "
                     "use include_top=False (dump --no-top on the command line), or the file with the top")
    elif model_top and file_top and model_shapes[-1][0][1] != file_shapes[-1][0][1]:
        hints.append(f"the file's classifier has {file_shapes[-1][0][1]} classes and the model's "
                     f"{model_shapes[-1][0][1]}: use classes={file_shapes[-1][0][1]}")
    return hints


# -- matching ------------------------------------------------------------------------------------
def _kind(weights):
    """Keras 3's snake-case class name for a model layer, from its weights' names and shapes."""
    names = [w for w, _ in weights]
    if "moving_mean" in names or "gamma" in names:
        return "batch_normalization"
    shape = tuple(weights[0][1])
    if len(shape) == 2:
        return "dense"
    if len(shape) == 4 and shape[3] == 1 and shape[2] > 1:
        return "depthwise_conv2d"
    return "conv2d"


def _order_keras3(expected, found):
    """Reorder a Keras 3 file's layers to the model's order, class by class.  Layers left over
    (or a class that runs out) are kept at the end so the count check reports them."""
    queues = collections.OrderedDict()
    for layer in found:
        queues.setdefault(layer.kind, collections.deque()).append(layer)
    ordered = []
    for _, weights in expected:
        queue = queues.get(_kind(weights))
        if not queue:
            break
        ordered.append(queue.popleft())
    return ordered + [layer for queue in queues.values() for layer in queue]


def _names(weights, most=6):
    names = [w for w, _ in weights]
    return ", ".join(names[:most]) + (", ..." if len(names) > most else "")


def load_by_order(path, expected, context=None):
    """Weights of ``path`` for a model whose weighted layers are ``expected``.

    ``expected``: ``[(keras_layer_name, [(weight_name, shape), ...]), ...]`` in model order.
    Returns one list of float32 arrays per expected layer, in the expected weight order.
    Every layer's weight count and every dataset's declared shape, and the number of layers,
    are checked before any data is read.  Raises WeightsError naming the file, the layer and
    the shapes, with the likely cause; NaN, inf and negative moving variances are refused.
    """
    path = files.path_str(path)
    expected = [(name, [(w, tuple(int(d) for d in s)) for w, s in weights]) for name, weights in expected]
    with _Source(path) as src:
        found, layout = _read_layers(src)
        if layout == "keras3":
            found = _order_keras3(expected, found)
        what = context or "the model"

        def fail(problem):
            hints = _hints(expected, found)
            raise WeightsError(f"weights file {src.label} does not fit {what}: {problem}"
                               + "".join(f"; {h}" for h in hints))

        plan = []
        for k, ((name, want), layer) in enumerate(zip(expected, found)):
            where = f"layer #{k} {name!r} (in the file: {layer.name!r})"
            got = layer.weights
            if len(got) != len(want):
                fail(f"{where} takes {len(want)} weight(s) ({_names(want)}), the file has {len(got)} "
                     f"({_names(got)})")
            got_names = [w for w, _ in got]
            if got_names != [w for w, _ in want] and sorted(got_names) == sorted(w for w, _ in want):
                by_name = dict(got)
                got = [(w, by_name[w]) for w, _ in want]
            for (wname, shape), (_, stored) in zip(want, got):
                if stored.shape != shape:
                    fail(f"{where} weight {wname!r} should have shape {shape}, the file has "
                         f"{stored.shape}")
            plan.append((where, layer, [(wname, stored) for (wname, _), (_, stored) in zip(want, got)]))
        if len(found) < len(expected):
            fail(f"the file has {len(found)} layers with weights and the model has {len(expected)}; "
                 f"nothing in the file for {expected[len(found)][0]!r} and after (an incomplete export, "
                 "or not a MobileNetV2 file?)")
        if len(found) > len(expected):
            extra = ", ".join(repr(layer.name) for layer in found[len(expected):][:3])
            fail(f"the file has {len(found)} layers with weights and the model has {len(expected)}; "
                 f"the file has more: {extra}")
        return [[_checked_values(src, where, layer, wname, stored) for wname, stored in weights]
                for where, layer, weights in plan]


def _checked_values(src, where, layer, wname, stored):
    array = _as_float32(src, layer.name, wname, stored.read())
    bad = array.size - int(np.isfinite(array).sum())
    if bad:
        raise WeightsError(f"weights file {src.label}: {where} weight {wname!r} has {bad} "
                           "NaN or inf value(s); the file is corrupt")
    if wname == "moving_variance" and (array < 0).any():
        raise WeightsError(f"weights file {src.label}: {where} weight 'moving_variance' has "
                           f"{int((array < 0).sum())} negative value(s) (as low as {array.min():g}); "
                           "a variance is never negative: the file is corrupt")
    return array


# -- writing ---------------------------------------------------------------------------------
def save_weights(path, layers):
    """Write ``layers``' weights as a Keras 2 weights file (the layout of the official files,
    with today's layer names), through a temporary file renamed into place at the end, with
    the permissions the user's umask gives a new file."""
    path = os.path.abspath(files.check_output_path(path, "weights"))
    with files.atomic_path(path, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["layer_names"] = np.array([layer.name.encode() for layer in layers])
            f.attrs["backend"] = b"tensorflow"
            f.attrs["keras_version"] = b"2.1.6"
            for layer in layers:
                group = f.create_group(layer.name)
                names = [f"{layer.name}/{w}:0" for w in layer.weight_names] if layer.weights else []
                for name, array in zip(names, layer.weights):
                    group.create_dataset(name, data=np.asarray(array, np.float32))
                group.attrs["weight_names"] = np.array([n.encode() for n in names])
    return path
