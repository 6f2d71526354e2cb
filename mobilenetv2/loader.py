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
"""
import collections
import functools
import io
import os
import re
import zipfile

import h5py
import numpy as np

OFFICIAL_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
_CONTAINERS = ("layers", "_layer_checkpoint_dependencies")
# Keras 3 stores a layer's variables as vars/0, vars/1, ... in this order (trainable, then not).
_KERAS3_WEIGHT_NAMES = {
    "conv2d": ("kernel", "bias"),
    "depthwise_conv2d": ("kernel", "bias"),
    "dense": ("kernel", "bias"),
    "batch_normalization": ("gamma", "beta", "moving_mean", "moving_variance"),
}
_FileLayer = collections.namedtuple("_FileLayer", "name kind weights")  # weights: [(name, array)]


class WeightsError(ValueError):
    """A weights file that cannot be read, or does not fit the model."""


# -- opening ---------------------------------------------------------------------------------
def _open_h5(path):
    """An open h5py.File for ``path``, or a clear exception saying what is wrong with the file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(2, "weights file not found", path)
    if os.path.isdir(path):
        raise IsADirectoryError(21, "weights path is a directory, not a .h5 file", path)
    if not os.access(path, os.R_OK):
        raise PermissionError(13, "weights file is not readable", path)
    size = os.path.getsize(path)
    if size == 0:
        raise WeightsError(f"weights file {path!r} is empty (0 bytes; an interrupted download?): "
                           "delete it and download it again")
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"PK\x03\x04"):
        return _open_keras_archive(path)
    if not h5py.is_hdf5(path):
        raise WeightsError(f"weights file {path!r} is not an HDF5 file (it starts with {head!r}); "
                           "expected a Keras .h5 weights file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise WeightsError(f"weights file {path!r} ({size} bytes) is truncated or corrupt "
                           f"(h5py: {exc}); delete it and download it again") from None


def _open_keras_archive(path):
    """The weights of a Keras 3 ``.keras`` archive (a zip holding model.weights.h5)."""
    try:
        with zipfile.ZipFile(path) as zf:
            data = zf.read("model.weights.h5")
    except KeyError:
        raise WeightsError(f"weights file {path!r} is a zip archive without model.weights.h5 "
                           "(expected a Keras .h5 weights file or a .keras archive)") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise WeightsError(f"weights file {path!r} is a damaged zip archive ({exc})") from None
    try:
        return h5py.File(io.BytesIO(data), "r")
    except OSError as exc:
        raise WeightsError(f"the model.weights.h5 inside {path!r} is truncated or corrupt "
                           f"(h5py: {exc})") from None


# -- reading -----------------------------------------------------------------------------------
def _attr_list(obj, name):
    """Keras's list attribute ``name`` of an HDF5 object, joined from ``name0, name1, ...``
    when Keras split it; None when absent."""
    if name in obj.attrs:
        values = [obj.attrs[name]]
    elif f"{name}0" in obj.attrs:
        values, i = [], 0
        while f"{name}{i}" in obj.attrs:
            values.append(obj.attrs[f"{name}{i}"])
            i += 1
    else:
        return None
    out = []
    for v in values:
        for item in np.atleast_1d(v):
            out.append(item.decode("utf8") if isinstance(item, bytes) else str(item))
    return out


def _short_name(weight_name):
    """'block_1_expand/kernel:0' -> 'kernel'."""
    return weight_name.rsplit("/", 1)[-1].split(":", 1)[0]


def _read_array(path, where, dataset):
    if not isinstance(dataset, h5py.Dataset):
        raise WeightsError(f"weights file {path!r}: {where} is not a dataset")
    try:
        return np.asarray(dataset[()])
    except (OSError, RuntimeError, TypeError, ValueError) as exc:
        raise WeightsError(f"weights file {path!r}: cannot read {where} ({exc}); "
                           "the file is truncated or corrupt") from None


def _read_legacy(path, root):
    layers = []
    for lname in _attr_list(root, "layer_names"):
        if lname not in root:
            raise WeightsError(f"weights file {path!r} lists layer {lname!r} but has no group for it")
        group = root[lname]
        # A model saved as one layer of another holds all its layers' weights, named
        # '<inner layer>/<weight>', trainable ones first: split them back by inner layer.
        inner = {}
        for wname in _attr_list(group, "weight_names") or []:
            if wname not in group:
                raise WeightsError(f"weights file {path!r}: layer {lname!r} lists weight {wname!r} "
                                   "but has no dataset for it")
            array = _read_array(path, f"{lname}/{wname}", group[wname])
            scope = wname.rsplit("/", 1)[0] if "/" in wname else ""
            inner.setdefault(scope, []).append((_short_name(wname), array))
        for scope, weights in inner.items():
            name = lname if len(inner) == 1 else f"{lname}/{scope.rsplit('/', 1)[-1]}"
            layers.append(_FileLayer(name, None, weights))
    return layers


def _natural_key(key):
    """'conv2d_12' -> ('conv2d', 12), 'conv2d' -> ('conv2d', 0): Keras 3's per-class numbering."""
    base, num = re.fullmatch(r"(.*?)(?:_(\d+))?", key).groups()
    return base, int(num or 0)


def _read_keras3(path, container, prefix=""):
    layers = []
    for key in sorted(container, key=_natural_key):
        group = container[key]
        if not isinstance(group, h5py.Group):
            continue
        name = f"{prefix}{key}"
        variables = group.get("vars")
        if isinstance(variables, h5py.Group) and len(variables):
            kind = _natural_key(key)[0]
            keys = sorted(variables, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else k))
            known = _KERAS3_WEIGHT_NAMES.get(kind, ())
            names = list(known[:len(keys)]) if len(keys) <= len(known) else keys
            layers.append(_FileLayer(name, kind, [
                (wname, _read_array(path, f"{name}/vars/{k}", variables[k]))
                for wname, k in zip(names, keys)]))
        for sub in _CONTAINERS:
            if isinstance(group.get(sub), h5py.Group):
                layers += _read_keras3(path, group[sub], f"{name}/")
    return layers


def _read_layers(path):
    """The file's weighted layers as _FileLayer tuples, and its layout's name."""
    path = os.fspath(path)
    with _open_h5(path) as f:
        try:
            if _attr_list(f, "layer_names") is not None:
                return _read_legacy(path, f), "keras2"
            mw = f.get("model_weights")
            if isinstance(mw, h5py.Group) and _attr_list(mw, "layer_names") is not None:
                return _read_legacy(path, mw), "keras2-model"
            for sub in _CONTAINERS:
                if isinstance(f.get(sub), h5py.Group):
                    return _read_keras3(path, f[sub]), "keras3"
        except (KeyError, OSError) as exc:
            raise WeightsError(f"weights file {path!r} is damaged ({exc})") from None
        raise WeightsError(f"weights file {path!r} is HDF5 but not a Keras weights file: it has no "
                           "'layer_names' attribute and no 'model_weights' or 'layers' group "
                           f"(top-level keys: {sorted(f)[:8]})")


def read_weights(path):
    """The weighted layers of a Keras weights file, in the file's order.

    Returns ``[(layer_name, [(weight_name, float32 array), ...]), ...]`` with weight names
    shortened to Keras's (``kernel``, ``gamma``, ``moving_mean``, ...).  For Keras 3 files the
    layers come grouped by class, numbered in model order within each class (see module doc).
    """
    layers, _ = _read_layers(path)
    return [(layer.name, [(w, _as_float32(path, layer.name, w, a)) for w, a in layer.weights])
            for layer in layers]


def _as_float32(path, lname, wname, array):
    if array.dtype.kind != "f":
        raise WeightsError(f"weights file {os.fspath(path)!r}: layer {lname!r} weight {wname!r} has "
                           f"dtype {array.dtype}, expected floating point")
    return np.ascontiguousarray(array, dtype=np.float32)


# -- diagnosis: which model does a file fit? ------------------------------------------------
@functools.lru_cache(maxsize=None)
def _backbone_shapes(alpha):
    """Weight shapes of each weighted backbone layer of MobileNetV2 ``alpha`` (no classifier)."""
    from mobilenetv2 import arch
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
                     "use include_top=False, or the file with the top")
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
    Raises WeightsError naming the file, the layer and the shapes, with the likely cause.
    """
    path = os.fspath(path)
    expected = [(name, [(w, tuple(int(d) for d in s)) for w, s in weights]) for name, weights in expected]
    found, layout = _read_layers(path)
    if layout == "keras3":
        found = _order_keras3(expected, found)
    what = context or "the model"

    def fail(problem):
        hints = _hints(expected, found)
        raise WeightsError(f"weights file {path!r} does not fit {what}: {problem}"
                           + "".join(f"; {h}" for h in hints))

    out = []
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
        arrays = []
        for (wname, shape), (_, array) in zip(want, got):
            if tuple(array.shape) != shape:
                fail(f"{where} weight {wname!r} should have shape {shape}, the file has "
                     f"{tuple(array.shape)}")
            array = _as_float32(path, layer.name, wname, array)
            bad = array.size - int(np.isfinite(array).sum())
            if bad:
                raise WeightsError(f"weights file {path!r}: {where} weight {wname!r} has {bad} "
                                   "NaN or inf value(s); the file is corrupt")
            arrays.append(array)
        out.append(arrays)
    if len(found) < len(expected):
        fail(f"the file has {len(found)} layers with weights and the model has {len(expected)}; "
             f"nothing in the file for {expected[len(found)][0]!r} and after (an incomplete export, "
             "or not a MobileNetV2 file?)")
    if len(found) > len(expected):
        extra = ", ".join(repr(layer.name) for layer in found[len(expected):][:3])
        fail(f"the file has {len(found)} layers with weights and the model has {len(expected)}; "
             f"the file has more: {extra}")
    return out


# -- writing ---------------------------------------------------------------------------------
def save_weights(path, layers):
    """Write ``layers``' weights as a Keras 2 weights file (the layout of the official files,
    with today's layer names), through a temporary file renamed into place at the end."""
    import tempfile
    path = os.path.abspath(os.fspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".h5", dir=os.path.dirname(path))
    os.close(fd)
    try:
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
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path
