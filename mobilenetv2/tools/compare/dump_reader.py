"""Read a tensor dump as OTHER: an ``.npz`` file or a folder of ``.npy`` files (name -> array),
written by any runtime, with the input that produced them.  NumPy only; nothing is unpickled."""
import os
import zipfile
import zlib

import numpy as np

from mobilenetv2.tools.compare.errors import CompareError, open_input
from mobilenetv2.tools.compare.graph import OtherModel
from mobilenetv2.tools.compare.inputs import check_images

MAX_TENSORS = 4096


MAX_BYTES = 8 << 30  # a float64 dump of every layer of 1.4_224 at batch 8 is under 4 GB


def read_npy(f, size, where):
    """The array in the .npy stream ``f`` of ``size`` bytes, its header's shape and dtype checked
    against ``size`` before anything is allocated (np.load allocates the declared shape first);
    object dtypes (pickles) refused."""
    fmt = np.lib.format
    version = fmt.read_magic(f)
    shape, fortran, dtype = (fmt.read_array_header_1_0(f) if version == (1, 0)
                             else fmt.read_array_header_2_0(f))
    if dtype.hasobject:
        raise CompareError(f"{where} holds Python objects (a pickle), which compare never loads")
    count = 1
    for d in shape:
        count *= int(d)
    nbytes = count * dtype.itemsize
    if nbytes > size:
        raise CompareError(f"{where}: its header declares {shape} {dtype} ({nbytes} bytes), more than the "
                           f"{size} bytes stored (damaged or not an .npy array)")
    data = f.read(nbytes)
    if len(data) != nbytes:
        raise CompareError(f"{where} is truncated ({len(data)} of {nbytes} bytes)")
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")


def _load_npz(path):
    f = open_input(path, "dump")
    try:
        with f, zipfile.ZipFile(f) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_TENSORS:
                raise CompareError(f"{path!r} holds {len(infos)} arrays, more than the {MAX_TENSORS} "
                                   "a MobileNetV2 dump can have")
            total = sum(info.file_size for info in infos)
            if total > MAX_BYTES:
                raise CompareError(f"{path!r} unpacks to {total / 2**30:.1f} GB, more than a MobileNetV2 dump "
                                   f"needs ({MAX_BYTES / 2**30:.0f} GB): dump fewer layers or a smaller batch")
            out = {}
            for info in infos:
                if not info.filename.endswith(".npy"):
                    raise CompareError(f"{path!r} holds {info.filename!r}, not an .npy array (not a NumPy .npz?)")
                with zf.open(info) as m:
                    out[info.filename[:-4]] = read_npy(m, info.file_size, f"{path!r}, array {info.filename!r}")
            return out
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError,
            zlib.error, KeyError) as exc:
        if isinstance(exc, CompareError):
            raise
        raise CompareError(f"{path!r} is not an .npz archive NumPy can read without pickles: {exc}") from None


def _load_folder(path):
    names = sorted(f for f in os.listdir(path) if f.endswith(".npy"))
    if not names:
        hint = (": it holds a config.json, as a Hugging Face checkpoint does; a checkpoint is the reference's "
                "weights, given with --weights, and OTHER the model or dump checked against them"
                if os.path.lexists(os.path.join(path, "config.json")) else "")
        raise CompareError(f"folder {path!r} has no .npy files{hint}")
    if len(names) > MAX_TENSORS:
        raise CompareError(f"folder {path!r} holds {len(names)} .npy files, more than {MAX_TENSORS}")
    out = {}
    for f in names:
        full = os.path.join(path, f)
        if os.path.islink(full) or not os.path.isfile(full):
            raise CompareError(f"{full!r} is not a plain file (links are not followed)")
        try:
            with open_input(full, "array file") as fh:
                out[f[:-4]] = read_npy(fh, os.fstat(fh.fileno()).st_size, repr(full))
        except (OSError, ValueError, EOFError) as exc:
            raise CompareError(f"{full!r} is not an .npy array NumPy can read without pickles: {exc}") from None
    return out


def read_dump(path, input_name="input", layout=None):
    """OTHER from a dump.  ``input_name`` is the key of the input batch; ``layout`` ('NCHW' or
    'NHWC') the layout of its image-like arrays (guessed from the input's shape when None)."""
    path = os.fspath(path)
    arrays = _load_folder(path) if os.path.isdir(path) else _load_npz(path)
    if input_name not in arrays:
        raise CompareError(f"dump {path!r} has no input array {input_name!r} (name it in the mapping "
                           "file's \"input\" key); its arrays: " + ", ".join(sorted(arrays)[:12]))
    x = np.asarray(arrays.pop(input_name))
    if x.dtype.kind != "f":
        raise CompareError(f"dump {path!r}: input {input_name!r} has dtype {x.dtype}, expected float")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise CompareError(f"dump {path!r}: input {input_name!r} has shape {x.shape}, expected (N, H, W, 3) or (N, 3, H, W)")
    if layout is None:
        layout = "NCHW" if x.shape[1] == 3 and x.shape[3] != 3 else "NHWC"
    if layout not in ("NCHW", "NHWC"):
        raise CompareError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    if (x.shape[1] if layout == "NCHW" else x.shape[3]) != 3:
        raise CompareError(f"dump {path!r}: input {input_name!r} of shape {x.shape} has no 3-channel axis in {layout}")
    nhwc = x.transpose(0, 2, 3, 1) if layout == "NCHW" else x
    check_images(nhwc, f"dump {path!r}: input {input_name!r}")
    tensors = {k: (v if v.ndim == 0 or v.shape[0] == nhwc.shape[0] or v.ndim < 2 else v[None])
               for k, v in arrays.items() if v.dtype.kind == "f"}
    other = OtherModel("dump", path, [], layout, nhwc.shape[1:3], layout,
                       fixed_input=np.ascontiguousarray(nhwc), fixed_tensors=tensors)
    other.non_float = {k: str(v.dtype) for k, v in arrays.items() if v.dtype.kind != "f"}
    return other
