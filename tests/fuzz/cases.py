"""The fuzz cases: for each kind, ``make(ctx)`` writes the input into ctx.folder (returning a
short label of what it made) and ``run(ctx)`` hands it to the package, returning
``{"outputs": [files it may leave]}``.  Hostile inputs point at ctx.sentinel (random bytes) or
ctx.fifo wherever a format can point outside itself.  ``prepare()`` builds the templates once,
in the parent, before any child is forked."""
import hashlib
import http.server
import os
import io
import struct
import threading
import zipfile
import zlib
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from mobilenetv2 import MobileNetV2, cli
from mobilenetv2.network import arch
from mobilenetv2.formats import loader, registry
from mobilenetv2.processing import preprocessing
from mobilenetv2.errors import Error

T = {}  # templates, built by prepare()
ALPHA = 0.35


class CliRefusal(Error):
    """The CLI failed the way it should: one line on stderr, exit status 2 or 130."""


# -- templates ----------------------------------------------------------------------------------
def _weights(seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for layer in arch.build_layers(ALPHA, include_top=False):
        ws = []
        for w, s in zip(layer.weight_names, layer.weight_shapes()):
            a = rng.standard_normal(s).astype(np.float32)
            ws.append((w, np.abs(a) + 0.1 if w == "moving_variance" else a))
        out.append((layer.name, ws))
    return out


def _keras2_bytes(layers):
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n, _ in layers])
        for name, ws in layers:
            g = f.create_group(name)
            names = [f"{name}/{w}:0" for w, _ in ws]
            for full, (_, a) in zip(names, ws):
                g.create_dataset(full, data=a)
            g.attrs["weight_names"] = np.array([n.encode() for n in names]) if names else np.array([])
    return buf.getvalue()


_K3 = {"Conv2D": "conv2d", "DepthwiseConv2D": "depthwise_conv2d", "BatchNormalization": "batch_normalization"}


def _keras3_bytes():
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        top = f.create_group("layers")
        used = {}
        for layer in arch.build_layers(ALPHA, include_top=False):
            base = _K3.get(type(layer).__name__)
            if base is None or not layer.weight_shapes():
                continue
            n = used.get(base, -1) + 1
            used[base] = n
            g = top.create_group((f"{base}_{n}" if n else base) + "/vars")
            for i, (w, a) in enumerate(T["layers_by_name"][layer.name]):
                g.create_dataset(str(i), data=a)
    return buf.getvalue()


def _zip(members, compression=zipfile.ZIP_DEFLATED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def _image_bytes(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def prepare():
    if T:
        return
    layers = _weights()
    T["layers_by_name"] = dict(layers)
    T["expected"] = [(name, [(w, a.shape) for w, a in ws]) for name, ws in layers if ws]
    T["keras2"] = _keras2_bytes(layers)
    T["keras3"] = _keras3_bytes()
    with h5py.File(io.BytesIO(T["keras2"]), "r") as f:
        names = []
        f.visititems(lambda n, o: names.append((n, o.shape)) if isinstance(o, h5py.Dataset) else None)
    T["datasets"] = names
    T["small_datasets"] = [n for n, s in names if int(np.prod(s)) * 4 <= 4096]
    T["keras"] = _zip([("metadata.json", b"{}"), ("config.json", b"{}"), ("model.weights.h5", T["keras3"])])
    T["bomb"] = _zip([("model.weights.h5", T["keras3"]), ("pad.bin", bytes(600 << 20))])
    rgb = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    img = Image.fromarray(rgb)
    T["images"] = {
        "png": _image_bytes(img, "PNG"), "jpeg": _image_bytes(img, "JPEG", exif=_exif()),
        "bmp": _image_bytes(img, "BMP"), "gif": _image_bytes(img, "GIF"), "tiff": _image_bytes(img, "TIFF"),
        "webp": _image_bytes(img, "WEBP"), "ppm": _image_bytes(img, "PPM"),
        "avif": _image_bytes(img, "AVIF"), "tga": _image_bytes(img, "TGA"), "ico": _image_bytes(img, "ICO"),
        "png16": _image_bytes(Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257), "PNG"),
        "tiff-f": _image_bytes(Image.fromarray(np.where(rgb[:, :, 0] > 250, np.nan, rgb[:, :, 0]).astype(np.float32), "F"), "TIFF"),
    }
    T["model"] = MobileNetV2((32, 32, 3), alpha=ALPHA, include_top=False, weights=None)
    T["flex"] = MobileNetV2(None, alpha=ALPHA, include_top=False, weights=None)
    _hf_templates()
    _model_templates()
    _start_server()


def _exif():
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation
    exif[0x010E] = "fuzz"
    return exif


# -- byte-level damage ---------------------------------------------------------------------------
def damage(rng, data, near=None):
    data = bytearray(data)
    how = rng.choice(["flip", "flip", "zero", "truncate", "splice", "dup"])
    if how == "flip":
        span = near or len(data)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(min(span, len(data)))] ^= rng.randrange(1, 256)
    elif how == "zero":
        start = rng.randrange(min(near or len(data), len(data)))
        data[start:start + rng.randint(1, 64)] = bytes(min(64, len(data) - start))
    elif how == "truncate":
        del data[rng.randrange(1, len(data)):]
    elif how == "splice":
        a, b = sorted(rng.randrange(len(data)) for _ in range(2))
        data[a:a] = data[b:b + rng.randint(1, 512)]
    else:
        pos = rng.randrange(len(data))
        data[pos:pos] = bytes([rng.randrange(256)]) * rng.randint(1, 300)
    return how, bytes(data)


# -- HDF5 weights ----------------------------------------------------------------------------------
HDF5_ATTACKS = ["external-storage", "external-link", "virtual", "virtual-missing", "soft-link",
                "soft-cycle", "huge-shape", "int-dtype", "compound", "string-dtype", "scalar",
                "hard-cycle", "bad-weight-name", "long-names", "names-not-strings", "chunked-lie",
                "empty-group", "attr-bomb", "never-written", "huge-chunk", "vlen-names", "vlen-bomb"]
# loading them at all is the defect ("vlen-names", the names as Keras 3 writes them, loads)
MUST_REFUSE = {"never-written", "huge-chunk", "vlen-bomb"}


def _other_h5(ctx, shape):
    path = ctx.folder / "other.h5"
    raw = np.frombuffer(ctx.sentinel.read_bytes(), "<f4")[:int(np.prod(shape))].reshape(shape)
    with h5py.File(path, "w") as f:
        f.create_dataset("g", data=raw)
    return path


def make_hdf5(ctx):
    rng = ctx.rng
    path = ctx.folder / "w.h5"
    path.write_bytes(T["keras2"])
    mode = rng.choice(HDF5_ATTACKS + ["damage"] * 8)
    if mode == "damage":
        how, data = damage(rng, T["keras2"], near=rng.choice([4096, 65536, None]))
        path.write_bytes(data)
        return f"damage-{how}"
    name = rng.choice(T["small_datasets"])
    if mode in ("long-names", "attr-bomb"):  # large attributes need the newer (dense) storage
        with h5py.File(path, "w", libver="latest") as f:
            names = [b"x" * 10] * rng.choice([10 ** 4, 10 ** 5]) if mode == "long-names" else [b"Conv1"] * 200000
            f.attrs.create("layer_names", data=np.array(names))
            f.create_group("Conv1").attrs["weight_names"] = np.array([b"Conv1/kernel:0"])
        return mode
    with h5py.File(path, "a") as f:
        shape = f[name].shape
        nbytes = int(np.prod(shape)) * 4
        target = ctx.sentinel if rng.random() < 0.7 else ctx.fifo
        if mode in ("external-storage", "external-link", "virtual", "virtual-missing", "soft-link",
                    "soft-cycle", "huge-shape", "int-dtype", "compound", "string-dtype", "scalar",
                    "chunked-lie", "never-written", "huge-chunk"):
            del f[name]
        if mode == "external-storage":
            f.create_dataset(name, shape=shape, dtype="<f4", external=[(str(target), 0, nbytes)])
        elif mode == "external-link":
            f[name] = h5py.ExternalLink(str(_other_h5(ctx, shape)) if target == ctx.sentinel else str(ctx.fifo), "/g")
        elif mode in ("virtual", "virtual-missing"):
            src = _other_h5(ctx, shape) if mode == "virtual" else ctx.folder / "missing.h5"
            layout = h5py.VirtualLayout(shape=shape, dtype="<f4")
            layout[...] = h5py.VirtualSource(str(src), "g", shape=shape)
            f.create_virtual_dataset(name, layout)
        elif mode == "soft-link":
            f[name] = h5py.SoftLink("/" + rng.choice(T["datasets"])[0])
        elif mode == "soft-cycle":
            f[name] = h5py.SoftLink("/" + name)
        elif mode == "huge-shape":
            f.create_dataset(name, shape=(rng.choice([1 << 31, 1 << 40, 10 ** 12]),), dtype="<f4",
                             chunks=(1024,), maxshape=(None,))
        elif mode == "int-dtype":
            f.create_dataset(name, data=np.zeros(shape, np.int32))
        elif mode == "compound":
            f.create_dataset(name, data=np.zeros(shape, [("a", "<f4"), ("b", "<f4")]))
        elif mode == "string-dtype":
            f.create_dataset(name, data=np.array([b"x"] * int(np.prod(shape))).reshape(shape))
        elif mode == "scalar":
            f.create_dataset(name, data=np.float32(1))
        elif mode == "chunked-lie":
            f.create_dataset(name, shape=shape, dtype="<f4", chunks=True, compression="gzip")
        elif mode == "hard-cycle":  # a group hard-linked inside itself, walked through many times
            layer = name.split("/")[0]
            f[layer]["loop"] = f[layer]
            inner = name.split("/", 1)[1]
            f[layer].attrs["weight_names"] = np.array([("loop/" * rng.randint(1, 3000) + inner).encode()])
        elif mode == "bad-weight-name":
            layer = name.split("/")[0]
            f[layer].attrs["weight_names"] = np.array([rng.choice([b"../x", b"/etc/passwd", b".", b"", b"//",
                                                                   str(ctx.sentinel).encode()])])
        elif mode == "long-names":
            f.attrs["layer_names"] = np.array([b"x" * 10] * rng.choice([10 ** 4, 10 ** 5]))
        elif mode == "names-not-strings":
            f.attrs["layer_names"] = np.arange(50, dtype=np.float64)
        elif mode == "empty-group":
            layer = name.split("/")[0]
            del f[layer]
        elif mode == "attr-bomb":
            f.attrs.create("layer_names", data=np.array([b"Conv1"] * 200000))
        elif mode == "never-written":  # fill time 'never': HDF5 leaves the reader's buffer as it was
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
            chunked = rng.random() < 0.5 and shape[0] > 1
            if chunked:
                dcpl.set_chunk((max(1, shape[0] // 2),) + tuple(shape[1:]))
            h5py.h5d.create(f.id, name.encode(), h5py.h5t.IEEE_F32LE, h5py.h5s.create_simple(shape), dcpl=dcpl)
            if chunked and rng.random() < 0.5:
                f[name][:1] = 1.0  # one chunk of two written
        elif mode == "huge-chunk":  # the dataset's values in one chunk that inflates to far more
            rest = int(np.prod(shape[1:]))  # one chunk, whole in the other dimensions, 1-16 MB
            first = max(2 * shape[0], (1 << rng.choice([18, 22])) // rest)
            f.create_dataset(name, data=np.ones(shape, np.float32), maxshape=(None,) + tuple(shape[1:]),
                             chunks=(first,) + tuple(shape[1:]), compression="gzip")
        elif mode == "vlen-names":  # what Keras 3 (and Keras under h5py 3) writes: to be read
            names = [n.decode() for n in f.attrs["layer_names"]]
            f.attrs.create("layer_names", data=names, dtype=h5py.string_dtype())
        elif mode == "vlen-bomb":  # variable-length names of 17-20 MB together: past the 16 MB bound
            names = [n.decode() for n in f.attrs["layer_names"]]
            names[0] += "x" * (rng.randint(17, 20) << 20)
            f.attrs.create("layer_names", data=names, dtype=h5py.string_dtype())
    ctx.must_refuse = mode in MUST_REFUSE
    return mode


def run_hdf5(ctx):
    path = ctx.folder / "w.h5"
    if getattr(ctx, "must_refuse", False):
        loader.load_by_order(path, T["expected"])  # its WeightsError is the pass
        raise AssertionError("loaded values no file holds, or names that expand without bound")
    if ctx.rng.random() < 0.2:
        out = loader.read_weights(path)
        arrays = [a for _, ws in out for _, a in ws]
    else:
        arrays = [a for ws in loader.load_by_order(path, T["expected"]) for a in ws]
    ctx.seen.extend(np.ascontiguousarray(a).tobytes() for a in arrays)


# -- .keras archives -------------------------------------------------------------------------------
def make_keras(ctx):
    rng = ctx.rng
    path = ctx.folder / "m.keras"
    mode = rng.choice(["good", "encrypted", "bzip2", "lzma", "bomb", "nested-zip", "many-members",
                       "deep", "cycle", "no-weights", "size-lie"] + ["damage"] * 6)
    if mode == "damage":
        how, data = damage(rng, T["keras"], near=rng.choice([None, 4096]))
        path.write_bytes(data)
        return f"damage-{how}"
    if mode == "good":
        data = T["keras"]
    elif mode in ("bzip2", "lzma"):
        data = _zip([("model.weights.h5", T["keras3"])],
                    zipfile.ZIP_BZIP2 if mode == "bzip2" else zipfile.ZIP_LZMA)
    elif mode == "bomb":
        data = T["bomb"]
    elif mode == "nested-zip":
        data = _zip([("model.weights.h5", T["keras"])])
    elif mode == "many-members":
        data = _zip([(f"m{i}", b"") for i in range(rng.choice([70, 1000]))] + [("model.weights.h5", T["keras3"])])
    elif mode in ("deep", "cycle"):
        buf = io.BytesIO(T["keras3"])
        with h5py.File(buf, "a") as f:
            if mode == "deep":
                g = f["layers"]
                for i in range(rng.choice([20, 200])):
                    g = g.create_group(f"functional_{i}/layers")
            else:
                f["layers/conv2d/layers"] = f["layers"]
        data = _zip([("model.weights.h5", buf.getvalue())])
    elif mode == "no-weights":
        data = _zip([("config.json", b"{}")])
    else:
        data = T["keras"]
    data = bytearray(data)
    if mode == "encrypted" or mode == "size-lie":
        for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            at = -1
            while True:
                at = data.find(sig, at + 1)
                if at < 0:
                    break
                if mode == "encrypted":
                    data[at + off] |= 1
                else:  # uncompressed size field: 22 (local) / 24 (central)
                    pos = at + (22 if sig == b"PK\x03\x04" else 24)
                    data[pos:pos + 4] = struct.pack("<I", rng.choice([0, 1, 0xFFFFFFF0]))
    path.write_bytes(bytes(data))
    return mode


def run_keras(ctx):
    arrays = [a for ws in loader.load_by_order(ctx.folder / "m.keras", T["expected"]) for a in ws]
    ctx.seen.extend(a.tobytes() for a in arrays)


# -- safetensors (hook) ----------------------------------------------------------------------------
def safetensors_available():
    """The safetensors reader is in the tree (it is since branch i8 was merged)."""
    import importlib.util
    return importlib.util.find_spec("mobilenetv2.formats.safetensors") is not None


# -- Hugging Face folders: safetensors, config.json, preprocessor_config.json ---------------------
def _hf_templates():
    """A small transformers-layout folder (the 0.35 backbone as save_pretrained writes it), its
    safetensors header parsed, built once in the parent."""
    import json
    import shutil
    import tempfile
    from mobilenetv2.hf import save_pretrained
    folder = Path(tempfile.mkdtemp(prefix="mnv2-fuzz-hf-"))
    try:
        save_pretrained(T["model"], folder)
        T["hf"] = {p.name: p.read_bytes() for p in folder.iterdir()}
    finally:
        shutil.rmtree(folder)
    st = T["hf"]["model.safetensors"]
    n = int.from_bytes(st[:8], "little")
    T["st_header"] = json.loads(st[8:8 + n])
    T["st_data"] = st[8 + n:]
    T["hf_config"] = json.loads(T["hf"]["config.json"])
    x = np.random.default_rng(2).standard_normal((1, 32, 32, 3)).astype(np.float32)
    trace = T["model"].trace(x)
    T["hf_dump"] = _npz_bytes({"input": x, **{k: trace[k] for k in ("Conv1_relu", "block_2_add", "out_relu")}})
    T["hf_proc"] = json.loads(T["hf"]["preprocessor_config.json"])


def _st_bytes(header, data, length=None):
    import json
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return (len(raw) if length is None else length).to_bytes(8, "little") + raw + data


ST_ATTACKS = ["bytes", "bytes-header", "length-huge", "length-past-end", "length-short", "length-zero",
              "not-object", "offset-past-end", "offset-overlap", "offset-negative", "offset-reversed",
              "offset-float", "dtype-unknown", "dtype-f16", "dtype-bf16", "dtype-i64", "shape-lie",
              "shape-huge", "shape-negative", "shape-empty-huge", "missing", "extra", "duplicate", "key-not-utf8",
              "metadata-odd", "pickle", "truncate-data", "symlink-sentinel", "symlink-fifo", "fifo",
              "good"]
_VALUES = [-1, 0, 1, 3, 7, 1e308, 2 ** 63, -2 ** 63, 10 ** 30, 0.5, "x", "", None, True, [], {}, [1, 2],
           {"a": 1}, "relu", "NaN-literal", "deep"]


def _damage_safetensors(ctx, target):
    """Write ``target`` as the template checkpoint's model.safetensors with one ST_ATTACKS damage
    (or none: "good"); returns the label."""
    import copy
    rng = ctx.rng
    h, data = copy.deepcopy(T["st_header"]), T["st_data"]
    names = [k for k in h if k != "__metadata__"]
    attack = rng.choice(ST_ATTACKS)
    name = rng.choice(names)
    e = h[name]
    out = None
    if attack == "bytes":
        out = damage(rng, _st_bytes(h, data))[1]
    elif attack == "bytes-header":
        raw = _st_bytes(h, data)
        out = damage(rng, raw, near=8 + int.from_bytes(raw[:8], "little"))[1]
    elif attack.startswith("length"):
        n = len(_st_bytes(h, b"")) - 8
        length = {"length-huge": rng.choice([2 ** 64 - 1, 2 ** 40, 100 << 20]),
                  "length-past-end": n + len(data) + rng.randint(1, 100),
                  "length-short": rng.randint(1, n - 1), "length-zero": 0}[attack]
        out = _st_bytes(h, data, length)
    elif attack == "not-object":
        out = _st_bytes(rng.choice([b"[]", b"1", b'"x"', b"null", b"[" * 5000, b"{" * 5000]), data)
    elif attack.startswith("offset"):
        a, b = e["data_offsets"]
        e["data_offsets"] = {"offset-past-end": [a, len(data) + rng.randint(1, 1 << 20)],
                             "offset-overlap": [max(0, a - 4), b - 4] if a else [4, b + 4],
                             "offset-negative": [-4, b], "offset-reversed": [b, a],
                             "offset-float": [float(a), b + 0.5]}[attack]
        out = _st_bytes(h, data)
    elif attack.startswith("dtype"):
        e["dtype"] = {"dtype-unknown": rng.choice(["F33", "", "Q4", "f32", None, 3]), "dtype-f16": "F16",
                      "dtype-bf16": "BF16", "dtype-i64": "I64"}[attack]
        out = _st_bytes(h, data)
    elif attack.startswith("shape"):
        e["shape"] = {"shape-lie": list(reversed(e["shape"])) + [1] if rng.random() < 0.5 else [int(np.prod(e["shape"]))],
                      "shape-huge": [2 ** 31, 2 ** 31, 4], "shape-negative": [-1] + e["shape"][1:],
                      "shape-empty-huge": [0, rng.choice([2 ** 31, 2 ** 40, 2 ** 63])]}[attack]
        out = _st_bytes(h, data)
    elif attack == "missing":
        del h[name]
        out = _st_bytes(h, data)
    elif attack == "extra":
        h["mobilenet_v2.extra.weight"] = dict(e)
        out = _st_bytes(h, data)
    elif attack == "duplicate":
        import json
        raw = json.dumps(h).encode()
        dup = json.dumps({name: e}).encode()[1:-1]
        out = _st_bytes(raw[:-1] + b", " + dup + b"}", data)
    elif attack == "key-not-utf8":
        import json
        raw = json.dumps(h).encode().replace(json.dumps(name).encode(), b'"\xff\xfe"', 1)
        out = _st_bytes(raw, data)
    elif attack == "metadata-odd":
        h["__metadata__"] = rng.choice([[], 1, {"format": 3}, {"a": {"b": 1}}, None, "pt"])
        out = _st_bytes(h, data)
    elif attack == "pickle":
        out = b"\x80\x02" + bytes(rng.randrange(256) for _ in range(64))
    elif attack == "truncate-data":
        out = _st_bytes(h, data[:rng.randrange(len(data))])
    elif attack in ("symlink-sentinel", "symlink-fifo"):
        os.symlink(ctx.sentinel if attack == "symlink-sentinel" else ctx.fifo, target)
    elif attack == "fifo":
        os.mkfifo(target)
    else:
        out = _st_bytes(h, data)
    if out is not None:
        target.write_bytes(out)
    ctx.attack = attack
    return f"{attack} {name}"


def make_safetensors(ctx):
    label = _damage_safetensors(ctx, ctx.folder / "model.safetensors")
    (ctx.folder / "config.json").write_bytes(T["hf"]["config.json"])
    ctx.direct = ctx.rng.random() < 0.3
    return label + (" direct" if ctx.direct else "")


def _run_folder(ctx):
    from mobilenetv2.hf import from_pretrained
    m = from_pretrained(ctx.folder, dtype=ctx.rng.choice(["float32", "float64"]))
    out = np.asarray(m(np.full((1, 32, 32, 3), 0.25, np.float32)))
    ctx.seen.append(out.tobytes())
    if not np.isfinite(out).all():
        raise AssertionError("a checkpoint that loaded gave a non-finite output on a finite input")


def run_safetensors(ctx):
    if ctx.direct:
        from mobilenetv2.formats.safetensors import SafetensorsFile
        with SafetensorsFile(ctx.folder / "model.safetensors") as f:
            for name in f.names():
                ctx.seen.append(np.ascontiguousarray(f.get(name)).tobytes())
        return
    _run_folder(ctx)


# The hf kind: a Hugging Face folder given to compare as --weights (OTHER a dump of the template
# model, which the undamaged folder agrees with), by the API or the command line; a damaged
# preprocessor_config.json (which compare reads but never uses) through from_pretrained,
# hf_preprocess and predict instead; and the folder given as OTHER itself, which compare refuses.
HF_ATTACKS = ["field", "field", "number", "number", "delete", "bytes", "nan", "deep", "duplicate",
              "not-utf8", "huge", "not-object", "symlink-sentinel", "symlink-fifo", "fifo", "good",
              "safetensors", "safetensors", "safetensors", "proc-field", "proc-number", "proc-delete",
              "proc-bytes", "proc-symlink", "pytorch-bin", "as-other", "values", "values", "valid", "valid"]
_NUMBERS = [b"-1", b"0", b"-0.0", b"5e-324", b"1e-310", b"1e308", b"1e999", b"-1e999", b"9223372036854775808",
            b"1" + b"0" * 400, b"9" * 5000, b"0.999999999999999999", b"NaN", b"Infinity", b"1.5", b"2", b"8"]
HUGE_JSON = 100 << 20  # a config.json string this long is refused by its size, before it is parsed
_WEIGHT_VALUES = [float("nan"), float("inf"), -float("inf"), 3e38, -3e38, 1e20, 1e6, -1.0, 0.0, 1e-45, -1e-30]
_VALID = {"tf_padding": [False], "output_stride": [8, 16], "layer_norm_eps": [1e-5, 0.9, 1e-300],
          "image_size": [96, 4096], "num_labels": [1, 7], "model_type": ["mobilenet_v2"],
          "architectures": [["MobileNetV2Model"]], "depth_multiplier": [0.35000001]}


def _weights_changed(rng):
    """The template's model.safetensors, its header intact, with a few of one float32 tensor's
    values replaced (NaN, infinities, huge, negative, zero, subnormal): a file that reads."""
    names = [k for k, e in T["st_header"].items() if k != "__metadata__" and e["dtype"] == "F32"]
    name = rng.choice(names)
    a, b = T["st_header"][name]["data_offsets"]
    data = bytearray(T["st_data"])
    value = rng.choice(_WEIGHT_VALUES)
    for _ in range(rng.choice([1, 1, 4, (b - a) // 4])):
        i = a + 4 * rng.randrange((b - a) // 4)
        data[i:i + 4] = struct.pack("<f", value)
    n = int.from_bytes(T["hf"]["model.safetensors"][:8], "little")
    return f"{name}={value:g}", T["hf"]["model.safetensors"][:8 + n] + bytes(data)


def _json_value(rng):
    v = rng.choice(_VALUES)
    return {"NaN-literal": float("nan"), "deep": [[[[[[[[1]]]]]]]]}.get(v, v) if isinstance(v, str) else v


def _with_field(text, key, raw):
    """JSON object ``text`` with ``"key": raw`` (raw JSON bytes) added as its last member."""
    import json
    return text.rstrip()[:-1] + b", " + json.dumps(key).encode() + b": " + raw + b"}"


def make_hf(ctx):
    import copy
    import json
    rng = ctx.rng
    cfg, proc = copy.deepcopy(T["hf_config"]), copy.deepcopy(T["hf_proc"])
    attack = rng.choice(HF_ATTACKS)
    files = {"model.safetensors": T["hf"]["model.safetensors"], "other.npz": T["hf_dump"]}
    label = attack
    if attack == "field":
        key = rng.choice(sorted(cfg) + ["id2label", "num_labels", "architectures"])
        cfg[key] = _json_value(rng)
        if key == "architectures" and rng.random() < 0.5:
            cfg[key] = [rng.choice(["MobileNetV2ForImageClassification", "MobileNetV2ForSemanticSegmentation",
                                    "BertModel"])]
        label += f" {key}={str(cfg[key])[:30]}"
    elif attack == "delete":
        key = rng.choice(sorted(cfg))
        del cfg[key]
        label += f" {key}"
    elif attack == "valid":  # another computation, described in the file's own terms
        key = rng.choice(sorted(_VALID))
        cfg[key] = rng.choice(_VALID[key])
        label += f" {key}={cfg[key]}"
    elif attack == "values":
        what, files["model.safetensors"] = _weights_changed(rng)
        label += f" {what}"
    elif attack == "proc-field":
        key = rng.choice(sorted(proc) + ["size", "crop_size"])
        proc[key] = _json_value(rng) if rng.random() < 0.6 else {"shortest_edge": _json_value(rng)}
        label += f" {key}"
    elif attack == "proc-delete":
        del proc[rng.choice(sorted(proc))]
    text_cfg = json.dumps(cfg).encode()
    text_proc = json.dumps(proc).encode()
    if attack in ("number", "proc-number", "duplicate"):
        # a number as JSON text (json.dumps cannot write 1e999 or 5000 digits), or a key given twice
        # (the last one counts, as in transformers' json.loads): a member added at the end
        on_proc = attack == "proc-number"
        keys = sorted(proc if on_proc else cfg)
        key = rng.choice([k for k in keys if isinstance((proc if on_proc else cfg)[k], (int, float))] or keys)
        raw = rng.choice(_NUMBERS) if attack != "duplicate" or rng.random() < 0.5 else \
            json.dumps(_json_value(rng)).encode()
        if on_proc:
            text_proc = _with_field(text_proc, key, raw)
        else:
            text_cfg = _with_field(text_cfg, key, raw)
        label += f" {key}={raw[:20].decode()}"
    elif attack == "bytes":
        text_cfg = damage(rng, text_cfg)[1]
    elif attack == "proc-bytes":
        text_proc = damage(rng, text_proc)[1]
    elif attack == "nan":
        text_cfg = text_cfg.replace(b'"layer_norm_eps": 0.001', rng.choice([b'"layer_norm_eps": NaN',
                                    b'"layer_norm_eps": -Infinity', b'"layer_norm_eps": 1e999']))
    elif attack == "deep":
        depth = rng.choice([50, 5000, 200000])
        text_cfg = _with_field(text_cfg, "x", b"[" * depth + b"]" * depth if rng.random() < 0.5 else
                               b'{"a": ' * depth + b"1" + b"}" * depth)
        label += f" {depth}"
    elif attack == "not-utf8":
        how = rng.choice(["byte", "utf16", "bom", "surrogate"])
        text_cfg = {"byte": text_cfg.replace(b'"mobilenet_v2"', b'"mobilenet_v2\xff"'),
                    "utf16": json.dumps(cfg).encode("utf-16"),
                    "bom": b"\xef\xbb\xbf" + text_cfg,
                    "surrogate": text_cfg.replace(b'"mobilenet_v2"', b'"mobilenet_v2\xed\xa0\x80"')}[how]
        label += f" {how}"
    elif attack == "huge":
        n = rng.choice([HUGE_JSON, 15 << 20])
        text_cfg = _with_field(text_cfg, "x", b'"' + b"a" * n + b'"')
        label += f" {n >> 20} MiB"
        ctx.must_refuse = "larger than" if n == HUGE_JSON else None
    elif attack == "not-object":
        text_cfg = rng.choice([b"[]", b"null", b"1", b"", b'"x"'])
    files["config.json"] = text_cfg
    files["preprocessor_config.json"] = text_proc
    if attack in ("symlink-sentinel", "symlink-fifo", "fifo", "proc-symlink"):
        victim = "preprocessor_config.json" if attack == "proc-symlink" else "config.json"
        del files[victim]
        if attack == "fifo":
            os.mkfifo(ctx.folder / victim)
        else:
            os.symlink(ctx.fifo if attack == "symlink-fifo" else ctx.sentinel, ctx.folder / victim)
    if attack == "pytorch-bin":
        files["pytorch_model.bin"] = files.pop("model.safetensors")
    if attack == "safetensors":
        del files["model.safetensors"]
        label += " " + _damage_safetensors(ctx, ctx.folder / "model.safetensors")
    for name, data in files.items():
        (ctx.folder / name).write_bytes(data)
    ctx.route = "proc" if attack.startswith("proc") else "as-other" if attack == "as-other" else \
        rng.choice(["api", "api", "cli"])
    ctx.good = attack == "good"
    return f"{label} ({ctx.route})"


def _no_nan(report, where="report"):
    """The report holds no NaN (a silent NaN: a number no one can act on)."""
    if isinstance(report, float) and report != report:
        raise AssertionError(f"NaN in the compare report at {where}")
    if isinstance(report, dict):
        for k, v in report.items():
            _no_nan(v, f"{where}[{k!r}]")
    elif isinstance(report, (list, tuple)):
        for i, v in enumerate(report):
            _no_nan(v, f"{where}[{i}]")


def _run_hf_cli(ctx):
    """``mobilenetv2 compare other.npz --weights FOLDER``: a report (exit 0 or 1) with no NaN, or
    one line on stderr with exit status 2."""
    import re
    code, report = _cli(ctx, ["compare", str(ctx.folder / "other.npz"), "--weights", str(ctx.folder), "--quiet"])
    if re.search(r"\bnan\b", report, re.IGNORECASE):
        raise AssertionError(f"NaN in compare's table: {report[-1500:]}")
    if ctx.good and code != 0:
        raise AssertionError(f"the undamaged folder does not agree with its own dump: {report[-1500:]}")
    return {"detail": f"exit {code}"}


def _run_hf_proc(ctx):
    from mobilenetv2.hf import from_pretrained
    from mobilenetv2.processing.hf_processing import hf_preprocess
    m = from_pretrained(ctx.folder)
    x = hf_preprocess(io.BytesIO(T["images"]["png"]), m.processor_config)
    if not np.isfinite(x).all():
        raise AssertionError(f"{m.processor_config} made a non-finite input of a photo")
    out = np.asarray(m.predict(x))
    ctx.seen.append(out.tobytes())
    if not np.isfinite(out).all():
        raise AssertionError("a checkpoint that loaded gave a non-finite output on a photo")


def run_hf(ctx):
    from mobilenetv2.tools.compare import compare
    must = getattr(ctx, "must_refuse", None)
    try:
        if ctx.route == "proc":
            return _run_hf_proc(ctx)
        if ctx.route == "cli":
            return _run_hf_cli(ctx)
        if ctx.route == "as-other":
            compare(str(ctx.folder))
            raise AssertionError("compare took a Hugging Face folder as OTHER")
        report = compare(str(ctx.folder / "other.npz"), weights=str(ctx.folder))
    except Error as exc:
        if must and must not in str(exc):
            raise AssertionError(f"refused, but not by its size before parsing ({must!r}): {exc}") from None
        if str(ctx.folder) not in str(exc):
            raise AssertionError(f"a refusal that names no file of the folder: {type(exc).__name__}: {exc}") from None
        raise
    if must:
        raise AssertionError(f"accepted; it must be refused ({must!r})")
    ctx.seen.append(repr(report).encode())
    _no_nan(report)
    if ctx.good and not report["agrees"]:
        raise AssertionError(f"the undamaged folder does not agree with its own dump: {report['first_divergent_layer']}")
    return {"detail": f"agrees: {report['agrees']}, first divergent layer: {report['first_divergent_layer']}"}


# -- compare's inputs: .npz dumps and mapping JSON --------------------------------------------------
COMPARE_ATTACKS = ["npz-bytes", "npz-pickle", "npz-shape-lie", "npz-many", "npz-not-npy", "npz-fifo",
                   "npz-symlink", "npz-good", "npz-bomb", "map-bytes", "map-nan", "map-deep", "map-huge",
                   "map-fifo", "map-types", "map-good"]


def _npz_bytes(arrays, compression=zipfile.ZIP_STORED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, a in arrays.items():
            b = io.BytesIO()
            np.lib.format.write_array(b, np.asarray(a), allow_pickle=True)
            zf.writestr(name + ".npy", b.getvalue())
    return buf.getvalue()


def make_compare(ctx):
    import json
    rng = ctx.rng
    attack = rng.choice(COMPARE_ATTACKS)
    x = np.random.default_rng(rng.randrange(1 << 30)).standard_normal((1, 32, 32, 3)).astype(np.float32)
    good = {"input": x, "Conv1": np.zeros((1, 16, 16, 16), np.float32)}
    ctx.attack = attack
    if attack.startswith("npz"):
        target = ctx.folder / "dump.npz"
        if attack == "npz-bytes":
            target.write_bytes(damage(rng, _npz_bytes(good))[1])
        elif attack == "npz-pickle":
            target.write_bytes(_npz_bytes(dict(good, evil=np.array([{"a": 1}], dtype=object))))
        elif attack == "npz-shape-lie":
            raw = _npz_bytes({"input": np.zeros(4, np.float32)})
            target.write_bytes(raw.replace(b"(4,), }" + b" " * 12, b"(4000000000000,), }"))
        elif attack == "npz-many":
            target.write_bytes(_npz_bytes({f"a{i}": np.zeros(1, np.float32) for i in range(5000)}))
        elif attack == "npz-not-npy":
            target.write_bytes(_zip([("input.npy", b"not an array"), ("x.txt", b"hi")]))
        elif attack == "npz-fifo":
            os.symlink(ctx.fifo, target)
        elif attack == "npz-symlink":
            os.symlink(ctx.sentinel, target)
        elif attack == "npz-bomb":
            target.write_bytes(_npz_bytes({"input": np.zeros((1, 2048, 2048, 3), np.float32)}, zipfile.ZIP_DEFLATED))
        else:
            target.write_bytes(_npz_bytes(good))
    else:
        target = ctx.folder / "map.json"
        body = {"input": "input", "layout": "NHWC", "tensors": {"Conv1": "Conv1"}}
        text = json.dumps(body).encode()
        if attack == "map-bytes":
            text = damage(rng, text)[1]
        elif attack == "map-nan":
            text = text[:-1] + b', "x": NaN}'
        elif attack == "map-deep":
            text = b"[" * 100000 + b"]" * 100000
        elif attack == "map-huge":
            text = b'{"tensors": {"a": "' + b"b" * (2 << 20) + b'"}}'
        elif attack == "map-types":
            body["tensors"] = rng.choice([[1], {"a": 1}, None, "x", {"a": ["b"]}])
            text = json.dumps(body).encode()
        if attack == "map-fifo":
            os.symlink(ctx.fifo, target)
        else:
            target.write_bytes(text)
    return attack


def run_compare(ctx):
    from mobilenetv2.tools.compare.dump_reader import read_dump
    from mobilenetv2.tools.compare.mapping import load_mapping_file
    if ctx.attack.startswith("npz"):
        other = read_dump(ctx.folder / "dump.npz")
        ctx.seen.append(np.ascontiguousarray(other.fixed_input).tobytes())
        ctx.seen.extend(np.ascontiguousarray(a).tobytes() for a in other.fixed_tensors.values())
    else:
        tensors, inp, layout = load_mapping_file(ctx.folder / "map.json")
        ctx.seen.append(repr((tensors, inp, layout)).encode())


# -- compare's OTHER as a model file: ONNX, TFLite, OpenVINO IR ------------------------------------
def model_formats():
    """{kind: whether its runtime is installed} for the three model formats compare reads."""
    import importlib.util
    have = lambda *mods: all(importlib.util.find_spec(m) is not None for m in mods)  # noqa: E731
    return {"onnx": have("onnx", "onnxruntime"), "tflite": have("ai_edge_litert"), "openvino": have("openvino", "onnx")}


def _model_templates():
    """The headless 0.35 model at 32x32 as compare's OTHER: .onnx and .tflite from the package's
    exporters; the IR converted from the .onnx by OpenVINO in a child process (the parent of the
    fuzz children never imports a runtime: they fork)."""
    import subprocess
    import sys
    import tempfile
    from mobilenetv2.tools.onnx_export import export_onnx
    from mobilenetv2.tools.tflite_export import export_tflite
    have = model_formats()
    with tempfile.TemporaryDirectory() as tmp:
        if have["tflite"]:
            export_tflite(T["model"], os.path.join(tmp, "m.tflite"), batch=1)
            T["tflite"] = Path(tmp, "m.tflite").read_bytes()
        if have["onnx"] or have["openvino"]:
            export_onnx(T["model"], os.path.join(tmp, "m.onnx"), batch=1)
            T["onnx"] = Path(tmp, "m.onnx").read_bytes()
        if have["openvino"]:
            subprocess.run([sys.executable, "-c", "import openvino as ov, sys; ov.save_model(ov.convert_model("
                            "sys.argv[1]), sys.argv[2], compress_to_fp16=False)", os.path.join(tmp, "m.onnx"),
                            os.path.join(tmp, "m.xml")], check=True, capture_output=True, timeout=120)
            T["ir"] = (Path(tmp, "m.xml").read_text(), Path(tmp, "m.bin").read_bytes())


def _varint(n):
    out = b""
    while n > 0x7F:
        out, n = out + bytes([n & 0x7F | 0x80]), n >> 7
    return out + bytes([n])


def _run_model(ctx):
    """The whole compare on OTHER (its own weights as the reference), with its report seen."""
    from mobilenetv2.tools.compare import compare
    report = compare(str(ctx.other), random=1)
    ctx.seen.append(repr(report).encode())
    return {"detail": f"agrees: {report['agrees']}, first divergent layer: {report['first_divergent_layer']}"}


ONNX_ATTACKS = ["damage", "damage", "truncate", "dims-huge", "dims-negative", "raw-short", "raw-long", "nan",
                "dtype", "zero-size", "drop-inputs", "no-output", "cycle", "duplicate-output", "duplicate-init",
                "attr-type", "external", "deep", "input-dims", "input-type", "many-nodes"]


def make_onnx(ctx):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = ctx.rng
    attack = rng.choice(ONNX_ATTACKS)
    ctx.other = ctx.folder / "m.onnx"
    if attack in ("damage", "truncate"):
        data = T["onnx"][:rng.randrange(1, len(T["onnx"]))] if attack == "truncate" else damage(rng, T["onnx"])[1]
        ctx.other.write_bytes(data)
        return attack
    m = onnx.load_model_from_string(T["onnx"])
    g = m.graph
    weights = [t for t in g.initializer if len(t.dims) == 4]
    t = rng.choice(weights)
    node = rng.choice(list(g.node))
    if attack == "dims-huge":
        t.dims[rng.randrange(4)] = rng.choice([1 << 31, 1 << 40, 1 << 62])
    elif attack == "dims-negative":
        t.dims[rng.randrange(4)] = -rng.randint(1, 1 << 40)
    elif attack == "raw-short":
        t.raw_data = t.raw_data[:rng.randrange(len(t.raw_data))]
    elif attack == "raw-long":
        t.raw_data = t.raw_data + bytes(rng.randint(1, 4096))
    elif attack == "nan":
        a = numpy_helper.to_array(t).copy()
        a.flat[rng.randrange(a.size)] = rng.choice([np.nan, np.inf, -np.inf])
        t.CopyFrom(numpy_helper.from_array(a, t.name))
    elif attack == "dtype":
        kind = rng.choice([TensorProto.INT64, TensorProto.STRING, TensorProto.BOOL, TensorProto.FLOAT16,
                           TensorProto.COMPLEX64, TensorProto.UINT4, 999])
        t.data_type = kind
    elif attack == "zero-size":
        t.dims[rng.randrange(4)] = 0
        t.raw_data = b"" if rng.random() < 0.5 else t.raw_data
    elif attack == "drop-inputs":
        del node.input[rng.randrange(len(node.input) + 1):]
        if node.input and rng.random() < 0.5:
            node.input[rng.randrange(len(node.input))] = ""
    elif attack == "no-output":
        del node.output[:]
    elif attack == "cycle":  # a node reads a tensor a later node writes (or its own)
        i = rng.randrange(len(g.node))
        g.node[i].input[0] = g.node[rng.randrange(i, len(g.node))].output[0]
    elif attack == "duplicate-output":
        node.output[0] = rng.choice(list(g.node)).output[0]
    elif attack == "duplicate-init":
        other = rng.choice(weights)
        dup = g.initializer.add()
        dup.CopyFrom(other)
        dup.name = t.name
    elif attack == "attr-type":
        with_attrs = [n for n in g.node if n.attribute]
        node = rng.choice(with_attrs)
        a = rng.choice(list(node.attribute))
        node.attribute.remove(a)
        node.attribute.append(rng.choice([helper.make_attribute(a.name, "x"), helper.make_attribute(a.name, 1.5),
                                          helper.make_attribute(a.name, [1.5, 2.5]), helper.make_attribute(a.name, -7)]))
    elif attack == "external":  # the data said to be elsewhere: beside, above, absolute, a link, the FIFO
        where = rng.choice(["../sentinel.bin", str(ctx.sentinel), "link.bin", "fifo.bin", "/dev/zero", "a/../../x"])
        if where == "link.bin":
            os.symlink(ctx.sentinel, ctx.folder / where)
        elif where == "fifo.bin":
            os.symlink(ctx.fifo, ctx.folder / where)
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", where), ("offset", str(rng.choice([0, 64, -8]))), ("length", str(4 * int(np.prod(t.dims))))):
            e = t.external_data.add()
            e.key, e.value = k, v
    elif attack == "input-dims":
        d = g.input[0].type.tensor_type.shape.dim[rng.randrange(4)]
        d.dim_value = rng.choice([0, -1, 1 << 40, 60000, 31])
    elif attack == "input-type":
        g.input[0].type.tensor_type.elem_type = rng.choice([TensorProto.INT64, TensorProto.STRING, TensorProto.DOUBLE])
    elif attack == "many-nodes":
        last = g.output[0].name
        for i in range(rng.choice([5000, 30000])):
            g.node.append(helper.make_node("Relu", [last], [f"relu{i}"]))
            last = f"relu{i}"
    data = m.SerializeToString()
    if attack == "deep":  # a graph in an attribute of a node of a graph in an attribute ... 3000 deep
        inner = b""
        for _ in range(3000):
            node = b"\x2a" + _varint(len(inner)) + inner if inner else b""  # NodeProto.attribute
            graph = b"\x0a" + _varint(len(node)) + node                    # GraphProto.node
            inner = b"\x0a\x01g\x32" + _varint(len(graph)) + graph          # AttributeProto name, g
        node = b"\x2a" + _varint(len(inner)) + inner
        graph = b"\x0a" + _varint(len(node)) + node
        data += b"\x3a" + _varint(len(graph)) + graph  # a second ModelProto.graph: protobuf merges it in
    ctx.other.write_bytes(data)
    return attack


TFLITE_ATTACKS = ["damage", "damage", "truncate", "offset", "shape-huge", "shape-negative", "buffer-index",
                  "tensor-index", "no-outputs", "one-input", "weight-type", "nan", "zero-size", "inputs",
                  "input-shape", "cycle", "names", "quantization", "opcode", "buffer-offset"]


def make_tflite(ctx):
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema
    rng = ctx.rng
    attack = rng.choice(TFLITE_ATTACKS)
    ctx.other = ctx.folder / "m.tflite"
    data = T["tflite"]
    if attack in ("damage", "truncate", "offset"):
        if attack == "damage":
            data = damage(rng, data, near=rng.choice([512, 4096, None]))[1]
        elif attack == "truncate":
            data = data[:rng.randrange(1, len(data))]
        else:  # a uoffset or vector length among the tables (before the 16-aligned buffers) set far off
            data = bytearray(data)
            at = 4 * rng.randrange(1, min(len(data), 8192) // 4)
            data[at:at + 4] = struct.pack("<I", rng.choice([0x7FFFFFFF, 0xFFFFFFF0, len(data), 1 << 24]))
        ctx.other.write_bytes(bytes(data))
        return attack
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    g = m.subgraphs[0]
    ops = g.operators
    op = rng.choice(ops)
    with_buffer = [t for t in g.tensors if t.buffer and m.buffers[t.buffer].data is not None]
    t = rng.choice(with_buffer)
    if attack == "shape-huge":
        t.shape = [rng.choice([1 << 30, 1 << 31 - 1, 65536])] * len(t.shape)
    elif attack == "shape-negative":
        t.shape = [-1] + list(t.shape[1:])
    elif attack == "buffer-index":
        t.buffer = rng.choice([len(m.buffers), 1 << 31 - 1])
    elif attack == "tensor-index":
        op.inputs = [rng.choice([len(g.tensors), -2, 1 << 30])] + list(op.inputs[1:])
    elif attack == "no-outputs":
        op.outputs = rng.choice([[], [-1], [len(g.tensors)]])
    elif attack == "one-input":
        op.inputs = list(op.inputs[:1])
    elif attack == "weight-type":
        t.type = rng.choice([schema.TensorType.STRING, schema.TensorType.INT32, schema.TensorType.INT8,
                             schema.TensorType.BOOL, schema.TensorType.FLOAT16, schema.TensorType.COMPLEX64,
                             schema.TensorType.RESOURCE, schema.TensorType.INT4, 99])
    elif attack == "nan":
        a = np.frombuffer(bytes(m.buffers[t.buffer].data), np.float32).copy()
        a[rng.randrange(a.size)] = rng.choice([np.nan, np.inf])
        m.buffers[t.buffer].data = np.frombuffer(a.tobytes(), np.uint8)
    elif attack == "zero-size":
        t.shape = [0] + list(t.shape[1:])
    elif attack == "inputs":
        g.inputs = rng.choice([[], list(g.inputs) * 2, [len(g.tensors)]])
    elif attack == "input-shape":
        g.tensors[g.inputs[0]].shape = rng.choice([[32, 96], [1, 60000, 60000, 3], [1, 32, 32, 4], [0, 32, 32, 3]])
    elif attack == "cycle":
        i = rng.randrange(len(ops))
        ops[i].inputs = [ops[rng.randrange(i, len(ops))].outputs[0]] + list(ops[i].inputs[1:])
    elif attack == "names":
        for x in g.tensors:
            x.name = rng.choice([b"x", b"", b"\xff\xfe", b"a" * 100000])
    elif attack == "quantization":
        q = schema.QuantizationParametersT()
        q.scale = rng.choice([[0.0], [float("nan")], [-1.0], [0.1] * 3, [0.1] * (int(t.shape[0]) if len(t.shape) else 1)])
        q.zeroPoint = rng.choice([[0], [1 << 40], [0] * 7])
        q.quantizedDimension = rng.choice([0, 3, 7, -1])
        t.quantization = q
        t.type = rng.choice([schema.TensorType.INT8, t.type])
    elif attack == "opcode":
        op.opcodeIndex = rng.choice([len(m.operatorCodes), 1 << 20])
    elif attack == "buffer-offset":  # the >2 GB layout: the data said to lie past the file's end
        m.buffers[t.buffer].data = None
        m.buffers[t.buffer].offset = rng.choice([1 << 40, 1 << 63, 8])
        m.buffers[t.buffer].size = rng.choice([4 * 432, 1 << 40])
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    ctx.other.write_bytes(bytes(b.Output()))
    return attack


IR_ATTACKS = ["damage-xml", "damage-bin", "truncate-xml", "truncate-bin", "size", "offset", "shape",
              "element-type", "nan", "doctype", "tags", "duplicate-id", "edge", "bin-link", "bin-fifo"]


def make_openvino(ctx):
    import re
    rng = ctx.rng
    attack = rng.choice(IR_ATTACKS)
    xml, weights = T["ir"]
    ctx.other = ctx.folder / "m.xml"
    consts = list(re.finditer(r'<data element_type="f32" shape="([^"]*)" offset="(\d+)" size="(\d+)"', xml))
    c = rng.choice(consts)

    def edit(attr, value):
        return xml[:c.start()] + re.sub(f'{attr}="[^"]*"', f'{attr}="{value}"', c.group(0)) + xml[c.end():]
    if attack == "damage-xml":
        xml = damage(rng, xml.encode())[1].decode("latin-1")  # (written back as the same bytes)
    elif attack == "damage-bin":
        weights = damage(rng, weights)[1]
    elif attack == "truncate-xml":
        xml = xml[:rng.randrange(1, len(xml))]
    elif attack == "truncate-bin":
        weights = weights[:rng.randrange(len(weights))]
    elif attack == "size":
        xml = edit("size", rng.choice([0, 1, 10 ** 14, 2 ** 64 - 1, -4]))
    elif attack == "offset":
        xml = edit("offset", rng.choice([len(weights), 2 ** 64 - 8, -64, 10 ** 30, "0x10"]))
    elif attack == "shape":
        xml = edit("shape", rng.choice(["1000000,1000000,1000,1000", "2,2", "", "-1,3", "0,3,3,3", "a,b"]))
    elif attack == "element-type":
        xml = edit("element_type", rng.choice(["string", "u1", "u4", "nf4", "f8e4m3", "boolean", "i64", "undefined", "x"]))
    elif attack == "nan":
        off, size = int(c.group(2)), int(c.group(3))
        a = np.frombuffer(weights[off:off + size], np.float32).copy()
        a[rng.randrange(a.size)] = rng.choice([np.nan, np.inf])
        weights = weights[:off] + a.tobytes() + weights[off + size:]
    elif attack == "doctype":  # entity expansion and an external entity at the sentinel
        sentinel = f"file://{ctx.sentinel}"
        dtd = rng.choice(['<!DOCTYPE net [<!ENTITY a "aaaaaaaaaa">' + "".join(
            f'<!ENTITY {chr(98 + i)} "' + f"&{chr(97 + i)};" * 10 + '">' for i in range(9)) + "]>",
            f'<!DOCTYPE net [<!ENTITY x SYSTEM "{sentinel}">]>', f'<!DOCTYPE net SYSTEM "{sentinel}">'])
        body = xml.split("?>", 1)[1] if xml.startswith("<?xml") else xml
        xml = '<?xml version="1.0"?>\n' + dtd + body.replace('name="', 'name="&' + rng.choice("jx") + ';', 1)
    elif attack == "tags":
        n = rng.choice([1 << 21, 1 << 16])
        xml = xml.replace("</net>", rng.choice(["<x/>" * n, "<a>" * n + "</a>" * n]) + "</net>")
    elif attack == "duplicate-id":
        ids = re.findall(r'<layer id="(\d+)"', xml)
        xml = xml.replace(f'<layer id="{rng.choice(ids)}"', f'<layer id="{rng.choice(ids)}"', 1)
    elif attack == "edge":
        edges = list(re.finditer(r'<edge from-layer="(\d+)" from-port="(\d+)"', xml))
        e = rng.choice(edges)
        xml = xml[:e.start()] + f'<edge from-layer="{rng.choice([e.group(1), 10 ** 9, -1, 3])}" from-port="{rng.choice([99, -1, 0])}"' + xml[e.end():]
    ctx.other.write_bytes(xml.encode("latin-1"))
    if attack == "bin-link":
        os.symlink(ctx.sentinel, ctx.folder / "m.bin")
    elif attack == "bin-fifo":
        os.symlink(ctx.fifo, ctx.folder / "m.bin")
    else:
        (ctx.folder / "m.bin").write_bytes(weights)
    return attack


# -- images ----------------------------------------------------------------------------------------
def _png_header(w, h):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _tiled_tiff(width, height, tile):
    """A little-endian RGB TIFF of one deflate tile of tile x tile zeros."""
    data = zlib.compress(bytes(tile * tile * 3))
    entries = [(256, 3, 1, width), (257, 3, 1, height), (258, 3, 3, None), (259, 3, 1, 8),
               (262, 3, 1, 2), (277, 3, 1, 3), (284, 3, 1, 1), (322, 3, 1, tile), (323, 3, 1, tile),
               (324, 4, 1, None), (325, 4, 1, len(data))]
    bits_at = 8 + 2 + 12 * len(entries) + 4
    out = b"II*\0" + struct.pack("<IH", 8, len(entries))
    for tag, kind, count, value in entries:
        value = {258: bits_at, 324: bits_at + 6}.get(tag, value)
        out += struct.pack("<HHI", tag, kind, count)
        out += struct.pack("<HH", value, 0) if kind == 3 and count == 1 else struct.pack("<I", value)
    return out + struct.pack("<I", 0) + struct.pack("<3H", 8, 8, 8) + data


def make_image(ctx):
    rng = ctx.rng
    fmt = rng.choice(sorted(T["images"]))
    data = T["images"][fmt]
    mode = rng.choice(["good", "damage", "damage", "damage", "bomb", "tiny", "tiff-tile"])
    if mode == "damage":
        how, data = damage(rng, data, near=rng.choice([None, 256]))
        mode = f"damage-{how}"
    elif mode == "bomb":
        data = _png_header(rng.choice([9000, 30000, 65535]), rng.choice([9000, 30000, 65535]))
    elif mode == "tiny":
        data = _image_bytes(Image.new("RGB", (rng.randint(1, 40), rng.randint(1, 40))), "PNG")
    elif mode == "tiff-tile":  # one deflate tile, decoded whole, far larger than the image or not
        tile = rng.choice([16, 256, 1024, 2048, 8192])
        data = _tiled_tiff(rng.randint(1, 64), rng.randint(1, 64), tile)
        mode = f"tiff-tile-{tile}"
    (ctx.folder / "img").write_bytes(data)
    if rng.random() < 0.75:  # mostly valid arguments, so the decoders see the damaged bytes
        ctx.args = dict(target_size=rng.choice([224, 32, (40, 7), 1, (96, 128)]),
                        crop=rng.choice([None, None, "center", 0.875, 0.01]),
                        interpolation=rng.choice(sorted(preprocessing.INTERPOLATIONS)),
                        as_=rng.choice(["str", "bytes", "path", "file"]))
    else:
        ctx.args = dict(
            target_size=rng.choice([224, 0, -1, 10 ** 6, 2.5, (3,), "x", None, (2, 8193)]),
            crop=rng.choice([None, 1e-6, 0, 1.5, float("nan"), True]),
            interpolation=rng.choice(["bilinear", "bad", None, ["bilinear"]]),
            as_=rng.choice(["str", "bytes", "path", "file"]))
    return f"{fmt}-{mode}"


def run_image(ctx):
    path = ctx.folder / "img"
    kw = dict(ctx.args)
    as_ = kw.pop("as_")
    if as_ == "file":
        with open(path, "rb") as f:
            out = preprocessing.load_image(f, **kw)
    else:
        arg = {"str": str(path), "bytes": bytes(path), "path": path}[as_]
        out = preprocessing.load_image(arg, **kw)
    ctx.seen.append(out.tobytes())


# -- arrays ----------------------------------------------------------------------------------------
def make_array(ctx):
    rng = ctx.rng
    nprng = np.random.default_rng(rng.randrange(1 << 30))
    dtype = rng.choice(["f4", "f4", "f8", "f2", "u1", "i8", "?", "c8", "O", "U3"])
    shape = rng.choice([(1, 32, 32, 3), (32, 32, 3), (2, 32, 32, 3), (1, 33, 32, 3), (1, 32, 32, 4),
                        (0, 32, 32, 3), (1, 32, 32), (), (5,), (1, 1, 32, 32, 3), (1, 40, 57, 3)])
    x = nprng.uniform(-3, 3, shape)
    special = rng.choice([None, None, "nan", "inf", "-inf", "huge", "snan", "denormal"])
    if special and x.size:
        flat = x.reshape(-1)
        value = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "huge": 1e300, "snan": np.nan,
                 "denormal": 1e-310}[special]
        flat[rng.randrange(flat.size)] = value
    try:
        x = x.astype(dtype)
    except (TypeError, ValueError):
        pass
    if special == "snan" and x.dtype == np.float32 and x.size:
        x.view(np.uint32).reshape(-1)[0] = 0x7F800001
    if rng.random() < 0.2 and x.ndim == 4:
        x = x[:, ::-1]  # not contiguous
    ctx.x = x
    ctx.op = rng.choice(["call", "predict", "features", "preprocess", "flex", "flex-huge"])
    ctx.batch = rng.choice([1, 2, 32, 0, -1, 1.5, True])
    ctx.names = rng.choice([["Conv1"], "block_1_expand", ["nope"], None, [1], [], ["input_1"], ["out_relu"]])
    return f"{ctx.op}-{x.dtype}-{x.shape}-{special}"


def run_array(ctx):
    m, x = T["model"], ctx.x
    if ctx.op == "call":
        out = m(x)
    elif ctx.op == "predict":
        out = m.predict(x, batch_size=ctx.batch)
    elif ctx.op == "features":
        out = np.concatenate([v.reshape(-1) for v in m.features(x, ctx.names).values()])
    elif ctx.op == "preprocess":
        out = preprocessing.preprocess_input(x)
    elif ctx.op == "flex":
        out = T["flex"](x)
    else:
        out = T["flex"](np.broadcast_to(np.float32(0), (1, 5000, 40, 3)))
    ctx.seen.append(np.asarray(out).tobytes())
    finite_in = x.dtype.kind in "uib" or (x.dtype.kind == "f" and bool(np.isfinite(x).all()))
    if finite_in and np.asarray(out).dtype.kind == "f" and not np.isfinite(out).all():
        raise AssertionError("a finite input gave a non-finite output")


# -- command lines ---------------------------------------------------------------------------------
def make_cli(ctx):
    rng = ctx.rng
    image = ctx.folder / "img.png"
    data = T["images"]["png"]
    if rng.random() < 0.3:
        data = damage(rng, data)[1]
    image.write_bytes(data)
    weights = ctx.folder / "w.h5"
    weights.write_bytes(T["keras2"] if rng.random() < 0.5 else damage(rng, T["keras2"], near=4096)[1])
    (ctx.folder / "sub").mkdir()
    pipe = ctx.folder / "pipe"  # a FIFO given as input (the sentinels are never given)
    os.mkfifo(pipe)
    cmd = rng.choice(["classify", "dump", "summary", "info", "bench", "nope", "--help-me"])
    argv = [cmd]
    if cmd in ("classify", "dump"):
        argv.append(rng.choice([str(image), "missing.png", str(pipe), "sub", "", "/dev/zero"]))
    if cmd == "dump":
        argv += ["--layers", *rng.choice([["Conv1"], ["all"], ["nope"], [""]]),
                 "--out", rng.choice(["out.npz", "out", "", "sub/", "sub", "nowhere/x.npz", "."])]
        if rng.random() < 0.5:
            argv.append("--no-top")
    if cmd in ("classify", "dump", "summary"):
        argv += ["--alpha", rng.choice(["0.35", "0.35", "nan", "inf", "-1", "1e308", "0", "4.5", "1/3", "x"]),
                 "--size", rng.choice(["32", "32", "96", "0", "-5", "1e3", "99999", "x", ""]),
                 "--weights", rng.choice(["none", "none", str(weights), str(pipe), "imagenet", "sub",
                                          "/dev/zero"]),
                 "--dtype", rng.choice(["float32", "float64", "float33"])]
    if cmd == "classify":
        argv += ["--top", rng.choice(["1", "5", "0", "1001", "x"])]
    if cmd == "bench":  # only refusals: a real benchmark is far too slow for a fuzz case
        argv += rng.choice([["--threads", "0"], ["--threads", "-1"], ["--threads", "x"], ["--runs", "0"],
                            ["--json", ""], ["--json", "sub/"], ["--variants", "9.9_1"], ["--engines", "gpu"]])
    ctx.argv = argv
    return " ".join(a if len(a) < 30 else "..." + a[-20:] for a in argv)


def _cli(ctx, argv):
    """(exit status, stdout) of ``mobilenetv2 ARGV`` run in this process, where it succeeded (0, or
    compare's 1: a report) with nothing on stderr; CliRefusal where it failed the way it should: one
    line on stderr, exit status 2 or 130; a RuntimeError otherwise.  The C extension's missing
    warning (once a process) is the one line allowed beside either (as conftest.cli_error_lines)."""
    import contextlib
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exc:
            code = exc.code
    text = err.getvalue()
    ctx.seen += [out.getvalue().encode(), text.encode()]
    lines = [line for line in text.splitlines()
             if not (line.startswith("mobilenetv2: warning: ") and "the C extension is not available" in line)]
    if code in ((0, 1) if argv[0] == "compare" else (0,)) and not lines:
        return code, out.getvalue()
    if code in (2, 130) and len(lines) == 1 and "Traceback" not in text:
        raise CliRefusal(lines[0])
    raise RuntimeError(f"exit status {code}, stderr: {text[-1500:]!r}")


def run_cli(ctx):
    os.environ.update({"MOBILENETV2_NO_DOWNLOAD": "1", "KERAS_HOME": str(ctx.folder / "keras")})
    _cli(ctx, ctx.argv)
    return {"outputs": [p.name for p in ctx.folder.iterdir() if p.name.startswith("out")]}


# -- downloads -------------------------------------------------------------------------------------
SERVER = {}


def _start_server():
    good = T["keras2"]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            mode = self.path.strip("/").split("/")[0]
            body, length, status = good, len(good), 200
            if mode == "html":
                body = b"<html>error</html>"
                length = len(body)
            elif mode == "short":
                body = good[:len(good) // 3]
            elif mode == "short-nolength":
                body, length = good[:len(good) // 3], None
            elif mode == "long":
                body = good + b"x" * 5000
                length = len(body)
            elif mode == "endless":
                self.send_response(200)
                self.end_headers()
                try:
                    while True:
                        self.wfile.write(b"\x89HDF\r\n\x1a\n" + bytes(65536))
                except OSError:
                    return
            elif mode == "trickle":
                self.send_response(200)
                self.send_header("Content-Length", str(len(good)))
                self.end_headers()
                try:
                    for i in range(0, len(good), 64):
                        self.wfile.write(good[i:i + 64])
                        self.wfile.flush()
                        threading.Event().wait(0.05)
                except OSError:
                    return
            elif mode in ("bad-status", "long-header", "many-headers"):
                raw = {"bad-status": b"HTTP/1.1 OK\r\n\r\n",
                       "long-header": b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n",
                       "many-headers": b"HTTP/1.1 200 OK\r\n" + b"X: 1\r\n" * 150 + b"\r\n"}[mode]
                try:
                    self.wfile.write(raw)
                except OSError:
                    pass
                return
            elif mode in ("trickle-headers", "trickle-chunked"):  # bytes that never end a line
                head = (b"HTTP/1.1 200 OK\r\nX-Slow: " if mode == "trickle-headers" else
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n\x89HDF\r\n\x1a\n\r\n")
                try:
                    self.wfile.write(head)
                    for _ in range(2000):
                        self.wfile.write(b"a" if mode == "trickle-headers" else b"0")
                        self.wfile.flush()
                        threading.Event().wait(0.05)
                except OSError:
                    pass
                return
            elif mode in ("404", "500"):
                status, body = int(mode), b"no"
                length = len(body)
            elif mode == "redirect-loop":
                self.send_response(302)
                self.send_header("Location", self.path)
                self.end_headers()
                return
            self.send_response(status)
            if length is not None:
                self.send_header("Content-Length", str(length))
            self.end_headers()
            try:
                self.wfile.write(body)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    SERVER["url"] = f"http://127.0.0.1:{httpd.server_address[1]}/"
    SERVER["httpd"] = httpd


DOWNLOAD_MODES = ["good", "html", "short", "short-nolength", "long", "endless", "trickle", "bad-status",
                  "long-header", "many-headers", "404", "500", "redirect-loop", "trickle-headers",
                  "trickle-chunked"]


def make_download(ctx):
    rng = ctx.rng
    good = T["keras2"]
    ctx.mode = rng.choice(DOWNLOAD_MODES)
    ctx.size = rng.choice([None, len(good), len(good) - 1, len(good) + 1])
    ctx.sha = rng.choice([None, hashlib.sha256(good).hexdigest(), "0" * 64])
    return f"{ctx.mode} size={'ok' if ctx.size == len(good) else ctx.size} sha={'ok' if ctx.sha and ctx.sha[0] != '0' else ctx.sha}"


def run_download(ctx):
    os.environ["no_proxy"] = "127.0.0.1"
    for var in ("http_proxy", "HTTP_PROXY"):
        os.environ.pop(var, None)
    dest = ctx.folder / "w.h5"
    path = registry.download_file(f"{SERVER['url']}{ctx.mode}/{ctx.index_label}", dest, ctx.size, ctx.sha,
                                  deadline=2.0)
    if Path(path).read_bytes() != T["keras2"]:
        raise AssertionError(f"a download ({ctx.mode}) put other bytes than the server's good file in place")
    return {"outputs": ["w.h5"]}


def _make_download(ctx):
    ctx.index_label = ctx.rng.randrange(1 << 30)
    return make_download(ctx)


GENERATORS = {
    "hdf5": (make_hdf5, run_hdf5),
    "keras": (make_keras, run_keras),
    "safetensors": (make_safetensors, run_safetensors),
    "image": (make_image, run_image),
    "array": (make_array, run_array),
    "cli": (make_cli, run_cli),
    "download": (_make_download, run_download),
    "hf": (make_hf, run_hf),
    "compare": (make_compare, run_compare),
    "onnx": (make_onnx, _run_model),
    "tflite": (make_tflite, _run_model),
    "openvino": (make_openvino, _run_model),
}
